"""Phase execution: one environment, one phase, under the caller's lock.

Every state change is a trigger of the `transitions` machine; its after-state-change
callback persists the environment, logs the transition and appends it to the event
log. Between transitions each finished step is persisted too, so a crash loses at
most the step that was running.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from runner.errors import (
    InterruptedRunError,
    InterruptSignal,
    InvalidInputsError,
    StepError,
    StorageError,
)
from runner.machine.model import MachineDef, PhaseDef, StepDef
from runner.machine.statemachine import build_machine
from runner.machine.templating import TemplateFailure, evaluate_condition, render_value
from runner.plugin import StepContext
from runner.run.inputs import SecretResolver
from runner.run.registry import StepRegistry
from runner.store.contract import Repository, now_iso

if TYPE_CHECKING:
    from runner.run.process import RunLog

log = logging.getLogger("runner")

TAIL_LINES = 200
_SENSITIVE_KEYS = ("password", "passwd", "token", "secret", "api_key", "apikey")


class StepDeadline(BaseException):
    """Raised by SIGALRM when a step's `timeout` is reached."""


class Progress(Protocol):
    """What the engine reports while a phase runs (the CLI draws it)."""

    def phase_started(self, env: str, phase: str, total: int) -> None: ...
    def step_started(self, index: int, total: int, step: str) -> None: ...
    def step_finished(
        self, index: int, total: int, step: str, status: str, duration_s: float, detail: str = ""
    ) -> None: ...
    def output_line(self, step: str, line: str) -> None: ...
    def phase_finished(self, phase: str, status: str, state: str) -> None: ...


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


@dataclass(frozen=True)
class StepOutcome:
    name: str
    status: str  # done | skipped | failed | interrupted | already_done
    duration_s: float = 0.0
    attempts: int = 0
    summary: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "attempts": self.attempts,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class PhaseResult:
    environment: str
    phase: str
    from_state: str
    state: str
    status: str  # succeeded | failed | interrupted
    steps: tuple[StepOutcome, ...] = ()
    failure: dict[str, Any] | None = None
    duration_s: float = 0.0
    log: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "phase": self.phase,
            "from": self.from_state,
            "state": self.state,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "steps": [s.to_json() for s in self.steps],
            "failure": self.failure,
            "log": self.log,
        }


class _Model:
    """The object `transitions` drives; ``state`` mirrors the record's state."""

    def __init__(self, state: str) -> None:
        self.state = state


class Session:
    """One command's hold on one environment (the caller holds its lock)."""

    def __init__(
        self, repo: Repository, machine: MachineDef, record: dict[str, Any], command: str
    ) -> None:
        self.repo = repo
        self.machine = machine
        self.record = record
        self.command = command
        self.host = socket.gethostname()
        self.model = _Model(record["state"])
        self._pending: dict[str, Any] = {}
        self.machine_sm = build_machine(
            machine, self.model, initial=record["state"], after_state_change=self._after_transition
        )

    @property
    def name(self) -> str:
        return str(self.record["name"])

    @property
    def state(self) -> str:
        return str(self.record["state"])

    # -- persistence ------------------------------------------------------------------

    def save(self) -> None:
        self.record["machine"] = {"name": self.machine.name, "digest": self.machine.digest}
        self.record = self.repo.save(self.record, self.record["serial"])

    def event(self, event_type: str, **fields: Any) -> None:
        event = {
            "timestamp": now_iso(),
            "serial": self.record["serial"],
            "type": event_type,
            "pid": os.getpid(),
            "host": self.host,
        }
        event.update(fields)
        try:
            self.repo.append_event(self.name, event)
        except StorageError:
            raise
        except OSError as exc:  # the event log is history; the state file is the truth
            log.warning("environment=%s could not append to the event log: %s", self.name, exc)

    def fire(self, trigger: str, phase: str, step: str | None = None) -> None:
        """Fire ``trigger``; the callback persists, logs and records the transition."""
        self._pending = {"phase": phase, "step": step}
        self.model.trigger(trigger)  # type: ignore[attr-defined]

    def _after_transition(self, event: Any) -> None:
        source = event.transition.source
        dest = event.transition.dest
        trigger = event.event.name
        self.record["state"] = dest
        self.save()
        log.info("environment=%s from=%s to=%s trigger=%s", self.name, source, dest, trigger)
        self.event(
            "transition",
            **{
                "from": source,
                "to": dest,
                "trigger": trigger,
                "phase": self._pending.get("phase"),
                "step": self._pending.get("step"),
            },
        )


