"""The JSON file store: the first :class:`~runner.store.contract.Repository` backend.

One folder per environment under the data directory (``workdir/data`` unless told)::

    data/<env>/state.json     the record, format 1, replaced atomically on every save
    data/<env>/state.lock     the lock (runner.store.filelock) and who holds it
    data/<env>/events.jsonl   append-only history, one JSON object a line
    data/<env>/traces/        trace files of failed or interrupted runs
    data/<env>/runs/          run logs

Files are 0600 and folders 0700. A state file this runner cannot read (not JSON,
truncated, a schema violation, a newer format) raises StateFileError and is never
rewritten. Folders whose names start with a dot are work in progress of ``create`` and
``delete`` and are never environments.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

from runner.errors import (
    ConflictError,
    EnvironmentExistsError,
    EnvironmentNotFoundError,
    InvalidNameError,
    StateFileError,
    StorageError,
)
from runner.store import filelock as locking
from runner.store.contract import (
    STATE_FORMAT,
    ListEntry,
    LockInfo,
    Repository,
    check_name,
    now_iso,
)

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
EVENTS_FILE = "events.jsonl"
ENV_FOLDERS = ("traces", "runs")

FILE_MODE = 0o600
DIR_MODE = 0o700

#: Temp files of state.json saves: ``.state.json.<pid>.<random>.tmp`` beside it.
_TEMP_PREFIX = f".{STATE_FILE}."
#: Dot-folders of a ``create`` or ``delete`` cut short are removed after this long.
_LEFTOVER_AGE_S = 3600.0
#: Under the data folder: half-made and half-deleted environment folders.
STAGING_DIR = ".staging"
#: ``read_events(limit=...)`` reads the log backwards in blocks of this size.
_EVENT_BLOCK = 64 * 1024

#: Events, oldest first (an alias: inside FileStore, ``list`` names the method).
Events: TypeAlias = list[dict[str, Any]]


# --- the record format ----------------------------------------------------------------


@cache
def _schema() -> dict[str, Any]:
    from runner.resources import schema_path

    schema: dict[str, Any] = json.loads(schema_path("state").read_text(encoding="utf-8"))
    return schema


@cache
def _schema_check() -> Any:
    # runner.minischema checks the same schema file as jsonschema would, without its
    # ~80 ms import: status, list and history must start fast
    from runner.minischema import compile_schema

    return compile_schema(_schema())


def _format_problem(data: object) -> str | None:
    """What is wrong with the record's ``format``, if anything (checked before the schema,
    so that a newer file is reported as newer, not as a pile of schema errors)."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not an object"
    if "format" not in data:
        return "has no 'format' field"
    fmt = data["format"]
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > STATE_FORMAT:
        return f"has format {fmt}: it was written by a newer runner; upgrade runner"
    if fmt != STATE_FORMAT or isinstance(fmt, bool):
        return f"has an unknown format {json.dumps(fmt)} (this runner reads format {STATE_FORMAT})"
    return None


def record_problem(data: object) -> str | None:
    """What makes ``data`` an invalid ``state.json`` record, or None if it is valid.

    The answer is one line that reads after "the file" (``"has format 2: ..."``).

    The single place records are validated, on read and before every write; today it
    is ``schemas/state.schema.json`` through :mod:`runner.minischema` (tests check it
    agrees with jsonschema).
    """
    problem = _format_problem(data)
    if problem:
        return problem
    error = _schema_check()(data, "")
    if error is None:
        return None
    return f"does not match the state file format: {error}"


def light_problem(data: object) -> str | None:
    """A cheap check for listings: format and required keys, not the whole schema.

    ``list()`` reads every environment; running jsonschema on 10,000 records would cost
    seconds. ``load()`` still validates fully before an environment is used.
    """
    problem = _format_problem(data)
    if problem:
        return problem
    assert isinstance(data, dict)
    missing = [key for key in _schema()["required"] if key not in data]
    if missing:
        return f"misses {', '.join(repr(k) for k in missing)}"
    if not isinstance(data["state"], str) or not isinstance(data["serial"], int):
        return "has a 'state' or 'serial' of the wrong type"
    return None


