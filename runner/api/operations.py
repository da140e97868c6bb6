"""What each command does, as functions that return small result objects.

The CLI parses arguments and renders results; everything here is silent (it logs,
never prints) and raises :class:`~runner.errors.RunnerError` subclasses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import (
    InputError,
    PhaseNotAllowedError,
    StateFileError,
)
from runner.machine.model import MachineDef, PhaseDef
from runner.result import as_json
from runner.store.contract import ListEntry, LockInfo, Store
from runner.store.record import MachineRef, Record, check_name

if TYPE_CHECKING:
    from runner.run.phase import PhaseResult, Progress
    from runner.run.registry import StepRegistry


@dataclass
class Workspace:
    """The command's world: working directory, repository, machine file, settings."""

    workdir: Path
    repo_factory: Callable[[], Store]
    machine_file: Path
    lock_timeout_s: float = 30.0
    command: str = "runner"
    _machine: MachineDef | None = None
    _registry: StepRegistry | None = None
    _repo: Store | None = None
    _plugins_checked: bool = False

    @property
    def repo(self) -> Store:
        if self._repo is None:
            self._repo = self.repo_factory()
        return self._repo

    def registry(self) -> StepRegistry:
        if self._registry is None:
            from runner.run.registry import default_registry

            self._registry = default_registry()
        return self._registry

    def machine(self, *, plugins: bool = True) -> MachineDef:
        """The validated machine. With ``plugins`` every `uses`/`with` is checked against
        the installed plugins; without, a cached validation of the same bytes may serve."""
        if self._machine is None or (plugins and not self._plugins_checked):
            if plugins:
                from runner.machine.loader import load_machine

                self._machine = load_machine(self.machine_file, self.registry())
                self._plugins_checked = True
            else:
                from runner.machine import cache as machinecache

                self._machine = machinecache.load(self.machine_file, self.cache_dir)
        return self._machine

    @property
    def cache_dir(self) -> Path:
        return self.workdir / "data" / ".cache"


# --- validate ----------------------------------------------------------------------


@dataclass(frozen=True)
class ValidateResult:
    machine: MachineDef

    def to_json(self) -> dict[str, Any]:
        m = self.machine
        return {
            "valid": True,
            "file": str(m.file),
            "name": m.name,
            "digest": m.digest,
            "initial": m.initial,
            "states": {name: m.state_kind(name) for name in m.states},
            "phases": [
                {
                    "name": p.name,
                    "from": list(p.sources),
                    "via": p.via,
                    "to": p.to,
                    "failed": p.failed,
                    "advance": p.advance,
                    "steps": [s.name for s in p.steps],
                }
                for p in m.phases
            ],
            "happy_path": m.happy_path(),
        }


def validate(ws: Workspace) -> ValidateResult:
    machine = ws.machine()
    from runner.machine.statemachine import build_machine

    # the last stage of loading: `transitions` accepts every state and trigger (no model
    # is attached: that is the engine's job, and would only add the trigger methods)
    build_machine(machine, [])
    return ValidateResult(machine)


# --- create ------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateResult:
    record: Record

    def to_json(self) -> dict[str, Any]:
        return {
            "created": self.record.name,
            "state": self.record.state,
            "inputs": self.record.inputs,
            "paths": as_json(self.record.paths),
        }


def create(ws: Workspace, name: str, config: Path | None, sets: list[str]) -> CreateResult:
    import logging
    import os
    import socket

    from runner.run.inputs import build_inputs

    check_name(name)
    machine = ws.machine(plugins=False)
    inputs = build_inputs(machine.inputs_schema, config, sets)
    record = Record.new(
        name,
        machine.initial,
        MachineRef(machine.name, machine.digest),
        inputs,
        data_dir=ws.repo.data_dir(name),
    )
    ws.repo.create(record)
    ws.repo.append_event(
        name,
        {
            "timestamp": record.created_at,
            "serial": record.serial,
            "type": "created",
            "from": None,
            "to": machine.initial,
            "trigger": "create",
            "phase": None,
            "step": None,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        },
    )
    logging.getLogger("runner").info("environment=%s created in state=%s", name, machine.initial)
    return CreateResult(record)


# --- status, list, history ---------------------------------------------------------


