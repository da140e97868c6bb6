"""The process's signal handlers and its one interval timer, owned here and nowhere else.

Three situations, three behaviours:

- **A command outside a phase** (waiting for a lock, loading, rendering): SIGINT is
  Python's ``KeyboardInterrupt`` and SIGTERM raises :class:`Terminated` (a
  ``KeyboardInterrupt`` too), so both unwind the command with its ``finally`` blocks;
  the CLI turns them into exit 130 and 143. :func:`install` sets this up at start.
- **During a phase** (:func:`phase_interrupts`): SIGINT and SIGTERM raise
  :class:`~runner.errors.InterruptSignal`, except inside :meth:`Interrupts.critical`
  blocks (a save, starting a program), where the signal is held until the block ends.
- **Timers**: ``SIGALRM`` serves one purpose at a time, through :func:`timer`: a
  step's ``timeout`` (a deadline) or a blocking wait for a lock. Whoever asks while
  the timer is taken, or outside the main thread, is told so and must poll instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from runner.errors import InterruptSignal

__all__ = [
    "Interrupts",
    "StepDeadline",
    "Terminated",
    "TimerExpired",
    "install",
    "phase_interrupts",
    "timer",
]

#: The signals that interrupt a phase.
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a phase: stop like Ctrl+C, exit 143."""


class TimerExpired(BaseException):
    """The timer of :func:`timer` went off (a BaseException: no ``except Exception``
    swallows it)."""


class StepDeadline(TimerExpired):
    """A step's ``timeout`` was reached."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def install() -> None:
    """The handlers of a command outside a phase (the CLI calls this at start)."""
    signal.signal(signal.SIGTERM, _terminate)


_timer_busy = False


@contextmanager
def timer(seconds: float, expired: Callable[[], None] | None = None) -> Iterator[bool]:
    """Arm SIGALRM for ``seconds``; when it fires, ``expired()`` runs in the main thread
    (by default it raises :class:`TimerExpired`). Yields False, arming nothing, when the
    timer cannot be had: outside the main thread, or while another user holds it."""
    global _timer_busy
    if _timer_busy or threading.current_thread() is not threading.main_thread():
        yield False
        return

    def _fired(signum: int, frame: FrameType | None) -> None:
        if expired is None:
            raise TimerExpired
        expired()

    _timer_busy = True
    previous = signal.signal(signal.SIGALRM, _fired)
    try:
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _timer_busy = False


class Interrupts:
    """SIGINT/SIGTERM during a phase, held inside critical blocks."""

    def __init__(self) -> None:
        self._critical = 0
        self._held: BaseException | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.raise_or_hold(InterruptSignal(signum))

    def raise_or_hold(self, exc: BaseException) -> None:
        """Raise ``exc`` now, or outside a critical block hold it until the block ends
        (an interrupt wins over a deadline)."""
        if not self._critical:
            raise exc
        if self._held is None or isinstance(exc, InterruptSignal):
            self._held = exc

    @contextmanager
    def critical(self) -> Iterator[None]:
        """Signals that arrive inside the block are raised when it ends."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
            if not self._critical and self._held is not None:
                held, self._held = self._held, None
                raise held

    @contextmanager
    def deadline(self, seconds: float | None) -> Iterator[None]:
        """:class:`StepDeadline` after ``seconds`` (held like an interrupt); no deadline
        when ``seconds`` is None or 0."""
        if not seconds:
            yield
            return
        with timer(seconds, lambda: self.raise_or_hold(StepDeadline())) as armed:
            if not armed:
                raise RuntimeError("the step deadline timer is already in use")
            try:
                yield
            finally:
                if isinstance(self._held, StepDeadline):  # it fired as the step ended
                    self._held = None


@contextmanager
def phase_interrupts() -> Iterator[Interrupts]:
    """SIGINT and SIGTERM raise InterruptSignal for the block's length (see
    :class:`Interrupts`); the previous handlers come back after it."""
    interrupts = Interrupts()
    previous: dict[signal.Signals, Any] = {}
    for signum in INTERRUPTS:
        previous[signum] = signal.signal(signum, interrupts._handler)
    try:
        yield interrupts
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
