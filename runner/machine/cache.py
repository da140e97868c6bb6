"""A cache of validated machines, for the commands that must start fast.

`status`, `list`, `history`, `graph` and `create` run no step: they need the machine's
structure (its states, phases and steps, checked by YAML syntax, schema and the rules
on states and phases) but neither its plugin checks nor the Jinja2 syntax of its
templates, which only a step's run reads; loading and validating a machine.yaml costs
more than the rest of such a command (YAML parsing, JSON Schema, and the import of
Jinja2 and a parse of every template, which these commands skip). The first load of a
machine file stores the structurally validated definition as JSON under
``data/.cache/machine-<key>.json``, where the key hashes the file's bytes, the runner
version, the machine schema and a fingerprint of the code that loads and checks
machines (so an edited rule in a checkout never serves an old verdict); later loads
of the same bytes read it back. The cache is data, never code: reading it cannot run
anything. A changed file has another key, so the cache never returns a stale machine.
The folder is the data directory's (0700); anything wrong with a cache file just
means a normal load.

The commands that run steps (`validate`, `advance`, `up`, `check`, ...) also check
every template's syntax and every `uses` and `with` against the installed step
plugins, which costs the import of the entry point machinery, of every plugin and of
Jinja2; a machine with a broken template is refused there, before any step runs.
:func:`load_checked` keeps that complete verdict in
``data/.cache/checked-<key>.json``: the machine and the *stamps* (inode, size,
modification and change times) of everything else the verdict was drawn from: every
folder on the import path (installing or removing a distribution or a module changes
its folder), the ``entry_points.txt`` of every distribution found there (where the
plugins are declared), and the file of every module outside the standard library that
was loaded when the verdict was reached (the runner's own code, the plugins, their
helpers, Jinja2, ruamel.yaml, `transitions`). Its key adds the interpreter and the
import path to the machine cache's. A repeat check of unchanged inputs is one
``os.stat`` per stamp; any changed stamp means a full check. Only a clean verdict is
kept: an invalid machine, or a broken plugin (whose warning must be given again), is
checked anew every time. A clean verdict also writes the machine's structure entry
(a complete verdict includes it); a structure entry never stands for a complete one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from functools import cache

from runner import __version__, resources
from runner.files import TooLarge, read_limited, replace_atomically, sha256
from runner.machine.model import MachineDef, machine_from_document, machine_to_document

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    #: A checker of the machine in a file: the machine, and whether its verdict may be
    #: kept (false when something must be said again next time: a broken plugin).
    Checker = Callable[[Path], tuple[MachineDef, bool]]

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


def _key(raw: bytes, context: str = "") -> str:
    digest = sha256(raw)
    digest.update(__version__.encode())
    digest.update(_code_fingerprint())
    with contextlib.suppress(OSError), open(resources.schema_file("machine"), "rb") as schema:
        digest.update(schema.read())
    if context:
        digest.update(context.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:40]


def load(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> MachineDef:
    """The machine in ``path`` with its structure validated (syntax, schema, states and
    phases; neither plugins nor template syntax), from the cache when it holds these
    bytes; errors are the loader's own. Plain paths all the way: a read-only command
    never imports pathlib, nor Jinja2."""
    try:
        raw = read_limited(path, "machine")
    except (OSError, TooLarge):
        from runner.machine.loader import load_machine

        return load_machine(path)  # reports the error in the loader's words
    entry = os.path.join(cache_dir, f"machine-{_key(raw)}.json")
    try:
        document = json.loads(read_limited(entry, "cache", follow=False))
        machine = machine_from_document(document, os.path.realpath(path))
        if machine.digest == "sha256:" + sha256(raw).hexdigest():
            return machine
    except Exception:  # missing, truncated or foreign: load normally
        pass
    from runner.machine.loader import load_machine  # only on a miss: it costs its imports

    machine = load_machine(path, templates=False)
    _store(entry, machine)
    return machine


def _store(entry: str | os.PathLike[str], machine: MachineDef) -> None:
    _write(entry, machine_to_document(machine))


# --- the complete verdict: plugins and templates included ------------------------------


def load_checked(path: Path, cache_dir: Path, check: Checker) -> MachineDef:
    """The machine in ``path`` as ``check`` (the full check, plugins included) finds it,
    from ``cache_dir`` when a clean verdict on these bytes is kept there and none of
    its stamps changed; errors are ``check``'s own."""
    try:
        raw = read_limited(path, "machine")
    except (OSError, TooLarge):
        return check(path)[0]  # reports the error in the loader's words
    key = _key(raw, _context())
    entry = cache_dir / f"checked-{key}.json"
    try:
        document = json.loads(read_limited(entry, "cache", follow=False))
        if _unchanged(document["stamps"]):
            machine = machine_from_document(document["machine"], path.resolve())
            if machine.digest == "sha256:" + sha256(raw).hexdigest():
                return machine
    except Exception:  # missing, truncated, foreign or stale: check again
        pass
    if not cache_dir.parent.is_dir():
        return check(path)[0]  # no data directory: nothing is kept, nothing to stamp
    before = set(sys.modules)
    found = _stamps(_search_path_inputs())
    stamps = _stamps(_module_files(sys.modules))
    machine, keep = check(path)
    # the import path's folders are stamped once the check is done: importing the
    # plugins may have written their bytecode there (a new __pycache__ changes the
    # folder), which must not make the next command check again; a distribution
    # installed or changed during the check (its entry_points.txt) keeps nothing
    after = _stamps(_search_path_inputs())
    if keep and _same_files(found, after) and machine.digest == "sha256:" + sha256(raw).hexdigest():
        loaded = {name: sys.modules.get(name) for name in set(sys.modules) - before}
        stamps = after + stamps + _stamps(_module_files(loaded))
        _write(entry, {"stamps": stamps, "machine": machine_to_document(machine)})
        # a clean full check is a check without the plugins too: the next `status` of
        # the machine just validated (or advanced) need not load it again
        _store(cache_dir / f"machine-{_key(raw)}.json", machine)
    return machine


