"""Moving environments from one backend to another (``runner state migrate``).

:func:`export` reads everything of an environment through the storage contract;
:meth:`~runner.store.contract.Imports.import_environment` of the target writes it at
the same serial and lineage; :func:`migrate` does that for every environment, refusing
names the target has, then reads each one back from the target and compares it with
the source (:func:`verify`). The source is only read, never changed.

Artifacts keep their file names; their folder becomes the target's
(``<data_dir>/traces/<file>``), and the references in the record and its snapshots
(``run.log``, ``run.trace``, ``failure.trace``) and ``paths.data_dir`` follow.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

from runner import struct
from runner.errors import EnvironmentExistsError, StorageError
from runner.store.contract import ArtifactKind, EnvironmentCopy, Store
from runner.store.record import Record

__all__ = ["artifact_ref", "export", "migrate", "rebased", "verify"]

_FOLDERS: dict[str, str] = {"trace": "traces", "run": "runs"}


def artifact_ref(data_dir: str, kind: ArtifactKind, ref: str) -> str:
    """The reference of artifact ``ref`` (of another store) in a store whose environment
    folder is ``data_dir``: the same file name in that folder's ``traces``/``runs``."""
    return f"{data_dir}/{_FOLDERS[kind]}/{posixpath.basename(ref)}"


def export(store: Store, name: str) -> EnvironmentCopy:
    """Everything ``store`` keeps of environment ``name``."""
    record = store.load(name)
    snapshots = [store.load_snapshot(name, s.serial) for s in store.list_snapshots(name)]
    artifacts: list[tuple[ArtifactKind, str, str]] = []
    for kind in ("trace", "run"):
        for ref in store.list_artifacts(name, kind):
            artifacts.append((kind, ref, store.read_artifact(name, ref)))
    return EnvironmentCopy(record, store.read_events(name), snapshots, artifacts)


def rebased(copy: EnvironmentCopy, data_dir: str) -> EnvironmentCopy:
    """``copy`` as it is stored where the environment's folder is ``data_dir``."""
    kinds = {ref: kind for kind, ref, _ in copy.artifacts}

    def ref_of(ref: str | None) -> str | None:
        if ref is None:
            return None
        kind = kinds.get(ref) or ("trace" if "/traces/" in ref else "run")
        return artifact_ref(data_dir, kind, ref)

    def moved(record: Record) -> Record:
        record = record.copy()
        record.paths = struct.replace(record.paths, data_dir=data_dir)
        if record.run is not None:
            record.run.log = ref_of(record.run.log)
            record.run.trace = ref_of(record.run.trace)
        if record.failure is not None:
            record.failure.trace = ref_of(record.failure.trace)
        return record

    return EnvironmentCopy(
        moved(copy.record),
        [dict(e) for e in copy.events],
        [moved(s) for s in copy.snapshots],
        [(kind, artifact_ref(data_dir, kind, ref), text) for kind, ref, text in copy.artifacts],
    )


def _comparable(copy: EnvironmentCopy) -> dict[str, Any]:
    return {
        "record": copy.record.to_json(),
        "events": copy.events,
        "snapshots": [s.to_json() for s in copy.snapshots],
        "artifacts": [(kind, posixpath.basename(ref), text) for kind, ref, text in copy.artifacts],
    }


def verify(expected: EnvironmentCopy, target: Store) -> str | None:
    """What differs between ``expected`` and what ``target`` holds; None if nothing."""
    found = _comparable(export(target, expected.record.name))
    wanted = _comparable(expected)
    for part in ("record", "events", "snapshots", "artifacts"):
        if found[part] != wanted[part]:
            return f"its {part} read back differ from what was written"
    return None


def migrate(
    source: Store,
    target: Store,
    *,
    on_copied: Callable[[str], None] | None = None,
) -> list[str]:
    """Copy every environment of ``source`` to ``target`` and verify each; the names
    copied. EnvironmentExistsError (before anything is written) when ``target`` has one
    of the names; StorageError when an environment cannot be read or does not read back
    the same (the environments copied before it stay)."""
    entries = source.list()
    broken = [e for e in entries if e.record is None]
    if broken:
        raise StorageError(
            f"environment '{broken[0].name}' cannot be read, so it cannot be copied: "
            f"{broken[0].error}",
            hint="repair it (or purge it) first; nothing was copied",
            environment=broken[0].name,
        )
    taken = [e.name for e in entries if target.exists(e.name)]
    if taken:
        raise EnvironmentExistsError(
            f"the target already has environment{'s' if len(taken) > 1 else ''} "
            + ", ".join(f"'{n}'" for n in taken),
            hint="remove them from the target (or migrate to another one); nothing was copied",
            environment=taken[0],
        )
    copied: list[str] = []
    for entry in entries:
        name = entry.name
        copy = rebased(export(source, name), target.data_dir(name))
        target.import_environment(copy)
        difference = verify(copy, target)
        if difference is not None:
            raise StorageError(
                f"environment '{name}' was copied but {difference}",
                hint="compare the two backends with `runner status`; the source is unchanged",
                environment=name,
            )
        copied.append(name)
        if on_copied is not None:
            on_copied(name)
    return copied
