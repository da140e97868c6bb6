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
        self._beat_stop: threading.Event | None = None
        self._beat: threading.Thread | None = None

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
        self._stop_heartbeat()
        stop = threading.Event()
        started = time.monotonic()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                try:
                    self._print(f"{label} still running ({elapsed(time.monotonic() - started)})")
                except Exception:  # a closed output: the step's end says what went wrong
                    return

        self._beat_stop = stop
        self._beat = threading.Thread(target=beat, name="runner-heartbeat", daemon=True)
        self._beat.start()

    def _stop_heartbeat(self) -> None:
        if self._beat_stop is not None:
            self._beat_stop.set()
            self._beat_stop = None
        if self._beat is not None:
            self._beat.join(1)
            self._beat = None

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
        self._stop_heartbeat()


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
