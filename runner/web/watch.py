"""The watcher: one background task that notices every change of every environment.

It asks the store (any backend, through its protocols: the listing and the lock) for
every record and lock holder, about every 200 ms (longer when a pass takes longer, so
that watching never takes more than a third of a core), and hands the rows that
changed to every subscriber (the server-sent event streams). The environments page is
rendered from its latest rows, each drawn once when it changes.

A backend with the optional ``Versions`` capability (the file backend) says cheaply
which records changed: only those are read again. With more than :data:`HOLDERS`
environments, each pass asks about the locks of the changed and held environments and
of the next :data:`HOLDERS` others in turn, so a command that holds a lock without
saving shows within a few passes; one that saves shows at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.errors import RunnerError
from runner.log import logger
from runner.result import as_json

if TYPE_CHECKING:
    from runner.api.runner import Runner
    from runner.store.contract import ListEntry, LockInfo, Store

__all__ = ["Change", "Watcher", "holder_text", "row_of"]

log = logger("runner.web")

#: The shortest pause between two passes, in seconds.
INTERVAL = 0.2
#: Up to this many environments every lock is asked about in every pass; beyond, the
#: locks of this many (besides the changed and the held ones) per pass, in turn.
HOLDERS = 1000
#: How long the passes use one Runner, in seconds.
RENEW = 10.0
#: The longest pause between two failed passes, in seconds (the pause doubles from
#: the interval after each failure, up to this).
BACKOFF = 5.0


def holder_text(holder: LockInfo | None) -> str | None:
    """Who holds a lock, in a few words (None: nobody)."""
    if holder is None:
        return None
    if not holder.known:
        return "another process"
    return f"{holder.command} (pid {holder.pid} on {holder.host})"


def _last_check(record: Any) -> dict[str, Any] | None:
    """The last check a record carries (as a JSON object), if any."""
    value = record.last_check
    return None if value is None else as_json(value)


def row_of(
    entry: ListEntry, kind_of: Callable[[str, str], str | None], holder: Any
) -> dict[str, Any]:
    """One row of the environments page (and of its live updates), as JSON data."""
    record = entry.record
    if record is None:
        return {"environment": entry.name, "error": entry.error or "unreadable"}
    failure = record.failure
    return {
        "environment": record.name,
        "state": record.state,
        "kind": kind_of(record.machine.name, record.state),
        "serial": record.serial,
        "updated_at": record.updated_at,
        "failed_step": failure.step if failure else None,
        "failure_kind": failure.kind if failure else None,
        "locked_by": holder_text(holder),
        "last_check": _last_check(record),
        "phase": record.run.phase if record.run and not record.run.finished_at else None,
    }


@dataclass(frozen=True)
class Change:
    """What one pass found changed: rows new or different, names gone."""

    rows: tuple[dict[str, Any], ...]
    removed: tuple[str, ...] = ()
    at: float = field(default_factory=time.time)
    #: Whether this change is that the watcher's problem (:attr:`Watcher.error`) came
    #: or went (then with no rows).
    problem: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"rows": list(self.rows), "removed": list(self.removed)}


class Watcher:
    """The latest row of every environment, and the subscribers told of changes."""

    def __init__(
        self,
        make_runner: Callable[[], Runner],
        interval: float = INTERVAL,
        render: Callable[[dict[str, Any]], str] | None = None,
        holders: int = HOLDERS,
    ) -> None:
        self.make_runner = make_runner
        self.interval = interval
        self.rows: dict[str, dict[str, Any]] = {}
        #: Each row drawn by ``render`` (the page's markup of a row), redrawn when it
        #: changes, so that a page of 10,000 rows is a join.
        self.drawn: dict[str, str] = {}
        self.render = render
        self._known: dict[str, tuple[object, ListEntry]] = {}
        self._made: dict[str, tuple[ListEntry, LockInfo | None, dict[str, Any]]] = {}
        self._turn = 0
        self._made_runner: tuple[Runner, float] | None = None
        self.holders = holders
        self.error: str | None = None
        self.passes = 0
        self.pass_seconds = 0.0
        self._subscribers: set[asyncio.Queue[Change | None]] = set()
        #: Set by :meth:`close` (the server stops): every subscription has ended.
        self.closed = False
        self._first = asyncio.Event()
        #: The last changes with the number of passes done once each was found: a page
        #: drawn after pass N asks for the changes after it when it subscribes, so a
        #: change found between its drawing and its subscription is never missed.
        self._recent: collections.deque[tuple[int, Change]] = collections.deque(maxlen=64)

    # -- one pass -------------------------------------------------------------------

    def scan(self) -> dict[str, dict[str, Any]]:
        """Every environment's row, read now (blocking: run in a thread)."""
        runner = self._runner()
        store = runner.store
        kinds: dict[tuple[str, str], str | None] = {}
        machine = None
        with contextlib.suppress(RunnerError):
            machine = runner.machine(plugins=False)

        def kind_of(machine_name: str, state: str) -> str | None:
            if (machine_name, state) not in kinds:
                known = machine is not None and machine.name == machine_name
                kinds[machine_name, state] = (
                    machine.state_kind(state)
                    if known and machine is not None and state in machine.states
                    else None
                )
            return kinds[machine_name, state]

        entries = self._entries(store)
        asked = self._holders_to_ask([e.name for e in entries], entries)
        rows = {}
        made: dict[str, tuple[ListEntry, LockInfo | None, dict[str, Any]]] = {}
        for entry in entries:
            name = entry.name
            before = self._made.get(name)
            holder = before[1] if before is not None else None
            if entry.record is None:
                holder = None
            elif name in asked:
                try:
                    holder = store.lock_holder(name)
                except (RunnerError, OSError):
                    holder = None
            if before is not None and before[0] is entry and before[1] == holder:
                row = before[2]
            else:
                row = row_of(entry, kind_of, holder)
            made[name] = (entry, holder, row)
            rows[name] = row
        self._made = made
        return rows

    def _runner(self) -> Runner:
        """The Runner of the passes: one for :data:`RENEW` seconds (a backend's
        connection is not opened every 200 ms), then a fresh one (a changed machine
        file is read again)."""
        now = time.monotonic()
        if self._made_runner is None or now - self._made_runner[1] > RENEW:
            self._made_runner = (self.make_runner(), now)
        return self._made_runner[0]

    def _holders_to_ask(self, names: list[str], entries: list[ListEntry]) -> set[str] | list[str]:
        """Whose lock to ask about in this pass: everyone's, up to :data:`HOLDERS`
        environments; beyond, the ones whose record changed or that were held, and the
        next :data:`HOLDERS` of the others in turn (each one at least every
        len / HOLDERS passes)."""
        if len(names) <= self.holders:
            return names
        asked = {
            e.name
            for e in entries
            if (before := self._made.get(e.name)) is None or before[0] is not e or before[1]
        }
        start = self._turn % len(names)
        asked.update(names[start : start + self.holders])
        asked.update(names[: max(0, start + self.holders - len(names))])
        self._turn = start + self.holders
        return asked

    def _entries(self, store: Store) -> list[ListEntry]:
        """Every environment's entry: with a backend that has ``Versions``, only the
        records whose version changed are read again; else the whole listing."""
        from runner.store.contract import ListEntry, Versions

        if not isinstance(store, Versions):
            return store.list()
        versions = store.versions()
        if not self._known:  # the first pass: one listing (what changes meanwhile, the
            listed = store.list()  # next pass reads again: its version differs)
            self._known = {e.name: (versions.get(e.name), e) for e in listed}
            return listed
        entries = {}
        for name in sorted(versions):
            version = versions[name]
            known = self._known.get(name)
            if known is not None and known[0] == version:
                entries[name] = known
                continue
            try:
                entry = ListEntry(name, record=store.load(name))
            except RunnerError as exc:
                entry = ListEntry(name, error=exc.message)
            entries[name] = (version, entry)
        self._known = entries
        return [entry for _, entry in entries.values()]

    def _draw(self, rows: dict[str, dict[str, Any]]) -> None:
        """Draw the rows that are new or changed since the last pass."""
        assert self.render is not None
        drawn = {}
        for name, row in rows.items():
            old = self.drawn.get(name)
            drawn[name] = (
                old if old is not None and self.rows.get(name) == row else self.render(row)
            )
        self.drawn = drawn

    def apply(self, rows: dict[str, dict[str, Any]]) -> Change | None:
        """Take a pass's ``rows``; the change from the last one (None: nothing)."""
        changed = tuple(row for name, row in rows.items() if self.rows.get(name) != row)
        removed = tuple(name for name in self.rows if name not in rows)
        self.rows = rows
        if not changed and not removed:
            return None
        return Change(changed, removed)

    # -- the task --------------------------------------------------------------------

    async def run(self) -> None:
        """Watch until cancelled. A failed pass (the backend unreachable, a record no
        code expected) is the page's problem (:attr:`error`) until a pass succeeds:
        logged once when the failures start and once when they end, with a pause that
        doubles after each failure up to :data:`BACKOFF` seconds."""
        pause = self.interval
        while True:
            started = time.perf_counter()
            try:
                rows = await asyncio.to_thread(self.scan)
                if self.render is not None:
                    await asyncio.to_thread(self._draw, rows)
            except Exception as exc:
                pause = self._failed(exc, pause)
            else:
                if self.error is not None:
                    log.warning("dashboard: the environments can be listed again")
                    self._set_error(None)
                change = self.apply(rows)
                if change is not None and self.passes:
                    self._recent.append((self.passes + 1, change))
                    self._tell(change)
                self.pass_seconds = time.perf_counter() - started
                # a long pass (many environments) is followed by a pause twice as long
                pause = max(self.interval, 2 * self.pass_seconds)
            self.passes += 1
            self._first.set()
            log.debug(
                "dashboard: pass over %d environments in %.3f s",
                len(self.rows),
                time.perf_counter() - started,
            )
            await asyncio.sleep(pause)

    def _failed(self, exc: Exception, pause: float) -> float:
        """A pass failed with ``exc`` after a pause of ``pause``: the next pause."""
        if isinstance(exc, RunnerError):
            problem = str(exc)
        else:
            problem = f"internal error of the dashboard: {type(exc).__name__}: {exc}"
        if self.error is None:  # the first failure of a run of them
            if isinstance(exc, RunnerError):
                log.warning("dashboard: cannot list the environments: %s", exc)
            else:
                log.error("dashboard: cannot list the environments", exc_info=exc)
            pause = self.interval
        self._set_error(problem)
        self._made_runner = None  # the next pass starts again from a fresh Runner
        return min(BACKOFF, max(self.interval, 2 * pause))

    def _set_error(self, problem: str | None) -> None:
        """The watcher's problem is now ``problem``: every subscriber is told when it
        changed."""
        if problem != self.error:
            self.error = problem
            self._tell(Change((), problem=True))

    def _tell(self, change: Change) -> None:
        for queue in list(self._subscribers):
            queue.put_nowait(change)

    async def ready(self) -> None:
        """Wait for the first pass."""
        await self._first.wait()

    def close(self) -> None:
        """The server stops: every subscriber's queue gets None, the end of its changes
        (a page's event stream ends, so its connection does not hold the server up).
        Called in the event loop's thread."""
        self.closed = True
        for queue in list(self._subscribers):
            queue.put_nowait(None)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, since: int | None = None
    ) -> AsyncIterator[asyncio.Queue[Change | None]]:
        """A queue that receives every change while the block runs, then None once the
        watcher is closed; with ``since`` (the :attr:`passes` a page was drawn after),
        first the changes found after it (every row, when they are older than the
        changes kept)."""
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        if self.closed:
            queue.put_nowait(None)
        if since is not None and since < self.passes:
            missed = [change for done, change in self._recent if done > since]
            full = len(self._recent) == self._recent.maxlen
            if full and since + 1 < self._recent[0][0]:  # some are no longer kept: all rows
                missed = [Change(tuple(self.rows.values()))]
            for change in missed:
                queue.put_nowait(change)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
