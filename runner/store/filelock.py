"""The file store's environment lock: an exclusive OS lock on ``data/<env>/state.lock``.

The OS lock (``flock``: :mod:`fcntl` on POSIX, portalocker elsewhere) is what excludes
other processes: it is
held on an open file description for the whole command and dies with the process, so
a crashed holder never leaves a lock behind. The file's *content* only says who holds
it (``{"pid", "host", "command", "started_at", "processes"}``), for messages and
``runner status``; it is written once the OS lock is held, updated with the process
groups the holder's steps run (each ``{"group", "boot_id", "leader_start"}``: see
:class:`~runner.store.contract.ProcessGroup`; an older runner wrote plain numbers), and
cleared before it is released. Content that is left
over (a holder killed with SIGKILL) never blocks anybody: whether the lock is held is
decided by the OS lock itself (:func:`is_locked`), never by the pid it names; the next
holder finds that content and the process groups it names (see
:attr:`HeldLock.previous`).
"""

from __future__ import annotations

import json
import os
import time

from runner import signals, struct
from runner.errors import EnvironmentNotFoundError, StorageError
from runner.log import logger
from runner.store.contract import LockInfo, ProcessGroup

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

#: Outside the main thread (where SIGALRM cannot time a blocking wait), waiting for a
#: held lock polls with a sleep that starts here and doubles ...
FIRST_POLL_S = 0.001
#: ... up to this, so that a waiting process costs (almost) no CPU.
MAX_POLL_S = 0.05
#: Holder records are a few hundred bytes; anything longer is not ours.
_MAX_HOLDER_BYTES = 64 * 1024


def parse_holder(data: bytes) -> LockInfo | None:
    """The holder a lock file names, or None when it is empty or not a holder record."""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    pid, host = raw.get("pid"), raw.get("host")
    command, started_at = raw.get("command"), raw.get("started_at")
    if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(host, str):
        return None
    groups = raw.get("processes")
    return LockInfo(
        pid=pid,
        host=host,
        command=command if isinstance(command, str) else "?",
        started_at=started_at if isinstance(started_at, str) else "?",
        processes=tuple(
            group
            for group in map(ProcessGroup.from_json, groups if isinstance(groups, list) else ())
            if group is not None
        ),
    )


def read_holder(path: str | Path) -> LockInfo | None:
    """Who ``path`` says holds the lock (without locking); None when it names nobody."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as file:
            data = file.read(_MAX_HOLDER_BYTES)
    except OSError:
        return None
    return parse_holder(data) if data.strip() else None


def is_locked(path: str | Path) -> bool:
    """Whether some process holds the OS lock on ``path``, decided by the lock itself
    (never by the pid its file names): one non-blocking *shared* attempt on a read-only
    descriptor, released at once. It cannot take the lock from anybody; a command trying
    to take it in the same microseconds waits for it like for any holder."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases the shared lock if it was taken
    return False


def live_holder(path: str | Path) -> LockInfo | None:
    """Who holds the lock on ``path`` now, or None; never locks, never waits. A held
    lock whose file does not (yet) name its holder gives a record of pid 0."""
    if not is_locked(path):
        return None
    return read_holder(path) or LockInfo.unknown()


def stale_holder(path: str | Path) -> LockInfo | None:
    """The record a holder that died without releasing left in ``path`` (None when
    the lock is held, or the file names nobody)."""
    if is_locked(path):
        return None
    return read_holder(path)


def _open_lock_file(path: Path, env: str, shown: str) -> int:
    """Open (creating 0600 if missing, never truncating) the lock file for read/write."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileNotFoundError as exc:
        raise EnvironmentNotFoundError(
            f"no environment '{env}'",
            hint="see `runner list`, or create it with `runner create`",
            environment=env,
        ) from exc
    except OSError as exc:
        raise StorageError(
            f"cannot open the lock file {shown}: {exc.strerror or exc}",
            hint="make the data directory writable for this user (and check free space), "
            "then run the command again",
            environment=env,
            path=shown,
        ) from exc


class _LockFailed(Exception):
    """The OS refused a lock for another reason than another holder (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _flock(fd: int, *, block: bool) -> bool:
    """Take the exclusive OS lock on ``fd``: False when another holds it (``block``
    false), :class:`_LockFailed` when the OS refuses it. On POSIX this is
    :func:`fcntl.flock` itself (the lock :func:`is_locked` asks about; portalocker is
    that call wrapped, and importing it costs a command more than its lock); elsewhere
    portalocker's lock."""
    if os.name == "posix":
        import errno
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if not block and exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise _LockFailed(exc.strerror or str(exc)) from exc
        return True
    import portalocker

    try:
        portalocker.lock(
            fd, portalocker.LOCK_EX if block else portalocker.LOCK_EX | portalocker.LOCK_NB
        )
    except portalocker.AlreadyLocked:
        return False
    except portalocker.LockException as exc:
        cause = exc.__cause__
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc)
        raise _LockFailed(reason) from exc
    return True


def _unlock(fd: int) -> None:
    """Release the OS lock on ``fd`` (:class:`_LockFailed` when the OS refuses)."""
    if os.name == "posix":
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise _LockFailed(exc.strerror or str(exc)) from exc
        return
    import portalocker

    try:
        portalocker.unlock(fd)
    except portalocker.LockException as exc:
        raise _LockFailed(str(exc)) from exc


