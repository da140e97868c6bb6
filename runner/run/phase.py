"""Running one phase of one environment, step by step, under the caller's lock.

:class:`PhaseRunner` fires the phase's start transition (persisted before any step
runs), runs each step not yet completed (``when``, rendering, the plugin with its
retries and deadline, outputs), persists after each one, and ends with the finish
transition, the fail transition (with the failure record and a trace) or, on
SIGINT/SIGTERM, an interrupted run left in the ``via`` state. What one run carries
(its run log, secrets, process helper, output tail) is a :class:`RunContext`; state
changes go through the :class:`~runner.run.session.Session`; signals through
:mod:`runner.signals`; traces through :mod:`runner.run.traces`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from runner import signals
from runner.errors import (
    InputError,
    InterruptedRunError,
    InterruptSignal,
    InvalidInputsError,
    LockLostError,
    StepError,
    StorageError,
    did_you_mean,
)
from runner.log import logger
from runner.machine.model import PhaseDef, StepDef, step_digests
from runner.machine.templated import TemplateFailure, has_template
from runner.plugin import Step, StepContext
from runner.result import Result, key
from runner.run.inputs import SecretResolver, mask_params
from runner.run.process import ProcessSupervisor, RunLog, Watchdog, identified
from runner.run.registry import StepRegistry
from runner.run.session import Session
from runner.run.traces import TAIL_LINES, trace_text, write_trace
from runner.store.record import Failure, Record, Run, now_iso
from runner.struct import field, struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol
else:
    Protocol = object  # a protocol is the type checkers' notion (typing is slow to import)

__all__ = ["NullProgress", "PhaseResult", "PhaseRunner", "Progress", "StepOutcome"]

log = logger()


class Progress(Protocol):
    """What the engine reports while a phase runs (the CLI draws it)."""

    def phase_started(self, env: str, phase: str, total: int) -> None: ...
    def step_started(self, index: int, total: int, step: str) -> None: ...
    def step_finished(
        self, index: int, total: int, step: str, status: str, duration_s: float, detail: str = ""
    ) -> None: ...
    def output_line(self, step: str, line: str) -> None: ...
    def phase_finished(self, phase: str, status: str, state: str) -> None: ...


def _rendered(value: Any, context: Mapping[str, Any]) -> Any:
    """``value`` with its templates rendered, as a new structure (the sandbox, slow to
    import, is imported for the first step that has a template)."""
    if has_template(value):
        from runner.machine.templating import render_value

        return render_value(value, context)
    return _copied(value)


def _copied(value: Any) -> Any:
    """What rendering makes of ``value`` when it holds no template: the same values in
    new dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copied(v) for v in value]
    return value


class _CopyWhenRead:
    """What :class:`_StepContext` is given for its ``environment``: the record to copy."""

    __slots__ = ("record",)

    def __init__(self, record: Record) -> None:
        self.record = record