class _Signals:
    """SIGINT/SIGTERM raise InterruptSignal, and a step's SIGALRM deadline StepDeadline,
    except inside ``critical()`` blocks (saves, starting a program), where they are held
    until the block ends (an interrupt wins over a deadline)."""

    def __init__(self) -> None:
        self._critical = 0
        self._held: BaseException | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.raise_or_hold(InterruptSignal(signum))

    def raise_or_hold(self, exc: BaseException) -> None:
        if not self._critical:
            raise exc
        if self._held is None or isinstance(exc, InterruptSignal):
            self._held = exc

    @contextmanager
    def installed(self) -> Iterator[None]:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handler)
        try:
            yield
        finally:
            for number, handler in self._previous.items():
                signal.signal(number, handler)

    @contextmanager
    def critical(self) -> Iterator[None]:
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
            if not self._critical and self._held is not None:
                held, self._held = self._held, None
                raise held

    @contextmanager
    def deadline(self, seconds: float | None) -> Iterator[None]:
        """SIGALRM after ``seconds`` raises StepDeadline (held like an interrupt)."""
        if not seconds:
            yield
            return

        def _expired(signum: int, frame: Any) -> None:
            self.raise_or_hold(StepDeadline())

        previous = signal.signal(signal.SIGALRM, _expired)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if isinstance(self._held, StepDeadline):  # it fired as the step ended
                self._held = None


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")[:-3]


def template_context(
    session: Session, phase: str, step: str, secrets: SecretResolver | None = None
) -> dict[str, Any]:
    record = session.record
    context: dict[str, Any] = {
        "env": {
            "name": record["name"],
            "state": record["state"],
            "data_dir": record["paths"]["data_dir"],
            "build_dir": record["paths"]["build_dir"],
            "workdir": str(session.repo.workdir),
        },
        "inputs": record["inputs"],
        "outputs": record["outputs"],
        "machine": {"name": session.machine.name, "dir": str(session.machine.dir)},
        "phase": phase,
        "step": step,
    }
    if secrets is not None:
        context["secret"] = secrets
    return context


def mask_params(
    value: Any, mask: Callable[[str], str], key: str = "", *, by_name: bool = True
) -> Any:
    """``value`` with ``mask`` applied to every string in it; with ``by_name``, strings
    under a sensitive-looking key (password, token, ...) are hidden whole."""
    if isinstance(value, Mapping):
        return {k: mask_params(v, mask, str(k), by_name=by_name) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_params(v, mask, key, by_name=by_name) for v in value]
    if isinstance(value, str):
        if by_name and value and any(word in key.lower() for word in _SENSITIVE_KEYS):
            return "***"
        return mask(value)
    return value


