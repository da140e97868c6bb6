"""The per-environment lock: an exclusive OS lock on ``data/<env>/state.lock``.

The OS lock (``flock`` through portalocker) is what excludes other processes: it is
held on an open file description for the whole command and dies with the process, so
a crashed holder never leaves a lock behind. The file's *content* only says who holds
it (``{"pid", "host", "command", "started_at"}``), for messages and ``runner status``;
it is written once the OS lock is held and cleared before it is released. Content that
is left over (a holder killed with SIGKILL) or unreadable never blocks anybody.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.errors import EnvironmentNotFoundError, LockedError, StorageError
from runner.store.contract import LockInfo, now_iso

log = logging.getLogger("runner")

#: Outside the main thread (where SIGALRM cannot time a blocking wait), waiting for a
#: held lock polls with a sleep that starts here and doubles ...
FIRST_POLL_S = 0.001
#: ... up to this, so that a waiting process costs (almost) no CPU.
MAX_POLL_S = 0.05
#: Holder records are a few hundred bytes; anything longer is not ours.
_MAX_HOLDER_BYTES = 64 * 1024

LOCK_HINT = "wait for it to finish, or pass --lock-timeout SECONDS"


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this host (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def parse_holder(data: bytes) -> LockInfo | None:
    """The holder a lock file names, or None when it is empty or not a holder record."""
    try:
        raw = json.loads(data)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    pid, host = raw.get("pid"), raw.get("host")
    command, started_at = raw.get("command"), raw.get("started_at")
    if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(host, str):
        return None
    return LockInfo(
        pid=pid,
        host=host,
        command=command if isinstance(command, str) else "?",
        started_at=started_at if isinstance(started_at, str) else "?",
    )


def read_holder(path: Path) -> LockInfo | None:
    """Who ``path`` says holds the lock (without locking); None when it names nobody."""
    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_HOLDER_BYTES)
    except OSError:
        return None
    return parse_holder(data) if data.strip() else None


def live_holder(path: Path) -> LockInfo | None:
    """The holder named in ``path`` if it still runs; never locks, never waits.

    A holder on this host is checked with ``kill(pid, 0)``. A holder on another host
    (a shared data folder) cannot be checked from here; since a holder clears the file
    when it releases the lock, a record naming another host is taken as held.
    """
    info = read_holder(path)
    if info is None:
        return None
    if info.host != os.uname().nodename:
        return info
    return info if pid_alive(info.pid) else None


def _describe(env: str, holder: LockInfo | None) -> str:
    if holder is None:
        return (
            f"environment '{env}' is locked by another process (its state.lock does not "
            "say which yet)"
        )
    where = "" if holder.host == os.uname().nodename else f" on host {holder.host}"
    return (
        f"environment '{env}' is locked by pid {holder.pid}{where} "
        f"({holder.command}, since {holder.started_at})"
    )


def _open_lock_file(path: Path, env: str, shown: str) -> int:
    """Open (creating 0600 if missing, never truncating) the lock file for read/write."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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


def _try_lock(fd: int, shown: str) -> bool:
    """One non-blocking attempt at the exclusive OS lock."""
    import portalocker  # imported here: read-only commands never need it

    try:
        portalocker.lock(fd, portalocker.LOCK_EX | portalocker.LOCK_NB)
    except portalocker.AlreadyLocked:
        return False
    except portalocker.LockException as exc:
        cause = exc.__cause__
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc)
        raise StorageError(
            f"cannot lock {shown}: {reason}",
            hint="the data directory must be on a file system that supports file locks",
            path=shown,
        ) from exc
    return True


class _WaitOver(Exception):
    """SIGALRM: the blocking wait for the lock reached its timeout."""


def _can_block() -> bool:
    """A blocking wait needs SIGALRM for its timeout: the main thread, no timer running."""
    import signal
    import threading

    return (
        threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)
    )