@dataclass(frozen=True)
class StatusResult:
    record: Record
    description: str
    kind: str
    holder: LockInfo | None
    interrupted: bool
    next_actions: list[str]
    allowed_phases: list[str]
    leftovers: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        r = self.record
        return {
            "name": r.name,
            "state": r.state,
            "description": self.description,
            "kind": self.kind,
            "interrupted": self.interrupted,
            "locked_by": self.holder.to_json() if self.holder else None,
            "failure": as_json(r.failure),
            "run": as_json(r.run),
            "outputs": r.outputs,
            "updated_at": r.updated_at,
            "created_at": r.created_at,
            "next": self.next_actions,
            "allowed_phases": self.allowed_phases,
            "leftover_processes": self.leftovers,
        }


def _state_known(machine: MachineDef, record: Record) -> None:
    if record.state not in machine.states:
        raise StateFileError(
            f"environment '{record.name}' is in state '{record.state}', which "
            f"{machine.file.name} does not declare",
            hint="restore the state in machine.yaml (or use the machine the environment was "
            "created with: --machine FILE)",
        )


def status(ws: Workspace, name: str) -> StatusResult:
    check_name(name)
    record = ws.repo.load(name)
    machine = ws.machine(plugins=False)
    _state_known(machine, record)
    state = record.state
    kind = machine.state_kind(state)
    holder = ws.repo.lock_holder(name)
    interrupted = kind == "intermediate" and holder is None
    actions: list[str] = []
    leftovers: list[int] = []
    if holder is None:
        stale = ws.repo.last_holder(name)
        if stale is not None and stale.host == os.uname().nodename:
            from runner.run.process import live_groups

            leftovers = live_groups(stale.processes)
    if leftovers:
        actions.append(
            f"processes of a run that ended without releasing the lock still run (process "
            f"group {', '.join(str(g) for g in leftovers)}): the next command that takes "
            f"the lock stops them (or: kill -- -{leftovers[0]})"
        )
    if holder is not None:
        actions.append(f"wait: {holder.command} (pid {holder.pid}) is working on it")
    elif interrupted:
        phase = machine.phase_by_via(state)
        assert phase is not None
        actions.append(f"runner resume {name}   (continue phase '{phase.name}' where it stopped)")
        if machine.phase("destroy") and state in machine.phase("destroy").sources:  # type: ignore[union-attr]
            actions.append(f"runner destroy {name}")
    else:
        recovery = machine.states[state].recovery
        if recovery:
            from runner.machine.templating import TemplateFailure, render_string
            from runner.run.session import template_context

            context = template_context(record, machine, ws.workdir)
            try:
                actions.append(str(render_string(recovery, context)).strip())
            except TemplateFailure as exc:
                actions.append(f"{recovery.strip()}  (recovery text did not render: {exc})")
        if kind == "failed":
            actions.append(f"runner resume {name}")
        advancing = machine.advancing_phase(state)
        if advancing is not None and kind != "failed":
            actions.append(
                f"runner advance {name}   (runs phase '{advancing.name}' → {advancing.to})"
            )
        elif kind == "final":
            actions.append("nothing: this is a final state")
        elif kind != "failed":
            actions.append(f"nothing to advance: '{state}' is the end of the happy path")
        if kind != "final":
            for other in machine.phases_from(state):
                if not other.advance:
                    command = "destroy" if other.name == "destroy" else f"phase {name} {other.name}"
                    target = name if other.name == "destroy" else ""
                    actions.append(
                        f"runner {command} {target}".rstrip()
                        + f"   (phase '{other.name}' → {other.to})"
                    )
    allowed = [p.name for p in machine.phases_from(state)]
    return StatusResult(
        record,
        machine.states[state].description,
        kind,
        holder,
        interrupted,
        actions,
        allowed,
        leftovers,
    )


@dataclass(frozen=True)
class ListResult:
    entries: list[ListEntry]

    def to_json(self) -> dict[str, Any]:
        good = [
            {
                "name": e.name,
                "state": e.record.state,
                "updated_at": e.record.updated_at,
                "failed_step": e.record.failure.step if e.record.failure else None,
            }
            for e in self.entries
            if e.record is not None
        ]
        bad = [{"name": e.name, "error": e.error} for e in self.entries if e.record is None]
        return {"environments": good, "unreadable": bad}


def list_environments(ws: Workspace) -> ListResult:
    return ListResult(ws.repo.list())


@dataclass(frozen=True)
class HistoryResult:
    name: str
    events: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "events": self.events}


def history(ws: Workspace, name: str, limit: int | None) -> HistoryResult:
    check_name(name)
    if not ws.repo.exists(name):
        ws.repo.load(name)  # says why: no such environment, or its state file is missing
    return HistoryResult(name, ws.repo.read_events(name, limit))


