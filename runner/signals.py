"""The process's signal handlers and its one interval timer, owned here and nowhere else.

Three situations, three behaviours:

- **A command outside a phase** (waiting for a lock, loading, rendering): SIGINT is
  Python's ``KeyboardInterrupt``; SIGTERM and SIGHUP raise :class:`Terminated` (a
  ``KeyboardInterrupt`` too, carrying the signal), so all three unwind the command
  through its ``finally`` blocks; the CLI turns them into exit 128 + the signal
  number (130, 143, 129). :func:`install` sets this up at start.
- **During a phase** (:func:`phase_interrupts`): SIGINT, SIGTERM and SIGHUP are
  *held* by default and noted; they raise :class:`~runner.errors.InterruptSignal` only
  while a step's work runs (:meth:`Interrupts.zone`), and even there not inside a
  :meth:`Interrupts.critical` block (starting a program). Everything else a phase does
  (saves, the failure record, the trace) runs with signals held, so a signal can never
  cut the recording of what happened; the engine acts on a held signal at its next
  safe point (:meth:`Interrupts.check`). A *second* signal never raises: it kills the
  running step's process group at once (SIGKILL), says so on stderr, and the first
  signal's exit code stands.
- **Timers**: ``SIGALRM`` serves one purpose at a time, through :func:`timer`: a
  step's ``timeout`` (a deadline) or a blocking wait for a lock. Whoever asks while
  the timer is taken, or outside the main thread, is told so and must poll instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from runner.errors import InterruptSignal

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from typing import Any
else:
    # the C module: `signal` makes enums of every signal and handler at import, which
    # every command would pay at start; the functions and numbers are the same
    import _signal as signal


__all__ = [
    "Interrupts",
    "StepDeadline",
    "Terminated",
    "TimerExpired",
    "install",
    "phase_interrupts",
    "settle",
    "timer",
]

#: The signals that interrupt a phase (and end a command).
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP outside a phase: stop like Ctrl+C, exit 128 + ``signum``."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


class TimerExpired(BaseException):
    """The timer of :func:`timer` went off (a BaseException: no ``except Exception``
    swallows it)."""


class StepDeadline(TimerExpired):
    """A step's ``timeout`` was reached."""


#: The phase's interrupts while one is active (the CLI's handlers hand signals to it).
_active: Interrupts | None = None
#: The CLI's handlers are installed (:func:`install`).
_installed = False


#: The signal that ended the command outside a phase, if one did.
received: int | None = None


#: Times in a row a signal was put off (see :func:`_put_off`), and the most.
_put_off_count = 0
_PUT_OFF_LIMIT = 100


def _put_off(signum: int, frame: FrameType | None) -> bool:
    """Whether ``signum`` arrived in importlib's own code and was put off: an exception
    raised there may be lost (in a module lock's weakref callback it is printed as
    "Exception ignored" and dropped), and raising it a moment later, once the import is
    done, loses nothing. A short-lived thread sends it again to the main thread after
    2 ms (at most :data:`_PUT_OFF_LIMIT` times in a row)."""
    global _put_off_count
    inside = frame is not None and frame.f_code.co_filename.startswith("<frozen importlib")
    if not inside or _put_off_count >= _PUT_OFF_LIMIT:
        _put_off_count = 0
        return False
    _put_off_count += 1
    import _thread  # both built in and loaded at start: no import machinery here
    import time

    main = _thread.get_ident()  # handlers run in the main thread

    def again() -> None:
        time.sleep(0.002)
        signal.pthread_kill(main, signum)  # ignored once the handlers are SIG_IGN

    _thread.start_new_thread(again, ())
    return True


def _dispatch(signum: int, frame: FrameType | None) -> None:
    global received
    if _put_off(signum, frame):
        return
    if _active is not None:
        _active._handler(signum, frame)
        return
    if received is not None:
        # the command is already stopping for an earlier signal (its exception is
        # unwinding, perhaps through an `except` or `finally` right now): raising again
        # there would break that handling and end in a traceback
        return
    received = signum
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:
        raise Terminated(signum)