def _wait_blocking(fd: int, seconds: float, shown: str) -> bool:
    """Wait in the kernel for the lock for up to ``seconds``: the kernel wakes waiters the
    moment it is released (no idle lock between holders, no CPU spent). True if taken."""
    import signal

    import portalocker

    def expired(signum: int, frame: object) -> None:
        raise _WaitOver

    deadline = time.monotonic() + seconds
    previous = signal.signal(signal.SIGALRM, expired)
    try:
        while True:
            # in slices of at most an hour: a timer cannot be set for ever (`inf`)
            remaining = deadline - time.monotonic()
            try:
                signal.setitimer(signal.ITIMER_REAL, max(0.001, min(remaining, 3600.0)))
                try:
                    portalocker.lock(fd, portalocker.LOCK_EX)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                return True
            except _WaitOver:
                # the timer may fire just as the lock is granted: one last try says which
                if _try_lock(fd, shown):
                    return True
                if time.monotonic() >= deadline:
                    return False
    except portalocker.LockException as exc:
        raise StorageError(f"cannot lock {shown}: {exc}", path=shown) from exc
    finally:
        signal.signal(signal.SIGALRM, previous)


def _acquire(fd: int, env: str, path: Path, shown: str, timeout_s: float) -> None:
    deadline = time.monotonic() + max(0.0, timeout_s)
    delay = FIRST_POLL_S
    while not _try_lock(fd, shown):
        remaining = deadline - time.monotonic()
        if remaining > 0 and _can_block():
            if _wait_blocking(fd, remaining, shown):
                return
            remaining = 0
        if remaining <= 0:
            holder = read_holder(path)
            raise LockedError(
                _describe(env, holder),
                hint=LOCK_HINT,
                environment=env,
                pid=holder.pid if holder else None,
                host=holder.host if holder else None,
                command=holder.command if holder else None,
                since=holder.started_at if holder else None,
            )
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_POLL_S)


def _take_over(fd: int, env: str, shown: str, me: LockInfo) -> None:
    """With the OS lock held: warn about a holder that never released, then say it is us."""
    previous = os.pread(fd, _MAX_HOLDER_BYTES, 0)
    if previous.strip():
        old = parse_holder(previous)
        if old is None:
            log.warning(
                "environment '%s': %s held an unreadable holder record (a holder ended "
                "while writing it?); taking over",
                env,
                shown,
            )
        elif (old.pid, old.host) != (me.pid, me.host):
            where = "" if old.host == me.host else f" on host {old.host}"
            log.warning(
                "environment '%s': previous holder pid %d%s (%s) ended without releasing; "
                "taking over",
                env,
                old.pid,
                where,
                old.command,
            )
    # Write, then cut to length: a reader never sees an empty file while we hold it
    # (the file is empty before, unless a holder died, and then any content is stale).
    data = json.dumps(me.to_json()).encode() + b"\n"
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


@contextmanager
def hold(path: Path, env: str, command: str, timeout_s: float, shown: str) -> Iterator[LockInfo]:
    """Hold the exclusive lock on ``path`` for the ``with`` block.

    Waits up to ``timeout_s`` seconds (0 = one try), then raises LockedError naming the
    holder. ``shown`` is the lock file's path as messages print it.
    """
    fd = _open_lock_file(path, env, shown)
    try:
        _acquire(fd, env, path, shown, timeout_s)
        try:
            me = LockInfo(os.getpid(), os.uname().nodename, command, now_iso())
            try:
                _take_over(fd, env, shown, me)
            except OSError as exc:
                raise StorageError(
                    f"cannot write the lock file {shown}: {exc.strerror or exc}",
                    hint="make the data directory writable for this user (and check free "
                    "space), then run the command again",
                    environment=env,
                    path=shown,
                ) from exc
            yield me
        finally:
            try:
                os.ftruncate(fd, 0)
            except OSError as exc:
                log.debug("environment '%s': cannot clear %s: %s", env, shown, exc)
            # Closing the descriptor releases the OS lock too; unlock explicitly first.
            import portalocker

            try:
                portalocker.unlock(fd)
            except portalocker.LockException as exc:
                log.debug("environment '%s': unlock of %s failed: %s", env, shown, exc)
    finally:
        os.close(fd)
