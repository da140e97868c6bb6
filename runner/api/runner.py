"""The public Python API: :class:`Runner`, one method per command.

Every method returns a typed, frozen result of :mod:`runner.api.results` and raises a
:class:`~runner.errors.RunnerError` subclass (naming the environment it concerns); none
prints, exits or installs anything but the signal handlers a running phase needs. The
command line is one client of this class.

Importing this module is cheap (the fast path of `runner status` does): the machine
loader, the store and the engine are imported when a method needs them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

from runner.api.results import (
    ExistsResult,
    HistoryResult,
    ListResult,
    StatusResult,
    UnverifiedLeftover,
)
from runner.errors import (
    InputError,
    InvalidInputsError,
    PhaseNotAllowedError,
    RunnerError,
    did_you_mean,
)
from runner.log import logger
from runner.struct import copied

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from runner.api.outcomes import (
        ArtifactResult,
        ArtifactsResult,
        CheckResult,
        ConfirmRequest,
        CreateResult,
        ForceStateResult,
        GraphResult,
        InputsResult,
        MigrateResult,
        PurgeResult,
        RestoreResult,
        RunResult,
        SnapshotsResult,
        StateInitResult,
        ValidateResult,
    )
    from runner.machine.model import MachineDef, PhaseDef
    from runner.run.phase import PhaseResult, Progress
    from runner.run.registry import StepRegistry
    from runner.run.session import Session
    from runner.store.contract import ArtifactKind, Events, ListEntry, LockInfo, Store
    from runner.store.record import Record

__all__ = ["GRAPH_FORMATS", "STATE_KINDS", "Runner"]

#: How many of the last events `status` reads to find when the state was entered.
_ENTERED_EVENTS = 200

#: The events that move an environment to their ``to`` state.
_ARRIVALS = ("transition", "created", "state_forced", "restored")

#: The kinds of state `list --kind` filters by (stable includes the initial state).
STATE_KINDS = ("failed", "intermediate", "stable", "final")

#: The formats :meth:`Runner.graph` draws (svg and png need Graphviz's `dot`).
GRAPH_FORMATS = ("mermaid", "dot", "svg", "png")


class Runner:
    """Environments of one working directory, moved through one machine.

    ``workdir`` holds ``data/`` (the environments) and ``build/``. ``machine`` is the
    machine file (relative to ``workdir``); by default ``machine.yaml`` in ``workdir``,
    else, for an environment, the file recorded when it was created (while it exists),
    else the machine shipped with the runner (:attr:`machine_source` says which). An
    environment is only ever moved by a machine of the name it was created with.
    ``lock_timeout`` is how long a command that changes an environment waits for
    another process holding it (0: fail at once). ``progress`` receives the progress
    of running phases (an object with the methods of
    :class:`runner.run.phase.Progress`). ``command`` is how a lock holder is described
    to whoever waits for it. ``state`` is where the environments are kept, as a
    ``file:PATH`` or ``postgresql://`` URL (default: ``RUNNER_STATE``, else
    ``state.url`` of ``workdir/runner.toml``, else the files under ``workdir/data``);
    ``store`` gives a backend of :class:`~runner.store.contract.Store` directly.
    ``on_lock_wait(name, holder)`` is called once when a command starts waiting for
    environment ``name``'s lock, with who holds it (None when the lock does not say).
    ``confirm(request)`` is asked, under the lock, before a phase marked
    `confirm: true` runs (a :class:`~runner.api.results.ConfirmRequest`: what it would
    do); False refuses it (:class:`~runner.errors.ConfirmationError`, nothing run). The
    default (None) asks nothing: calling the method is the caller's decision.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str] = ".",
        machine: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float = 30.0,
        progress: Progress | None = None,
        command: str = "runner",
        store: Store | None = None,
        state: str | None = None,
        on_lock_wait: Callable[[str, LockInfo | None], None] | None = None,
        confirm: Callable[[ConfirmRequest], bool] | None = None,
    ) -> None:
        # plain paths: the read-only commands never import pathlib (:attr:`workdir` and
        # :attr:`machine_file` are the same as Paths)
        self._workdir = os.path.abspath(workdir)
        if not os.path.isdir(self._workdir):
            problem = "is not a directory" if os.path.exists(self._workdir) else "does not exist"
            raise InputError(
                f"working directory {self._workdir} {problem}",
                hint="pass --workdir DIR (or set RUNNER_WORKDIR) to an existing folder",
            )
        self._machine_path = _machine_file(self._workdir, machine)
        #: Where :attr:`machine_file` comes from: "given", "workdir" (machine.yaml there),
        #: "recorded" (the file an environment was created with) or "shipped".
        self.machine_source = (
            "given"
            if machine is not None
            else (
                "workdir"
                if self._machine_path == os.path.join(self._workdir, "machine.yaml")
                else "shipped"
            )
        )
        self._default_machine_path = self._machine_path
        if not lock_timeout >= 0:  # negative or NaN
            raise InputError(f"lock_timeout must be a number of seconds >= 0, not {lock_timeout}")
        self.lock_timeout = float(lock_timeout)
        self.progress = progress
        self.command = command
        self.on_lock_wait = on_lock_wait
        self.confirm = confirm
        self._store = store
        self.state_url = state
        self._machine: MachineDef | None = None
        self._plugins_checked = False
        self._registry: StepRegistry | None = None

    def __repr__(self) -> str:
        return f"Runner(workdir={self._workdir!r}, machine={self._machine_path!r})"

    @functools.cached_property
    def workdir(self) -> Path:
        """The working directory (absolute): ``data/`` and ``build/`` are in it."""
        from pathlib import Path

        return Path(self._workdir)

    @property
    def machine_file(self) -> Path:
        """The machine file this Runner uses (absolute): see :attr:`machine_source`."""
        from pathlib import Path

        return Path(self._machine_path)

    # -- the world ----------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """Where the environments are kept (made on first use)."""
        if self._store is None:
            from runner.store.backends import open_store

            self._store = open_store(self._workdir, self.state_url)
        return self._store

    def registry(self) -> StepRegistry:
        """The installed step plugins (loaded on first use)."""
        if self._registry is None:
            from runner.run.registry import default_registry

            self._registry = default_registry()
        return self._registry

    def machine(self, *, plugins: bool = True) -> MachineDef:
        """The validated machine. With ``plugins`` every template's syntax and every
        `uses`/`with` (against the installed plugins) is checked too; without, only its
        structure is (for the commands that run no step), and a cached validation of
        the same bytes may serve."""
        if self._machine is None or (plugins and not self._plugins_checked):
            if plugins:
                from runner.machine import cache as machinecache

                self._machine = machinecache.load_checked(
                    self.machine_file, _absolute(self._cache_dir()), self._check_machine
                )
                self._plugins_checked = True
            else:
                from runner.machine import cache as machinecache

                self._machine = machinecache.load(self._machine_path, self._cache_dir())
        return self._machine

    def _check_machine(self, path: Path) -> tuple[MachineDef, bool]:
        """The full check of the machine in ``path`` against the installed plugins; its
        verdict may be kept unless a plugin is broken (its warning is due every time).
        Asking for the broken ones imports every installed plugin (elsewhere only those a
        machine uses are): a broken one is reported, whichever the machine uses, and a
        kept verdict never hides it from a later `validate`."""
        from runner.machine.loader import load_machine

        registry = self.registry()
        return load_machine(path, registry), not registry.broken

    def _cache_dir(self) -> str:
        """Where validated machines are cached: ``data/.cache`` beside the files; with a
        database, this machine's own ``build/.cache`` (once a phase made ``build/``)."""
        if self._store is not None:
            import sys

            # a FileStore only if its module was imported (a database's reads never do)
            files = sys.modules.get("runner.store.files")
            local = files is not None and isinstance(self._store, files.FileStore)
        else:
            from runner.store.backends import choose, is_postgres

            local = not is_postgres(choose(self._workdir, self.state_url).url)
        return os.path.join(self._workdir, "data" if local else "build", ".cache")

    # -- the machine --------------------------------------------------------------------

    def validate(self) -> ValidateResult:
        """Check the machine file: syntax, schema, states, phases, plugins, templates.
        Raises :class:`~runner.errors.MachineError` listing every problem."""
        from runner.api.validated import ValidateResult

        return ValidateResult.from_machine(self.machine())

    def graph(self, format: str = "mermaid", env: str | None = None) -> GraphResult:
        """The machine drawn as ``format`` (mermaid, dot, svg or png; svg and png need
        Graphviz), marking ``env``'s current state when given. Writes nothing."""
        from runner.api.outcomes import GraphResult
        from runner.machine import graph as graphs

        if format not in GRAPH_FORMATS:
            raise InputError(
                f"unknown graph format {format!r}", hint=f"one of: {', '.join(GRAPH_FORMATS)}"
            )
        state = None
        if env is not None:
            with _about(env):
                record = self._load(env)
                self._follow(record)
                machine = self.machine(plugins=False)
                self._same_machine(machine, record)
                state = _state_of(record)
        else:
            machine = self.machine(plugins=False)
        from typing import cast

        data = graphs.render(machine, cast("graphs.GraphFormat", format), state)
        return GraphResult.from_data(format, data, env, state)

    # -- environments -------------------------------------------------------------------

    def create(
        self,
        name: str,
        inputs: Mapping[str, Any] | None = None,
        config: str | os.PathLike[str] | None = None,
        sets: Iterable[str] = (),
    ) -> CreateResult:
        """Create environment ``name`` in the machine's initial state.

        Its inputs: the YAML or JSON file ``config`` (relative to the current
        directory), then the mapping ``inputs`` merged into it, then ``sets``
        (``KEY=VALUE`` with dotted keys, as `--set`), then the schema's defaults;
        they must satisfy the machine's inputs schema."""
        from runner.api.outcomes import CreateResult

        with _about(name):
            from runner.store.contract import check_name

            check_name(name)
            machine = self.machine(plugins=False)
            given = _given_inputs(inputs, config, sets)
            values = _inputs(machine, given)
            self._free_ports(machine, name, given, values)
            self._secrets_readable(machine, values)
            record = self._new_record(machine, name, values)
            self._no_build_left(name, record.paths.build_dir)
            self.store.create(record)
            self._created_event(machine, record)
            return CreateResult.from_record(record)

    def status(self, name: str) -> StatusResult:
        """Where ``name`` is, what failed, who holds it, and what to do next. Never
        waits for the lock."""
        with _about(name):
            return self._status(name)

    def history(self, name: str, limit: int | None = None) -> HistoryResult:
        """``name``'s events (transitions, steps, interruptions), oldest first; with
        ``limit``, only the last ``limit``."""
        with _about(name):
            from runner.store.contract import check_name

            check_name(name)
            if not self.store.exists(name):
                self.store.load(name)  # says why: no such environment, or no state file
            return HistoryResult(name, tuple(self.store.read_events(name, limit)))

    def artifacts(self, name: str, kind: str = "run") -> ArtifactsResult:
        """The references of ``name``'s run logs (``kind`` "run") or traces ("trace"),
        oldest first."""
        from runner.api.outcomes import ArtifactsResult

        with _about(name):
            if kind not in ("run", "trace"):
                raise InputError(f"unknown artifact kind {kind!r}", hint="one of: run, trace")
            self._load(name)
            from typing import cast

            refs = self.store.list_artifacts(name, cast("ArtifactKind", kind))
            return ArtifactsResult(name, kind, tuple(refs))

    def artifact(self, name: str, ref: str, offset: int = 0) -> ArtifactResult:
        """The text of ``name``'s trace or run log ``ref`` (as its record, `status` or
        :meth:`artifacts` name it); with ``offset``, only what follows the first
        ``offset`` characters (to follow a log as it is written)."""
        from runner.api.outcomes import ArtifactResult

        with _about(name):
            if offset < 0:
                raise InputError(f"offset must be >= 0, not {offset}")
            from runner.store.contract import check_name

            check_name(name)
            text = self.store.read_artifact(name, ref)
            return ArtifactResult(name, ref, offset, len(text), text[offset:])

    # -- running phases -----------------------------------------------------------------

    def advance(self, name: str, dry_run: bool = False) -> RunResult:
        """Run the next phase on the happy path (none: nothing to advance). With
        ``dry_run``, only say what it would run."""
        from runner.api.outcomes import RunResult

        with _about(name), self._session(name) as session:
            machine, state = session.machine, session.state
            _refuse_unfinished(machine, name, state, "advance")
            phase = machine.advancing_phase(state)
            if phase is None:
                return RunResult(
                    name,
                    state,
                    "ok",
                    message=f"environment '{name}' is in '{state}', the end "
                    "of the happy path: nothing to advance",
                )
            if dry_run:
                return self._planned(session, phase)
            result = self._start(session, phase)
            return RunResult.from_phase_results(name, session.state, [result])

    def up(self, name: str, to: str | None = None) -> RunResult:
        """Advance until the environment reaches state ``to`` (default: the end of the
        happy path), or a phase fails."""
        from runner.api.outcomes import RunResult

        with _about(name), self._session(name) as session:
            machine = session.machine
            if to is not None and to not in machine.states:
                raise InputError(
                    f"--to {to!r} is not a state of {machine.file.name}"
                    + did_you_mean(to, machine.states),
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
            # every phase of the way checked before the first step runs
            from runner.run.phase import refuse_unreadable_secrets

            for state in path[: path.index(to) if to is not None else -1]:
                ahead = machine.advancing_phase(state)
                assert ahead is not None
                refuse_unreadable_secrets(session, ahead, list(ahead.steps))
            results: list[PhaseResult] = []
            while session.state != to:
                phase = machine.advancing_phase(session.state)
                if phase is None:
                    break
                result = self._start(session, phase)
                results.append(result)
                if result.status != "succeeded":
                    break
            message = "" if results else f"environment '{name}' is already in '{session.state}'"
            return RunResult.from_phase_results(name, session.state, results, message)

    def resume(
        self, name: str, from_step: str | None = None, accept_machine_change: bool = False
    ) -> RunResult:
        """Continue the interrupted or failed phase from its first unfinished step, or
        re-run it from ``from_step``. A phase whose steps changed since its run started
        is refused (naming them) unless ``accept_machine_change``."""
        from runner.api.outcomes import RunResult
        from runner.run.phase import PhaseRunner

        with _about(name), self._session(name) as session:
            machine, state = session.machine, session.state
            phase = machine.phase_by_failed(state) or machine.phase_by_via(state)
            if phase is None:
                raise PhaseNotAllowedError(
                    f"environment '{name}' is in '{state}': nothing was interrupted or failed, "
                    "so there is nothing to resume",
                    hint=f"runner advance {name}",
                    state=state,
                )
            if from_step is not None and phase.step(from_step) is None:
                raise InputError(
                    f"phase '{phase.name}' has no step '{from_step}'"
                    + did_you_mean(from_step, [s.name for s in phase.steps]),
                    hint=f"its steps: {', '.join(s.name for s in phase.steps)}",
                )
            if from_step is not None:
                _refuse_a_later_step(session, phase, from_step)
            if not accept_machine_change:
                _refuse_changed_steps(session, phase)
            result = PhaseRunner(session, self.registry(), self.progress).resume(phase, from_step)
            return RunResult.from_phase_results(name, session.state, [result])

    def run_phase(self, name: str, phase: str, dry_run: bool = False) -> RunResult:
        """Run the named phase, which must be allowed from the current state. With
        ``dry_run``, only say what it would run."""
        from runner.api.outcomes import RunResult

        with _about(name), self._session(name) as session:
            machine = session.machine
            found = machine.phase(phase)
            if found is None:
                raise InputError(
                    f"{machine.file.name} has no phase '{phase}'"
                    + did_you_mean(phase, [p.name for p in machine.phases]),
                    hint=f"phases: {', '.join(p.name for p in machine.phases)}",
                )
            if session.state not in found.sources:
                raise _not_allowed(machine, name, session.state, phase)
            if dry_run:
                return self._planned(session, found)
            result = self._start(session, found)
            return RunResult.from_phase_results(name, session.state, [result])

    def destroy(self, name: str, dry_run: bool = False) -> RunResult:
        """Run the machine's `destroy` phase (see :meth:`run_phase`)."""
        with _about(name):
            self._follow_environment(name)
            machine = self.machine()
            if machine.phase("destroy") is None:
                raise InputError(
                    f"{machine.file.name} has no phase named 'destroy'",
                    hint="use `runner phase NAME PHASE` with one of its phases",
                )
        return self.run_phase(name, "destroy", dry_run)

    # -- checks -------------------------------------------------------------------------

    def check(self, name: str) -> CheckResult:
        """Run the checks that apply in ``name``'s current state (machine.yaml's
        `checks:`, by their `in`) and record the result (the record's ``last_check`` and
        a ``check`` event); the state never changes. A check that fails is a result
        (``status`` failed), not an error."""
        from runner.api.outcomes import CheckResult
        from runner.run.checks import run_checks
        from runner.run.phase import PhaseRunner

        with _about(name), self._session(name) as session:
            checks = session.machine.checks_in(session.state)
            if not checks:
                return CheckResult(
                    name,
                    session.state,
                    "none",
                    message=f"no check applies in state '{session.state}' "
                    f"({session.machine.file.name} lists their states under `checks:`, `in`)",
                )
            runner = PhaseRunner(session, self.registry(), self.progress)
            return CheckResult.from_run(name, run_checks(session, runner, checks))

    # -- operator commands: getting out of trouble --------------------------------------

    def exists(self, name: str) -> ExistsResult:
        """Whether environment ``name`` exists (an invalid name is InvalidNameError)."""
        from runner.store.contract import check_name

        check_name(name)
        return ExistsResult(name, self.store.exists(name))

    def purge(self, name: str, force: bool = False, build: bool = False) -> PurgeResult:
        """Remove ``name``'s record, event log, traces, run logs and snapshots, freeing
        the name. Allowed in a final state; elsewhere only with ``force``, and then the
        result's warnings say what may still exist (its build folder, the OpenTofu state
        and so infrastructure never destroyed). The build folder is kept unless
        ``build``. Refused while another command holds the lock."""
        from runner.api.outcomes import PurgeResult
        from runner.errors import StateFileError
        from runner.store.contract import check_name
        from runner.store.locking import hold

        with _about(name):
            check_name(name)
            record: Record | None
            try:
                record = self.store.load(name)
            except StateFileError:
                if not force:
                    raise
                record = None
            if record is not None:
                self._follow(record)
            with hold(self.store, name, self.command, 0.0, never_waits=True):
                state = None if record is None else record.state
                kind = None
                if record is not None:
                    machine = self.machine(plugins=False)
                    self._same_machine(machine, record)
                    kind = machine.state_kind(state) if state in machine.states else None
                if kind != "final" and not force:
                    raise PhaseNotAllowedError(
                        f"environment '{name}' is in '{state}', not a final state: its "
                        "infrastructure may still exist, so it is not purged",
                        hint=f"runner destroy {name}, then runner purge {name}   (or: runner "
                        f"purge {name} --force to drop the records anyway)",
                        state=state,
                    )
                build_dir = record.paths.build_dir if record is not None else f"build/{name}"
                warnings = [] if kind == "final" else self._left_behind(name, state, build_dir)
                self.store.delete(name)
            removed = build and self._remove_build(name, build_dir)
            kept = not removed and (self.workdir / build_dir).is_dir()
            logger().info(
                "environment=%s purged (state %s%s)", name, state, ", forced" if force else ""
            )
            return PurgeResult(name, state, force, build_dir, removed, kept, tuple(warnings))

    def _left_behind(self, name: str, state: str | None, build_dir: str) -> list[str]:
        """What may still exist once a non-final environment's records are gone."""
        warnings = [
            f"environment '{name}' is in '{state or 'an unreadable state'}', not a final "
            "state: what its phases created may still exist"
        ]
        folder = self.workdir / build_dir
        if folder.is_dir():
            states = sorted(
                str(p.relative_to(self.workdir)) for p in folder.rglob("*.tfstate") if p.is_file()
            )
            warnings.append(f"{build_dir} still exists (rendered files, the engine's work)")
            for found in states:
                warnings.append(
                    f"{found} is OpenTofu state: the resources it lists were never destroyed; "
                    f"destroy them with `tofu -chdir={os.path.dirname(found)} destroy` before "
                    "removing it"
                )
        return warnings

    def _remove_build(self, name: str, build_dir: str) -> bool:
        """Remove the build folder (inside the working directory, never through a link)."""
        import shutil

        folder = self.workdir / build_dir
        if folder.is_symlink() or not folder.is_dir():
            return False
        if self.workdir.resolve() not in folder.resolve().parents:
            return False
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            from runner.errors import StorageError

            raise StorageError(
                f"environment '{name}' was purged, but {build_dir} could not be removed: "
                f"{exc.strerror or exc}",
                hint=f"remove {build_dir} by hand",
            ) from exc
        return True

    def inputs(self, name: str) -> InputsResult:
        """``name``'s inputs (secrets as their references). Never waits for the lock."""
        from runner.api.outcomes import InputsResult

        with _about(name):
            record = self._load(name)
            _same_lineage(record, self.store.read_events(name, limit=1))
            return InputsResult.from_record(record)

    def change_inputs(
        self,
        name: str,
        sets: Iterable[str] = (),
        unset: Iterable[str] = (),
        config: str | os.PathLike[str] | None = None,
    ) -> InputsResult:
        """Change ``name``'s inputs: the YAML or JSON file ``config`` merged into them,
        then ``sets`` (``KEY=VALUE``, dotted keys), then the keys ``unset`` removed; the
        result must satisfy the machine's inputs schema. Allowed in stable and failed
        states, not while a phase is in progress or interrupted. Records an
        ``inputs_changed`` event naming the keys changed (never a value). In a failed
        state the steps already done used the old inputs, so the next ``resume`` runs the
        failed phase again from its first step (``restarts_phase``)."""
        from runner.api.outcomes import InputsResult
        from runner.run import inputs as environment_inputs

        with _about(name), self._session(name) as session:
            record, machine = session.record, session.machine
            kind = machine.state_kind(record.state)
            if kind in ("intermediate", "final"):
                why = (
                    "a phase is in progress (or was interrupted): resume or destroy it first"
                    if kind == "intermediate"
                    else "it is in a final state"
                )
                raise PhaseNotAllowedError(
                    f"the inputs of environment '{name}' cannot change in '{record.state}': " + why,
                    hint=f"runner status {name}",
                    state=record.state,
                )
            given: dict[str, Any] = copied(record.inputs)
            if config is not None:
                given = _merged(given, environment_inputs.load_config_file(_absolute(config)))
            given = environment_inputs.apply_sets(given, list(sets))
            for dotted in unset:
                _unset(given, dotted)
            values = _inputs(machine, given)
            self._secrets_readable(machine, values)
            changed = _changed_keys(record.inputs, values)
            if not changed:
                return InputsResult.from_record(record)
            record.inputs = values
            restarts = None
            if kind == "failed" and record.run is not None and record.run.completed_steps:
                # what the steps already done made (rendered files, say) used the old
                # inputs: the resume runs the failed phase again from its first step
                restarts = record.run.phase
                record.run.completed_steps, record.run.skipped_steps = [], []
                record.run.current_step = None
            session.save("inputs_changed")
            session.event(
                "inputs_changed", state=record.state, keys=changed, restarts_phase=restarts
            )
            logger().info("environment=%s inputs changed: %s", name, ", ".join(changed))
            return InputsResult.from_record(record, changed, restarts)

    def force_state(self, name: str, state: str, reason: str) -> ForceStateResult:
        """Move ``name`` to ``state``, any state its machine declares, running nothing:
        the run and failure records are cleared and a ``state_forced`` event records
        from, to, ``reason`` and who. Refused without a reason and while another command
        holds the lock."""
        import getpass
        import socket

        from runner.api.outcomes import ForceStateResult
        from runner.store.record import Forced, now_iso

        with _about(name):
            if not isinstance(reason, str) or not reason.strip():
                raise InputError(
                    "force-state needs a reason (it is kept in the record and the history)",
                    hint=f'runner force-state {name} {state} --reason "what happened"',
                )
            with self._session(name, lock_timeout=0.0, never_waits=True) as session:
                machine, record = session.machine, session.record
                if state not in machine.states:
                    raise InputError(
                        f"'{state}' is not a state of {machine.file.name}"
                        + did_you_mean(state, machine.states),
                        hint=f"its states: {', '.join(machine.states)}",
                    )
                try:
                    user = getpass.getuser()
                except (KeyError, OSError):
                    user = str(os.getuid())
                forced = Forced(
                    from_state=record.state,
                    to=state,
                    reason=reason.strip(),
                    user=user,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    at=now_iso(),
                )
                record.state, record.run, record.failure = state, None, None
                record.forced = forced
                session.save("state_forced")
                session.event(
                    "state_forced",
                    **{"from": forced.from_state, "to": state},
                    reason=forced.reason,
                    user=user,
                )
                logger().info(
                    "environment=%s forced from=%s to=%s by %s: %s",
                    name,
                    forced.from_state,
                    state,
                    user,
                    forced.reason,
                )
                return ForceStateResult.from_record(record)

    def snapshots(self, name: str) -> SnapshotsResult:
        """The kept versions of ``name``'s record, oldest first (the current one last).
        Never waits for the lock."""
        from runner.api.outcomes import SnapshotsResult

        with _about(name):
            record = self._load(name)
            kept = self.store.list_snapshots(name)
            return SnapshotsResult(name, record.serial, tuple(kept))

    def restore(self, name: str, serial: int) -> RestoreResult:
        """Make the kept version ``serial`` of ``name`` current again, as a new save (the
        serial goes on growing) with a ``restored`` event. The way back from a state
        file put back by hand or copied from another environment. Refused while another
        command holds the lock."""
        from runner.api.outcomes import RestoreResult

        with (
            _about(name),
            self._session(name, lock_timeout=0.0, lineage=False, never_waits=True) as session,
        ):
            current = session.record
            if isinstance(serial, bool) or not isinstance(serial, int):
                raise InputError(f"--serial must be a whole number, not {serial!r}")
            version = self.store.load_snapshot(name, serial)
            logged = self.store.read_events(name, limit=1)
            _same_lineage(version, logged, restoring=True)
            _state_known(session.machine, version)
            # Above every serial the environment has had: after an old copy was put back
            # by hand, the later versions (kept, and in the event log) stay what they are.
            newest = max(
                [current.serial, *(s.serial for s in self.store.list_snapshots(name))]
                + [e["serial"] for e in logged if _whole(e.get("serial"))]
            )
            version.serial = current.serial
            version.name = current.name
            if version.lineage is None:
                version.lineage = current.lineage
            session.record = version
            session.save(f"restored {serial}", serial=newest + 1)
            session.event(
                "restored",
                restored=serial,
                **{"from": current.state, "to": version.state},
                state=version.state,
            )
            logger().info(
                "environment=%s restored serial %d as serial %d (state %s)",
                name,
                serial,
                version.serial,
                version.state,
            )
            return RestoreResult(name, serial, version.serial, version.state, current.state)

    # -- inside -------------------------------------------------------------------------

    def _load(self, name: str) -> Record:
        from runner.store.contract import check_name

        check_name(name)
        return self.store.load(name)

    @contextmanager
    def _session(
        self,
        name: str,
        *,
        lock_timeout: float | None = None,
        lineage: bool = True,
        never_waits: bool = False,
    ) -> Iterator[Session]:
        """The environment under its lock: leftovers of a crashed holder stopped, the
        event log completed, and signals the phase's from the moment the lock is held
        (while waiting for it, Ctrl+C stops the command at once). ``lock_timeout``
        replaces the Runner's (0: refused while another holds it); a record whose
        lineage is not its event log's is refused unless ``lineage`` is false."""
        from runner import signals
        from runner.run.session import Session
        from runner.store.contract import check_name
        from runner.store.locking import hold

        check_name(name)
        self._follow_environment(name)
        machine = self.machine()
        tell = self.on_lock_wait
        on_wait = None if tell is None else functools.partial(tell, name)
        with (
            hold(
                self.store,
                name,
                self.command,
                self.lock_timeout if lock_timeout is None else lock_timeout,
                on_wait=on_wait,
                never_waits=never_waits,
            ) as lease,
            signals.phase_interrupts(),
        ):
            _stop_leftovers(name, lease.previous)
            record = self.store.load(name)
            self._same_machine(machine, record)
            from runner.errors import LineageError

            try:
                _same_lineage(record, self.store.read_events(name, limit=1))
                foreign = False
            except LineageError:
                if lineage:
                    raise
                foreign = True
            _state_known(machine, record)
            session = Session(self.store, machine, record, self.command, self.workdir, lease)
            if not foreign:  # the log of another lineage is not this record's to complete
                session.reconcile()
            yield session

    def _start(self, session: Session, phase: PhaseDef) -> PhaseResult:
        from runner.run.phase import PhaseRunner

        if phase.confirm and self.confirm is not None:
            self._confirmed(session, phase)
        return PhaseRunner(session, self.registry(), self.progress).start(phase)

    def _planned(self, session: Session, phase: PhaseDef) -> RunResult:
        """The dry run of ``phase``: its steps rendered, and what the plugins that can
        tell would change (the real plan of its OpenTofu apply or destroy)."""
        from runner.run.phase import PhaseRunner
        from runner.struct import replace

        planned = _planned(session, phase)
        assert planned.dry_run
        plan = planned.dry_run[0]
        rendered = {s.name for s in plan.steps if s.when and s.error is None}
        previews = PhaseRunner(session, self.registry()).preview(
            phase, [step for step in phase.steps if step.name in rendered]
        )
        if not previews:
            return planned
        steps = tuple(replace(s, preview=previews.get(s.name)) for s in plan.steps)
        return replace(planned, dry_run=(replace(plan, steps=steps),))

    def _confirmed(self, session: Session, phase: PhaseDef) -> None:
        """Ask :attr:`confirm` about ``phase``; ConfirmationError when it says no."""
        from runner.api.outcomes import ConfirmRequest
        from runner.errors import ConfirmationError

        plan = _planned(session, phase).dry_run
        assert plan
        steps = plan[0].steps
        request = ConfirmRequest(
            environment=session.name,
            state=session.state,
            phase=phase.name,
            to=phase.to,
            runs=tuple(s.name for s in steps if s.when is not False),
            skips=tuple(s.name for s in steps if s.when is False),
        )
        assert self.confirm is not None
        if not self.confirm(request):
            raise ConfirmationError(
                f"phase '{phase.name}' of environment '{session.name}' was not confirmed; "
                f"nothing was run and it stays in '{session.state}'",
                state=session.state,
            )

    def _new_record(self, machine: MachineDef, name: str, inputs: dict[str, Any]) -> Record:
        """The record of a new environment (not stored yet)."""
        from runner.store.record import MachineRef, Record

        return Record.new(
            name,
            machine.initial,
            MachineRef.at(machine.name, machine.digest, self.machine_file, self.workdir),
            inputs,
            data_dir=self.store.data_dir(name),
        )

    def _no_build_left(self, name: str, build_dir: str) -> None:
        """Refuse a new environment whose build folder still holds an earlier one's files
        (purged without ``--build``): it would take them over, OpenTofu state included,
        and so act on infrastructure it never created."""
        folder = self.workdir / build_dir
        try:
            if not folder.is_dir() or not any(folder.iterdir()):
                return
            states = sorted(
                str(p.relative_to(self.workdir)) for p in folder.rglob("*.tfstate") if p.is_file()
            )
        except OSError:
            return  # unreadable: the phase that needs the folder says so
        held = f" ({states[0]} is OpenTofu state)" if states else ""
        raise InputError(
            f"{build_dir} still holds the files of an earlier environment named '{name}'"
            f"{held}: a new environment would take them over",
            hint="make sure nothing it created still exists (docs/recovery.md, manual "
            f"cleanup with OpenTofu), then remove {build_dir}; nothing was created",
            environment=name,
        )

    def _free_ports(
        self, machine: MachineDef, name: str, given: dict[str, Any], inputs: dict[str, Any]
    ) -> None:
        """The ports of this machine ``inputs`` name (``free_port``): the ones given must
        be free (InvalidInputsError), the others get a free one (the default if free)."""
        from runner.run import ports

        marked = list(ports.port_inputs(machine.inputs_schema))
        if not marked:
            return
        others = ports.taken(self.store, machine, name)
        problems = ports.problems([p for p in marked if p.value(given) is not None], inputs, others)
        if problems:
            raise InvalidInputsError(
                "ports that cannot be used:\n  " + "\n  ".join(problems),
                hint="give another port with --set, or leave it out: create then picks a free "
                "one; nothing was created",
            )
        for dotted, default, port in ports.allocate(marked, given, inputs, others):
            logger().info("environment=%s %s: %d is taken, using %d", name, dotted, default, port)

    def _secrets_readable(self, machine: MachineDef, inputs: dict[str, Any]) -> None:
        """InvalidInputsError when a secret input names a variable that is not set or
        a file that cannot be read."""
        from runner.run.inputs import SecretResolver

        resolver = SecretResolver(machine.inputs_schema, inputs, self.workdir)
        try:
            problems = resolver.unreadable()
        finally:
            resolver.close()
        if problems:
            raise InvalidInputsError(
                "secret inputs that cannot be read:\n  " + "\n  ".join(problems),
                hint="set the variable (export NAME=...) or create the file, then create the "
                "environment again; nothing was created",
            )

    def _created_event(self, machine: MachineDef, record: Record) -> None:
        import socket

        name = record.name
        self.store.append_event(
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
                "lineage": record.lineage,
            },
        )
        logger().info("environment=%s created in state=%s", name, machine.initial)

    def _follow(self, record: Record) -> None:
        """Use the machine file ``record`` names when no machine was given and the
        working directory has no machine.yaml (and the file still exists)."""
        if self.machine_source in ("given", "workdir"):
            return
        target, source = self._default_machine_path, "shipped"
        if record.machine.file:
            recorded = os.path.join(self._workdir, record.machine.file)  # absolute stays
            if os.path.isfile(recorded):
                target, source = recorded, "recorded"
        self.machine_source = source
        if target != self._machine_path:
            self._machine_path = target
            self._machine = None
            self._plugins_checked = False

    def _follow_environment(self, name: str) -> None:
        """:meth:`_follow` for environment ``name``, if its record can be read (if not,
        the command says why once it loads it)."""
        if self.machine_source in ("given", "workdir"):
            return
        try:
            record = self.store.load(name)
        except RunnerError:
            return
        self._follow(record)

    def _same_machine(self, machine: MachineDef, record: Record) -> None:
        """Refuse a machine of another name than the one ``record`` was created with."""
        if record.machine.name == machine.name:
            return
        where = f" ({record.machine.file})" if record.machine.file else ""
        from runner.errors import MachineMismatchError

        raise MachineMismatchError(
            f"environment '{record.name}' was created with machine '{record.machine.name}', "
            f"not '{machine.name}' ({self.machine_file})",
            hint=f"pass --machine FILE of machine '{record.machine.name}'{where}",
            machine=machine.name,
            recorded_machine=record.machine.name,
        )

    def _status(self, name: str) -> StatusResult:
        record = self._load(name)
        self._follow(record)
        machine = self.machine(plugins=False)
        self._same_machine(machine, record)
        _state_known(machine, record)
        try:
            events = self.store.read_events(record.name, _ENTERED_EVENTS)
        except RunnerError:
            events = []
        _same_lineage(record, events[-1:])
        state = _state_of(record)
        kind = machine.state_kind(state)
        holder = self.store.lock_holder(name)
        interrupted = kind == "intermediate" and holder is None
        actions: list[str] = []
        leftovers, unverified = (
            ([], []) if holder is not None else _leftovers(self.store.last_holder(name))
        )
        if leftovers:
            actions.append(
                "processes of a run that ended without releasing the lock still run "
                f"(process group {', '.join(str(g) for g in leftovers)}): the next command "
                f"that takes the lock stops them (or: kill -- -{leftovers[0]})"
            )
        actions.extend(leftover.text() for leftover in unverified)
        if holder is not None:
            doing = f"{holder.command} (pid {holder.pid})" if holder.known else "another process"
            actions.append(f"wait: {doing} is working on it")
        elif interrupted:
            phase = machine.phase_by_via(state)
            assert phase is not None
            actions.append(
                f"runner resume {name}   (continue phase '{phase.name}' where it stopped)"
            )
            destroy = machine.phase("destroy")
            if destroy is not None and state in destroy.sources:
                actions.append(f"runner destroy {name}")
        else:
            recovery = machine.states[state].recovery
            if recovery:
                actions.append(self._recovery_text(machine, record, recovery))
            if kind == "failed" and not _mentions(actions, f"runner resume {name}"):
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
            checks = machine.checks_in(state)
            if checks:
                actions.append(
                    f"runner check {name}   (checks now: {', '.join(c.name for c in checks)})"
                )
            if kind != "final":
                for other in machine.phases_from(state):
                    if not other.advance:
                        if other.name == "destroy":
                            command = f"runner destroy {name}"
                        else:
                            command = f"runner phase {name} {other.name}"
                        actions.append(f"{command}   (phase '{other.name}' → {other.to})")
        changed = record.machine.digest != machine.digest
        return StatusResult.from_record(
            record,
            entered_at=_entered_at(record, events),
            description=machine.states[state].description,
            kind=kind,
            holder=holder,
            interrupted=interrupted,
            next_actions=actions,
            allowed_phases=[p.name for p in machine.phases_from(state)],
            leftovers=leftovers,
            unverified=unverified,
            machine_changed=changed,
        )

    def _recovery_text(self, machine: MachineDef, record: Record, recovery: str) -> str:
        """The state's recovery text rendered for this environment (or why it did not)."""
        from runner.machine.templating import TemplateFailure, render_string
        from runner.run.session import template_context

        context = template_context(record, machine, self.workdir)
        try:
            return str(render_string(recovery, context)).strip()
        except TemplateFailure as exc:
            return f"{recovery.strip()}  (recovery text did not render: {exc})"

    # -- backends -----------------------------------------------------------------------

    def init_state(self) -> StateInitResult:
        """Make the backend ready: for PostgreSQL, apply the schema migrations it lacks
        (a newer schema than this runner knows is refused); files need nothing."""
        from runner.api.outcomes import StateInitResult
        from runner.store.backends import choose, is_postgres, open_url
        from runner.store.postgres import PostgresStore, shown_url

        choice = choose(self.workdir, self.state_url)
        if not is_postgres(choice.url):
            open_url(choice.url, self.workdir)  # a bad URL says so
            return StateInitResult(choice.url, "file", 0, 0)
        store = PostgresStore(choice.url, keep_snapshots=choice.snapshots)
        before, after = store.init_schema()
        return StateInitResult(shown_url(choice.url), "postgresql", before, after)

    def migrate_state(self, to: str) -> MigrateResult:
        """Copy every environment of this backend to the backend ``to`` (a state URL):
        records, events, snapshots, artifacts and lineage; names ``to`` has already are
        refused before anything is copied; each copy is read back and compared; this
        backend is left as it was."""
        from runner.api.outcomes import MigrateResult
        from runner.store.backends import choose, open_url
        from runner.store.postgres import shown_url
        from runner.store.transfer import migrate

        choice = choose(self.workdir, self.state_url)
        if to == choice.url:
            raise InputError(
                f"--to names the backend the environments are in already ({shown_url(to)})",
                hint="give another state URL to --to",
            )
        target = open_url(to, self.workdir, snapshots=choice.snapshots)
        copied = migrate(self.store, target)
        return MigrateResult(shown_url(choice.url), shown_url(to), tuple(copied))

    # `list` last: below it, the name means this method in annotations, not the type

    def list(self, state: str | None = None, kind: str | None = None) -> ListResult:
        """Every environment, sorted by name; the ones that cannot be read apart, with
        the reason. With ``state``, only those in that state; with ``kind`` (failed,
        intermediate, stable, final; stable includes the initial state), only those in
        a state of that kind in the machine. Never waits for a lock."""
        entries = self.store.list()
        if state is None and kind is None:
            return ListResult.from_entries(entries)
        readable = [e for e in entries if e.record is not None]
        if kind is not None:
            if kind not in STATE_KINDS:
                raise InputError(
                    f"unknown --kind {kind!r}" + did_you_mean(kind, STATE_KINDS),
                    hint=f"one of: {', '.join(STATE_KINDS)}",
                )
            machine = self.machine(plugins=False)

            def of_kind(entry: ListEntry) -> bool:
                assert entry.record is not None
                found = entry.record.state
                if found not in machine.states:
                    return False
                return machine.state_kind(found).replace("initial", "stable") == kind

            readable = [e for e in readable if of_kind(e)]
        if state is not None:
            present = {e.record.state for e in entries if e.record is not None}
            known = set(self.machine(plugins=False).states) | present
            if state not in known:
                raise InputError(
                    f"--state {state!r} is not a state of the machine nor of any environment"
                    + did_you_mean(state, sorted(known)),
                    hint="see the states with `runner validate`",
                )
            readable = [e for e in readable if e.record is not None and e.record.state == state]
        shown = " ".join(
            f"--{option} {value}" for option, value in (("state", state), ("kind", kind)) if value
        )
        return ListResult.from_entries(readable, shown)