class PhaseRunner:
    """Runs one phase of one environment, step by step."""

    def __init__(
        self,
        session: Session,
        registry: StepRegistry,
        progress: Progress | None = None,
        *,
        grace_s: float = 5.0,
    ) -> None:
        self.session = session
        self.registry = registry
        self.progress = progress or NullProgress()
        self.grace_s = grace_s
        self._signals = _Signals()
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    # -- entry points -----------------------------------------------------------------

    def start(self, phase: PhaseDef) -> PhaseResult:
        """Fire the phase's start transition and run every step."""
        session = self.session
        from_state = session.state
        session.record["run"] = self._new_run(phase)
        session.record["run"]["current_step"] = _pending(phase, session.record["run"])
        session.record["failure"] = None

        def prelude() -> None:
            session.fire(phase.start_trigger, phase.name)

        with self._signals.installed():
            return self._run_steps(phase, from_state, prelude)

    def resume(self, phase: PhaseDef, from_step: str | None = None) -> PhaseResult:
        """Re-enter an interrupted (via) or failed phase; continue from the first step not
        completed, or from ``from_step``."""
        session = self.session
        from_state = session.state
        run = session.record.get("run") or self._new_run(phase)
        if run.get("phase") != phase.name:
            run = self._new_run(phase)
        completed = list(run.get("completed_steps", []))
        if from_step is not None:
            names = [s.name for s in phase.steps]
            before = set(names[: names.index(from_step)])
            completed = [n for n in completed if n in before]
        run.update(
            {
                "completed_steps": completed,
                "interrupted": False,
                "pid": os.getpid(),
                "host": session.host,
                "trace": None,
                "skipped_steps": [s for s in run.get("skipped_steps", []) if s in completed],
            }
        )
        run["current_step"] = _pending(phase, run)
        session.record["run"] = run

        def prelude() -> None:
            if session.state == phase.failed:
                session.record["failure"] = None
                session.fire(phase.resume_trigger, phase.name)
            else:
                session.save()
                session.event("resume", phase=phase.name, state=session.state)
                log.info(
                    "environment=%s resuming phase=%s in state=%s",
                    session.name,
                    phase.name,
                    session.state,
                )

        with self._signals.installed():
            return self._run_steps(phase, from_state, prelude)

    # -- the loop ---------------------------------------------------------------------

    def _new_run(self, phase: PhaseDef) -> dict[str, Any]:
        return {
            "phase": phase.name,
            "started_at": now_iso(),
            "finished_at": None,
            "pid": os.getpid(),
            "host": self.session.host,
            "completed_steps": [],
            "skipped_steps": [],
            "current_step": None,
            "interrupted": False,
            "trace": None,
            "log": None,
        }

    def _run_steps(
        self, phase: PhaseDef, from_state: str, prelude: Callable[[], None]
    ) -> PhaseResult:
        from runner.run.process import ProcessSupervisor, RunLog

        session = self.session
        started = time.monotonic()
        artifacts = session.repo.artifacts_dir(session.name)
        log_path = artifacts / "runs" / f"{_stamp()}-{phase.name}.log"
        session.record["run"]["log"] = session.repo.relative(log_path)
        secrets = SecretResolver(
            session.machine.inputs_schema, session.record["inputs"], session.repo.workdir
        )
        try:
            run_log = RunLog(log_path)
        except OSError as exc:
            raise StorageError(
                f"cannot write the run log {session.repo.relative(log_path)}: {exc.strerror}",
                hint="make the data directory writable (and check free space), then run again",
            ) from exc
        supervisor = ProcessSupervisor(
            run_log,
            on_line=self._on_line,
            mask=secrets.mask,
            grace_s=self.grace_s,
            hold_signals=self._signals.critical,
            mask_result=secrets.mask_value,
        )
        outcomes: list[StepOutcome] = []
        total = len(phase.steps)
        self.progress.phase_started(session.name, phase.name, total)
        current: StepDef | None = None
        params: Any = None
        step_started_at = now_iso()
        step_t0 = time.monotonic()
        try:
            with self._signals.critical():
                prelude()
            for index, step in enumerate(phase.steps, start=1):
                run = session.record["run"]
                if step.name in run["completed_steps"]:
                    outcomes.append(StepOutcome(step.name, "already_done"))
                    self.progress.step_finished(index, total, step.name, "already done", 0.0)
                    continue
                current, params = step, None
                step_started_at, step_t0 = now_iso(), time.monotonic()
                self._tail.clear()
                context = template_context(session, phase.name, step.name, secrets)
                if not self._condition(step, context):
                    run["completed_steps"].append(step.name)
                    run.setdefault("skipped_steps", []).append(step.name)
                    run["current_step"] = _pending(phase, run)
                    with self._signals.critical():
                        session.save()
                        session.event(
                            "step",
                            phase=phase.name,
                            step=step.name,
                            status="skipped",
                            duration_s=0.0,
                        )
                    outcomes.append(StepOutcome(step.name, "skipped"))
                    self.progress.step_finished(index, total, step.name, "skipped", 0.0)
                    continue
                if run["current_step"] != step.name:
                    # normally the previous save already named this step (one durable
                    # save per step); only the first step after a resume gets here
                    run["current_step"] = step.name
                    with self._signals.critical():
                        session.save()
                self.progress.step_started(index, total, step.name)
                run_log.write(step.name, f"--- step {step.name} ({step.uses}) started")
                params = self._render(step, context)
                results, attempts = self._attempts(
                    phase, step, params, context, supervisor, run_log, secrets
                )
                self._merge_outputs(step, results, secrets)
                self._check_run_log(run_log, session)
                duration = time.monotonic() - step_t0
                run["completed_steps"].append(step.name)
                run["current_step"] = _pending(phase, run)
                with self._signals.critical():
                    session.save()
                    session.event(
                        "step",
                        phase=phase.name,
                        step=step.name,
                        status="done",
                        duration_s=round(duration, 3),
                        attempts=attempts,
                    )
                run_log.write(step.name, f"--- step {step.name} done in {duration:.2f}s")
                outcomes.append(StepOutcome(step.name, "done", duration, attempts))
                self.progress.step_finished(index, total, step.name, "done", duration)
            session.record["run"]["finished_at"] = now_iso()
            session.record["run"]["current_step"] = None
            with self._signals.critical():
                session.fire(phase.finish_trigger, phase.name)
            status, failure = "succeeded", None
        except StepError as exc:
            assert current is not None
            duration = time.monotonic() - step_t0
            failure = self._fail(
                phase, current, exc, params, step_started_at, duration, run_log, secrets
            )
            outcomes.append(StepOutcome(current.name, "failed", duration, summary=exc.summary))
            self.progress.step_finished(
                len(outcomes), total, current.name, "failed", duration, exc.summary
            )
            status = "failed"
        except InterruptSignal as sig:
            self._interrupted(phase, current, sig.signum, params, run_log, secrets)
            name = signal.Signals(sig.signum).name
            raise InterruptedRunError(
                f"environment '{session.name}' interrupted by {name} during phase "
                f"'{phase.name}'"
                + (f", step '{current.name}'" if current else "")
                + f"; it stays in '{session.state}'",
                signum=sig.signum,
                hint=f"runner resume {session.name}  (or: runner destroy {session.name})",
                state=session.state,
                phase=phase.name,
                trace=session.record["run"].get("trace"),
            ) from None
        finally:
            run_log.close()
        self.progress.phase_finished(phase.name, status, session.state)
        return PhaseResult(
            session.name,
            phase.name,
            from_state,
            session.state,
            status,
            tuple(outcomes),
            failure,
            time.monotonic() - started,
            session.record["run"]["log"],
        )

    def _on_line(self, step: str, line: str) -> None:
        self._tail.append(line)
        self.progress.output_line(step, line)

    @staticmethod
    def _check_run_log(run_log: RunLog, session: Session) -> None:
        """A run log that could not be written fails the run before the step is recorded
        as done: without its output the step cannot be trusted, nor the disk."""
        if run_log.error is not None:
            raise StorageError(
                f"cannot write the run log {session.repo.relative(run_log.path)}: "
                f"{run_log.error.strerror or run_log.error}",
                hint=f"free space or fix the data directory, then `runner resume {session.name}`",
            )

    def _condition(self, step: StepDef, context: Mapping[str, Any]) -> bool:
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
            params = render_value(step.with_, context)
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
                f"no step plugin named '{step.uses}' is installed",
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
        self,
        phase: PhaseDef,
        step: StepDef,
        params: dict[str, Any],
        context: Mapping[str, Any],
        supervisor: Any,
        run_log: Any,
        secrets: SecretResolver,
    ) -> tuple[dict[str, Any], int]:
        plugin = self.registry.create(step.uses)
        session = self.session
        attempts = max(1, step.retry.attempts)
        for attempt in range(1, attempts + 1):
            ctx = StepContext(
                env_name=session.name,
                environment=_frozen_copy(session.record),
                template_context=context,
                workdir=session.repo.workdir,
                data_dir=session.repo.artifacts_dir(session.name),
                build_dir=session.repo.workdir / session.record["paths"]["build_dir"],
                machine_dir=session.machine.dir,
                phase=phase.name,
                step=step.name,
                logger=logging.getLogger(f"runner.step.{step.uses}"),
                runner=supervisor,
                timeout_s=step.timeout_s,
                log_line=functools.partial(run_log.write, step.name),
                secrets=secrets.values,
            )
            try:
                with self._signals.deadline(step.timeout_s):
                    results = plugin.run(ctx, params)
                return (results if isinstance(results, dict) else {}), attempt
            except StepDeadline:
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
                run_log.write(
                    step.name,
                    f"--- attempt {attempt}/{attempts} failed: {error.summary}; "
                    f"retrying in {step.retry.delay_s:g}s",
                )
                log.warning(
                    "environment=%s step=%s attempt %d/%d failed: %s",
                    session.name,
                    step.name,
                    attempt,
                    attempts,
                    error.summary,
                )
                time.sleep(step.retry.delay_s)
                continue
            if attempt > 1:
                error.summary = f"{error.summary} (after {attempt} attempts)"
                error.message = error.summary
            raise error
        raise AssertionError("unreachable")

    def _merge_outputs(
        self, step: StepDef, results: Mapping[str, Any], secrets: SecretResolver
    ) -> None:
        for out_name, key in step.outputs.items():
            if key not in results:
                raise StepError(
                    "configuration",
                    f"step '{step.name}' returned no '{key}' for output "
                    f"'{out_name}' (it returned: {', '.join(sorted(results)) or 'nothing'})",
                    hint="fix the step's `outputs:` mapping in machine.yaml",
                )
            # a value a step parsed may hold a secret its raw output hid from masking,
            # written with JSON escapes such as `\/` or `\uXXXX`: never store one
            self.session.record["outputs"][out_name] = mask_params(
                results[key], secrets.mask_value, by_name=False
            )

    # -- failure and interruption -----------------------------------------------------

    def _write_trace(
        self,
        phase: PhaseDef,
        step: StepDef | None,
        headline: str,
        exc: BaseException | None,
        params: Any,
        secrets: SecretResolver,
    ) -> str:
        session = self.session
        traces = session.repo.artifacts_dir(session.name) / "traces"
        path = traces / f"{_stamp()}-{phase.name}.log"
        lines = [
            f"environment: {session.name}",
            f"phase: {phase.name}",
            f"step: {step.name if step else '-'}" + (f" (uses: {step.uses})" if step else ""),
            f"state: {session.state}",
            f"time: {now_iso()}",
            f"pid: {os.getpid()} host: {session.host}",
            "",
            headline,
            "",
            "== error chain ==",
        ]
        if exc is not None:
            lines.extend(
                secrets.mask(line.rstrip("\n")) for line in traceback.format_exception(exc) if line
            )
        else:
            lines.append("(none)")
        lines += ["", "== rendered parameters (secrets masked) =="]
        lines.append(
            _dump(mask_params(params, secrets.mask)) if params is not None else "(not rendered)"
        )
        lines += ["", f"== last {TAIL_LINES} lines of output =="]
        tail = list(self._tail)
        if not tail and isinstance(exc, StepError):
            tail = exc.output_tail
        lines.extend(secrets.mask(line) for line in tail[-TAIL_LINES:])
        try:
            traces.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
        except OSError as err:
            log.error(
                "environment=%s could not write the trace file %s: %s", session.name, path, err
            )
            return ""
        return session.repo.relative(path)

    def _fail(
        self,
        phase: PhaseDef,
        step: StepDef,
        exc: StepError,
        params: Any,
        started_at: str,
        duration: float,
        run_log: Any,
        secrets: SecretResolver,
    ) -> dict[str, Any]:
        session = self.session
        summary = secrets.mask(exc.summary)
        run_log.write(step.name, f"--- step {step.name} failed ({exc.kind}): {summary}")
        trace = self._write_trace(
            phase, step, f"FAILED ({exc.kind}): {summary}", exc, params, secrets
        )
        failure = {
            "phase": phase.name,
            "step": step.name,
            "kind": exc.kind,
            "summary": summary,
            "exit_code": exc.process_exit_code,
            "started_at": started_at,
            "failed_at": now_iso(),
            "duration_s": round(duration, 3),
            "trace": trace or None,
        }
        session.record["failure"] = failure
        session.record["run"]["current_step"] = None
        session.record["run"]["finished_at"] = now_iso()
        with self._signals.critical():
            session.event(
                "step",
                phase=phase.name,
                step=step.name,
                status="failed",
                kind=exc.kind,
                summary=summary,
                duration_s=round(duration, 3),
            )
            session.fire(phase.fail_trigger, phase.name, step.name)
        log.error(
            "environment=%s phase=%s step=%s failed (%s): %s",
            session.name,
            phase.name,
            step.name,
            exc.kind,
            summary,
        )
        return failure

    def _interrupted(
        self,
        phase: PhaseDef,
        step: StepDef | None,
        signum: int,
        params: Any,
        run_log: Any,
        secrets: SecretResolver,
    ) -> None:
        session = self.session
        name = signal.Signals(signum).name
        if step is not None:
            run_log.write(step.name, f"--- interrupted by {name}")
        trace = self._write_trace(phase, step, f"INTERRUPTED by {name}", None, params, secrets)
        run = session.record["run"]
        run["interrupted"] = True
        run["trace"] = trace or None
        # the state stays at `via`; save even if more signals arrive
        with self._signals.critical():
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


def _pending(phase: PhaseDef, run: Mapping[str, Any]) -> str | None:
    """The first step of ``phase`` not yet completed in ``run`` (the one that runs next,
    recorded as ``current_step`` by the save before it starts)."""
    done = set(run.get("completed_steps", ()))
    for step in phase.steps:
        if step.name not in done:
            return step.name
    return None


def _frozen_copy(record: Mapping[str, Any]) -> Mapping[str, Any]:
    import copy
    import types

    return types.MappingProxyType(copy.deepcopy(dict(record)))


def _dump(value: Any) -> str:
    import json

    try:
        return json.dumps(value, indent=2, default=str)
    except (TypeError, ValueError):
        return repr(value)
