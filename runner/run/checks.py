"""Checks: the steps of machine.yaml's `checks:` that apply in the current state, run
one after another under the caller's lock, each with its `when`, rendering, plugin,
retries and deadline as a phase's steps have (:meth:`PhaseRunner.run_alone
<runner.run.phase.PhaseRunner.run_alone>`); none changes the state. The result is
recorded once: the record's ``last_check`` and a ``check`` event with each check's
result.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from runner.errors import InterruptedRunError, InterruptSignal, StepError
from runner.machine.model import CheckDef, PhaseDef
from runner.result import Result
from runner.run.phase import PhaseRunner, RunContext
from runner.run.session import Session
from runner.store.record import CheckEntry, LastCheck, now_iso

__all__ = ["CheckOutcome", "ChecksRun", "run_checks"]

#: What the checks' templates see as ``phase``, and their run log's name.
CHECK_RUN = "check"


@dataclass(frozen=True)
class CheckOutcome(Result):
    """One check: ``passed``, ``failed`` (``kind`` and ``summary`` say why) or
    ``skipped`` (its `when` was false)."""

    name: str
    uses: str
    status: str
    summary: str | None = None
    kind: str | None = None
    duration_s: float = 0.0
    attempts: int = 0


@dataclass(frozen=True)
class ChecksRun:
    """What :func:`run_checks` did: each check, when, and the run log."""

    state: str
    checked_at: str
    outcomes: tuple[CheckOutcome, ...]
    log: str | None

    @property
    def status(self) -> str:
        return "failed" if any(o.status == "failed" for o in self.outcomes) else "passed"


def run_checks(session: Session, runner: PhaseRunner, checks: list[CheckDef]) -> ChecksRun:
    """Run ``checks`` (the current state's) and record their result; an interrupt stops
    them, records nothing and raises :class:`InterruptedRunError` (exit 130/143/129)."""
    state = session.state
    holder = PhaseDef(CHECK_RUN, (state,), state, state, state, steps=tuple(checks))
    checked_at = now_iso()
    outcomes: list[CheckOutcome] = []
    progress = runner.progress
    with runner.opened(holder) as ctx:
        progress.phase_started(session.name, "checks", len(checks))
        try:
            for index, check in enumerate(checks, start=1):
                ctx.interrupts.check()
                outcomes.append(_one(runner, ctx, index, len(checks), check))
        except InterruptSignal as sig:
            progress.phase_finished("checks", "interrupted", state)
            raise InterruptedRunError(
                f"the checks of environment '{session.name}' were interrupted by "
                f"{signal.Signals(sig.signum).name}; nothing was recorded",
                signum=sig.signum,
                state=state,
            ) from None
        log = ctx.run.log
    done = ChecksRun(state, checked_at, tuple(outcomes), log)
    _record(session, done)
    progress.phase_finished("checks", done.status, state)
    return done


def _one(
    runner: PhaseRunner, ctx: RunContext, index: int, total: int, check: CheckDef
) -> CheckOutcome:
    progress, say = runner.progress, ctx.run_log.write
    progress.step_started(index, total, check.name)
    try:
        ran = runner.run_alone(ctx, check)
    except StepError as exc:
        duration = ctx.step_duration
        summary = ctx.secrets.mask(exc.summary)
        say(check.name, f"--- check {check.name} failed ({exc.kind}): {summary}")
        progress.step_finished(index, total, check.name, "failed", duration, summary)
        return CheckOutcome(
            check.name, check.uses, "failed", summary, exc.kind, round(duration, 3), ctx.attempts
        )
    if not ran:
        say(check.name, f"--- check {check.name} skipped (`when` is false)")
        progress.step_finished(index, total, check.name, "skipped", 0.0)
        return CheckOutcome(check.name, check.uses, "skipped")
    duration = ctx.step_duration
    say(check.name, f"--- check {check.name} passed in {duration:.2f}s")
    progress.step_finished(index, total, check.name, "passed", duration)
    return CheckOutcome(
        check.name, check.uses, "passed", duration_s=round(duration, 3), attempts=ctx.attempts
    )


def _record(session: Session, done: ChecksRun) -> None:
    """The record's ``last_check`` (one save; the state is unchanged) and a ``check``
    event with each check's result."""
    session.record.last_check = LastCheck(
        checked_at=done.checked_at,
        state=done.state,
        status=done.status,
        checks=[CheckEntry(o.name, o.status, o.summary) for o in done.outcomes],
    )
    session.save()
    session.event(
        "check",
        state=done.state,
        status=done.status,
        checks=[
            {
                "name": o.name,
                "status": o.status,
                "summary": o.summary,
                "kind": o.kind,
                "duration_s": o.duration_s,
            }
            for o in done.outcomes
        ],
        log=done.log,
    )