class _StepContext(StepContext):
    """The :class:`StepContext` the engine gives a plugin: its ``environment``, a copy of
    the record, is made when the plugin first reads it (most never do, and a deep copy
    of the record was the dearest part of a step's bookkeeping). The record does not
    change while the plugin runs (the engine waits for it), so the copy is the record
    the step was given. A value a plugin assigns is kept as it is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # a struct's __init__ fills the instance's fields directly: the one behind the
        # property is moved to where the property keeps it
        values = self.__dict__
        values["_environment"] = values.pop("environment")

    @property
    def environment(self) -> Record:
        held = self.__dict__["_environment"]
        if isinstance(held, _CopyWhenRead):
            held = self.__dict__["_environment"] = held.record.copy()
        return held  # type: ignore[no-any-return]

    @environment.setter
    def environment(self, value: Record) -> None:
        self.__dict__["_environment"] = value


class NullProgress:
    def phase_started(self, env: str, phase: str, total: int) -> None:
        pass

    def step_started(self, index: int, total: int, step: str) -> None:
        pass

    def step_finished(
        self, index: int, total: int, step: str, status: str, duration_s: float, detail: str = ""
    ) -> None:
        pass

    def output_line(self, step: str, line: str) -> None:
        pass

    def phase_finished(self, phase: str, status: str, state: str) -> None:
        pass


class _GuardedProgress:
    """A display that can never stop a phase: the first error it raises (a closed
    standard output, say) is logged and the display is dropped; the phase runs on."""

    def __init__(self, inner: Progress) -> None:
        self._inner: Progress | None = inner

    def _call(self, method: str, *args: Any) -> None:
        if self._inner is None:
            return
        try:
            getattr(self._inner, method)(*args)
        except Exception as exc:
            self._inner = None
            log.warning(
                "progress display stopped (%s: %s); the phase goes on", type(exc).__name__, exc
            )

    def phase_started(self, env: str, phase: str, total: int) -> None:
        self._call("phase_started", env, phase, total)

    def step_started(self, index: int, total: int, step: str) -> None:
        self._call("step_started", index, total, step)

    def step_finished(
        self, index: int, total: int, step: str, status: str, duration_s: float, detail: str = ""
    ) -> None:
        self._call("step_finished", index, total, step, status, duration_s, detail)

    def output_line(self, step: str, line: str) -> None:
        self._call("output_line", step, line)

    def phase_finished(self, phase: str, status: str, state: str) -> None:
        self._call("phase_finished", phase, status, state)


@struct(frozen=True)
class StepOutcome(Result):
    """One step of a phase run. ``attempts`` counts the attempts made (0: not run)."""

    name: str
    status: str  # done | skipped | failed | interrupted | already_done
    duration_s: float = 0.0
    attempts: int = 0
    summary: str = ""


@struct(frozen=True)
class PhaseResult(Result):
    """What one phase run did."""

    environment: str
    phase: str
    from_state: str = field(metadata=key("from"))
    state: str
    status: str  # succeeded | failed | interrupted
    duration_s: float = 0.0
    steps: tuple[StepOutcome, ...] = ()
    failure: Failure | None = None
    log: str | None = None


@struct
class RunContext:
    """What one run of a phase carries from step to step."""

    phase: PhaseDef
    from_state: str
    run: Run
    run_log: RunLog
    secrets: SecretResolver
    supervisor: ProcessSupervisor
    interrupts: signals.Interrupts
    #: The last lines of the running step's output (for its trace).
    tail: collections.deque[str]
    #: Stops the running program's group if the runner dies without doing so.
    watchdog: Watchdog
    started: float = field(default_factory=time.monotonic)
    outcomes: list[StepOutcome] = field(default_factory=list)
    #: The step being run, its rendered parameters, when it started, attempts made.
    step: StepDef | None = None
    params: Any = None
    step_started_at: str = ""
    step_t0: float = 0.0
    attempts: int = 0

    def begin_step(self, step: StepDef) -> None:
        self.step, self.params, self.attempts = step, None, 0
        self.step_started_at, self.step_t0 = now_iso(), time.monotonic()
        self.tail.clear()

    @property
    def step_duration(self) -> float:
        return time.monotonic() - self.step_t0


def secrets_used(session: Session, phase: PhaseDef, steps: list[StepDef]) -> set[str] | None:
    """The secret inputs ``steps`` of ``phase`` read (``secret('...')`` and
    ``secret_file('...')`` in `with` and `when`, and in the ``*.j2`` files of a
    `template` step's source); None when one computes the name (any of them)."""
    from runner.run.inputs import secrets_in, strings_in, template_texts

    used: set[str] = set()
    for step in steps:
        texts = list(strings_in(step.with_))
        if isinstance(step.when, str):
            texts.append("{{ " + step.when + " }}")  # an expression, as `when` is read
        source = step.with_.get("source") if step.uses == "template" else None
        if isinstance(source, str):
            try:
                rendered = _rendered(source, session.template_context(phase.name, step.name))
            except (TemplateFailure, InputError):
                rendered = None
            if isinstance(rendered, str) and rendered:
                path = Path(rendered)
                path = path if path.is_absolute() else session.machine.dir / path
                texts.extend(template_texts(path))
        found = secrets_in(texts)
        if found is None:
            return None
        used |= found
    return used


def refuse_unreadable_secrets(session: Session, phase: PhaseDef, steps: list[StepDef]) -> None:
    """InvalidInputsError (nothing run, nothing changed) when ``steps`` of ``phase`` read
    a secret input the environment names but which cannot be read now (its variable
    not set, its file missing)."""
    used = secrets_used(session, phase, steps)
    if used is not None and not used:
        return
    resolver = SecretResolver(session.machine.inputs_schema, session.record.inputs, session.workdir)
    try:
        problems = resolver.unreadable(used)
    finally:
        resolver.close()
    if problems:
        raise InvalidInputsError(
            f"phase '{phase.name}' of environment '{session.name}' reads secret inputs that "
            "cannot be read now:\n  " + "\n  ".join(problems),
            hint="set them (export VARIABLE=..., or create the file), then run the command "
            f"again; nothing was run and '{session.name}' stays in '{session.state}'",
            state=session.state,
        )


def refuse_taken_ports(session: Session, phase: PhaseDef) -> None:
    """InvalidInputsError (nothing run, nothing changed) when a port of this machine
    the environment names (``free_port`` inputs) is another environment's or in use:
    checked before the phase that leaves the initial state (the one that makes the
    instance)."""
    from runner.run.inputs import marked_properties

    if next(marked_properties(session.machine.inputs_schema, "free_port"), None) is None:
        return  # no port: the ports' module (sockets) is not needed
    from runner.run import ports

    marked = list(ports.port_inputs(session.machine.inputs_schema))
    if not marked:
        return
    others = ports.taken(session.store, session.machine, session.name)
    problems = ports.problems(marked, session.record.inputs, others)
    if problems:
        raise InvalidInputsError(
            f"phase '{phase.name}' of environment '{session.name}' would use ports that are "
            "taken:\n  " + "\n  ".join(problems),
            hint="stop what uses them, or destroy this environment and create it again "
            f"without those ports (create picks free ones); '{session.name}' stays in "
            f"'{session.state}'",
            state=session.state,
        )


def _jitter() -> float:
    """A random draw in [0, 1) for the pause between attempts (:mod:`random` is imported
    for the first retry: a phase whose steps all succeed never needs it)."""
    import random

    return random.random()


def _resume_after(exc: StorageError, name: str, phase: str, state: str) -> None:
    """A save (or another write) failed once the phase had started: the environment
    stays in ``state`` with the phase interrupted, so the way on is ``resume``, not the
    same command again (``exc``'s hint said that, and that nothing was changed)."""
    if isinstance(exc, LockLostError):
        return  # its own hint says what happened to the lock
    exc.hint = (
        f"{exc.remedy or 'fix what the message names'}, then `runner resume {name}`: phase "
        f"'{phase}' stopped in '{state}' (what was saved before stays)"
    )


class PhaseRunner:
    """Runs one phase of one environment, step by step."""

    def __init__(
        self,
        session: Session,
        registry: StepRegistry,
        progress: Progress | None = None,
        *,
        grace_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        draw: Callable[[], float] | None = None,
    ) -> None:
        self.session = session
        self.registry = registry
        self.progress: Progress = _GuardedProgress(progress) if progress else NullProgress()
        self.grace_s = grace_s
        #: How the pause between attempts is waited, and its jitter drawn (tests pass a
        #: fake clock and a seeded random).
        self.sleep = sleep
        self.draw = draw or _jitter

    # -- entry points -----------------------------------------------------------------

    def start(self, phase: PhaseDef) -> PhaseResult:
        """Fire the phase's start transition and run every step."""
        session = self.session
        run = self._new_run(phase)
        session.record.run = run
        session.record.failure = None
        session.record.forced = None

        def prelude() -> None:
            session.fire(phase.start_trigger, phase=phase.name)

        return self._run(phase, run, prelude)

    def resume(self, phase: PhaseDef, from_step: str | None = None) -> PhaseResult:
        """Re-enter an interrupted (via) or failed phase; continue from the first step not
        completed, or from ``from_step``."""
        session = self.session
        run = session.record.run
        if run is None or run.phase != phase.name:
            run = self._new_run(phase)
        completed = list(run.completed_steps)
        if from_step is not None:
            names = [s.name for s in phase.steps]
            before = set(names[: names.index(from_step)])
            completed = [n for n in completed if n in before]
        run.completed_steps = completed
        run.skipped_steps = [s for s in run.skipped_steps if s in completed]
        run.interrupted = False
        run.pid = os.getpid()
        run.host = session.host
        run.trace = None
        run.current_step = _pending(phase, run)
        run.machine_digest = session.machine.digest
        run.step_digests = step_digests(phase)
        session.record.run = run
        session.record.forced = None

        def prelude() -> None:
            if session.state == phase.failed:
                session.record.failure = None
                session.fire(phase.resume_trigger, phase=phase.name)
            else:
                session.save()
                session.event("resume", phase=phase.name, state=session.state)
                log.info(
                    "environment=%s resuming phase=%s in state=%s",
                    session.name,
                    phase.name,
                    session.state,
                )

        return self._run(phase, run, prelude)

    def preview(self, phase: PhaseDef, steps: list[StepDef]) -> dict[str, str]:
        """What each of ``steps`` of ``phase`` (ones that would run) would change, by
        step name, from the plugins' ``preview`` (a dry run: nothing changes; a preview
        that fails says why instead)."""
        session = self.session
        found: dict[str, str] = {}
        wanted = [
            step
            for step in steps
            if (cls := self.registry.get(step.uses)) is not None and cls.preview is not Step.preview
        ]
        if not wanted:
            return found
        with self.opened(phase, "dry-run") as ctx:
            for step in wanted:
                ctx.begin_step(step)
                context = session.template_context(phase.name, step.name, ctx.secrets)
                try:
                    params = self._render(step, context)
                    with ctx.interrupts.zone(), ctx.interrupts.deadline(step.timeout_s):
                        said = self.registry.create(step.uses).preview(
                            self._step_context(ctx, step, context), params
                        )
                except StepError as exc:
                    said = f"no preview: {ctx.secrets.mask(exc.summary)}"
                except signals.StepDeadline:
                    said = f"no preview: it took longer than {step.timeout_s:g}s"
                except InterruptSignal as sig:
                    raise InterruptedRunError(
                        f"the dry run of phase '{phase.name}' of environment "
                        f"'{session.name}' was interrupted; nothing was changed",
                        signum=sig.signum,
                        state=session.state,
                    ) from None
                except Exception as exc:  # a plugin bug: the dry run still shows the rest
                    said = f"no preview: plugin '{step.uses}' raised {type(exc).__name__}"
                if said is not None:
                    found[step.name] = ctx.secrets.mask(said)
        return found

    @contextlib.contextmanager
    def opened(self, phase: PhaseDef, kind: str = "") -> Iterator[RunContext]:
        """A run context for steps run outside a phase's transitions (checks, a dry
        run's previews): no state change, its own run log (``<phase>``, or
        ``<phase>-<kind>`` with a kind), signals held but inside a step's zone, files
        private as a phase's are."""
        session = self.session
        run = Run(phase=phase.name, started_at=now_iso(), pid=os.getpid(), host=session.host)
        with signals.phase_interrupts() as interrupts:
            umask = os.umask(0o077)
            try:
                ctx = self._open(phase, run, interrupts, session.state, kind)
                try:
                    yield ctx
                finally:
                    ctx.run_log.close()
                    ctx.secrets.close()
                    ctx.watchdog.close()
            finally:
                os.umask(umask)

    def run_alone(self, ctx: RunContext, step: StepDef) -> bool:
        """Run ``step`` in ``ctx`` (of :meth:`opened`) without a phase's bookkeeping: its
        `when` (False: skipped, nothing run), rendering, the plugin with its retries and
        deadline. Raises :class:`StepError` when it fails; ``ctx.attempts`` counts."""
        ctx.begin_step(step)
        context = self.session.template_context(ctx.phase.name, step.name, ctx.secrets)
        if not self._condition(step, context):
            return False
        ctx.params = self._render(step, context)
        with ctx.interrupts.zone():
            self._attempts(ctx, step, context)
        return True

    # -- the loop ---------------------------------------------------------------------

    def _new_run(self, phase: PhaseDef) -> Run:
        run = Run(phase=phase.name, started_at=now_iso(), pid=os.getpid(), host=self.session.host)
        run.current_step = _pending(phase, run)
        run.machine_digest = self.session.machine.digest
        run.step_digests = step_digests(phase)
        return run

    def _open(
        self,
        phase: PhaseDef,
        run: Run,
        interrupts: signals.Interrupts,
        from_state: str,
        kind: str = "",
    ) -> RunContext:
        """The context of one run of ``phase``: secrets, its run log (named after the
        phase, and ``kind`` when given), the process helper and its watchdog."""
        session = self.session
        secrets = SecretResolver(
            session.machine.inputs_schema, session.record.inputs, session.workdir
        )
        secrets.preload()  # masked from the start, whatever prints them
        label = f"{phase.name}-{kind}" if kind else phase.name
        writer = session.store.open_artifact(session.name, "run", label)
        run.log = writer.ref
        run_log = RunLog(writer)
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

        def on_line(step: str, line: str) -> None:
            tail.append(line)
            self.progress.output_line(step, line)

        lease = session.lease

        watchdog = Watchdog()

        def on_group(group: int | None) -> None:
            interrupts.running(group)
            watchdog.running(group)
            if lease is not None:
                lease.note_processes(() if group is None else (identified(group),))

        supervisor = ProcessSupervisor(
            run_log,
            on_line=on_line,
            mask=secrets.mask,
            grace_s=self.grace_s,
            hold_signals=interrupts.critical,
            mask_result=secrets.mask_value,
            on_group=on_group,
            withheld=secrets.env_names(),
        )
        return RunContext(
            phase, from_state, run, run_log, secrets, supervisor, interrupts, tail, watchdog
        )

    def _run(self, phase: PhaseDef, run: Run, prelude: Callable[[], None]) -> PhaseResult:
        session = self.session
        from_state = session.state
        pending = [s for s in phase.steps if s.name not in run.completed_steps]
        refuse_unreadable_secrets(session, phase, pending)
        first = session.machine.advancing_phase(session.machine.initial)
        if first is not None and first.name == phase.name:
            refuse_taken_ports(session, phase)
        with signals.phase_interrupts() as interrupts:
            try:
                interrupts.check()  # a signal before the phase starts: nothing changes
            except InterruptSignal as sig:
                name = signal.Signals(sig.signum).name
                raise InterruptedRunError(
                    f"environment '{session.name}' interrupted by {name} before phase "
                    f"'{phase.name}' started; it stays in '{session.state}'",
                    signum=sig.signum,
                    state=session.state,
                    phase=phase.name,
                ) from None
            # what a phase writes (rendered files, the engine's state, logs) is private
            # like data/: folders 0700, files 0600, for the runner and its programs
            umask = os.umask(0o077)
            try:
                ctx = self._open(phase, run, interrupts, from_state)
            except BaseException:
                os.umask(umask)
                raise
            total = len(phase.steps)
            self.progress.phase_started(session.name, phase.name, total)
            status = "failed"
            # Signals are held here, and raise only inside a step's zone: a signal can
            # never cut a save, the failure record or the trace (see runner.signals).
            try:
                failure: StepError | None = None
                try:
                    prelude()
                    for index, step in enumerate(phase.steps, start=1):
                        interrupts.check()
                        self._step(ctx, index, step)
                    interrupts.check()
                    run.finished_at = now_iso()
                    run.current_step = None
                    session.fire(phase.finish_trigger, phase=phase.name)
                    status = "succeeded"
                except StepError as exc:
                    failure = exc
                except InterruptSignal as sig:
                    self._interrupted(ctx, sig.signum)
                    raise self._interrupted_error(ctx, sig.signum) from None
                except StorageError as exc:
                    _resume_after(exc, session.name, phase.name, session.state)
                    raise
                if failure is not None:
                    self._fail(ctx, failure)
                    if interrupts.signum is not None:
                        log.warning(
                            "environment=%s %s arrived while the failure of step %s was "
                            "being recorded: the phase is recorded as failed",
                            session.name,
                            signal.Signals(interrupts.signum).name,
                            ctx.step.name if ctx.step else "-",
                        )
            finally:
                ctx.run_log.close()
                ctx.secrets.close()
                ctx.watchdog.close()
                os.umask(umask)
        self.progress.phase_finished(phase.name, status, session.state)
        return PhaseResult(
            environment=session.name,
            phase=phase.name,
            from_state=from_state,
            state=session.state,
            status=status,
            duration_s=round(time.monotonic() - ctx.started, 3),
            steps=tuple(ctx.outcomes),
            failure=session.record.failure if status == "failed" else None,
            log=run.log,
        )

    def _step(self, ctx: RunContext, index: int, step: StepDef) -> None:
        """Run ``step`` (number ``index``) unless it is done; persist what it did."""
        session, run, phase = self.session, ctx.run, ctx.phase
        total = len(phase.steps)
        if step.name in run.completed_steps:
            # done by an earlier run of this phase; skipped ones (`when` false) stay skipped
            if step.name in run.skipped_steps:
                ctx.outcomes.append(StepOutcome(step.name, "skipped"))
                self.progress.step_finished(index, total, step.name, "skipped", 0.0)
            else:
                ctx.outcomes.append(StepOutcome(step.name, "already_done"))
                self.progress.step_finished(index, total, step.name, "already done", 0.0)
            return
        ctx.begin_step(step)
        context = session.template_context(phase.name, step.name, ctx.secrets)
        if not self._condition(step, context):
            run.completed_steps.append(step.name)
            run.skipped_steps.append(step.name)
            self._step_done(ctx, step, "skipped", 0.0)
            ctx.outcomes.append(StepOutcome(step.name, "skipped"))
            self.progress.step_finished(index, total, step.name, "skipped", 0.0)
            return
        if run.current_step != step.name:
            # normally the previous save already named this step (one durable save per
            # step); only the first step after a resume gets here
            run.current_step = step.name
            session.save()
        self.progress.step_started(index, total, step.name)
        ctx.run_log.write(step.name, f"--- step {step.name} ({step.uses}) started")
        ctx.params = self._render(step, context)
        with ctx.interrupts.zone():
            results = self._attempts(ctx, step, context)
        self._merge_outputs(step, results, ctx.secrets)
        self._check_run_log(ctx.run_log)
        duration = ctx.step_duration
        run.completed_steps.append(step.name)
        self._step_done(ctx, step, "done", duration, attempts=ctx.attempts)
        ctx.run_log.write(step.name, f"--- step {step.name} done in {duration:.2f}s")
        ctx.outcomes.append(StepOutcome(step.name, "done", round(duration, 3), ctx.attempts))
        self.progress.step_finished(index, total, step.name, "done", duration)

    def _step_done(
        self, ctx: RunContext, step: StepDef, status: str, duration: float, **fields: Any
    ) -> None:
        """Name the next step as current, persist, and record the step's event: one
        durable save per step."""
        ctx.run.current_step = _pending(ctx.phase, ctx.run)
        self.session.save(f"step {step.name} {status}")
        self.session.event(
            "step",
            phase=ctx.phase.name,
            step=step.name,
            status=status,
            duration_s=round(duration, 3),
            **fields,
        )

    def _check_run_log(self, run_log: RunLog) -> None:
        """A run log that could not be written fails the run before the step is recorded
        as done: without its output the step cannot be trusted, nor the disk. A lost
        lock goes through as it is: its own message and hint say what happened."""
        if isinstance(run_log.error, LockLostError):
            raise run_log.error
        if run_log.error is not None:
            raise StorageError(
                f"{run_log.error.message}",
                hint="free space or fix the data directory, then "
                f"`runner resume {self.session.name}`",
                remedy="free space or fix the data directory",
            )

    def _condition(self, step: StepDef, context: Mapping[str, Any]) -> bool:
        if step.when is None:
            return True
        from runner.machine.templating import evaluate_condition

        try:
            return evaluate_condition(step.when, context)
        except TemplateFailure as exc:
            raise StepError(
                "template",
                f"`when` of step '{step.name}': {exc}",
                hint="fix the expression in machine.yaml",
            ) from exc

    def _render(self, step: StepDef, context: Mapping[str, Any]) -> dict[str, Any]:
        try:
            params = _rendered(step.with_, context)
        except TemplateFailure as exc:
            raise StepError(
                "template",
                f"`with` of step '{step.name}': {exc}",
                hint="fix the template in machine.yaml or give the missing input",
            ) from exc
        except InvalidInputsError as exc:
            raise StepError("configuration", exc.message, hint=exc.hint) from exc
        if self.registry.get(step.uses) is None:
            raise StepError(
                "configuration",
                f"no step plugin named '{step.uses}' is installed"
                + did_you_mean(step.uses, self.registry.names()),
                hint=f"installed plugins: {', '.join(self.registry.names())}",
            )
        errors = self.registry.param_errors(step.uses, params)
        if errors:
            path, message = errors[0]
            where = ".".join(str(p) for p in path)
            raise StepError(
                "configuration",
                f"`with` of step '{step.name}' ({step.uses}) after "
                f"rendering: {where + ': ' if where else ''}{message}",
                hint="fix the value in machine.yaml or the environment's inputs",
            )
        assert isinstance(params, dict)
        return params

    def _attempts(
        self, ctx: RunContext, step: StepDef, context: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Run the plugin, again on a retryable failure as `retry` allows; counts the
        attempts in ``ctx.attempts``."""
        plugin = self.registry.create(step.uses)
        session = self.session
        attempts = max(1, step.retry.attempts)
        for attempt in range(1, attempts + 1):
            ctx.attempts = attempt
            step_ctx = self._step_context(ctx, step, context)
            try:
                with ctx.interrupts.deadline(step.timeout_s):
                    results = plugin.run(step_ctx, ctx.params)
                return results if isinstance(results, dict) else {}
            except signals.StepDeadline:
                error = StepError(
                    "timeout",
                    f"step '{step.name}' did not finish within {step.timeout_s:g}s; stopped it",
                    hint="raise the step's `timeout` in machine.yaml if it needs longer",
                )
            except StepError as exc:
                error = exc
            except Exception as exc:  # a plugin bug: recorded as an internal failure
                error = StepError(
                    "internal", f"step plugin '{step.uses}' raised {type(exc).__name__}: {exc}"
                )
                error.__cause__ = exc
            if attempt < attempts and error.retryable:
                pause = step.retry.delay(attempt, self.draw)
                ctx.run_log.write(
                    step.name,
                    f"--- attempt {attempt}/{attempts} failed: {error.summary}; "
                    f"retrying in {pause:.3g}s",
                )
                log.warning(
                    "environment=%s step=%s attempt %d/%d failed: %s",
                    session.name,
                    step.name,
                    attempt,
                    attempts,
                    error.summary,
                )
                self.sleep(pause)
                continue
            if attempt > 1:
                error.summary = f"{error.summary} (after {attempt} attempts)"
                error.message = error.summary
            raise error
        raise AssertionError("unreachable")

    def _step_context(
        self, ctx: RunContext, step: StepDef, context: Mapping[str, Any]
    ) -> StepContext:
        """What a plugin gets to run ``step`` (the environment is a copy of the record)."""
        session = self.session
        return _StepContext(
            env_name=session.name,
            environment=_CopyWhenRead(session.record),
            template_context=context,
            workdir=session.workdir,
            data_dir=session.workdir / session.record.paths.data_dir,
            build_dir=session.workdir / session.record.paths.build_dir,
            machine_dir=session.machine.dir,
            phase=ctx.phase.name,
            step=step.name,
            logger=logger(f"runner.step.{step.uses}"),
            runner=ctx.supervisor,
            timeout_s=step.timeout_s,
            log_line=functools.partial(ctx.run_log.write, step.name),
            secrets=ctx.secrets.values,
        )

    def _merge_outputs(
        self, step: StepDef, results: Mapping[str, Any], secrets: SecretResolver
    ) -> None:
        for out_name, result_key in step.outputs.items():
            if result_key not in results:
                raise StepError(
                    "configuration",
                    f"step '{step.name}' returned no '{result_key}' for output "
                    f"'{out_name}' (it returned: {', '.join(sorted(results)) or 'nothing'})",
                    hint="fix the step's `outputs:` mapping in machine.yaml",
                )
            # a value a step parsed may hold a secret its raw output hid from masking,
            # written with JSON escapes such as `\/` or `\uXXXX`: never store one
            self.session.record.outputs[out_name] = mask_params(
                results[result_key], secrets.mask_value, by_name=False
            )

    # -- failure and interruption -----------------------------------------------------

    def _fail(self, ctx: RunContext, exc: StepError) -> None:
        session, phase, step = self.session, ctx.phase, ctx.step
        assert step is not None
        duration = ctx.step_duration
        summary = ctx.secrets.mask(exc.summary)
        ctx.run_log.write(step.name, f"--- step {step.name} failed ({exc.kind}): {summary}")
        text = trace_text(
            session,
            phase,
            step,
            f"FAILED ({exc.kind}): {summary}",
            exc,
            ctx.params,
            ctx.secrets,
            ctx.tail,
        )
        failure = Failure(
            phase=phase.name,
            step=step.name,
            kind=exc.kind,
            summary=summary,
            failed_at=now_iso(),
            exit_code=exc.process_exit_code,
            attempts=ctx.attempts,
            trace=write_trace(session, phase, text),
            hint=ctx.secrets.mask(exc.hint) if exc.hint else None,
            started_at=ctx.step_started_at,
            duration_s=round(duration, 3),
        )
        session.record.failure = failure
        ctx.run.current_step = None
        ctx.run.finished_at = now_iso()
        session.event(
            "step",
            phase=phase.name,
            step=step.name,
            status="failed",
            kind=exc.kind,
            summary=summary,
            duration_s=round(duration, 3),
            attempts=ctx.attempts,
        )
        session.fire(phase.fail_trigger, phase=phase.name, step=step.name)
        # INFO, not ERROR: the caller shows the failure (the CLI's summary), once
        log.info(
            "environment=%s phase=%s step=%s failed (%s): %s",
            session.name,
            phase.name,
            step.name,
            exc.kind,
            summary,
        )
        ctx.outcomes.append(
            StepOutcome(step.name, "failed", round(duration, 3), ctx.attempts, summary)
        )
        self.progress.step_finished(
            len(ctx.outcomes), len(phase.steps), step.name, "failed", duration, summary
        )

    def _interrupted_error(self, ctx: RunContext, signum: int) -> InterruptedRunError:
        session = self.session
        name = signal.Signals(signum).name
        step = f", step '{ctx.step.name}'" if ctx.step else ""
        return InterruptedRunError(
            f"environment '{session.name}' interrupted by {name} during phase "
            f"'{ctx.phase.name}'{step}; it stays in '{session.state}'",
            signum=signum,
            hint=f"runner resume {session.name}  (or: runner destroy {session.name})",
            state=session.state,
            phase=ctx.phase.name,
            trace=ctx.run.trace,
        )

    def _interrupted(self, ctx: RunContext, signum: int) -> None:
        session, phase, step = self.session, ctx.phase, ctx.step
        name = signal.Signals(signum).name
        if step is not None:
            ctx.run_log.write(step.name, f"--- interrupted by {name}")
        text = trace_text(
            session, phase, step, f"INTERRUPTED by {name}", None, ctx.params, ctx.secrets, ctx.tail
        )
        ctx.run.interrupted = True
        ctx.run.trace = write_trace(session, phase, text)
        # the state stays at `via` (signals are held: more of them cannot cut this)
        session.save()
        session.event(
            "interrupted",
            phase=phase.name,
            step=step.name if step else None,
            signal=name,
            state=session.state,
        )
        log.warning(
            "environment=%s phase=%s interrupted by %s in state=%s",
            session.name,
            phase.name,
            name,
            session.state,
        )
        self.progress.phase_finished(phase.name, "interrupted", session.state)


def _pending(phase: PhaseDef, run: Run) -> str | None:
    """The first step of ``phase`` not yet completed in ``run`` (the one that runs next,
    recorded as ``current_step`` by the save before it starts)."""
    done = set(run.completed_steps)
    for step in phase.steps:
        if step.name not in done:
            return step.name
    return None