# --- the rules of the commands ----------------------------------------------------------


@contextmanager
def _about(name: str) -> Iterator[None]:
    """Any RunnerError raised inside names environment ``name``."""
    try:
        yield
    except RunnerError as exc:
        exc.about(name)
        raise


def _entered_at(record: Record, events: Events) -> str:
    """When ``record`` entered its state: the time of the last event that moved it
    there (among ``events``, the last ones of its log), else its last change."""
    for event in reversed(events):
        kind = event.get("type")
        arrived = event.get("to") if kind in _ARRIVALS else None
        if arrived is None and kind == "recovered":
            arrived = event.get("state")
        if arrived is not None:
            stamp = event.get("timestamp")
            if arrived == record.state and isinstance(stamp, str):
                return stamp
            break  # the last move went elsewhere: the log is behind the record
    return record.updated_at


def _whole(value: object) -> bool:
    """Whether ``value`` is a whole number (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _same_lineage(record: Record, last: Events, *, restoring: bool = False) -> None:
    """Refuse ``record`` when it is not the one its event log (``last``: its last event,
    or none) belongs to: another lineage (a state file copied from another
    environment), or a serial behind the log's (an old copy put back by hand).
    Records and events of formats before lineage are not judged."""
    from runner.errors import LineageError

    if not last:
        return
    event = last[-1]
    logged = event.get("lineage")
    name = record.name
    what = "snapshot" if restoring else "state"
    if isinstance(logged, str) and record.lineage is not None and logged != record.lineage:
        raise LineageError(
            f"the {what} of environment '{name}' has lineage {record.lineage}, but its event "
            f"log belongs to lineage {logged}: it was copied from another environment",
            hint=f"see the versions kept with `runner snapshots {name}` and bring one back "
            f"with `runner restore {name} --serial N`",
            environment=name,
        )
    serial = event.get("serial")
    if not restoring and isinstance(serial, int) and serial > record.serial:
        raise LineageError(
            f"the state of environment '{name}' is serial {record.serial}, but its event log "
            f"goes on to serial {serial}: an old copy of the state was put back",
            hint=f"see the versions kept with `runner snapshots {name}` and bring one back "
            f"with `runner restore {name} --serial N`",
            environment=name,
        )


def _refuse_a_later_step(session: Session, phase: PhaseDef, from_step: str) -> None:
    """Refuse ``--from-step`` of a step after the first one not done: resume starts
    there anyway, so the steps between would not be skipped, as the operator may think."""
    run = session.record.run
    if run is None or run.phase != phase.name:
        return
    names = [s.name for s in phase.steps]
    pending = next((n for n in names if n not in run.completed_steps), None)
    if pending is not None and names.index(from_step) > names.index(pending):
        raise InputError(
            f"step '{from_step}' comes after '{pending}', the first step of phase "
            f"'{phase.name}' not done: resume runs from '{pending}' anyway",
            hint=f"`runner resume {session.name}` runs from '{pending}'; --from-step "
            "re-runs from an earlier step",
        )


def _refuse_changed_steps(session: Session, phase: PhaseDef) -> None:
    """Refuse to resume ``phase`` when its steps changed since its run started (a run
    recorded before step digests were kept is not judged)."""
    from runner.machine.model import step_digests

    run = session.record.run
    if run is None or run.phase != phase.name or run.step_digests is None:
        return
    before, now = run.step_digests, step_digests(phase)
    added = [s for s in now if s not in before]
    removed = [s for s in before if s not in now]
    changed = [s for s in now if s in before and before[s] != now[s]]
    if not (added or removed or changed):
        return
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (("added", added), ("removed", removed), ("changed", changed))
        if names
    ]
    raise PhaseNotAllowedError(
        f"phase '{phase.name}' of environment '{session.name}' changed in "
        f"{session.machine.file.name} since its run started: steps {'; '.join(parts)}",
        hint=f"check that the steps already done still hold, then runner resume {session.name} "
        "--accept-machine-change   (or put the machine back as it was)",
        state=session.state,
        steps_added=added,
        steps_removed=removed,
        steps_changed=changed,
    )


def _unset(data: dict[str, Any], dotted: str) -> None:
    """Remove the input ``dotted`` (``ssh.port``) from ``data``; InvalidInputsError when
    there is none."""
    parts = dotted.split(".")
    node: Any = data
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or parts[-1] not in node:
        raise InvalidInputsError(
            f"--unset {dotted}: the environment has no input {dotted!r}",
            hint="see its inputs with `runner inputs NAME`",
        )
    del node[parts[-1]]


def _changed_keys(before: Any, after: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two inputs (added, removed or
    changed), sorted."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys: list[str] = []
        for name in sorted(set(before) | set(after)):
            dotted = f"{prefix}{name}"
            if name not in before or name not in after:
                keys.append(dotted)
            else:
                keys.extend(_changed_keys(before[name], after[name], dotted + "."))
        return keys
    return [] if before == after else [prefix.rstrip(".")]


def _absolute(path: str | os.PathLike[str]) -> Path:
    from pathlib import Path

    return Path(path).absolute()


def _machine_file(workdir: str, given: str | os.PathLike[str] | None) -> str:
    """``given`` (relative to ``workdir``), else machine.yaml in ``workdir``, else the
    shipped machine."""
    from runner import resources

    if given is not None:
        return os.path.join(workdir, given)  # an absolute ``given`` stays as it is
    local = os.path.join(workdir, "machine.yaml")
    return local if os.path.exists(local) else resources.shipped_machine_file()


def _mentions(actions: Iterable[str], command: str) -> bool:
    """Whether one of ``actions`` (a recovery text, say) already gives ``command``."""
    import re

    pattern = re.compile(re.escape(command) + r"(?![\w-])")
    return any(pattern.search(action) for action in actions)


def _state_of(record: Record) -> str:
    return record.state


def _state_known(machine: MachineDef, record: Record) -> None:
    state = _state_of(record)
    if state not in machine.states:
        from runner.errors import StateFileError

        raise StateFileError(
            f"environment '{record.name}' is in state '{state}', which "
            f"{machine.file.name} does not declare",
            hint="restore the state in machine.yaml (or use the machine the environment was "
            "created with: --machine FILE)",
        )


def _given_inputs(
    inputs: Mapping[str, Any] | None,
    config: str | os.PathLike[str] | None,
    sets: Iterable[str],
) -> dict[str, Any]:
    """The config file, ``inputs`` merged into it, then ``sets``: what was given."""
    from runner.run import inputs as environment_inputs

    if isinstance(sets, str):
        raise InvalidInputsError("sets must be a list of KEY=VALUE strings, not one string")
    data: dict[str, Any] = {}
    if config is not None:
        data = environment_inputs.load_config_file(_absolute(config))
    if inputs is not None:
        data = _merged(data, _plain(inputs))
    return environment_inputs.apply_sets(data, sets)


def _inputs(machine: MachineDef, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` (a copy) with the defaults, validated against the machine's inputs
    schema."""

    from runner.run import inputs as environment_inputs

    data = copied(given)
    filled: dict[str, Any] = environment_inputs.apply_defaults(machine.inputs_schema, data)
    environment_inputs.validate(machine.inputs_schema, filled)
    return filled


