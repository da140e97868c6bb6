"""Progress displays for running phases (the CLI picks one).

- :class:`LiveProgress`: a terminal: ``[n/N] step_name 12.3s`` animated with rich (a
  ``Live`` display for the phase), one line per finished step, in colour unless
  ``--no-color``/``NO_COLOR``; log records and the tools' output (``verbose``) are
  printed above the animated line, never inside it.
- :class:`PlainProgress`: not a terminal (CI, a pipe, a file): plain lines, no
  animation, no escapes: a line when each step starts, one when it ends, and for a
  long step a heartbeat every :data:`HEARTBEAT_S` seconds
  (``[3/9] opentofu_apply still running (5m00s)``).
- ``runner.run.phase.NullProgress``: ``--output json``: nothing but the final document.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

__all__ = ["HEARTBEAT_S", "LiveProgress", "PlainProgress", "elapsed"]


def _heartbeat_s() -> float:
    try:
        value = float(os.environ.get("RUNNER_HEARTBEAT_S", "60"))
    except ValueError:
        return 60.0
    return value if value > 0 else 60.0


#: Seconds between two "still running" lines of a long step without a terminal
#: (``RUNNER_HEARTBEAT_S`` changes it; default 60).
HEARTBEAT_S = _heartbeat_s()

_MARK = {"done": "ok", "skipped": "skipped", "failed": "FAILED", "already done": "already done"}
_MARK_STYLE = {"done": "green", "failed": "bold red", "skipped": "dim", "already done": "dim"}
_PHASE_STYLE = {"succeeded": "green", "failed": "bold red", "interrupted": "yellow"}


def elapsed(seconds: float) -> str:
    """``42s``, ``5m00s``, ``1h02m03s``."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class _Heartbeat:
    """Says ``LABEL still running (T)`` every ``every`` seconds while a step runs. One
    thread serves every step of the command (a thread per step would cost each step
    its start and its join); it is told of a step by :meth:`step` and of its end by
    :meth:`quiet`, and says nothing about a step once the next one started or it ended
    (``say`` runs under the same lock as those two)."""

    def __init__(self, every: float, say: Callable[[str], None]) -> None:
        self._every = every
        self._say = say
        self._cond = threading.Condition()
        self._label: str | None = None
        self._started = 0.0
        self._step = 0  # which step runs: a new one starts the count again
        self._idle = False  # the thread waits for a step, with no timeout
        self._closed = False
        self._thread: threading.Thread | None = None

    def step(self, label: str) -> None:
        with self._cond:
            self._label, self._started, self._step = label, time.monotonic(), self._step + 1
            if self._thread is None:
                self._closed = False
                self._thread = threading.Thread(
                    target=self._run, name="runner-heartbeat", daemon=True
                )
                self._thread.start()
            elif self._idle:
                self._cond.notify()
            # else the thread wakes at the old step's next beat, which comes before
            # this one's first, and starts counting for this step then

    def quiet(self) -> None:
        with self._cond:
            self._label = None

    def close(self) -> None:
        with self._cond:
            self._label, self._closed = None, True
            self._cond.notify()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(1)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if self._label is None:
                    self._idle = True
                    self._cond.wait()
                    self._idle = False
                    continue
                step, label, started, beats = self._step, self._label, self._started, 1
                while not self._closed and self._step == step and self._label is not None:
                    now = time.monotonic()
                    due = started + beats * self._every
                    if now < due:
                        self._cond.wait(due - now)
                        continue
                    try:
                        self._say(f"{label} still running ({elapsed(now - started)})")
                    except Exception:  # a closed output: the step's end says what went wrong
                        return
                    beats += 1