def _try_lock(fd: int, shown: str) -> bool:
    """One non-blocking attempt at the exclusive OS lock."""
    try:
        return _flock(fd, block=False)
    except _LockFailed as exc:
        raise StorageError(
            f"cannot lock {shown}: {exc.reason}",
            hint="the data directory must be on a file system that supports file locks",
            path=shown,
        ) from exc


def _wait_blocking(fd: int, seconds: float, shown: str) -> bool | None:
    """Wait in the kernel for the lock for up to ``seconds``: the kernel wakes waiters the
    moment it is released (no idle lock between holders, no CPU spent). True if taken,
    False when the time ran out, None when the process's timer is not to be had (not the
    main thread, or a step's deadline holds it): then the caller polls."""
    deadline = time.monotonic() + seconds
    while True:
        # in slices of at most an hour: a timer cannot be set for ever (`inf`)
        remaining = deadline - time.monotonic()
        try:
            with signals.timer(min(remaining, 3600.0)) as armed:
                if not armed:
                    return None
                _flock(fd, block=True)
            return True
        except signals.TimerExpired:
            # the timer may fire just as the lock is granted: one last try says which
            if _try_lock(fd, shown):
                return True
            if time.monotonic() >= deadline:
                return False
        except _LockFailed as exc:
            raise StorageError(f"cannot lock {shown}: {exc.reason}", path=shown) from exc


def _wait(fd: int, shown: str, seconds: float) -> bool:
    """Wait up to ``seconds`` for the lock on ``fd``: in the kernel where the timer can be
    had, else polling with a sleep that doubles from FIRST_POLL_S to MAX_POLL_S."""
    if _try_lock(fd, shown):
        return True
    if seconds <= 0:
        return False
    taken = _wait_blocking(fd, seconds, shown)
    if taken is not None:
        return taken
    deadline = time.monotonic() + seconds
    delay = FIRST_POLL_S
    while not _try_lock(fd, shown):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_POLL_S)
    return True


def _take_over(fd: int, env: str, shown: str, me: LockInfo) -> LockInfo | None:
    """With the OS lock held: warn about a holder that never released, then say it is
    us. Returns that holder's record (None when the lock was cleanly released)."""
    previous = os.pread(fd, _MAX_HOLDER_BYTES, 0)
    old: LockInfo | None = None
    if previous.strip():
        old = parse_holder(previous)
        if old is None:
            logger().warning(
                "environment '%s': %s held an unreadable holder record (a holder ended "
                "while writing it?); taking over",
                env,
                shown,
            )
        elif (old.pid, old.host) != (me.pid, me.host):
            where = "" if old.host == me.host else f" on host {old.host}"
            logger().warning(
                "environment '%s': previous holder pid %d%s (%s) ended without releasing; "
                "taking over",
                env,
                old.pid,
                where,
                old.command,
            )
    _write_holder(fd, me)
    return old


def _write_holder(fd: int, me: LockInfo) -> None:
    # Write, then cut to length: a reader never sees an empty file while we hold it
    # (the file is empty before, unless a holder died, and then any content is stale).
    data = json.dumps(me.to_json()).encode() + b"\n"
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


class HeldLock:
    """The OS lock on one lock file, held through an open descriptor."""

    def __init__(self, fd: int, env: str, shown: str, me: LockInfo) -> None:
        self._fd: int | None = fd
        self._env = env
        self._shown = shown
        self.holder = me
        self.previous: LockInfo | None = None

    def note_processes(self, groups: tuple[int, ...]) -> None:
        if self._fd is None:
            return
        self.holder = struct.replace(self.holder, processes=groups)
        try:
            _write_holder(self._fd, self.holder)
        except OSError as exc:  # the record is a courtesy to the next holder
            logger().debug("environment '%s': cannot update %s: %s", self._env, self._shown, exc)

    def release(self) -> None:
        """Clear the holder record and release the lock (closing the descriptor)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError as exc:
            logger().debug("environment '%s': cannot clear %s: %s", self._env, self._shown, exc)
        try:
            _unlock(fd)
        except _LockFailed as exc:
            logger().debug("environment '%s': unlock of %s failed: %s", self._env, self._shown, exc)
        finally:
            os.close(fd)


def acquire(path: Path, env: str, shown: str, me: LockInfo, seconds: float) -> HeldLock | None:
    """The lock on ``path`` within ``seconds`` (0: one try), with ``me`` written into it
    as the holder; None when another process kept it. ``shown`` is the lock file's path
    as messages print it."""
    fd = _open_lock_file(path, env, shown)
    try:
        if not _wait(fd, shown, seconds):
            os.close(fd)
            return None
        held = HeldLock(fd, env, shown, me)
    except BaseException:
        os.close(fd)
        raise
    try:
        held.previous = _take_over(fd, env, shown, me)
    except OSError as exc:
        held.release()
        raise StorageError(
            f"cannot write the lock file {shown}: {exc.strerror or exc}",
            hint="make the data directory writable for this user (and check free "
            "space), then run the command again",
            remedy="make the data directory writable for this user (and check free space)",
            environment=env,
            path=shown,
        ) from exc
    except BaseException:
        held.release()
        raise
    return held