# --- running phases ----------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """What `advance`, `up`, `resume`, `phase` and `destroy` did."""

    environment: str
    state: str
    phases: list[PhaseResult] = field(default_factory=list)
    message: str = ""
    dry_run: list[dict[str, Any]] | None = None

    @property
    def failed(self) -> bool:
        return any(p.status == "failed" for p in self.phases)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "environment": self.environment,
            "state": self.state,
            "status": "failed" if self.failed else "ok",
            "phases": [p.to_json() for p in self.phases],
        }
        if self.message:
            data["message"] = self.message
        if self.dry_run is not None:
            data["dry_run"] = self.dry_run
        return data


@contextmanager
def _session(ws: Workspace, name: str) -> Iterator[Any]:
    from runner.run.session import Session
    from runner.store.locking import hold

    check_name(name)
    machine = ws.machine()
    from runner import signals

    # signals are the phase's from the moment the lock is held (waiting for it, Ctrl+C
    # stops the command at once): they can never cut a save or a failure record
    with (
        hold(ws.repo, name, ws.command, ws.lock_timeout_s) as lease,
        signals.phase_interrupts(),
    ):
        _stop_leftovers(name, lease.previous)
        record = ws.repo.load(name)
        _state_known(machine, record)
        session = Session(ws.repo, machine, record, ws.command, ws.workdir, lease)
        session.reconcile()
        yield session


def _stop_leftovers(name: str, previous: LockInfo | None) -> None:
    """A holder that died without releasing (killed with SIGKILL) may have left its
    step's programs running: stop them before anything else runs."""
    if previous is None or not previous.processes or previous.host != os.uname().nodename:
        return
    from runner.run.process import stop_leftovers

    stopped = stop_leftovers(previous.processes)
    if stopped:
        logging.getLogger("runner").warning(
            "environment=%s stopped process group %s left running by pid %d (%s), which "
            "ended without releasing the lock",
            name,
            ", ".join(str(g) for g in stopped),
            previous.pid,
            previous.command,
        )


def _not_allowed(
    machine: MachineDef, name: str, state: str, wanted: str, why: str = ""
) -> PhaseNotAllowedError:
    allowed = [p.name for p in machine.phases_from(state)]
    return PhaseNotAllowedError(
        f"phase '{wanted}' is not allowed for environment '{name}' in state '{state}'"
        + (f": {why}" if why else ""),
        hint=f"phases allowed from '{state}': {', '.join(allowed) or 'none'}",
        state=state,
        allowed=allowed,
    )


def _refuse_unfinished(machine: MachineDef, name: str, state: str, action: str) -> None:
    kind = machine.state_kind(state)
    if kind == "intermediate":
        phase = machine.phase_by_via(state)
        assert phase is not None
        raise PhaseNotAllowedError(
            f"environment '{name}' is in '{state}': phase '{phase.name}' was interrupted, "
            f"so it cannot {action}",
            hint=f"runner resume {name}   (or: runner destroy {name})",
            state=state,
        )
    if kind == "failed":
        phase = machine.phase_by_failed(state)
        assert phase is not None
        raise PhaseNotAllowedError(
            f"environment '{name}' is in '{state}': phase '{phase.name}' failed, so it cannot "
            f"{action}",
            hint=f"fix the cause, then runner resume {name}   (or: runner destroy "
            f"{name}); `runner status {name}` shows the failure",
            state=state,
        )


def advance(
    ws: Workspace, name: str, progress: Progress | None = None, *, dry_run: bool = False
) -> RunResult:
    from runner.run.phase import PhaseRunner

    with _session(ws, name) as session:
        machine = session.machine
        state = session.state
        _refuse_unfinished(machine, name, state, "advance")
        phase = machine.advancing_phase(state)
        if phase is None:
            return RunResult(
                name,
                state,
                message=f"environment '{name}' is in '{state}', the end "
                "of the happy path: nothing to advance",
            )
        if dry_run:
            return RunResult(
                name,
                state,
                dry_run=[_dry_run(session, phase)],
                message=f"dry run: phase '{phase.name}' would run",
            )
        result = PhaseRunner(session, ws.registry(), progress).start(phase)
        return RunResult(name, session.state, [result])


