"""A cache of validated machines, for the commands that must start fast.

`status`, `list`, `history`, `graph` and `create` need the machine's states and
phases but not its plugin checks; loading and validating a machine.yaml costs more
than the rest of such a command (YAML parsing, JSON Schema). The first load of a
machine file stores the validated definition as JSON under
``data/.cache/machine-<key>.json``, where the key hashes the file's bytes, the runner
version, the machine schema and a fingerprint of the code that loads and checks
machines (so an edited rule in a checkout never serves an old verdict); later loads
of the same bytes read it back. The cache is data, never code: reading it cannot run
anything. A changed file has another key, so the cache never returns a stale machine.
The folder is the data directory's (0700); anything wrong with a cache file just
means a normal load.
"""

from __future__ import annotations

import contextlib
import json
import os
from functools import cache

from runner import __version__, resources
from runner.files import TooLarge, read_limited, replace_atomically
from runner.machine.model import MachineDef, machine_from_document, machine_to_document

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hashlib import sha256
    from pathlib import Path
else:
    try:  # the interpreter's own SHA-256: hashlib would load OpenSSL first (milliseconds)
        from _sha256 import sha256
    except ImportError:  # another interpreter or version
        from hashlib import sha256

#: The modules whose rules decide what a valid machine is.
_RULES = ("loader.py", "model.py", "yamlguard.py", "templating.py", "statemachine.py")


@cache
def _code_fingerprint() -> bytes:
    """Size and modification time of the code that loads machines (a stat each)."""
    here = os.path.dirname(__file__)
    parts = [
        os.path.join(os.path.dirname(here), "minischema.py"),
        *(os.path.join(here, name) for name in _RULES),
    ]
    fingerprint = []
    for path in parts:
        try:
            info = os.stat(path)
            fingerprint.append(f"{path}:{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            fingerprint.append(f"{path}:-")
    return "\n".join(fingerprint).encode()


def _key(raw: bytes) -> str:
    digest = sha256(raw)
    digest.update(__version__.encode())
    digest.update(_code_fingerprint())
    with contextlib.suppress(OSError), open(resources.schema_file("machine"), "rb") as schema:
        digest.update(schema.read())
    return digest.hexdigest()[:40]


def load(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> MachineDef:
    """The validated machine in ``path`` (without plugin checks), from the cache when
    it holds these bytes; errors are the loader's own."""
    try:
        raw = read_limited(path, "machine")
    except (OSError, TooLarge):
        from runner.machine.loader import load_machine

        return load_machine(_path(path))  # reports the error in the loader's words
    entry = os.path.join(cache_dir, f"machine-{_key(raw)}.json")
    try:
        document = json.loads(read_limited(entry, "cache", follow=False))
        machine = machine_from_document(document, os.path.realpath(path))
        if machine.digest == "sha256:" + sha256(raw).hexdigest():
            return machine
    except Exception:  # missing, truncated or foreign: load normally
        pass
    from runner.machine.loader import load_machine  # only on a miss: it costs its imports

    machine = load_machine(_path(path))
    _store(_path(entry), machine)
    return machine


def _path(path: str | os.PathLike[str]) -> Path:
    from pathlib import Path  # a miss loads the whole loader anyway

    return Path(path)


def _store(entry: Path, machine: MachineDef) -> None:
    if not entry.parent.parent.is_dir():
        return  # no data directory yet: a read-only command does not create one
    try:
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = json.dumps(machine_to_document(machine), separators=(",", ":")).encode()
        replace_atomically(entry, data, durable=False)  # a lost cache entry costs a load
    except (OSError, TypeError, ValueError):
        pass  # a read-only or full data directory: no cache, nothing else changes
