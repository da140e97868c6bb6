"""A cache of validated machines, for the commands that must start fast.

`status`, `list`, `history`, `graph` and `create` need the machine's states and
phases but not its plugin checks; loading and validating a machine.yaml costs more
than the rest of such a command (YAML parsing, JSON Schema). The first load of a
machine file stores the validated definition (a pickle) under
``data/.cache/machine-<key>.pickle``, where the key hashes the file's bytes, the
runner version and the machine schema; later loads of the same bytes read it back.
A changed file has another key, so the cache never returns a stale machine. The
folder is the data directory's (0700); anything wrong with a cache file just means a
normal load.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import pickle
from pathlib import Path

from runner import __version__, resources
from runner.files import replace_atomically
from runner.machine.model import MachineDef


def _key(raw: bytes) -> str:
    digest = hashlib.sha256(raw)
    digest.update(__version__.encode())
    with contextlib.suppress(OSError):
        digest.update(resources.schema_path("machine").read_bytes())
    return digest.hexdigest()[:40]


def load(path: Path, cache_dir: Path) -> MachineDef:
    """The validated machine in ``path`` (without plugin checks), from the cache when
    it holds these bytes; errors are the loader's own."""
    try:
        raw = path.read_bytes()
    except OSError:
        from runner.machine.loader import load_machine

        return load_machine(path)  # reports the error in the loader's words
    entry = cache_dir / f"machine-{_key(raw)}.pickle"
    try:
        with entry.open("rb") as handle:
            machine = pickle.load(handle)
        if isinstance(machine, MachineDef) and machine.digest == (
            "sha256:" + hashlib.sha256(raw).hexdigest()
        ):
            return dataclasses.replace(machine, file=path.resolve())
    except Exception:  # missing, truncated or foreign: load normally
        pass
    from runner.machine.loader import load_machine

    machine = load_machine(path)
    _store(entry, machine)
    return machine


def _store(entry: Path, machine: MachineDef) -> None:
    if not entry.parent.parent.is_dir():
        return  # no data directory yet: a read-only command does not create one
    try:
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = pickle.dumps(machine, protocol=pickle.HIGHEST_PROTOCOL)
        replace_atomically(entry, data, durable=False)  # a lost cache entry costs a load
    except OSError:
        pass  # a read-only or full data directory: no cache, nothing else changes