def install() -> None:
    """The CLI's handlers (called once at start): outside a phase SIGINT raises
    ``KeyboardInterrupt`` and SIGTERM/SIGHUP :class:`Terminated`; during a phase they go
    to its :class:`Interrupts`."""
    global _installed
    for signum in INTERRUPTS:
        signal.signal(signum, _dispatch)
    _installed = True


def settle() -> None:
    """The command's outcome is decided: from here to the exit, signals are ignored
    (at the OS level, so that the interpreter's shutdown, which puts back the default
    action of every signal it handled, cannot die of one), and the exit code is the
    one the command chose."""
    for signum in INTERRUPTS:
        signal.signal(signum, signal.SIG_IGN)


def say(text: str) -> None:
    """A line on stderr from a signal handler (``os.write``: never a reentrant
    buffered write)."""
    with contextlib.suppress(OSError):
        os.write(2, (text + "\n").encode())


_timer_busy = False


@contextmanager
def timer(seconds: float, expired: Callable[[], None] | None = None) -> Iterator[bool]:
    """Arm SIGALRM for ``seconds``; when it fires, ``expired()`` runs in the main thread
    (by default it raises :class:`TimerExpired`). Yields False, arming nothing, when the
    timer cannot be had: outside the main thread, or while another user holds it."""
    global _timer_busy
    import threading

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
    """SIGINT/SIGTERM/SIGHUP during a phase: noted, raised only inside a step's zone."""

    def __init__(self) -> None:
        self._held_depth = 1  # outside a zone every signal is held
        self._held: BaseException | None = None
        self.signum: int | None = None
        """The first interrupting signal received, if any."""
        self._group: int | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if _put_off(signum, frame):
            return
        if self.signum is not None:
            self._escalate(signum)
            return
        self.signum = signum
        self.raise_or_hold(InterruptSignal(signum))

    def _escalate(self, signum: int) -> None:
        """A second signal: SIGKILL the running program's group, never raise."""
        from signal import Signals

        name = Signals(signum).name
        group = self._group
        if group is None:
            say(f"runner: {name} again: already stopping, recording where the phase stopped")
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
        say(f"runner: {name} again: killed the step's processes (group {group}) at once")

    def running(self, group: int | None) -> None:
        """The process group of the program the step runs now (None: none)."""
        self._group = group

    def raise_or_hold(self, exc: BaseException) -> None:
        """Raise ``exc`` now inside a zone, else hold it (an interrupt wins over a
        deadline)."""
        if not self._held_depth:
            raise exc
        if self._held is None or isinstance(exc, InterruptSignal):
            self._held = exc

    def _raise_held(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            raise held

    def check(self) -> None:
        """At a safe point: raise the interrupt received while signals were held."""
        if isinstance(self._held, InterruptSignal):
            self._raise_held()

    @contextmanager
    def zone(self) -> Iterator[None]:
        """A step's work: signals raise inside (a held interrupt is raised on entry)."""
        self.check()
        saved, self._held_depth = self._held_depth, 0
        try:
            yield
        finally:
            self._held_depth = saved

    @contextmanager
    def critical(self) -> Iterator[None]:
        """Signals that arrive inside the block are raised when it ends, if that is
        inside a zone; outside one they stay held."""
        self._held_depth += 1
        try:
            yield
        finally:
            self._held_depth -= 1
            if not self._held_depth:
                self._raise_held()

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
    """SIGINT, SIGTERM and SIGHUP are the phase's for the block's length (see
    :class:`Interrupts`); nested blocks share the outer one's. Under the CLI's handlers
    the command's outcome is decided when the outermost block ends (:func:`settle`);
    otherwise the previous handlers come back. Outside the main thread no handler can
    be set: the interrupts are inert."""
    global _active
    if _active is not None:
        yield _active
        return
    interrupts = Interrupts()
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield interrupts
        return
    previous: dict[signal.Signals, Any] = {}
    if not _installed:
        for signum in INTERRUPTS:
            previous[signum] = signal.signal(signum, interrupts._handler)
    _active = interrupts
    try:
        yield interrupts
    finally:
        _active = None
        if _installed:
            settle()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
