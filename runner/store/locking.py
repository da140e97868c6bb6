"""The waiting policy of the environment lock, above every backend.

A backend offers one attempt and one bounded wait (:class:`~runner.store.contract.Locks`);
:func:`hold` decides the rest for every command that changes an environment: try once,
say once who holds the lock and that we wait, wait up to the command's
``--lock-timeout``, and fail with the holder named (exit 3).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from runner.errors import LockedError
from runner.store.contract import LockInfo
from runner.store.record import now_iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.store.contract import Lease, Locks

__all__ = ["LOCK_HINT", "describe_holder", "hold"]

LOCK_HINT = "wait for it to finish, or pass --lock-timeout SECONDS"
#: The hint of a command that never waits for the lock (force-state, restore, purge).
NO_WAIT_HINT = "wait for it to finish, then run the command again (it never waits for the lock)"


def who(holder: LockInfo | None) -> str:
    """``pid 42 (runner advance, since ...)`` (with the host when it is another), or
    what to say of a holder that does not say who it is."""
    if holder is None or not holder.known:
        return "another process (its lock does not say which yet)"
    where = "" if holder.host == os.uname().nodename else f" on host {holder.host}"
    return f"pid {holder.pid}{where} ({holder.command}, since {holder.started_at})"


def describe_holder(env: str, holder: LockInfo | None) -> str:
    """``environment 'demo' is locked by pid 42 (runner advance, since ...)``."""
    return f"environment '{env}' is locked by {who(holder)}"


@contextmanager
def hold(
    locks: Locks,
    name: str,
    command: str,
    timeout_s: float,
    *,
    on_wait: Callable[[LockInfo | None], None] | None = None,
    never_waits: bool = False,
) -> Iterator[Lease]:
    """Hold ``name``'s lock for the ``with`` block, as ``command``; yields the lease.

    Waits up to ``timeout_s`` seconds (0 = one try; ``inf`` = for ever); ``on_wait`` is
    told the holder once, when a wait starts. Raises LockedError naming the holder when
    the time runs out (``never_waits``: a command whose lock timeout cannot be set, so
    the hint does not offer one).
    """
    me = LockInfo(os.getpid(), os.uname().nodename, command, now_iso())
    lease = locks.try_lock(name, me)
    if lease is None and timeout_s > 0:
        if on_wait is not None:
            on_wait(locks.lock_holder(name))
        lease = locks.wait_lock(name, me, timeout_s)
    if lease is None:
        holder = locks.lock_holder(name)
        if holder is not None and not holder.known:
            holder = None  # held, but the lock does not say by whom
        raise LockedError(
            describe_holder(name, holder),
            hint=NO_WAIT_HINT if never_waits else LOCK_HINT,
            environment=name,
            pid=holder.pid if holder else None,
            host=holder.host if holder else None,
            command=holder.command if holder else None,
            since=holder.started_at if holder else None,
        )
    try:
        yield lease
    finally:
        lease.release()