def _plain(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``inputs`` as plain JSON data (a copy), or InvalidInputsError."""
    import json

    if not isinstance(inputs, Mapping):
        raise InvalidInputsError(f"inputs must be a mapping of inputs, not {type(inputs).__name__}")
    try:
        data = json.loads(json.dumps(inputs))
    except (TypeError, ValueError) as exc:
        raise InvalidInputsError(f"inputs must be JSON data: {exc}") from None
    assert isinstance(data, dict)
    return data


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: mappings key by key, anything else replaced."""
    result = dict(base)
    for name, value in over.items():
        if isinstance(value, dict) and isinstance(result.get(name), dict):
            result[name] = _merged(result[name], value)
        else:
            result[name] = value
    return result


def _leftovers(stale: LockInfo | None) -> tuple[list[int], list[UnverifiedLeftover]]:
    """What a holder that died without releasing the lock left: the process groups still
    running here that are for certain the ones it noted (same host, boot and leader:
    to be stopped), and those that may still run, here or on its host, that cannot be
    told to be (for a person to check: nothing stops them)."""
    if stale is None or not stale.processes:
        return [], []
    if stale.host != os.uname().nodename:
        why = "it ran on another host, where this runner cannot look"
        unsure = [(int(g), why) for g in stale.processes]
        ours: list[int] = []
    else:
        from runner.run.process import sorted_leftovers

        ours, unsure = sorted_leftovers(stale.processes)
    return ours, [
        UnverifiedLeftover(group, stale.host, stale.pid, stale.command, why)
        for group, why in unsure
    ]


def _stop_leftovers(name: str, previous: LockInfo | None) -> None:
    """A holder that died without releasing (killed with SIGKILL) may have left its
    step's programs running: stop those that are for certain its own before anything
    else runs, and say which others may still run (never stopped: their numbers may
    belong to other programs by now)."""
    ours, unsure = _leftovers(previous)
    for leftover in unsure:
        logger().warning("environment=%s %s", name, leftover.text())
    if not ours:
        return
    assert previous is not None
    from runner.run.process import stop_leftovers

    stopped = stop_leftovers(ours)
    if stopped:
        logger().warning(
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


def _planned(session: Session, phase: PhaseDef) -> RunResult:
    """The dry run of ``phase``: each step rendered (secrets masked), nothing run."""
    from runner.api.outcomes import PhasePlan, RunResult, StepPlan
    from runner.machine.templating import TemplateFailure, evaluate_condition, render_value
    from runner.run.inputs import SecretResolver, mask_params

    secrets = SecretResolver(session.machine.inputs_schema, session.record.inputs, session.workdir)
    steps = []
    try:
        for step in phase.steps:
            context = session.template_context(phase.name, step.name, secrets)
            when: bool | None = None
            try:
                when = evaluate_condition(step.when, context)
                rendered = render_value(step.with_, context) if when else None
                params = mask_params(rendered, secrets.mask) if when else None
            except (TemplateFailure, InputError) as exc:
                steps.append(StepPlan(step.name, step.uses, when, None, str(exc)))
            else:
                steps.append(StepPlan(step.name, step.uses, when, params))
    finally:
        secrets.close()  # what secret_file() wrote while planning
    plan = PhasePlan(phase.name, session.state, phase.via, phase.to, tuple(steps))
    return RunResult(
        session.name,
        session.state,
        "ok",
        dry_run=(plan,),
        message=f"dry run: phase '{phase.name}' would run",
    )
