"""What the methods of :class:`runner.Runner` return: typed, frozen results.

Every result is a :class:`~runner.result.Result`, so its JSON form (``to_json()``) is
derived from its fields; ``schemas/output.schema.json`` describes it. A result never
holds the stored record: each one is built from it by one small constructor
(``from_record`` and the like), the only code here that reads a record.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.result import INTERNAL, Result, key

if TYPE_CHECKING:
    from runner.machine.model import MachineDef
    from runner.run.phase import PhaseResult, StepOutcome
    from runner.store.contract import ListEntry, LockInfo

__all__ = [
    "CreateResult",
    "EnvironmentSummary",
    "FailureView",
    "GraphFileResult",
    "GraphResult",
    "HistoryResult",
    "ListResult",
    "Paths",
    "PhasePlan",
    "PhaseSummary",
    "PhaseView",
    "RunResult",
    "RunView",
    "StatusResult",
    "StepPlan",
    "StepView",
    "Unreadable",
    "ValidateResult",
]


# --- the parts -----------------------------------------------------------------------


@dataclass(frozen=True)
class FailureView(Result):
    """A step that failed: the same shape wherever a failure is shown.

    ``attempts`` is how many attempts were made (None when the record does not say);
    ``hint``, ``started_at``, ``failed_at`` and ``duration_s`` may be unknown (None).
    """

    phase: str
    step: str | None
    kind: str
    summary: str
    exit_code: int | None
    attempts: int | None
    trace: str | None
    hint: str | None = None
    started_at: str | None = None
    failed_at: str | None = None
    duration_s: float | None = None

    @classmethod
    def from_record_failure(
        cls, failure: Mapping[str, Any], *, attempts: int | None = None
    ) -> FailureView:
        """From the ``failure`` of a record (or of a phase result); ``attempts`` when
        the failure itself does not count them."""
        return cls(
            phase=failure["phase"],
            step=failure.get("step"),
            kind=failure["kind"],
            summary=failure["summary"],
            exit_code=failure.get("exit_code"),
            attempts=failure.get("attempts", attempts),
            trace=failure.get("trace"),
            hint=failure.get("hint"),
            started_at=failure.get("started_at"),
            failed_at=failure.get("failed_at"),
            duration_s=failure.get("duration_s"),
        )

    @property
    def headline(self) -> str:
        """One line: where it failed, how, and why."""
        return f"phase '{self.phase}' failed at step '{self.step}' ({self.kind}): {self.summary}"


@dataclass(frozen=True)
class RunView(Result):
    """The environment's latest phase run, as its record keeps it."""

    phase: str
    started_at: str
    finished_at: str | None
    pid: int
    host: str
    completed_steps: tuple[str, ...]
    skipped_steps: tuple[str, ...]
    current_step: str | None
    interrupted: bool
    trace: str | None
    log: str | None

    @classmethod
    def from_record_run(cls, run: Mapping[str, Any]) -> RunView:
        return cls(
            phase=run["phase"],
            started_at=run["started_at"],
            finished_at=run.get("finished_at"),
            pid=run["pid"],
            host=run["host"],
            completed_steps=tuple(run.get("completed_steps", ())),
            skipped_steps=tuple(run.get("skipped_steps", ())),
            current_step=run.get("current_step"),
            interrupted=bool(run.get("interrupted")),
            trace=run.get("trace"),
            log=run.get("log"),
        )


@dataclass(frozen=True)
class Paths(Result):
    """The environment's folders, relative to the working directory."""

    data_dir: str
    build_dir: str

    @classmethod
    def from_record_paths(cls, paths: Mapping[str, Any]) -> Paths:
        return cls(data_dir=paths["data_dir"], build_dir=paths["build_dir"])


@dataclass(frozen=True)
class StepView(Result):
    """What happened to one step of a phase run."""

    name: str
    status: str  # done | skipped | failed | interrupted | already_done
    duration_s: float
    attempts: int
    summary: str

    @classmethod
    def from_outcome(cls, outcome: StepOutcome) -> StepView:
        return cls(
            name=outcome.name,
            status=outcome.status,
            duration_s=round(outcome.duration_s, 3),
            attempts=outcome.attempts,
            summary=outcome.summary,
        )


@dataclass(frozen=True)
class PhaseView(Result):
    """One phase run: where it started, where it ended, each step, and any failure."""

    environment: str
    phase: str
    from_state: str = field(metadata=key("from"))
    state: str
    status: str  # succeeded | failed | interrupted
    duration_s: float
    steps: tuple[StepView, ...]
    failure: FailureView | None
    log: str | None

    @classmethod
    def from_phase_result(cls, result: PhaseResult) -> PhaseView:
        failure = None
        if result.failure is not None:
            failed = [s for s in result.steps if s.status == "failed"]
            counted = failed[-1].attempts if failed and failed[-1].attempts > 0 else None
            failure = FailureView.from_record_failure(result.failure, attempts=counted)
        return cls(
            environment=result.environment,
            phase=result.phase,
            from_state=result.from_state,
            state=result.state,
            status=result.status,
            duration_s=round(result.duration_s, 3),
            steps=tuple(StepView.from_outcome(s) for s in result.steps),
            failure=failure,
            log=result.log,
        )

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass(frozen=True)
class StepPlan(Result):
    """One step of a dry run: whether it would run, and with what (secrets masked).

    ``when`` and ``params`` are None when the step could not be rendered (``error``
    says why); ``params`` is None too when ``when`` is false."""

    name: str
    uses: str
    when: bool | None = None
    params: Any = None
    error: str | None = None


