"""What the commands that validate, draw, create, run phases, run checks, change an
environment by hand (purge, inputs, force-state, restore; and `snapshots`), show
artifacts or set up and migrate a state backend return: typed, frozen results, as
those of :mod:`runner.api.results` (and importable from there too).

They live apart so that the read-only commands, which must start fast, never build
them; `validate`'s own (:class:`ValidateResult` and a validated machine's phases,
:class:`PhaseSummary`) live in :mod:`runner.api.validated`, so that `validate` builds
only those two. A dry run's plan (:class:`StepPlan`, :class:`PhasePlan`) and a phase's
confirmation question (:class:`ConfirmRequest`) are their parts.
"""

from __future__ import annotations

from runner.result import INTERNAL, Result, key
from runner.store.record import Failure, Forced, Paths, Record
from runner.struct import copied, field, struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from runner.api.validated import PhaseSummary, ValidateResult
    from runner.run.checks import CheckOutcome, ChecksRun
    from runner.run.phase import PhaseResult
    from runner.store.contract import SnapshotInfo

__all__ = [
    "ArtifactResult",
    "ArtifactsResult",
    "CheckResult",
    "ConfirmRequest",
    "CreateResult",
    "ForceStateResult",
    "GraphFileResult",
    "GraphResult",
    "InputsResult",
    "MigrateResult",
    "PhasePlan",
    "PhaseSummary",
    "PurgeResult",
    "RestoreResult",
    "RunResult",
    "SnapshotsResult",
    "StateInitResult",
    "StepPlan",
    "ValidateResult",
]


