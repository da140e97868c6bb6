"""The JSON file store: the first backend of the storage contract.

One folder per environment under the data directory (``workdir/data`` unless told)::

    data/<env>/state.json     the record, replaced atomically on every save
    data/<env>/state.lock     the lock (an OS lock) and who holds it
    data/<env>/events.jsonl   append-only history, one JSON object a line
    data/<env>/traces/        trace files of failed or interrupted runs
    data/<env>/runs/          run logs
    data/<env>/snapshots/     kept versions of the record: <serial>.json

A save writes the new version's snapshot (a copy, created under its own name, not
fsynced) before it replaces ``state.json`` durably, so a snapshot costs no second fsync
and no rename. A crash
between the two leaves a snapshot whose serial is above the current one: listings
ignore it and the next save writes over it. (Snapshots above the current serial are
offered only when the event log goes on to them: an old copy of ``state.json`` put
back by hand, whose later versions a restore brings back.) The current version is
always listed from ``state.json`` itself; snapshots beyond ``keep_snapshots`` older
ones are removed.

Files are 0600 and folders 0700. A state file this runner cannot read (not JSON,
truncated, a schema violation, a newer format) raises StateFileError and is never
rewritten. Folders whose names start with a dot are work in progress of ``create`` and
``delete`` and are never environments. Artifacts are named by their path relative to
the working directory (``data/demo/traces/20261122-103245-123-provision.log``).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import stat
import time
from functools import cached_property
from json.encoder import encode_basestring_ascii as _json_string

from runner.errors import (
    ConflictError,
    EnvironmentExistsError,
    EnvironmentNotFoundError,
    InvalidNameError,
    RunnerError,
    StateError,
    StateFileError,
    StorageError,
)
from runner.files import (
    FILE_MODE,
    LIMITS,
    TooLarge,
    fsync_dir,
    read_limited,
    replace_atomically,
    temp_prefix,
    write_new,
)
from runner.settings import DEFAULT_SNAPSHOTS
from runner.store import filelock
from runner.store.contract import EnvironmentCopy, ListEntry, LockInfo, SnapshotInfo
from runner.store.record import (
    STATE_FORMAT,
    TOO_DEEP,
    Record,
    check_name,
    checked_problem,
    light_problem,
    next_serial,
    now_iso,
    now_stamp,
    record_problem,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, NoReturn

    from runner.store.contract import ArtifactKind, Events

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
EVENTS_FILE = "events.jsonl"
SNAPSHOT_FOLDER = "snapshots"
ENV_FOLDERS = ("traces", "runs", SNAPSHOT_FOLDER)

DIR_MODE = 0o700
#: How every file inside an environment's folder is opened for reading.
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
#: The folder of each kind of artifact.
ARTIFACT_FOLDERS: dict[str, str] = {"trace": "traces", "run": "runs"}

#: Temp files of state.json saves: ``.state.json.<pid>.<random>.tmp`` beside it.
_TEMP_PREFIX = temp_prefix(STATE_FILE)
#: Dot-folders of a ``create`` or ``delete`` cut short are removed after this long.
_LEFTOVER_AGE_S = 3600.0
#: Under the data folder: half-made and half-deleted environment folders.
STAGING_DIR = ".staging"
#: ``read_events(limit=...)`` reads the log backwards in blocks of this size.
_EVENT_BLOCK = 64 * 1024


def _serialize(data: dict[str, Any]) -> bytes:
    """The bytes of a record: ``json.dumps(data, indent=2)`` and a newline, strict JSON
    (no NaN or infinity, which JSON has not: ValueError). The plain values a record's
    ``to_json`` is made of are written by :func:`_indented`, the same text (json's own
    encoder runs in pure Python once it indents, at a third of the speed); anything
    else is left to ``json.dumps``, which also raises the errors."""
    try:
        text = _indented(data, "\n")
    except (_NotPlain, TypeError, RecursionError):
        text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


class _NotPlain(Exception):
    """A value :func:`_indented` leaves to ``json.dumps``."""


_INFINITY = float("inf")
#: Containers whose items are all exact strings are written in one pass of C.
_STRINGS = frozenset({str})


def _indented(value: Any, newline: str) -> str:
    """``value`` as ``json.dumps(value, indent=2)`` writes it, ``newline`` being a line
    break and the indentation of the line ``value`` starts on. Only exact dicts with
    string keys, lists, strings, ints, finite floats, booleans and None: _NotPlain (or
    TypeError, for a key that is not a string) for anything else."""
    kind = value.__class__
    if kind is str:
        return _json_string(value)
    if kind is dict:
        if not value:
            return "{}"
        inner = newline + "  "
        if _STRINGS.issuperset(map(type, value.values())):  # step name to digest, say
            keys, values = map(_json_string, value), map(_json_string, value.values())
            items = [k + ": " + v for k, v in zip(keys, values, strict=True)]
        else:
            items = [_json_string(k) + ": " + _indented(v, inner) for k, v in value.items()]
        return "{" + inner + ("," + inner).join(items) + newline + "}"
    if kind is list:
        if not value:
            return "[]"
        inner = newline + "  "
        if _STRINGS.issuperset(map(type, value)):  # the completed steps, say
            return "[" + inner + ("," + inner).join(map(_json_string, value)) + newline + "]"
        return (
            "[" + inner + ("," + inner).join([_indented(v, inner) for v in value]) + newline + "]"
        )
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and value == value and value != _INFINITY and value != -_INFINITY:
        return float.__repr__(value)
    raise _NotPlain


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (the last of two would win silently)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice in one object")
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def strict_loads(data: bytes) -> Any:
    """Parse ``data`` as strict JSON: no duplicate keys, no NaN or Infinity."""
    return json.loads(data, object_pairs_hook=_strict_object, parse_constant=_no_constant)


# --- the store --------------------------------------------------------------------------


def _remove_tree(path: str | Path) -> None:
    """Remove a folder and what it holds, ignoring errors. ``shutil`` is imported here:
    the read-only commands never remove anything, and it costs them its compression
    modules at start."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class FileStore:
    """Environments as JSON files under ``data_dir`` (default ``workdir / "data"``),
    keeping ``keep_snapshots`` versions of each record besides the current one."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        data_dir: str | os.PathLike[str] | None = None,
        *,
        keep_snapshots: int = DEFAULT_SNAPSHOTS,
    ) -> None:
        if keep_snapshots < 0:
            raise ValueError(f"keep_snapshots must be 0 or more, not {keep_snapshots}")
        self.keep_snapshots = keep_snapshots
        # plain paths: the read-only commands never import pathlib (the Paths below are
        # made on first use, by the commands that write)
        self._workdir = os.path.abspath(workdir)
        self._root = os.path.abspath(
            os.path.join(self._workdir, "data" if data_dir is None else data_dir)
        )
        # The bytes of each state.json this store last read or wrote: when the file on
        # disk still holds exactly these bytes, its serial is known without parsing it.
        self._known: dict[str, tuple[bytes, int]] = {}
        self._last_stamp = ""

    # -- paths -----------------------------------------------------------------------

    @cached_property
    def workdir(self) -> Path:
        """The working directory."""
        from pathlib import Path

        return Path(self._workdir)

    @cached_property
    def root(self) -> Path:
        """The data folder: one folder per environment."""
        from pathlib import Path

        return Path(self._root)

    @property
    def root_path(self) -> str:
        """:attr:`root` as a plain path (no pathlib: the read commands start without it)."""
        return self._root

    def _env_dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def _env_folder(self, name: str) -> str:
        """:meth:`_env_dir` as a plain path, for reads."""
        return os.path.join(self._root, check_name(name))

    def _no_link(self, name: str, path: str | Path) -> None:
        """Refuse ``path`` when it is a symbolic link: inside ``data/<env>`` the runner
        never follows a link it did not make (it could lead a write, an append or a
        delete anywhere)."""
        try:
            info = os.lstat(path)
        except OSError:
            return
        if stat.S_ISLNK(info.st_mode):
            self._link_error(name, path)

    def _link_error(self, name: str, path: str | Path) -> NoReturn:
        shown = self.relative(path)
        raise StateFileError(
            f"{shown} is a symbolic link: the runner never follows a link inside an "
            "environment's folder",
            hint=f"replace {shown} by the real file or folder (or remove the link), then run "
            "the command again",
            environment=name,
            path=shown,
        )

    def data_dir(self, name: str) -> str:
        return self.relative(self._env_dir(name))

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the working directory, as records and messages show it."""
        absolute = os.path.normpath(os.path.join(self._workdir, path))
        inside = _inside(absolute, self._workdir)
        if inside is not None:
            return inside
        # the same place through symbolic links (e.g. a linked temp folder)
        inside = _inside(os.path.realpath(absolute), os.path.realpath(self._workdir))
        return absolute if inside is None else inside

    # -- reading ---------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self._env_folder(name), STATE_FILE))

    def _read_state(self, name: str) -> bytes:
        folder = self._env_folder(name)
        path = os.path.join(folder, STATE_FILE)
        self._no_link(name, folder)
        try:
            return read_limited(path, "state", follow=False)
        except TooLarge as exc:
            self._state_error(name, str(exc))
        except FileNotFoundError:
            if os.path.isdir(folder):
                self._state_error(
                    name,
                    "is missing (the environment's folder exists without it)",
                    hint=f"{self._snapshots_hint(name, 'in its place')}; the runner never "
                    "recreates it on its own",
                )
            raise EnvironmentNotFoundError(
                f"no environment '{name}'",
                hint="see the environments with `runner list`, or make this one with "
                f"`runner create {name}`",
                environment=name,
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._link_error(name, path)
            if exc.errno == errno.EISDIR:
                self._state_error(
                    name,
                    "is a folder, not a file",
                    hint=f"move it away and {self._snapshots_hint(name, 'in its place')}",
                )
            self._state_error(
                name,
                f"cannot be read: {exc.strerror or exc}",
                hint="make it readable for this user",
            )

    def _snapshots_hint(self, name: str, where: str) -> str:
        """How to put a kept version back by hand (``where``: in its place, over ...)."""
        folder = self.relative(os.path.join(self._root, name, SNAPSHOT_FOLDER))
        return f"copy the newest good version from {folder}/ {where} (docs/recovery.md)"

    def _state_error(self, name: str, problem: str, *, hint: str | None = None) -> NoReturn:
        shown = self.relative(os.path.join(self._root, name, STATE_FILE))
        raise StateFileError(
            f"{shown} {problem}",
            hint=hint
            or f"{self._snapshots_hint(name, f'over {shown}')}, or repair it by hand; the "
            "runner never rewrites a state file it cannot read",
            environment=name,
            path=shown,
        )

    def _parse(self, name: str, data: bytes, *, strict: bool = True) -> Any:
        """The JSON document in ``data``; ``strict`` also refuses a key twice in one
        object and NaN or Infinity (a listing skips that: ``load`` checks it)."""
        if not data.strip():
            self._state_error(name, "is empty (a write was cut short?)")
        try:
            return strict_loads(data) if strict else json.loads(data)
        except UnicodeDecodeError:
            self._state_error(name, "is not UTF-8 text")
        except json.JSONDecodeError as exc:
            cut = data.lstrip().startswith(b"{") and not data.rstrip().endswith(b"}")
            self._state_error(
                name,
                f"is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
                + ("; it looks truncated" if cut else ""),
            )
        except ValueError as exc:  # a duplicate key, NaN or Infinity
            self._state_error(name, f"is not valid JSON: {exc}")
        except RecursionError:
            self._state_error(name, TOO_DEEP)

    def _validated(self, name: str, data: bytes) -> Record:
        """The record in ``data`` (the bytes of ``name``'s state.json), fully checked."""
        document: dict[str, Any] = self._parse(name, data)
        problem = checked_problem(record_problem, document)
        if problem is None and document["name"] != name:
            problem = f"names environment '{document['name']}' but lies in the folder of '{name}'"
        if problem:
            hint = None
            if "newer runner" in problem:
                hint = "install a runner that reads this format; this one will not touch it"
            self._state_error(name, problem, hint=hint)
        self._known[name] = (data, document["serial"])
        return Record.from_json(document)

    def load(self, name: str) -> Record:
        return self._validated(name, self._read_state(name))

    def list(self) -> list[ListEntry]:
        try:
            with os.scandir(self._root) as scan:
                folders = sorted(
                    (entry.name, entry.path, entry.is_symlink())
                    for entry in scan
                    if not entry.name.startswith(".") and (entry.is_dir() or entry.is_symlink())
                )
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(
                f"cannot read the data directory {self.relative(self._root)}: "
                f"{exc.strerror or exc}",
                hint="make it readable for this user",
            ) from exc
        result: list[ListEntry] = []
        for name, folder, linked in folders:
            try:
                check_name(name)
            except InvalidNameError:  # a folder that is no environment (e.g. lost+found)
                continue
            try:
                if linked:
                    self._link_error(name, folder)
                try:  # plain os calls: with 10,000 environments pathlib costs a third
                    data = read_limited(os.path.join(folder, STATE_FILE), "state", follow=False)
                except (OSError, TooLarge):
                    data = self._read_state(name)  # raises the error that says why
                document = self._parse(name, data, strict=False)
                problem = checked_problem(light_problem, document)  # see light_problem
                if problem is None and document["name"] != name:
                    problem = f"names environment '{document['name']}'"
                if problem:
                    self._state_error(name, problem)
                try:
                    record = Record.from_json(document)
                except (KeyError, TypeError, ValueError, AttributeError):
                    self._state_error(name, "does not match the state file format")
            except (StateFileError, EnvironmentNotFoundError) as exc:
                result.append(ListEntry(name=name, error=exc.message))
                continue
            result.append(ListEntry(name=name, record=record))
        return result

    def versions(self) -> dict[str, object]:
        """Each environment's state file as (inode, size, modification time): a save
        replaces the file, so any save changes it (the contract's ``Versions``)."""
        found: dict[str, object] = {}
        try:
            scan = os.scandir(self._root)
        except FileNotFoundError:
            return found
        with scan:
            for entry in scan:
                if entry.name.startswith(".") or not (entry.is_dir() or entry.is_symlink()):
                    continue
                try:
                    check_name(entry.name)
                except InvalidNameError:  # as list(): a folder that is no environment
                    continue
                try:
                    info = os.stat(os.path.join(entry.path, STATE_FILE), follow_symlinks=False)
                except OSError as exc:
                    found[entry.name] = ("unreadable", exc.errno)
                    continue
                found[entry.name] = (info.st_ino, info.st_size, info.st_mtime_ns)
        return found

    # -- writing ---------------------------------------------------------------------

    def _storage_error(
        self, action: str, path: str | Path, exc: OSError, **fields: Any
    ) -> NoReturn:
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "free some disk space (or raise the quota)"
        elif exc.errno == errno.EROFS:
            what = "remount the file system read-write, or work in a folder on a writable one"
        else:
            what = "make the data directory writable for this user (check owner and mode)"
        raise StorageError(
            f"cannot {action} {self.relative(path)}: {reason}",
            hint=f"{what}, then run the command again; nothing stored was changed",
            remedy=what,
            path=self.relative(path),
            **fields,
        ) from exc

    def _checked(self, document: dict[str, Any]) -> bytes:
        """The bytes of ``document`` once it is known to be a valid record."""
        check_name(document.get("name", ""))
        problem = record_problem(document)
        data = b""
        if problem is None:
            try:
                data = _serialize(document)
            except ValueError as exc:  # NaN or infinity in inputs or outputs
                problem = f"holds a value JSON cannot: {exc}"
        if problem:
            name = document["name"]
            raise StorageError(
                f"refusing to store an invalid record for environment '{name}': it {problem}",
                hint="this is a bug in runner or a step plugin; the stored state is unchanged",
                environment=name,
            )
        return data

    def _ensure_root(self) -> None:
        if self.root.is_dir():
            return
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(self.root, DIR_MODE)
            os.chmod(self.root, DIR_MODE)  # whatever the umask
        except FileExistsError:
            pass
        except OSError as exc:
            self._storage_error("create the data directory", self.root, exc)

    @property
    def _staging_dir(self) -> Path:
        """``data/.staging``: where a create builds a folder and a delete moves one before
        removing it, so that only this folder is swept (never the whole data folder)."""
        return self.root / STAGING_DIR

    def _ensure_staging_dir(self) -> Path:
        self._ensure_root()
        staging = self._staging_dir
        try:
            os.mkdir(staging, DIR_MODE)
            os.chmod(staging, DIR_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            self._storage_error("create the staging folder", staging, exc)
        return staging

    def _sweep_leftovers(self) -> None:
        """Remove what a crashed ``create`` or ``delete`` left in ``data/.staging`` (older
        than an hour, so that one still running is never touched)."""
        horizon = time.time() - _LEFTOVER_AGE_S
        try:
            with os.scandir(self._staging_dir) as entries:
                for entry in entries:
                    if entry.stat(follow_symlinks=False).st_mtime < horizon:
                        _remove_tree(entry.path)
        except OSError:
            pass

    def create(self, record: Record) -> None:
        data = self._checked(record.to_json())
        name = record.name
        target = self._env_dir(name)
        if target.exists():
            self._exists_error(name)
        staging = self._ensure_staging_dir() / f"create-{name}-{os.urandom(6).hex()}"
        try:
            try:
                for folder in (staging, *(staging / sub for sub in ENV_FOLDERS)):
                    os.mkdir(folder, DIR_MODE)
                    os.chmod(folder, DIR_MODE)  # whatever the umask
                write_new(staging / EVENTS_FILE, b"")
                write_new(staging / LOCK_FILE, b"")
                write_new(staging / SNAPSHOT_FOLDER / _snapshot_file(record.serial), data)
                write_new(staging / STATE_FILE, data, sync=True)
                fsync_dir(staging)
            except OSError as exc:
                self._storage_error(
                    "create environment folder in", self.root, exc, environment=name
                )
            try:
                # Atomic create-if-absent: a folder that exists with content (a racing
                # create's) is never replaced; rename fails with ENOTEMPTY/EEXIST.
                os.rename(staging, target)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                    self._exists_error(name)
                self._storage_error("create", target, exc, environment=name)
        finally:
            if staging.exists():
                _remove_tree(staging)
        try:
            fsync_dir(self.root)
        except OSError as exc:
            self._storage_error("sync", self.root, exc, environment=name)
        self._known[name] = (data, record.serial)
        self._sweep_leftovers()

    def _exists_error(self, name: str) -> NoReturn:
        hint = f"choose another name, or see it with `runner status {name}`"
        try:
            state = f"state: {self.load(name).state}"
        except (StateFileError, EnvironmentNotFoundError) as exc:
            state = f"unreadable: {exc.message}"
            folder = self._env_folder(name)
            if not os.path.lexists(os.path.join(folder, STATE_FILE)):
                # `exists` says false: there is no environment, only its folder's name
                hint = (
                    f"{self.relative(folder)} holds no environment: look at what is in it, "
                    "remove it, and create again; or choose another name"
                )
        raise EnvironmentExistsError(
            f"environment '{name}' already exists ({state})",
            hint=hint,
            environment=name,
        )

    def _stored_serial(self, name: str) -> int:
        """The serial in ``state.json`` now. The file is parsed and validated only when it
        changed since this store last read or wrote it: a file that is not valid is never
        written over."""
        data = self._read_state(name)
        known = self._known.get(name)
        if known is not None and known[0] == data:
            return known[1]
        return self._validated(name, data).serial

    def save(self, record: Record, *, serial: int | None = None) -> None:
        name = check_name(record.name)
        expected = record.serial
        document = record.to_json()
        document["serial"] = next_serial(expected, serial)
        document["updated_at"] = now_iso()
        data = self._checked(document)
        stored = self._stored_serial(name)
        if stored != expected:
            shown = self.relative(self.root / name / STATE_FILE)
            raise ConflictError(
                f"{shown} changed under this command: it holds serial {stored}, expected "
                f"{expected}; nothing was written",
                hint=f"another program changed the environment; see `runner status {name}` "
                "and run the command again",
                environment=name,
                path=shown,
            )
        path = os.path.join(self._root, name, STATE_FILE)  # plain paths: a save a step
        self._keep_snapshot(name, document["serial"], data)
        try:
            replace_atomically(path, data)
        except OSError as exc:
            self._storage_error("write", path, exc, environment=name)
        self._known[name] = (data, document["serial"])
        self._prune_snapshots(name, document["serial"])
        record.serial = document["serial"]
        record.updated_at = document["updated_at"]
        record.format = STATE_FORMAT

    # -- snapshots -------------------------------------------------------------------

    def _snapshot_dir(self, name: str) -> str:
        folder = os.path.join(self._env_folder(name), SNAPSHOT_FOLDER)
        self._no_link(name, folder)
        return folder

    def _keep_snapshot(self, name: str, serial: int, data: bytes) -> None:
        """Write version ``serial`` (``data``) as a snapshot: a new file, not fsynced
        (``state.json`` is the durable one). It is written before ``state.json`` names
        that serial, so no reader takes it until it is whole (a save cut short leaves it
        above the current serial, where it is ignored, and the next save replaces it);
        written under its own name, it costs no temp file and no rename."""
        if self.keep_snapshots == 0:
            return
        folder = self._snapshot_dir(name)
        path = os.path.join(folder, _snapshot_file(serial))
        try:
            try:
                _write_whole(path, data)
            except FileNotFoundError:  # a folder made before snapshots were kept
                os.mkdir(folder, DIR_MODE)
                os.chmod(folder, DIR_MODE)
                _write_whole(path, data)
        except OSError as exc:
            self._storage_error("write", path, exc, environment=name)

    def _snapshot_serials(self, name: str) -> builtins.list[int]:
        """The serials of the snapshot files, sorted (whatever the current serial)."""
        serials = []
        try:
            with os.scandir(self._snapshot_dir(name)) as entries:
                for entry in entries:
                    serial = _snapshot_serial(entry.name)
                    if serial is not None and entry.is_file(follow_symlinks=False):
                        serials.append(serial)
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._storage_error("read", self._env_dir(name) / SNAPSHOT_FOLDER, exc)
        return sorted(serials)

    def _prune_snapshots(self, name: str, current: int) -> None:
        """Remove the snapshots older than the ``keep_snapshots`` before ``current``
        (usually the one that just fell out: a single unlink)."""
        oldest = current - self.keep_snapshots
        folder = os.path.join(self._root, name, SNAPSHOT_FOLDER)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, _snapshot_file(oldest - 1)))
            return
        if current % 16 == 0:  # now and then: what a smaller setting left behind
            for serial in self._snapshot_serials(name):
                if serial < oldest:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(folder, _snapshot_file(serial)))

    def _kept(self, name: str, current: int) -> builtins.list[int]:
        """The serials kept besides the current one, oldest first. Above the current
        serial only when the event log goes further (an old copy of ``state.json`` put
        back by hand: the later versions are kept and offered); otherwise a snapshot
        above it is what a save cut short left, and the next save writes over it."""
        oldest = current - self.keep_snapshots
        newest = self._logged_serial(name, current)
        return [s for s in self._snapshot_serials(name) if oldest <= s <= newest and s != current]

    def _logged_serial(self, name: str, current: int) -> int:
        """The serial of the event log's last event when it is above ``current``, else
        ``current`` (also when the log cannot be read: it never hides a snapshot)."""
        try:
            last = self.read_events(name, limit=1)
        except RunnerError:
            return current
        serial = last[-1].get("serial") if last else None
        if isinstance(serial, int) and not isinstance(serial, bool) and serial > current:
            return serial
        return current

    def list_snapshots(self, name: str) -> builtins.list[SnapshotInfo]:
        current = self.load(name)
        infos = []
        for serial in self._kept(name, current.serial):
            try:
                infos.append(SnapshotInfo.of(self._read_snapshot(name, serial)))
            except StateFileError:
                continue  # a damaged copy is not offered; the others still are
        infos.append(SnapshotInfo.of(current))
        return sorted(infos, key=lambda info: info.serial)

    def _read_snapshot(self, name: str, serial: int) -> Record:
        path = self._env_dir(name) / SNAPSHOT_FOLDER / _snapshot_file(serial)
        shown = self.relative(path)
        try:
            data = read_limited(path, "state", follow=False)
        except (OSError, TooLarge) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise StateFileError(
                f"cannot read {shown}: {reason}", environment=name, path=shown
            ) from None
        try:
            document = strict_loads(data)
        except ValueError:
            problem: str | None = "is not valid JSON"
        except RecursionError:
            problem = TOO_DEEP
        else:
            problem = checked_problem(record_problem, document)
            if problem is None and (document["name"], document["serial"]) != (name, serial):
                problem = "is not the version its name says"
        if problem:
            raise StateFileError(
                f"{shown} {problem}",
                hint=f"restore another serial (see `runner snapshots {name}`)",
                environment=name,
                path=shown,
            )
        return Record.from_json(document)

    def load_snapshot(self, name: str, serial: int) -> Record:
        current = self.load(name)
        if serial == current.serial:
            return current
        kept = self._kept(name, current.serial)
        if serial in kept:
            return self._read_snapshot(name, serial)
        shown = ", ".join(str(s) for s in [*kept, current.serial])
        raise StateError(
            f"environment '{name}' has no snapshot of serial {serial}",
            hint=f"the kept serials are {shown}; see them with `runner snapshots {name}`",
            environment=name,
        )

    def delete(self, name: str) -> None:
        folder = self._env_dir(name)
        if not folder.is_dir():
            raise EnvironmentNotFoundError(
                f"no environment '{name}'",
                hint="see the environments with `runner list`",
                environment=name,
            )
        # Move it out of sight first, so nobody ever sees half a folder.
        trash = self._ensure_staging_dir() / f"delete-{name}-{os.urandom(6).hex()}"
        try:
            os.rename(folder, trash)
            fsync_dir(self.root)
        except OSError as exc:
            self._storage_error("delete", folder, exc, environment=name)
        self._known.pop(name, None)
        _remove_tree(trash)

    # -- lock ------------------------------------------------------------------------

    def _lock_file(self, name: str) -> tuple[Path, str]:
        folder = self._env_dir(name)
        self._no_link(name, folder)
        if not (folder / STATE_FILE).is_file():
            self._read_state(name)  # raises EnvironmentNotFoundError or StateFileError
        path = folder / LOCK_FILE
        self._no_link(name, path)
        return path, self.relative(path)

    def _leased(self, name: str, held: filelock.HeldLock | None) -> filelock.HeldLock | None:
        if held is not None:
            _remove_stale_temp_files(self._env_dir(name))
            _remove_stale_temp_files(self._env_dir(name) / SNAPSHOT_FOLDER, prefix=".")
        return held

    def try_lock(self, name: str, me: LockInfo) -> filelock.HeldLock | None:
        path, shown = self._lock_file(name)
        return self._leased(name, filelock.acquire(path, name, shown, me, 0.0))

    def wait_lock(self, name: str, me: LockInfo, seconds: float) -> filelock.HeldLock | None:
        path, shown = self._lock_file(name)
        return self._leased(name, filelock.acquire(path, name, shown, me, seconds))

    def lock_holder(self, name: str) -> LockInfo | None:
        return filelock.live_holder(os.path.join(self._env_folder(name), LOCK_FILE))

    def last_holder(self, name: str) -> LockInfo | None:
        return filelock.stale_holder(os.path.join(self._env_folder(name), LOCK_FILE))

    # -- events ----------------------------------------------------------------------

    def append_event(self, name: str, event: dict[str, Any]) -> None:
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode("utf-8")
        path = self._env_dir(name) / EVENTS_FILE
        self._no_link(name, path.parent)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags, FILE_MODE)
        except FileNotFoundError:
            self._read_state(name)  # says which: no environment, or a broken folder
            raise
        except OSError as exc:
            self._storage_error("append to", path, exc, environment=name)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a torn last line (a crash): start on a line of our own
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            self._storage_error("append to", path, exc, environment=name)
        finally:
            os.close(fd)

    def read_events(self, name: str, limit: int | None = None) -> Events:
        folder = self._env_folder(name)
        if not os.path.isdir(folder):
            self._read_state(name)  # raises EnvironmentNotFoundError
        path = os.path.join(folder, EVENTS_FILE)
        self._no_link(name, folder)
        try:
            fd = os.open(path, _READ_FLAGS)
            with os.fdopen(fd, "rb") as file:
                if limit is None:
                    data = file.read(LIMITS["events"] + 1)
                    if len(data) > LIMITS["events"]:
                        raise StateFileError(
                            f"{self.relative(path)} is larger than the runner reads at once",
                            hint=f"read its end with `runner history {name} --limit N`",
                            environment=name,
                        )
                    return _parse_lines(data.split(b"\n"))
                if limit <= 0:
                    return []
                return _tail_events(file.fileno(), limit)
        except FileNotFoundError:
            return []
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._link_error(name, path)
            raise StateFileError(
                f"cannot read {self.relative(path)}: {exc.strerror or exc}",
                hint="make it readable for this user",
                environment=name,
                path=self.relative(path),
            ) from exc

    # -- artifacts -------------------------------------------------------------------

    def _artifact_path(self, name: str, kind: ArtifactKind, label: str) -> Path:
        folder = self._env_dir(name) / ARTIFACT_FOLDERS[kind]
        self._no_link(name, folder.parent)
        if not self._env_dir(name).is_dir():
            self._read_state(name)  # raises EnvironmentNotFoundError
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            self._no_link(name, folder)
        except OSError as exc:
            self._storage_error("create", folder, exc, environment=name)
        # names sort as they were made: never two with one stamp from this store
        stamp = now_stamp()
        while stamp <= self._last_stamp:
            time.sleep(0.001)
            stamp = now_stamp()
        self._last_stamp = stamp
        return folder / f"{stamp}-{label}.log"

    def open_artifact(self, name: str, kind: ArtifactKind, label: str) -> FileArtifact:
        path = self._artifact_path(name, kind, label)
        try:
            return FileArtifact(path, self.relative(path))
        except OSError as exc:
            self._storage_error("write", path, exc, environment=name)

    def write_artifact(self, name: str, kind: ArtifactKind, label: str, text: str) -> str:
        path = self._artifact_path(name, kind, label)
        try:
            write_new(path, text.encode("utf-8"), sync=True)
        except OSError as exc:
            self._storage_error("write", path, exc, environment=name)
        return self.relative(path)

    def _artifact_of(self, name: str, ref: str) -> Path | None:
        """The file ``ref`` names, if it is one of ``name``'s artifacts."""
        from pathlib import Path

        if "\0" in ref:  # no file's name holds a NUL
            return None
        path = Path(os.path.normpath(self.workdir / ref))
        folders = {self._env_dir(name) / sub for sub in ARTIFACT_FOLDERS.values()}
        return path if path.parent in folders else None

    def read_artifact(self, name: str, ref: str) -> str:
        path = self._artifact_of(name, ref)
        try:
            if path is None:
                raise FileNotFoundError(ref)
            self._no_link(name, path.parent)
            return read_limited(path, "artifact", follow=False).decode("utf-8", errors="replace")
        except TooLarge as exc:
            raise StateFileError(f"{ref} {exc}", environment=name) from None
        except FileNotFoundError:
            if not self._env_dir(name).is_dir():
                self._read_state(name)  # raises EnvironmentNotFoundError
            raise StateFileError(
                f"environment '{name}' has no artifact {ref}",
                hint=f"see `runner status {name}` for its trace and run log",
                environment=name,
            ) from None
        except OSError as exc:
            raise StateFileError(
                f"cannot read {ref}: {exc.strerror or exc}",
                hint="make it readable for this user",
                environment=name,
            ) from exc

    def list_artifacts(self, name: str, kind: ArtifactKind) -> builtins.list[str]:
        folder = self._env_dir(name) / ARTIFACT_FOLDERS[kind]
        if not self._env_dir(name).is_dir():
            self._read_state(name)  # raises EnvironmentNotFoundError
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(folder)
                if entry.is_file(follow_symlinks=False) and not entry.name.startswith(".")
            )
        except FileNotFoundError:
            return []
        return [self.relative(folder / n) for n in names]

    # -- import (migration) ----------------------------------------------------------

    def import_environment(self, copy: EnvironmentCopy) -> None:
        """The copy made as ``create`` makes an environment, then filled in: events,
        artifacts (by their file names) and snapshots; removed again when that fails."""
        name = copy.record.name
        self.create(copy.record)
        try:
            folder = self._env_dir(name)
            lines = b"".join(
                (json.dumps(e, separators=(",", ":")) + "\n").encode("utf-8") for e in copy.events
            )
            replace_atomically(folder / EVENTS_FILE, lines)
            for kind, ref, text in copy.artifacts:
                path = folder / ARTIFACT_FOLDERS[kind] / os.path.basename(ref)
                write_new(path, text.encode("utf-8"), sync=True)
            self._import_snapshots(name, copy.snapshots)
        except BaseException:
            with contextlib.suppress(RunnerError):
                self.delete(name)
            raise

    def _import_snapshots(self, name: str, snapshots: builtins.list[Record]) -> None:
        """Keep ``snapshots`` (but the current version, which is ``state.json``) as this
        environment's versions."""
        current = self.load(name).serial
        for version in snapshots:
            if version.serial != current:
                self._keep_snapshot(name, version.serial, self._checked(version.to_json()))


