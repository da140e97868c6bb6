"""Progress displays for running phases (the CLI picks one).

- :class:`LiveProgress`: a terminal: ``[n/N] step_name 12.3s`` animated with rich, one
  line per finished step; ``verbose`` also streams the tools' output.
- :class:`PlainProgress`: not a terminal: plain lines, no animation.
- ``runner.run.phase.NullProgress``: ``--output json``: nothing but the final document.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

_MARK = {"done": "ok", "skipped": "skipped", "failed": "FAILED", "already done": "already done"}


class PlainProgress:
    def __init__(self, stream: IO[str] | None = None, verbose: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.verbose = verbose
        self._lock = threading.Lock()

    def _print(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def phase_started(self, env: str, phase: str, total: int) -> None:
        self._print(f"{env}: phase {phase} ({total} step{'' if total == 1 else 's'})")

    def step_started(self, index: int, total: int, step: str) -> None:
        if self.verbose:
            self._print(f"[{index}/{total}] {step} ...")

    def step_finished(
        self, index: int, total: int, step: str, status: str, duration_s: float, detail: str = ""
    ) -> None:
        suffix = f": {detail}" if detail else ""
        self._print(
            f"[{index}/{total}] {step} {_MARK.get(status, status)} ({duration_s:.1f}s){suffix}"
        )

    def output_line(self, step: str, line: str) -> None:
        if self.verbose:
            self._print(f"    {step} | {line}")

    def phase_finished(self, phase: str, status: str, state: str) -> None:
        self._print(f"phase {phase} {status}: state is now {state}")


class LiveProgress(PlainProgress):
    """Animated status line on a terminal (rich)."""

    def __init__(self, verbose: bool = False) -> None:
        super().__init__(sys.stdout, verbose)
        from rich.console import Console

        self.console = Console()
        self._status: Any = None
        self._label = ""
        self._started = 0.0
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def _tick(self) -> None:
        while not self._stop.wait(0.2):
            if self._status is not None:
                self._status.update(f"{self._label} {time.monotonic() - self._started:.1f}s")

    def step_started(self, index: int, total: int, step: str) -> None:
        self._end_status()
        self._label = f"[{index}/{total}] {step}"
        self._started = time.monotonic()
        self._status = self.console.status(self._label)
        self._status.start()
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def _end_status(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(1)
            self._ticker = None
        if self._status is not None:
            self._status.stop()
            self._status = None

    def step_finished(
        self, index: int, total: int, step: str, status: str, duration_s: float, detail: str = ""
    ) -> None:
        self._end_status()
        super().step_finished(index, total, step, status, duration_s, detail)

    def phase_finished(self, phase: str, status: str, state: str) -> None:
        self._end_status()
        super().phase_finished(phase, status, state)