def _serialize(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=False) + "\n").encode("utf-8")


# --- the store --------------------------------------------------------------------------


class FileStore(Repository):
    """Environments as JSON files under ``data_dir`` (default ``workdir / "data"``)."""

    def __init__(self, workdir: Path, data_dir: Path | None = None) -> None:
        self.workdir = Path(os.path.abspath(workdir))
        self.data_dir = Path(
            os.path.abspath(self.workdir / ("data" if data_dir is None else data_dir))
        )
        # The bytes of each state.json this store last read or wrote: when the file on
        # disk still holds exactly these bytes, its serial is known without parsing it.
        self._known: dict[str, tuple[bytes, int]] = {}

    # -- paths -----------------------------------------------------------------------

    def _env_dir(self, name: str) -> Path:
        return self.data_dir / check_name(name)

    def artifacts_dir(self, name: str) -> Path:
        return self._env_dir(name)

    def relative(self, path: Path) -> str:
        absolute = os.path.normpath(os.path.join(self.workdir, path))
        try:
            return Path(absolute).relative_to(self.workdir).as_posix()
        except ValueError:
            pass
        try:  # the same place through symbolic links (e.g. a linked temp folder)
            return Path(absolute).resolve().relative_to(self.workdir.resolve()).as_posix()
        except (ValueError, OSError):
            return absolute

    # -- reading ---------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        return (self._env_dir(name) / STATE_FILE).is_file()

    def _read_state(self, name: str) -> bytes:
        path = self._env_dir(name) / STATE_FILE
        try:
            with open(path, "rb") as file:
                return file.read()
        except FileNotFoundError:
            if path.parent.is_dir():
                self._state_error(
                    name,
                    "is missing (the environment's folder exists without it)",
                    hint=f"restore {self.relative(path)} from a backup; the runner never "
                    "recreates it on its own",
                )
            raise EnvironmentNotFoundError(
                f"no environment '{name}'",
                hint="see the environments with `runner list`, or make this one with "
                f"`runner create {name}`",
                environment=name,
            ) from None
        except OSError as exc:
            self._state_error(
                name,
                f"cannot be read: {exc.strerror or exc}",
                hint="make it readable for this user",
            )

    def _state_error(self, name: str, problem: str, *, hint: str | None = None) -> NoReturn:
        shown = self.relative(self.data_dir / name / STATE_FILE)
        raise StateFileError(
            f"{shown} {problem}",
            hint=hint
            or f"restore {shown} from a backup or repair it by hand; the runner never "
            "rewrites a state file it cannot read",
            environment=name,
            path=shown,
        )

    def _parse(self, name: str, data: bytes) -> Any:
        if not data.strip():
            self._state_error(name, "is empty (a write was cut short?)")
        try:
            return json.loads(data)
        except UnicodeDecodeError:
            self._state_error(name, "is not UTF-8 text")
        except json.JSONDecodeError as exc:
            cut = data.lstrip().startswith(b"{") and not data.rstrip().endswith(b"}")
            self._state_error(
                name,
                f"is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
                + ("; it looks truncated" if cut else ""),
            )

    def _validated(self, name: str, data: bytes) -> dict[str, Any]:
        """The record in ``data`` (the bytes of ``name``'s state.json), fully checked."""
        record: dict[str, Any] = self._parse(name, data)
        problem = record_problem(record)
        if problem is None and record["name"] != name:
            problem = f"names environment '{record['name']}' but lies in the folder of '{name}'"
        if problem:
            hint = None
            if "newer runner" in problem:
                hint = "install a runner that reads this format; this one will not touch it"
            self._state_error(name, problem, hint=hint)
        self._known[name] = (data, record["serial"])
        return record

    def load(self, name: str) -> dict[str, Any]:
        return self._validated(name, self._read_state(name))

    def list(self) -> list[ListEntry]:
        try:
            with os.scandir(self.data_dir) as scan:
                folders = sorted(
                    (entry.name, entry.path)
                    for entry in scan
                    if not entry.name.startswith(".") and entry.is_dir()
                )
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(
                f"cannot read the data directory {self.relative(self.data_dir)}: "
                f"{exc.strerror or exc}",
                hint="make it readable for this user",
            ) from exc
        result: list[ListEntry] = []
        for name, folder in folders:
            try:
                check_name(name)
            except InvalidNameError:  # a folder that is no environment (e.g. lost+found)
                continue
            try:
                try:  # plain os calls: with 10,000 environments pathlib costs a third
                    with open(os.path.join(folder, STATE_FILE), "rb") as file:
                        data = file.read()
                except OSError:
                    data = self._read_state(name)  # raises the error that says why
                record = self._parse(name, data)
                problem = light_problem(record)  # not the full schema: see light_problem
                if problem is None and record["name"] != name:
                    problem = f"names environment '{record['name']}'"
                if problem:
                    self._state_error(name, problem)
            except (StateFileError, EnvironmentNotFoundError) as exc:
                result.append(ListEntry(name=name, error=exc.message))
                continue
            result.append(ListEntry(name=name, record=record))
        return result

    # -- writing ---------------------------------------------------------------------

    def _persistence_error(self, action: str, path: Path, exc: OSError, **fields: Any) -> NoReturn:
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
            path=self.relative(path),
            **fields,
        ) from exc

    def _checked(self, record: dict[str, Any]) -> None:
        check_name(record.get("name", ""))
        problem = record_problem(record)
        if problem:
            name = record["name"]
            raise StorageError(
                f"refusing to store an invalid record for environment '{name}': it {problem}",
                hint="this is a bug in runner or a step plugin; the stored state is unchanged",
                environment=name,
            )

    def _ensure_data_dir(self) -> None:
        if self.data_dir.is_dir():
            return
        try:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(self.data_dir, DIR_MODE)
            os.chmod(self.data_dir, DIR_MODE)  # whatever the umask
        except FileExistsError:
            pass
        except OSError as exc:
            self._persistence_error("create the data directory", self.data_dir, exc)

    @property
    def _staging_dir(self) -> Path:
        """``data/.staging``: where a create builds a folder and a delete moves one before
        removing it, so that only this folder is swept (never the whole data folder)."""
        return self.data_dir / STAGING_DIR

    def _ensure_staging_dir(self) -> Path:
        self._ensure_data_dir()
        staging = self._staging_dir
        try:
            os.mkdir(staging, DIR_MODE)
            os.chmod(staging, DIR_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            self._persistence_error("create the staging folder", staging, exc)
        return staging

    def _sweep_leftovers(self) -> None:
        """Remove what a crashed ``create`` or ``delete`` left in ``data/.staging`` (older
        than an hour, so that one still running is never touched)."""
        horizon = time.time() - _LEFTOVER_AGE_S
        try:
            with os.scandir(self._staging_dir) as entries:
                for entry in entries:
                    if entry.stat(follow_symlinks=False).st_mtime < horizon:
                        shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            pass

    def create(self, record: dict[str, Any]) -> dict[str, Any]:
        self._checked(record)
        name = record["name"]
        target = self._env_dir(name)
        if target.exists():
            self._exists_error(name)
        staging = self._ensure_staging_dir() / f"create-{name}-{os.urandom(6).hex()}"
        data = _serialize(record)
        try:
            try:
                for folder in (staging, *(staging / sub for sub in ENV_FOLDERS)):
                    os.mkdir(folder, DIR_MODE)
                    os.chmod(folder, DIR_MODE)  # whatever the umask
                _write_new(staging / EVENTS_FILE, b"")
                _write_new(staging / LOCK_FILE, b"")
                _write_new(staging / STATE_FILE, data, sync=True)
                _fsync_dir(staging)
            except OSError as exc:
                self._persistence_error(
                    "create environment folder in", self.data_dir, exc, environment=name
                )
            try:
                # Atomic create-if-absent: a folder that exists with content (a racing
                # create's) is never replaced; rename fails with ENOTEMPTY/EEXIST.
                os.rename(staging, target)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                    self._exists_error(name)
                self._persistence_error("create", target, exc, environment=name)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        try:
            _fsync_dir(self.data_dir)
        except OSError as exc:
            self._persistence_error("sync", self.data_dir, exc, environment=name)
        self._known[name] = (data, record["serial"])
        self._sweep_leftovers()
        return dict(record)

    def _exists_error(self, name: str) -> NoReturn:
        try:
            state = f"state: {self.load(name)['state']}"
        except (StateFileError, EnvironmentNotFoundError) as exc:
            state = f"unreadable: {exc.message}"
        raise EnvironmentExistsError(
            f"environment '{name}' already exists ({state})",
            hint=f"choose another name, or see it with `runner status {name}`",
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
        serial: int = self._validated(name, data)["serial"]
        return serial

    def save(self, record: dict[str, Any], expected_serial: int) -> dict[str, Any]:
        name = check_name(record.get("name", ""))
        new = dict(record)
        new["serial"] = expected_serial + 1
        new["updated_at"] = now_iso()
        self._checked(new)
        stored = self._stored_serial(name)
        if stored != expected_serial:
            shown = self.relative(self.data_dir / name / STATE_FILE)
            raise ConflictError(
                f"{shown} changed under this command: it holds serial {stored}, expected "
                f"{expected_serial}; nothing was written",
                hint=f"another program changed the environment; see `runner status {name}` "
                "and run the command again",
                environment=name,
                path=shown,
            )
        data = _serialize(new)
        folder = self._env_dir(name)
        try:
            _replace_atomically(folder / STATE_FILE, data)
        except OSError as exc:
            self._persistence_error("write", folder / STATE_FILE, exc, environment=name)
        self._known[name] = (data, new["serial"])
        return new

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
            _fsync_dir(self.data_dir)
        except OSError as exc:
            self._persistence_error("delete", folder, exc, environment=name)
        self._known.pop(name, None)
        shutil.rmtree(trash, ignore_errors=True)

    # -- lock ------------------------------------------------------------------------

    @contextmanager
    def lock(self, name: str, command: str, timeout_s: float) -> Iterator[LockInfo]:
        folder = self._env_dir(name)
        if not (folder / STATE_FILE).is_file():
            self._read_state(name)  # raises EnvironmentNotFoundError or StateFileError
        path = folder / LOCK_FILE
        with locking.hold(path, name, command, timeout_s, self.relative(path)) as info:
            _remove_stale_temp_files(folder)
            yield info

    def lock_holder(self, name: str) -> LockInfo | None:
        return locking.live_holder(self._env_dir(name) / LOCK_FILE)

    # -- events ----------------------------------------------------------------------

    def append_event(self, name: str, event: dict[str, Any]) -> None:
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode("utf-8")
        path = self._env_dir(name) / EVENTS_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except FileNotFoundError:
            self._read_state(name)  # says which: no environment, or a broken folder
            raise
        except OSError as exc:
            self._persistence_error("append to", path, exc, environment=name)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a torn last line (a crash): start on a line of our own
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            self._persistence_error("append to", path, exc, environment=name)
        finally:
            os.close(fd)

    def read_events(self, name: str, limit: int | None = None) -> Events:
        folder = self._env_dir(name)
        if not folder.is_dir():
            self._read_state(name)  # raises EnvironmentNotFoundError
        path = folder / EVENTS_FILE
        try:
            with open(path, "rb") as file:
                if limit is None:
                    return _parse_lines(file.read().split(b"\n"))
                if limit <= 0:
                    return []
                return _tail_events(file.fileno(), limit)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateFileError(
                f"cannot read {self.relative(path)}: {exc.strerror or exc}",
                hint="make it readable for this user",
                environment=name,
                path=self.relative(path),
            ) from exc


# --- file primitives --------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_new(path: Path, data: bytes, *, sync: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask
        _write_all(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _replace_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a unique temp file beside ``path``, fsync it, rename it over
    ``path`` and fsync the folder: a crash leaves the old file or the new, never a mix."""
    temp = path.with_name(f"{_TEMP_PREFIX}{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        _write_new(temp, data, sync=True)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)


def _remove_stale_temp_files(folder: Path) -> None:
    """Temp files of saves cut short by a crash. Only called with the lock held, when no
    save of this environment can be under way."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(_TEMP_PREFIX) and entry.name.endswith(".tmp"):
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
        except ValueError:
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
