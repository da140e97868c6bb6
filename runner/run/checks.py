"""Checks: the steps of machine.yaml's `checks:` that apply in the current state, run
one after another under the caller's lock, each with its `when`, rendering, plugin,
retries and deadline as a phase's steps have (:class:`~runner.run.phase.PhaseRunner`
runs them); none changes the state. The result is recorded once: the record's
``last_check`` and a ``check`` event with each check's result.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from runner import signals
from runner.errors import InterruptedRunError, InterruptSignal, StepError
from runner.machine.model import CheckDef, PhaseDef
from runner.result import Result
from runner.run.phase import PhaseRunner, RunContext
from runner.run.session import Session
from runner.store.record import CheckEntry, LastCheck, Run, now_iso

__all__ = ["CheckOutcome", "ChecksRun", "run_checks"]

#: What the checks' run log and template context call the run (`phase` in templates).
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
    run = Run(phase=CHECK_RUN, started_at=now_iso(), pid=os.getpid(), host=session.host)
    checked_at = now_iso()
    outcomes: list[CheckOutcome] = []
    with signals.phase_interrupts() as interrupts:
        umask = os.umask(0o077)
        try:
            ctx = runner._open(holder, run, interrupts, state)
        except BaseException:
            os.umask(umask)
            raise
        try:
            runner.progress.phase_started(session.name, "checks", len(checks))
            for index, check in enumerate(checks, start=1):
                interrupts.check()
                outcome = _one(runner, ctx, index, len(checks), check)
                outcomes.append(outcome)
        except InterruptSignal as sig:
            name = signal.Signals(sig.signum).name
            runner.progress.phase_finished("checks", "interrupted", state)
            raise InterruptedRunError(
                f"the checks of environment '{session.name}' were interrupted by {name}; "
                "nothing was recorded",
                signum=sig.signum,
                state=state,
            ) from None
        finally:
            ctx.run_log.close()
            ctx.secrets.close()
            ctx.watchdog.close()
            os.umask(umask)
    done = ChecksRun(state, checked_at, tuple(outcomes), run.log)
    _record(session, done)
    runner.progress.phase_finished("checks", done.status, state)
    return done


def _one(
    runner: PhaseRunner, ctx: RunContext, index: int, total: int, check: CheckDef
) -> CheckOutcome:
    session = runner.session
    ctx.begin_step(check)
    context = session.template_context(CHECK_RUN, check.name, ctx.secrets)
    try:
        if not runner._condition(check, context):
            runner.progress.step_finished(index, total, check.name, "skipped", 0.0)
            ctx.run_log.write(check.name, f"--- check {check.name} skipped (`when` is false)")
            return CheckOutcome(check.name, check.uses, "skipped")
        runner.progress.step_started(index, total, check.name)
        ctx.run_log.write(check.name, f"--- check {check.name} ({check.uses}) started")
        ctx.params = runner._render(check, context)
        with ctx.interrupts.zone():
            runner._attempts(ctx, check, context)
    except StepError as exc:
        duration = ctx.step_duration
        summary = ctx.secrets.mask(exc.summary)
        ctx.run_log.write(check.name, f"--- check {check.name} failed ({exc.kind}): {summary}")
        runner.progress.step_finished(index, total, check.name, "failed", duration, summary)
        return CheckOutcome(
            check.name, check.uses, "failed", summary, exc.kind, round(duration, 3), ctx.attempts
        )
    duration = ctx.step_duration
    ctx.run_log.write(check.name, f"--- check {check.name} passed in {duration:.2f}s")
    runner.progress.step_finished(index, total, check.name, "passed", duration)
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
