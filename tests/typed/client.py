"""A small typed client of the Python API: `mypy --strict` must accept it (see
tests/test_api_docs.py). It is checked, never run."""

from __future__ import annotations

from collections.abc import Sequence

from runner import Runner
from runner.api.results import RunResult, StatusResult
from runner.errors import LockedError, RunnerError
from runner.run.phase import PhaseResult
from runner.store.record import Failure


class Quiet:
    """Implements the progress protocol and reports nothing but failures."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def phase_started(self, env: str, phase: str, total: int) -> None:
        pass

    def step_started(self, index: int, total: int, step: str) -> None:
        pass

    def step_finished(
        self, index: int, total: int, step: str, status: str, duration_s: float, detail: str = ""
    ) -> None:
        if status == "failed":
            self.failed.append(f"{step}: {detail}")

    def output_line(self, step: str, line: str) -> None:
        pass

    def phase_finished(self, phase: str, status: str, state: str) -> None:
        pass


def failures(results: Sequence[RunResult]) -> list[Failure]:
    return [r.failure for r in results if r.failure is not None]


def slowest(result: RunResult) -> PhaseResult | None:
    return max(result.phases, key=lambda p: p.duration_s, default=None)


def bring_up(workdir: str, names: Sequence[str]) -> dict[str, int]:
    """Every environment of ``names`` up, created if need be: name -> exit code."""
    progress = Quiet()
    runner = Runner(workdir, "machine.yaml", lock_timeout=0.5, progress=progress)
    runner.validate()
    known = {env.environment for env in runner.list().environments}
    codes: dict[str, int] = {}
    for name in names:
        try:
            if name not in known:
                runner.create(name, inputs={"greeting": "hi"}, sets=["greeting=hello"])
            result = runner.up(name, to=None)
            codes[name] = result.exit_code
        except LockedError as exc:
            codes[name] = exc.exit_code
        except RunnerError as exc:
            codes[name] = exc.exit_code
            print(exc.message, exc.hint or "", exc.environment)
    status: StatusResult = runner.status(names[0])
    holder = status.locked_by
    print(status.state, status.kind, holder.pid if holder else None, list(status.next))
    print(runner.history(names[0], limit=2).to_json()["events"])
    drawing: bytes = runner.graph("dot").data
    print(len(drawing), progress.failed)
    return codes
