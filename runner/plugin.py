"""The step plugin interface: what a plugin implements and what it gets.

A plugin is a :class:`Step` subclass registered under the entry point group
``runner.steps``. The engine gives it a :class:`StepContext` and the rendered `with:`
parameters; it returns a dict of results (mapped to environment outputs by the step's
`outputs:`) or raises :class:`~runner.errors.StepError` with a failure kind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from runner.errors import StepError
from runner.store.record import Record
from runner.struct import field, struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any, ClassVar, Protocol
else:
    Protocol = object  # a protocol is the type checkers' notion (typing is slow to import)

__all__ = ["ProcessResult", "ProcessRunner", "Step", "StepContext", "StepError"]


@struct(frozen=True)
class ProcessResult:
    """What a finished program did."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def output_tail(self) -> list[str]:
        lines = (self.stdout + self.stderr).splitlines()
        return lines[-200:]


class ProcessRunner(Protocol):
    def __call__(
        self,
        argv: Sequence[str],
        *,
        step: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        stdin: str | None = None,
    ) -> ProcessResult: ...


@struct
class StepContext:
    """Everything a step may use. ``environment`` is a copy of the record: changing it
    changes nothing stored."""

    env_name: str
    environment: Record
    template_context: Mapping[str, Any]
    workdir: Path
    data_dir: Path
    build_dir: Path
    machine_dir: Path
    phase: str
    step: str
    logger: logging.Logger
    runner: ProcessRunner
    timeout_s: float | None = None
    log_line: Callable[[str], None] = field(default=lambda line: None)
    secrets: Mapping[str, str] = field(default_factory=dict)

    def resolve(self, path: str | Path) -> Path:
        """A path from `with:`: relative paths are relative to the working directory."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.workdir / candidate

    def resolve_source(self, path: str | Path) -> Path:
        """A template source: relative paths are relative to machine.yaml's folder."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.machine_dir / candidate

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        stdin: str | None = None,
        check: bool = True,
    ) -> ProcessResult:
        """Run a program (argv list, never a shell string), its output streamed to the
        run log. With ``check``, a non-zero exit raises a ``command_failed`` StepError."""
        result = self.runner(
            argv,
            step=self.step,
            cwd=cwd,
            env=env,
            timeout_s=timeout_s if timeout_s is not None else self.timeout_s,
            stdin=stdin,
        )
        if check and result.returncode != 0:
            last = _last_meaningful_line(result)
            raise StepError(
                "command_failed",
                f"{Path(argv[0]).name} exited with {result.returncode}"
                + (f": {last}" if last else ""),
                exit_code=result.returncode,
                output_tail=result.output_tail,
            )
        return result


def _last_meaningful_line(result: ProcessResult) -> str:
    for text in (result.stderr, result.stdout):
        for line in reversed(text.splitlines()):
            if line.strip():
                return line.strip()[:300]
    return ""


class Step(ABC):
    """Base class of every step plugin."""

    name: ClassVar[str]
    params_schema: ClassVar[dict[str, Any]]
    description: ClassVar[str] = ""

    @abstractmethod
    def run(self, ctx: StepContext, params: dict[str, Any]) -> dict[str, Any]:
        """Do the work; return results (keys a step's `outputs:` may map)."""

    def preview(self, ctx: StepContext, params: dict[str, Any]) -> str | None:
        """For a dry run: what :meth:`run` would change, found without changing
        anything (one line, e.g. an OpenTofu plan's "1 to add, 0 to change, 0 to
        destroy"), or None when the plugin cannot tell (the default)."""
        return None