def _context() -> str:
    """What else a verdict depends on, beside the machine cache's key: the interpreter
    (and so its standard library) and where modules and plugins are looked for."""
    return "\0".join(
        ("checked", sys.executable, sys.version, *(entry or os.getcwd() for entry in sys.path))
    )


def _search_path_inputs() -> list[str]:
    """Every folder (or archive) of the import path, and the ``entry_points.txt`` of
    every distribution installed there: what finding the plugins reads."""
    found = []
    for entry in sys.path:
        folder = entry or os.getcwd()
        found.append(folder)
        with contextlib.suppress(OSError), os.scandir(folder) as listing:
            for item in listing:
                if item.name.endswith((".dist-info", ".egg-info")):
                    found.append(os.path.join(item.path, "entry_points.txt"))
    return found


def _module_files(modules: Mapping[str, object]) -> list[str]:
    """The files of ``modules`` outside the standard library (which the interpreter's
    version in the key stands for); installed distributions are outside it."""
    stdlib = os.path.dirname(os.__file__) + os.sep
    files = []
    for module in list(modules.values()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str):
            continue
        if file.startswith(stdlib) and not file[len(stdlib) :].startswith(
            ("site-packages", "dist-packages")
        ):
            continue
        files.append(file)
    return files


def _stamp(path: str) -> list[int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None  # absent: its appearance is a change too
    return [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _stamps(paths: list[str]) -> list[list[object]]:
    return [[path, _stamp(path)] for path in dict.fromkeys(paths)]


def _same_files(before: list[list[object]], after: list[list[object]]) -> bool:
    """Whether two stampings of the import path name the same files and folders, with
    the same stamps for the files (a folder's may differ)."""
    was, now = dict(_pairs(before)), dict(_pairs(after))
    return was.keys() == now.keys() and all(
        was[path] == now[path] for path in now if not os.path.isdir(path)
    )


def _pairs(stamps: list[list[object]]) -> list[tuple[str, object]]:
    return [(str(path), stamp) for path, stamp in stamps]


def _unchanged(stamps: list[list[object]]) -> bool:
    return all(_stamp(path) == stamp for path, stamp in stamps)  # type: ignore[arg-type]


def _write(entry: str | os.PathLike[str], document: dict[str, object]) -> None:
    folder = os.path.dirname(os.fspath(entry))
    if not os.path.isdir(os.path.dirname(folder)):
        return  # no data directory yet: a read-only command does not create one
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        data = json.dumps(document, separators=(",", ":")).encode()
        replace_atomically(entry, data, durable=False)  # a lost entry costs a check
    except (OSError, TypeError, ValueError):
        pass  # a read-only or full data directory: no cache, nothing else changes