@dataclass(frozen=True)
class PhasePlan(Result):
    """The phase a dry run would run, and its steps as they would be rendered."""

    phase: str
    from_state: str = field(metadata=key("from"))
    via: str
    to: str
    steps: tuple[StepPlan, ...]


@dataclass(frozen=True)
class PhaseSummary(Result):
    """A phase of a validated machine."""

    name: str
    sources: tuple[str, ...] = field(metadata=key("from"))
    via: str
    to: str
    failed: str
    advance: bool
    steps: tuple[str, ...]


@dataclass(frozen=True)
class EnvironmentSummary(Result):
    """One readable environment of a listing."""

    environment: str
    state: str
    updated_at: str
    failed_step: str | None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EnvironmentSummary:
        return cls(
            environment=record["name"],
            state=record["state"],
            updated_at=record["updated_at"],
            failed_step=(record.get("failure") or {}).get("step"),
        )


@dataclass(frozen=True)
class Unreadable(Result):
    """An environment of a listing whose record could not be read, and why."""

    environment: str
    error: str


# --- one result per command -----------------------------------------------------------


@dataclass(frozen=True)
class ValidateResult(Result):
    """`validate`: the machine is valid; what it declares."""

    valid: bool
    file: str
    name: str
    digest: str
    initial: str
    states: Mapping[str, str]  # state -> kind
    phases: tuple[PhaseSummary, ...]
    happy_path: tuple[str, ...]
    machine: MachineDef = field(metadata=INTERNAL, repr=False, compare=False)

    @classmethod
    def from_machine(cls, machine: MachineDef) -> ValidateResult:
        return cls(
            valid=True,
            file=str(machine.file),
            name=machine.name,
            digest=machine.digest,
            initial=machine.initial,
            states={name: machine.state_kind(name) for name in machine.states},
            phases=tuple(
                PhaseSummary(
                    name=p.name,
                    sources=p.sources,
                    via=p.via,
                    to=p.to,
                    failed=p.failed,
                    advance=p.advance,
                    steps=tuple(s.name for s in p.steps),
                )
                for p in machine.phases
            ),
            happy_path=tuple(machine.happy_path()),
            machine=machine,
        )


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class GraphFileResult(Result):
    """`graph --out FILE`: where the drawing was written."""

    format: str
    environment: str | None
    file: str
    bytes: int


@dataclass(frozen=True)
class CreateResult(Result):
    """`create`: the new environment, its initial state, inputs and folders."""

    environment: str
    state: str
    inputs: Mapping[str, Any]
    paths: Paths

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CreateResult:
        return cls(
            environment=record["name"],
            state=record["state"],
            inputs=copy.deepcopy(record["inputs"]),
            paths=Paths.from_record_paths(record["paths"]),
        )


@dataclass(frozen=True)
class StatusResult(Result):
    """`status`: where an environment is, what failed, who holds it, what to do next."""

    environment: str
    state: str
    description: str
    kind: str  # initial | stable | intermediate | failed | final
    interrupted: bool
    locked_by: LockInfo | None
    failure: FailureView | None
    run: RunView | None
    outputs: Mapping[str, Any]
    updated_at: str
    created_at: str
    next: tuple[str, ...]
    allowed_phases: tuple[str, ...]

    @classmethod
    def from_record(
        cls,
        record: Mapping[str, Any],
        *,
        description: str,
        kind: str,
        holder: LockInfo | None,
        interrupted: bool,
        next_actions: Sequence[str],
        allowed_phases: Sequence[str],
    ) -> StatusResult:
        failure, run = record.get("failure"), record.get("run")
        return cls(
            environment=record["name"],
            state=record["state"],
            description=description,
            kind=kind,
            interrupted=interrupted,
            locked_by=holder,
            failure=FailureView.from_record_failure(failure) if failure else None,
            run=RunView.from_record_run(run) if run else None,
            outputs=copy.deepcopy(record.get("outputs") or {}),
            updated_at=record["updated_at"],
            created_at=record["created_at"],
            next=tuple(next_actions),
            allowed_phases=tuple(allowed_phases),
        )


@dataclass(frozen=True)
class ListResult(Result):
    """`list`: every environment, sorted by name; unreadable ones apart, with why."""

    environments: tuple[EnvironmentSummary, ...]
    unreadable: tuple[Unreadable, ...]

    @classmethod
    def from_entries(cls, entries: Sequence[ListEntry]) -> ListResult:
        return cls(
            environments=tuple(
                EnvironmentSummary.from_record(e.record) for e in entries if e.record is not None
            ),
            unreadable=tuple(
                Unreadable(e.name, e.error or "unreadable") for e in entries if e.record is None
            ),
        )


@dataclass(frozen=True)
class HistoryResult(Result):
    """`history`: the environment's events, oldest first."""

    environment: str
    events: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class RunResult(Result):
    """What `advance`, `up`, `resume`, `run_phase` and `destroy` did.

    ``phases`` are the phases run, in order; ``failure`` is the failure of the last one
    when it failed; ``message`` says why nothing ran (nothing to advance, already
    there, a dry run); ``dry_run`` is the plan of a dry run."""

    environment: str
    state: str
    status: str  # ok | failed
    phases: tuple[PhaseView, ...] = ()
    failure: FailureView | None = None
    message: str | None = None
    dry_run: tuple[PhasePlan, ...] | None = None

    @classmethod
    def from_phase_results(
        cls, environment: str, state: str, results: Sequence[PhaseResult], message: str = ""
    ) -> RunResult:
        phases = tuple(PhaseView.from_phase_result(r) for r in results)
        failed = [p for p in phases if p.failed]
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