def up(ws: Workspace, name: str, to: str | None, progress: Progress | None = None) -> RunResult:
    from runner.run.phase import PhaseRunner

    with _session(ws, name) as session:
        machine = session.machine
        if to is not None and to not in machine.states:
            raise InputError(
                f"--to {to!r} is not a state of {machine.file.name}",
                hint=f"the happy path: {' → '.join(machine.happy_path())}",
            )
        _refuse_unfinished(machine, name, session.state, "go up")
        # the states `advance` would visit from here
        path = [session.state]
        while (nxt := machine.advancing_phase(path[-1])) is not None and nxt.to not in path:
            path.append(nxt.to)
        if to is not None and to not in path:
            raise InputError(
                f"state '{to}' is not ahead of '{session.state}' on the happy path",
                hint=f"from here `advance` visits: {' → '.join(path)}",
            )
        results: list[PhaseResult] = []
        while session.state != to:
            phase = machine.advancing_phase(session.state)
            if phase is None:
                break
            result = PhaseRunner(session, ws.registry(), progress).start(phase)
            results.append(result)
            if result.status != "succeeded":
                break
        message = "" if results else f"environment '{name}' is already in '{session.state}'"
        return RunResult(name, session.state, results, message)


def resume(
    ws: Workspace, name: str, from_step: str | None = None, progress: Progress | None = None
) -> RunResult:
    from runner.run.phase import PhaseRunner

    with _session(ws, name) as session:
        machine = session.machine
        state = session.state
        phase = machine.phase_by_failed(state) or machine.phase_by_via(state)
        if phase is None:
            raise PhaseNotAllowedError(
                f"environment '{name}' is in '{state}': nothing was interrupted or failed, so "
                "there is nothing to resume",
                hint=f"runner advance {name}",
                state=state,
            )
        if from_step is not None and phase.step(from_step) is None:
            raise InputError(
                f"phase '{phase.name}' has no step '{from_step}'",
                hint=f"its steps: {', '.join(s.name for s in phase.steps)}",
            )
        result = PhaseRunner(session, ws.registry(), progress).resume(phase, from_step)
        return RunResult(name, session.state, [result])


def run_phase(
    ws: Workspace,
    name: str,
    phase_name: str,
    progress: Progress | None = None,
    *,
    dry_run: bool = False,
) -> RunResult:
    from runner.run.phase import PhaseRunner

    with _session(ws, name) as session:
        machine = session.machine
        phase = machine.phase(phase_name)
        if phase is None:
            raise InputError(
                f"{machine.file.name} has no phase '{phase_name}'",
                hint=f"phases: {', '.join(p.name for p in machine.phases)}",
            )
        if session.state not in phase.sources:
            raise _not_allowed(machine, name, session.state, phase_name)
        if dry_run:
            return RunResult(
                name,
                session.state,
                dry_run=[_dry_run(session, phase)],
                message=f"dry run: phase '{phase.name}' would run",
            )
        result = PhaseRunner(session, ws.registry(), progress).start(phase)
        return RunResult(name, session.state, [result])


def _dry_run(session: Any, phase: PhaseDef) -> dict[str, Any]:
    from runner.machine.templating import TemplateFailure, evaluate_condition, render_value
    from runner.run.inputs import SecretResolver, mask_params

    secrets = SecretResolver(session.machine.inputs_schema, session.record.inputs, session.workdir)
    steps = []
    for step in phase.steps:
        context = session.template_context(phase.name, step.name, secrets)
        entry: dict[str, Any] = {"name": step.name, "uses": step.uses}
        try:
            entry["when"] = evaluate_condition(step.when, context)
            entry["params"] = (
                mask_params(render_value(step.with_, context), secrets.mask)
                if entry["when"]
                else None
            )
        except (TemplateFailure, InputError) as exc:
            entry["error"] = str(exc)
        steps.append(entry)
    return {
        "phase": phase.name,
        "from": session.state,
        "via": phase.via,
        "to": phase.to,
        "steps": steps,
    }


def destroy_phase_name(machine: MachineDef) -> str:
    if machine.phase("destroy") is None:
        raise InputError(
            f"{machine.file.name} has no phase named 'destroy'",
            hint="use `runner phase NAME PHASE` with one of its phases",
        )
    return "destroy"


def machine_for(workdir: Path, given: Path | None) -> Path:
    """--machine, else $RUNNER_MACHINE, else machine.yaml in the working directory,
    else the shipped machine."""
    import os

    from runner import resources

    if given is not None:
        return given if given.is_absolute() else workdir / given
    env = os.environ.get("RUNNER_MACHINE")
    if env:
        path = Path(env)
        return path if path.is_absolute() else workdir / path
    local = workdir / "machine.yaml"
    return local if local.exists() else resources.shipped_machine()
