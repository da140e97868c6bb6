"""One command's hold on one environment: its record, its machine, and every state change.

Every state change is a trigger of the `transitions` machine, fired with its data
(``phase``, ``step``) as keyword arguments; the after-state-change callback gets them
back from the event (``send_event=True``), persists the record, logs the transition and
appends it to the event log.
"""

from __future__ import annotations

import os

from runner.errors import StorageError
from runner.log import logger
from runner.machine.model import MachineDef
from runner.machine.statemachine import build_machine
from runner.store.record import MachineRef, Record, now_iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from runner.run.inputs import SecretResolver
    from runner.store.contract import Lease, Store

log = logger()

#: The most serials a `recovered` event names (it counts the others).
MAX_MISSING = 1000


def _hostname() -> str:
    """This host's name (``uname``'s, which is what :func:`socket.gethostname` asks
    for on POSIX, without importing :mod:`socket`)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


class _Model:
    """The object `transitions` drives; ``state`` mirrors the record's state."""

    def __init__(self, state: str) -> None:
        self.state = state


class Session:
    """One command's hold on one environment (the caller holds its lock)."""

    def __init__(
        self,
        store: Store,
        machine: MachineDef,
        record: Record,
        command: str,
        workdir: Path,
        lease: Lease | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        """The environment's lock, held for the command (None in unit tests)."""
        self.machine = machine
        self.record = record
        self.command = command
        self.workdir = workdir
        self.host = _hostname()
        self.model = _Model(record.state)
        self._machine_ref: tuple[MachineDef, str | None] | None = None
        self.machine_sm = build_machine(
            machine, self.model, initial=record.state, after_state_change=self._after_transition
        )

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def state(self) -> str:
        return self.record.state

    # -- persistence ------------------------------------------------------------------

    def save(self, change: str | None = None, *, serial: int | None = None) -> None:
        """Persist the record (serial + 1, or ``serial`` when higher: see
        :meth:`Store.save`), naming the machine that moved it and what made this version
        (``change``; by default the phase running). A record of an older format gets its
        lineage here."""
        record = self.record
        machine = self.machine
        if self._machine_ref is None or self._machine_ref[0] is not machine:
            ref = MachineRef.at(machine.name, machine.digest, machine.file, self.workdir)
            self._machine_ref = (machine, ref.file)  # worked out once, not at every save
        record.machine = MachineRef(machine.name, machine.digest, self._machine_ref[1])
        if record.lineage is None:
            import uuid  # a new record only: uuid imports platform

            record.lineage = uuid.uuid4().hex
        if change is None and record.run is not None:
            change = f"phase {record.run.phase}"
        record.change = change
        self.store.save(record, serial=serial)

    def event(self, event_type: str, **fields: Any) -> None:
        """Append an event of ``event_type`` at the record's serial."""
        event: dict[str, Any] = {
            "timestamp": now_iso(),
            "serial": self.record.serial,
            "type": event_type,
            "pid": os.getpid(),
            "host": self.host,
            "lineage": self.record.lineage,
            "command": self.command,
        }
        event.update(fields)
        try:
            self.store.append_event(self.name, event)
        except StorageError:
            raise
        except OSError as exc:  # the event log is history; the state file is the truth
            log.warning("environment=%s could not append to the event log: %s", self.name, exc)

    def reconcile(self) -> None:
        """Complete the event log after a crash between a save and its event: when the
        record is ahead of the last event, append a ``recovered`` event saying what the
        record holds (its state, serial, run) and which serials have no event."""
        last = self.store.read_events(self.name, limit=1)
        logged = last[-1].get("serial") if last else 0
        if not isinstance(logged, int) or logged >= self.record.serial:
            return
        run = self.record.run
        log.warning(
            "environment=%s the event log ends at serial %d, the state at %d: recording "
            "what the state says",
            self.name,
            logged,
            self.record.serial,
        )
        gap = self.record.serial - logged
        # a crash leaves a gap of one or two; a serial edited by hand, any: the first
        # MAX_MISSING are named, and how many there are
        counted = {} if gap <= MAX_MISSING else {"missing_count": gap}
        self.event(
            "recovered",
            state=self.record.state,
            missing=list(range(logged + 1, logged + 1 + min(gap, MAX_MISSING))),
            **counted,
            phase=run.phase if run else None,
            step=run.current_step if run else None,
            completed_steps=list(run.completed_steps) if run else [],
        )

    def fire(self, trigger: str, *, phase: str, step: str | None = None) -> None:
        """Fire ``trigger``; the callback persists, logs and records the transition."""
        self.model.trigger(trigger, phase=phase, step=step)  # type: ignore[attr-defined]

    def _after_transition(self, event: Any) -> None:
        source = event.transition.source
        dest = event.transition.dest
        trigger = event.event.name
        self.record.state = dest
        self.save(f"{trigger}")
        log.info("environment=%s from=%s to=%s trigger=%s", self.name, source, dest, trigger)
        self.event(
            "transition",
            **{
                "from": source,
                "to": dest,
                "trigger": trigger,
                "phase": event.kwargs.get("phase"),
                "step": event.kwargs.get("step"),
            },
        )

    # -- what templates see -----------------------------------------------------------

    def template_context(
        self, phase: str | None, step: str | None, secrets: SecretResolver | None = None
    ) -> dict[str, Any]:
        """The names `with:`, `when:` and template files see (``secret`` when given)."""
        return template_context(self.record, self.machine, self.workdir, phase, step, secrets)


def template_context(
    record: Record,
    machine: MachineDef,
    workdir: Path,
    phase: str | None = None,
    step: str | None = None,
    secrets: SecretResolver | None = None,
) -> dict[str, Any]:
    """The template context of ``record``: ``env``, ``inputs``, ``outputs``, ``machine``,
    and ``phase``/``step`` while one runs (recovery texts have neither)."""
    context: dict[str, Any] = {
        "env": {
            "name": record.name,
            "state": record.state,
            "data_dir": record.paths.data_dir,
            "build_dir": record.paths.build_dir,
            "workdir": str(workdir),
        },
        "inputs": record.inputs,
        "outputs": record.outputs,
        "machine": {"name": machine.name, "dir": str(machine.dir)},
    }
    if phase is not None:
        context["phase"] = phase
        context["step"] = step
    if secrets is not None:
        context["secret"] = secrets
        context["secret_file"] = secrets.secret_file
    return context
