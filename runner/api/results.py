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
from runner.store.record import Failure, Forced, LastCheck, Paths, Record, Run

if TYPE_CHECKING:
    from runner.machine.model import MachineDef
    from runner.run.checks import CheckOutcome, ChecksRun
    from runner.run.phase import PhaseResult
    from runner.store.contract import ListEntry, LockInfo, SnapshotInfo

__all__ = [
    "ArtifactResult",
    "ArtifactsResult",
    "CheckResult",
    "ConfirmRequest",
    "CreateResult",
    "EnvironmentSummary",
    "ExistsResult",
    "ForceStateResult",
    "GraphFileResult",
    "GraphResult",
    "HistoryResult",
    "InputsResult",
    "ListResult",
    "MigrateResult",
    "PhasePlan",
    "PhaseSummary",
    "PurgeResult",
    "RestoreResult",
    "RunResult",
    "SnapshotsResult",
    "StateInitResult",
    "StatusResult",
    "StepPlan",
    "Unreadable",
    "ValidateResult",
    "document",
]


# --- the parts -----------------------------------------------------------------------
#
# A failure, a run and the folders are the store's own types (Failure, Run, Paths of
# runner.store.record), copied from the record; a phase run is the engine's
# PhaseResult with its StepOutcomes. They render through the same as_json.


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class PhasePlan(Result):
    """The phase a dry run would run, and its steps as they would be rendered."""

    phase: str
    from_state: str = field(metadata=key("from"))
    via: str
    to: str
    steps: tuple[StepPlan, ...]


@dataclass(frozen=True)
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
    last_check: LastCheck | None = None
    """The latest `runner check` (None: never checked)."""

    @classmethod
    def from_record(cls, record: Record) -> EnvironmentSummary:
        return cls(
            environment=record.name,
            state=record.state,
            updated_at=record.updated_at,
            failed_step=record.failure.step if record.failure else None,
            last_check=copy.deepcopy(record.last_check),
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
    def from_record(cls, record: Record) -> CreateResult:
        return cls(
            environment=record.name,
            state=record.state,
            inputs=copy.deepcopy(record.inputs),
            paths=copy.copy(record.paths),
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
    failure: Failure | None
    run: Run | None
    outputs: Mapping[str, Any]
    updated_at: str
    created_at: str
    next: tuple[str, ...]
    allowed_phases: tuple[str, ...]
    leftover_processes: tuple[int, ...]
    """Process groups a runner that died without releasing the lock left running."""
    entered_at: str
    """When the environment entered its current state (the last transition into it):
    what the state's description says was true then (e.g. "healthy"), not now."""
    last_check: LastCheck | None = None
    """The latest `runner check`: when, in which state, passed or failed, and why."""
    forced: Forced | None = None
    """The last ``force-state``, until the next phase runs."""
    machine_changed: bool = False
    """Whether the machine file changed since the environment was last moved."""

    @classmethod
    def from_record(
        cls,
        record: Record,
        *,
        entered_at: str,
        description: str,
        kind: str,
        holder: LockInfo | None,
        interrupted: bool,
        next_actions: Sequence[str],
        allowed_phases: Sequence[str],
        leftovers: Sequence[int] = (),
        machine_changed: bool = False,
    ) -> StatusResult:
        return cls(
            environment=record.name,
            state=record.state,
            description=description,
            kind=kind,
            interrupted=interrupted,
            locked_by=holder,
            failure=copy.deepcopy(record.failure),
            run=copy.deepcopy(record.run),
            outputs=copy.deepcopy(record.outputs),
            updated_at=record.updated_at,
            created_at=record.created_at,
            next=tuple(next_actions),
            allowed_phases=tuple(allowed_phases),
            leftover_processes=tuple(leftovers),
            entered_at=entered_at,
            last_check=copy.deepcopy(record.last_check),
            forced=copy.copy(record.forced),
            machine_changed=machine_changed,
        )


@dataclass(frozen=True)
class ListResult(Result):
    """`list`: every environment, sorted by name; unreadable ones apart, with why."""

    environments: tuple[EnvironmentSummary, ...]
    unreadable: tuple[Unreadable, ...]
    filtered: str | None = field(default=None, metadata=INTERNAL)
    """What the listing was filtered by (``--state built``), if anything."""

    @classmethod
    def from_entries(cls, entries: Sequence[ListEntry], filtered: str | None = None) -> ListResult:
        return cls(
            filtered=filtered,
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
class ArtifactsResult(Result):
    """The references of an environment's traces or run logs, oldest first."""

    environment: str
    kind: str  # trace | run
    artifacts: tuple[str, ...]


@dataclass(frozen=True)
class ArtifactResult(Result):
    """One trace or run log of an environment: its text (secrets are masked when it is
    written), or, with an ``offset``, the text after the first ``offset`` characters.
    ``size`` is the whole text's length in characters."""

    environment: str
    ref: str
    offset: int
    size: int
    text: str


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


# --- the operator commands ---------------------------------------------------------------


@dataclass(frozen=True)
class ExistsResult(Result):
    """`exists`: whether the environment exists."""

    environment: str
    exists: bool


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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
            inputs=copy.deepcopy(record.inputs),
            changed=tuple(changed),
            serial=record.serial,
            restarts_phase=restarts,
        )


@dataclass(frozen=True)
class ForceStateResult(Result):
    """`force-state`: the environment was moved to ``state`` without running anything."""

    environment: str
    state: str
    forced: Forced
    serial: int

    @classmethod
    def from_record(cls, record: Record) -> ForceStateResult:
        assert record.forced is not None
        return cls(record.name, record.state, copy.copy(record.forced), record.serial)


@dataclass(frozen=True)
class SnapshotsResult(Result):
    """`snapshots`: the kept versions of the environment's record, oldest first (the
    current one last)."""

    environment: str
    current: int
    snapshots: tuple[SnapshotInfo, ...]


@dataclass(frozen=True)
class RestoreResult(Result):
    """`restore`: the version ``restored`` is current again, saved as ``serial``."""

    environment: str
    restored: int
    serial: int
    state: str
    from_state: str = field(metadata=key("from"))


def document(result: Result) -> dict[str, Any]:
    """The JSON document of ``result`` (``--output json``, the dashboard's API):
    ``api_version`` on top; a run that ended in a failed step also carries the error
    keys (``error``, ``message``, ``exit_code``) of an error document."""
    from runner.errors import StepError
    from runner.result import API_VERSION

    data: dict[str, Any] = {"api_version": API_VERSION}
    if isinstance(result, RunResult) and result.failure is not None:
        data.update(
            {
                "error": StepError.__name__,
                "message": result.failure.headline,
                "exit_code": result.exit_code,
            }
        )
    for name, value in result.to_json().items():
        data.setdefault(name, value)
    return data


# --- backends ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StateInitResult(Result):
    """`state init`: the backend made ready (its schema version before and after)."""

    url: str
    backend: str  # file | postgresql
    schema_before: int
    schema_after: int


@dataclass(frozen=True)
class MigrateResult(Result):
    """`state migrate`: the environments copied (and verified) from one backend to
    another; the source is unchanged."""

    source: str
    target: str
    environments: tuple[str, ...]