def __getattr__(name: str) -> object:
    # validate's results, found here too; a run never builds their classes
    if name in ("PhaseSummary", "ValidateResult"):
        from runner.api import validated

        return getattr(validated, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@struct(frozen=True)
class StepPlan(Result):
    """One step of a dry run: whether it would run, and with what (secrets masked).

    ``when`` and ``params`` are None when the step could not be rendered (``error``
    says why); ``params`` is None too when ``when`` is false. ``preview`` is the
    plugin's own look at what it would change, when it has one."""

    name: str
    uses: str
    when: bool | None = None
    params: Any = None
    error: str | None = None
    preview: str | None = None
    """What the step would change, when its plugin can tell without changing anything
    (the real plan of a `tofu` apply or destroy whose folder exists)."""


@struct(frozen=True)
class PhasePlan(Result):
    """The phase a dry run would run, and its steps as they would be rendered."""

    phase: str
    from_state: str = field(metadata=key("from"))
    via: str
    to: str
    steps: tuple[StepPlan, ...]


@struct(frozen=True)
class ConfirmRequest(Result):
    """What a phase marked `confirm: true` asks before it runs: the environment, its
    state, the phase and where it leads, and the steps it would run and skip (their
    `when` rendered now)."""

    environment: str
    state: str
    phase: str
    to: str
    runs: tuple[str, ...]
    skips: tuple[str, ...]

    @property
    def question(self) -> str:
        """The question, in one paragraph."""
        runs = ", ".join(self.runs) or "no step"
        skips = f" (skipped here: {', '.join(self.skips)})" if self.skips else ""
        return (
            f"phase '{self.phase}' of environment '{self.environment}' (now in "
            f"'{self.state}', then '{self.to}') will run: {runs}{skips}"
        )


@struct(frozen=True)
class GraphResult(Result):
    """`graph`: the drawing of the machine (``data``, bytes: text for mermaid, dot and
    svg, binary for png), marking ``environment``'s current ``state`` when asked."""

    format: str
    environment: str | None
    state: str | None
    graph: str
    data: bytes = field(metadata=INTERNAL, repr=False)

    @classmethod
    def from_data(
        cls, fmt: str, data: bytes, environment: str | None = None, state: str | None = None
    ) -> GraphResult:
        return cls(fmt, environment, state, data.decode(errors="replace"), data)


@struct(frozen=True)
class GraphFileResult(Result):
    """`graph --out FILE`: where the drawing was written."""

    format: str
    environment: str | None
    file: str
    bytes: int


@struct(frozen=True)
class CreateResult(Result):
    """`create`: the new environment, its initial state, inputs and folders."""

    environment: str
    state: str
    inputs: Mapping[str, Any]
    paths: Paths

    @classmethod
    def from_record(cls, record: Record) -> CreateResult:
        return cls(
            environment=record.name,
            state=record.state,
            inputs=copied(record.inputs),
            paths=copied(record.paths),
        )


@struct(frozen=True)
class ArtifactsResult(Result):
    """The references of an environment's traces or run logs, oldest first."""

    environment: str
    kind: str  # trace | run
    artifacts: tuple[str, ...]


@struct(frozen=True)
class ArtifactResult(Result):
    """One trace or run log of an environment: its text (secrets are masked when it is
    written), or, with an ``offset``, the text after the first ``offset`` characters.
    ``size`` is the whole text's length in characters."""

    environment: str
    ref: str
    offset: int
    size: int
    text: str


@struct(frozen=True)
class RunResult(Result):
    """What `advance`, `up`, `resume`, `run_phase` and `destroy` did.

    ``phases`` are the phases run, in order; ``failure`` is the failure of the last one
    when it failed; ``message`` says why nothing ran (nothing to advance, already
    there, a dry run); ``dry_run`` is the plan of a dry run."""

    environment: str
    state: str
    status: str  # ok | failed
    phases: tuple[PhaseResult, ...] = ()
    failure: Failure | None = None
    message: str | None = None
    dry_run: tuple[PhasePlan, ...] | None = None

    @classmethod
    def from_phase_results(
        cls, environment: str, state: str, results: Sequence[PhaseResult], message: str = ""
    ) -> RunResult:
        phases = tuple(results)
        failed = [p for p in phases if p.status == "failed"]
        return cls(
            environment=environment,
            state=state,
            status="failed" if failed else "ok",
            phases=phases,
            failure=failed[-1].failure if failed else None,
            message=message or None,
        )

    @property
    def failed(self) -> bool:
        """Whether a phase failed (a step failed: the CLI exits 1)."""
        return self.status == "failed"

    @property
    def exit_code(self) -> int:
        """The CLI's exit code for this result: 1 when a step failed, else 0."""
        from runner.errors import ExitCode

        return ExitCode.STEP_FAILED if self.failed else ExitCode.OK


@struct(frozen=True)
class CheckResult(Result):
    """`check`: the checks of the environment's current state and each one's result.

    ``status`` is ``passed`` (none failed), ``failed`` (the CLI exits 1) or ``none``
    (no check applies in this state: nothing was run or recorded)."""

    environment: str
    state: str
    status: str
    checked_at: str | None = None
    checks: tuple[CheckOutcome, ...] = ()
    log: str | None = None
    message: str | None = None

    @classmethod
    def from_run(cls, environment: str, done: ChecksRun) -> CheckResult:
        return cls(
            environment=environment,
            state=done.state,
            status=done.status,
            checked_at=done.checked_at,
            checks=done.outcomes,
            log=done.log,
        )

    @property
    def failed(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.status == "failed"]

    @property
    def exit_code(self) -> int:
        """The CLI's exit code: 1 when a check failed, else 0."""
        from runner.errors import ExitCode

        return ExitCode.STEP_FAILED if self.failed else ExitCode.OK


@struct(frozen=True)
class PurgeResult(Result):
    """`purge`: the environment's records are gone and its name is free; what may still
    exist outside them (``warnings``) and what became of its build folder."""

    environment: str
    state: str | None
    """The state it was in (None when its record could not be read)."""
    forced: bool
    build_dir: str
    build_removed: bool
    build_kept: bool
    """Whether the build folder exists and was kept."""
    warnings: tuple[str, ...]


@struct(frozen=True)
class InputsResult(Result):
    """`inputs`: the environment's inputs (secrets as their references) and, after a
    change, the keys changed."""

    environment: str
    state: str
    inputs: Mapping[str, Any]
    changed: tuple[str, ...] = ()
    serial: int = 0
    restarts_phase: str | None = None
    """The failed phase the next resume runs again from its first step (its steps
    already done used the old inputs), if any."""

    @classmethod
    def from_record(
        cls, record: Record, changed: Sequence[str] = (), restarts: str | None = None
    ) -> InputsResult:
        return cls(
            environment=record.name,
            state=record.state,
            inputs=copied(record.inputs),
            changed=tuple(changed),
            serial=record.serial,
            restarts_phase=restarts,
        )


@struct(frozen=True)
class ForceStateResult(Result):
    """`force-state`: the environment was moved to ``state`` without running anything."""

    environment: str
    state: str
    forced: Forced
    serial: int

    @classmethod
    def from_record(cls, record: Record) -> ForceStateResult:
        assert record.forced is not None
        return cls(record.name, record.state, copied(record.forced), record.serial)


@struct(frozen=True)
class SnapshotsResult(Result):
    """`snapshots`: the kept versions of the environment's record, oldest first (the
    current one last)."""

    environment: str
    current: int
    snapshots: tuple[SnapshotInfo, ...]


@struct(frozen=True)
class RestoreResult(Result):
    """`restore`: the version ``restored`` is current again, saved as ``serial``."""

    environment: str
    restored: int
    serial: int
    state: str
    from_state: str = field(metadata=key("from"))


@struct(frozen=True)
class StateInitResult(Result):
    """`state init`: the backend made ready (its schema version before and after)."""

    url: str
    backend: str  # file | postgresql
    schema_before: int
    schema_after: int


@struct(frozen=True)
class MigrateResult(Result):
    """`state migrate`: the environments copied (and verified) from one backend to
    another; the source is unchanged."""

    source: str
    target: str
    environments: tuple[str, ...]
