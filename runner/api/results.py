"""What the methods of :class:`runner.Runner` return: typed, frozen results.

Every result is a :class:`~runner.result.Result`, so its JSON form (``to_json()``) is
derived from its fields; ``schemas/output.schema.json`` describes it. A result never
holds the stored record: each one is built from it by one small constructor
(``from_record`` and the like), the only code here that reads a record.

This module holds what the read-only commands return (`status`, `list`, `history`,
`exists`),
which must start fast; the results of the commands that validate, draw, create or run
phases live in :mod:`runner.api.outcomes` and are imported from here too, on first use
(``from runner.api.results import RunResult`` works as ever): building a frozen
dataclass costs about a millisecond at import, and a read never needs those.
"""

from __future__ import annotations

from runner.result import INTERNAL, Result
from runner.store.record import Failure, Forced, LastCheck, Record, Run
from runner.struct import copied, field, struct

TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from runner.api.outcomes import (
        ArtifactResult,
        ArtifactsResult,
        CheckResult,
        ConfirmRequest,
        CreateResult,
        ForceStateResult,
        GraphFileResult,
        GraphResult,
        InputsResult,
        MigrateResult,
        PhasePlan,
        PhaseSummary,
        PurgeResult,
        RestoreResult,
        RunResult,
        SnapshotsResult,
        StateInitResult,
        StepPlan,
        ValidateResult,
    )
    from runner.store.contract import ListEntry, LockInfo

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
    "UnverifiedLeftover",
    "ValidateResult",
    "document",
]

#: The results of :mod:`runner.api.outcomes`, imported from there when first asked for.
_OUTCOMES = frozenset(
    {
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
    }
)


def __getattr__(name: str) -> Any:
    if name in _OUTCOMES:
        from runner.api import outcomes

        return getattr(outcomes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the parts -----------------------------------------------------------------------
#
# A failure, a run and the folders are the store's own types (Failure, Run, Paths of
# runner.store.record), copied from the record; a phase run is the engine's
# PhaseResult with its StepOutcomes. They render through the same as_json.


@struct(frozen=True)
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
            last_check=copied(record.last_check),
        )


@struct(frozen=True)
class Unreadable(Result):
    """An environment of a listing whose record could not be read, and why."""

    environment: str
    error: str


@struct(frozen=True)
class UnverifiedLeftover(Result):
    """A process group that a runner which ended without releasing the lock noted,
    which may still run but cannot be told for certain to be that runner's (it ran on
    another host, its record does not identify it, ...): no command stops it; a person
    checks it and stops it by hand."""

    group: int
    host: str
    """The host it ran on."""
    pid: int
    """The runner that noted it."""
    command: str
    """What that runner was doing."""
    reason: str
    """Why it is not stopped for the operator."""

    @property
    def elsewhere(self) -> bool:
        """Whether it ran on another host than this one."""
        import os

        return self.host != os.uname().nodename

    def text(self) -> str:
        """What to say of it, and what to do."""
        where, there = (f" on host {self.host}", f" on {self.host}") if self.elsewhere else ("", "")
        return (
            f"process group {self.group} may still run{where}, left by pid {self.pid} "
            f"({self.command}), which ended without releasing the lock; it is not stopped "
            f"for you: {self.reason}. Check it{there} (pgrep -l -g {self.group}) and, if it "
            f"is that run's, stop it by hand (kill -- -{self.group}) before resuming"
        )


@struct(frozen=True)
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
    unverified_processes: tuple[UnverifiedLeftover, ...]
    """Process groups such a runner noted that may still run, but not stopped by the
    next command: they cannot be told for certain to be its own."""
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
        unverified: Sequence[UnverifiedLeftover] = (),
        machine_changed: bool = False,
    ) -> StatusResult:
        return cls(
            environment=record.name,
            state=record.state,
            description=description,
            kind=kind,
            interrupted=interrupted,
            locked_by=holder,
            failure=copied(record.failure),
            run=copied(record.run),
            outputs=copied(record.outputs),
            updated_at=record.updated_at,
            created_at=record.created_at,
            next=tuple(next_actions),
            allowed_phases=tuple(allowed_phases),
            leftover_processes=tuple(leftovers),
            unverified_processes=tuple(unverified),
            entered_at=entered_at,
            last_check=copied(record.last_check),
            forced=copied(record.forced),
            machine_changed=machine_changed,
        )


@struct(frozen=True)
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


@struct(frozen=True)
class HistoryResult(Result):
    """`history`: the environment's events, oldest first."""

    environment: str
    events: tuple[Mapping[str, Any], ...]


@struct(frozen=True)
class ExistsResult(Result):
    """`exists`: whether the environment exists."""

    environment: str
    exists: bool


# --- documents -------------------------------------------------------------------------


def document(result: Result) -> dict[str, Any]:
    """The JSON document of ``result`` (``--output json``, the dashboard's API):
    ``api_version`` on top; a run that ended in a failed step also carries the error
    keys (``error``, ``message``, ``exit_code``) of an error document."""
    from runner.errors import StepError
    from runner.result import API_VERSION

    data: dict[str, Any] = {"api_version": API_VERSION}
    run: RunResult | None = _outcome(result, "RunResult")
    if run is not None and run.failure is not None:
        data.update(
            {
                "error": StepError.__name__,
                "message": run.failure.headline,
                "exit_code": run.exit_code,
            }
        )
    for name, value in result.to_json().items():
        data.setdefault(name, value)
    return data


def _outcome(result: Result, name: str) -> Any:
    """``result`` if it is the class ``name`` of :mod:`runner.api.outcomes`, else None.
    That module is not imported here (a read never needs it): a result of it exists
    only once something else has."""
    import sys

    module = sys.modules.get("runner.api.outcomes")
    return result if module is not None and type(result) is getattr(module, name) else None