class FileArtifact:
    """An artifact file being written: opened for append, 0600, each write flushed."""

    def __init__(self, path: Path, ref: str) -> None:
        self.path = path
        self.ref = ref
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(path, flags, FILE_MODE)
        self._file = os.fdopen(fd, "a", encoding="utf-8", errors="replace")

    def write(self, text: str) -> None:
        try:
            self._file.write(text)
            self._file.flush()
        except OSError as exc:
            raise StorageError(
                f"cannot write {self.ref}: {exc.strerror or exc}",
                hint="free space or fix the data directory, then run the command again",
                path=self.ref,
            ) from exc

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            raise StorageError(f"cannot write {self.ref}: {exc.strerror or exc}") from exc


def _snapshot_file(serial: int) -> str:
    return f"{serial}.json"


def _snapshot_serial(file: str) -> int | None:
    """The serial a snapshot file's name says (None for anything else, temp files too)."""
    stem, dot, ext = file.partition(".")
    if dot and ext == "json" and stem.isdigit() and stem == str(int(stem)):
        return int(stem)
    return None


def _inside(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` ("." for the folder itself), None when it lies
    elsewhere (both absolute and normalised)."""
    if path == folder:
        return "."
    prefix = folder if folder.endswith(os.sep) else folder + os.sep
    return path[len(prefix) :] if path.startswith(prefix) else None


# --- file primitives --------------------------------------------------------------------


def _write_whole(path: str, data: bytes) -> None:
    """Create ``path`` holding ``data``, replacing a file left there (a snapshot of a save
    cut short); a write that fails leaves no file."""
    try:
        write_new(path, data)
    except FileExistsError:
        os.unlink(path)
        _write_whole(path, data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def _remove_stale_temp_files(folder: Path, prefix: str = _TEMP_PREFIX) -> None:
    """Temp files of saves cut short by a crash. Only called with the lock held, when no
    save of this environment can be under way."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
    except OSError:
        pass


def _parse_lines(lines: list[bytes]) -> list[dict[str, Any]]:
    """The events in ``lines``; a torn or otherwise unreadable line is skipped."""
    events: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _tail_events(fd: int, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` events, reading the file backwards block by block."""
    end = os.fstat(fd).st_size
    newest_first: list[dict[str, Any]] = []
    partial = b""  # the start of a line whose beginning lies in an earlier block
    while end > 0 and len(newest_first) < limit:
        start = max(0, end - _EVENT_BLOCK)
        lines = (os.pread(fd, end - start, start) + partial).split(b"\n")
        end = start
        # The first line may go on in the block before, unless this block starts the file.
        partial = lines.pop(0) if start > 0 else b""
        for line in reversed(lines):
            events = _parse_lines([line])
            if events:
                newest_first.append(events[0])
                if len(newest_first) == limit:
                    break
    newest_first.reverse()
    return newest_first