class PlainProgress:
    def __init__(
        self,
        stream: IO[str] | None = None,
        verbose: bool = False,
        heartbeat_s: float | None = None,
    ) -> None:
        self.stream = stream or sys.stdout
        self.verbose = verbose
        self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self._lock = threading.Lock()
        self._heartbeat: _Heartbeat | None = None

    def _print(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def phase_started(self, env: str, phase: str, total: int) -> None:
        self._print(f"{env}: phase {phase} ({total} step{'' if total == 1 else 's'})")

    def step_started(self, index: int, total: int, step: str) -> None:
        self._print(f"[{index}/{total}] {step} ...")
        self._start_heartbeat(f"[{index}/{total}] {step}")

    def _start_heartbeat(self, label: str) -> None:
        if self._heartbeat is None:
            self._heartbeat = _Heartbeat(self.heartbeat_s, self._print)
        self._heartbeat.step(label)

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.quiet()

    def step_finished(
        self, index: int, total: int, step: str, status: str, duration_s: float, detail: str = ""
    ) -> None:
        self._stop_heartbeat()
        suffix = f": {detail}" if detail else ""
        self._print(
            f"[{index}/{total}] {step} {_MARK.get(status, status)} ({duration_s:.1f}s){suffix}"
        )

    def output_line(self, step: str, line: str) -> None:
        if self.verbose:
            self._print(f"    {step} | {line}")

    def phase_finished(self, phase: str, status: str, state: str) -> None:
        self._stop_heartbeat()
        self._print(f"phase {phase} {status}: state is now {state}")

    def close(self) -> None:
        """Stop whatever still runs (a phase that ended by an error of the store)."""
        if self._heartbeat is not None:
            self._heartbeat.close()


class _Running:
    """The animated line: a spinner, ``[n/N] step`` and the time it has run."""

    def __init__(self, label: str) -> None:
        from rich.spinner import Spinner

        self.label = label
        self.started = time.monotonic()
        self.spinner = Spinner("dots", text=label)

    def __rich__(self) -> Any:
        self.spinner.update(text=f"{self.label} {time.monotonic() - self.started:.1f}s")
        return self.spinner


class LiveProgress(PlainProgress):
    """Animated status line on a terminal (rich), in colour unless ``color`` is false.

    While a phase runs, what is written to standard output and (when it is the terminal
    too) standard error goes through the display: log lines land above the animated
    line, never inside it. ``kind_of(state)`` gives a state's kind (its colour)."""

    def __init__(
        self, verbose: bool = False, color: bool = True, stream: IO[str] | None = None
    ) -> None:
        super().__init__(stream or sys.stdout, verbose)
        from rich.console import Console

        self.console = Console(file=self.stream, no_color=not color, highlight=False)
        self.kind_of: Callable[[str], str | None] = lambda state: None
        self._live: Any = None

    def _print(self, text: str, style: str | None = None) -> None:
        from rich.text import Text

        self.console.print(Text(text, style=style or ""))

    def _styled(self, *parts: tuple[str, str | None]) -> None:
        from rich.text import Text

        self.console.print(Text.assemble(*((text, style or "") for text, style in parts)))

    def phase_started(self, env: str, phase: str, total: int) -> None:
        from rich.live import Live

        self._end_live()
        super().phase_started(env, phase, total)
        try:
            to_terminal = os.isatty(sys.stderr.fileno())
        except (AttributeError, OSError, ValueError):
            to_terminal = False
        self._live = Live(
            "",
            console=self.console,
            refresh_per_second=8,
            transient=True,
            redirect_stdout=True,
            redirect_stderr=to_terminal,
        )
        self._live.start()

    def step_started(self, index: int, total: int, step: str) -> None:
        if self._live is not None:
            self._live.update(_Running(f"[{index}/{total}] {step}"), refresh=True)

    def step_finished(
        self, index: int, total: int, step: str, status: str, duration_s: float, detail: str = ""
    ) -> None:
        if self._live is not None:
            self._live.update("", refresh=True)
        self._styled(
            (f"[{index}/{total}] {step} ", None),
            (_MARK.get(status, status), _MARK_STYLE.get(status)),
            (f" ({duration_s:.1f}s)" + (f": {detail}" if detail else ""), None),
        )

    def phase_finished(self, phase: str, status: str, state: str) -> None:
        self._end_live()
        from runner.cli.render import state_style

        self._styled(
            (f"phase {phase} ", None),
            (status, _PHASE_STYLE.get(status)),
            (": state is now ", None),
            (state, state_style(self.kind_of(state))),
        )

    def _end_live(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def close(self) -> None:
        self._end_live()
