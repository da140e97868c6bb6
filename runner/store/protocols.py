"""The storage contract's protocols (see :mod:`runner.store.contract`, which names
them too): what a backend implements, composed into :class:`Store`."""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

from runner.store.contract import EnvironmentCopy, ListEntry, LockInfo, SnapshotInfo
from runner.store.record import Record

__all__ = [
    "ArtifactKind",
    "ArtifactWriter",
    "Artifacts",
    "EventLog",
    "Events",
    "Imports",
    "Lease",
    "Locks",
    "Records",
    "Snapshots",
    "Store",
    "Versions",
]

#: Events, oldest first.
Events: TypeAlias = list[dict[str, Any]]

#: What an artifact is: the trace of a failed or interrupted run, or a run's log.
ArtifactKind = Literal["trace", "run"]


class Records(Protocol):
    """Environment records."""

    def exists(self, name: str) -> bool: ...

    def create(self, record: Record) -> None:
        """Store a new environment atomically (create-if-absent); EnvironmentExistsError
        when the name is taken."""

    def load(self, name: str) -> Record:
        """A fresh copy of the validated record; EnvironmentNotFoundError or
        StateFileError."""

    def save(self, record: Record, *, serial: int | None = None) -> None:
        """Durably write ``record`` as serial ``record.serial + 1`` with a fresh
        ``updated_at``, provided the stored serial is still ``record.serial``
        (ConflictError otherwise: nothing is written). Once written, the new serial and
        ``updated_at`` are set on ``record``; on any error it is left unchanged.
        ``serial`` writes a higher serial than ``record.serial + 1`` instead: a restore
        after an old copy of the record was put back, so that no serial is used twice."""

    def delete(self, name: str) -> None:
        """Remove the environment: record, lock, events and artifacts."""

    def list(self) -> list[ListEntry]:
        """Every environment, sorted by name; one that cannot be read carries its error
        and never hides the others."""


class Snapshots(Protocol):
    """The versions of each record a backend keeps: every ``create`` and ``save`` keeps
    the version it wrote, and the oldest beyond the backend's ``keep_snapshots`` (20 by
    default; the current version is always kept on top of them) are dropped."""

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        """The kept versions, oldest first (the current one last); EnvironmentNotFoundError
        when there is no such environment."""

    def load_snapshot(self, name: str, serial: int) -> Record:
        """The version ``serial`` as it was written; StateError naming the kept serials
        when it is not kept."""


class Lease(Protocol):
    """A held environment lock; released by :meth:`release` (or the holder's death)."""

    #: Who holds it: this process.
    holder: LockInfo
    #: The record a holder that died without releasing left behind, if any.
    previous: LockInfo | None

    def note_processes(self, groups: tuple[int, ...]) -> None:
        """Record the process groups the holder's steps run now, for whoever takes the
        lock after a crash (so that they can be stopped): each a
        :class:`~runner.store.contract.ProcessGroup` with what identifies it (its boot
        id and leader's start time, kept as given), or a plain number that nobody will
        stop. Called as each program starts and ends: it must stay cheap (one small
        write)."""

    def release(self) -> None: ...


class Locks(Protocol):
    """The environment lock: one holder at a time, released when the holder dies."""

    def try_lock(self, name: str, me: LockInfo) -> Lease | None:
        """One attempt, never waiting: the lease, or None when another holds it."""

    def wait_lock(self, name: str, me: LockInfo, seconds: float) -> Lease | None:
        """Wait up to ``seconds`` for the lock, woken as soon as it is free where the
        backend can; None when the time ran out."""

    def lock_holder(self, name: str) -> LockInfo | None:
        """Who holds the lock now (decided by the lock itself, without taking it or
        waiting); None if nobody."""

    def last_holder(self, name: str) -> LockInfo | None:
        """When nobody holds the lock: the record a holder that died without releasing
        left behind (with the process groups it was running); else None."""


class EventLog(Protocol):
    """Each environment's append-only history."""

    def append_event(self, name: str, event: dict[str, Any]) -> None: ...

    def read_events(self, name: str, limit: int | None = None) -> Events:
        """Oldest first; with ``limit``, the last ``limit``. An unreadable (torn) entry
        is skipped."""


class ArtifactWriter(Protocol):
    """An artifact being written, line by line (a run log while its steps run)."""

    #: How records and messages name the artifact.
    ref: str

    def write(self, text: str) -> None: ...

    def close(self) -> None: ...


class Artifacts(Protocol):
    """Traces and run logs."""

    def open_artifact(self, name: str, kind: ArtifactKind, label: str) -> ArtifactWriter:
        """A new artifact of ``kind`` for the environment, named after ``label`` and the
        time; StorageError when it cannot be made."""

    def write_artifact(self, name: str, kind: ArtifactKind, label: str, text: str) -> str:
        """A new artifact holding ``text`` (durably); its reference."""

    def read_artifact(self, name: str, ref: str) -> str:
        """The content of the artifact ``ref``; EnvironmentNotFoundError or StateFileError
        when there is none."""

    def list_artifacts(self, name: str, kind: ArtifactKind) -> list[str]:
        """References of the environment's artifacts of ``kind``, oldest first."""


@runtime_checkable
class Versions(Protocol):
    """An optional capability of a backend: which records changed, without reading
    them."""

    def versions(self) -> dict[str, object]:
        """Every environment's name and a token that changes whenever its record is
        saved, created or replaced (equal tokens: the same record), much cheaper than
        :meth:`Records.list`."""


class Imports(Protocol):
    """Writing a copied environment exactly as it was."""

    def import_environment(self, copy: EnvironmentCopy) -> None:
        """Store ``copy`` as a new environment at its serial, with its events, snapshots
        and artifacts (named by :func:`runner.store.transfer.artifact_ref`);
        EnvironmentExistsError when the name is taken (nothing written). Either all of
        it is stored or, on an error, nothing."""


class Store(Records, Snapshots, Locks, EventLog, Artifacts, Imports, Protocol):
    """What the engine and the commands need of a backend."""

    def data_dir(self, name: str) -> str:
        """The environment's own local folder, relative to the working directory (what
        a new record keeps as ``paths.data_dir``)."""
