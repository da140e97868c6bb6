"""The transition plumbing through the Python API: every state change goes through the
`transitions` machine, is persisted, logged and appended to the event log."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from runner.errors import ConflictError, LockLostError, StorageError
from runner.machine import cache
from runner.machine.loader import load_machine
from runner.plugin import Step, StepContext
from runner.run.phase import PhaseRunner
from runner.run.registry import StepRegistry
from runner.run.session import Session
from runner.store.files import FileArtifact, FileStore
from runner.store.record import MachineRef, Record
from tests.helpers import cli_env, read_events, read_state

MACHINE = """\
version: 1
name: plumbing
initial: created
states:
  created: {}
  provisioning: {}
  provisioned: {}
  provision_failed: {}
phases:
  - name: provision
    from: created
    via: provisioning
    to: provisioned
    failed: provision_failed
    steps: []
"""


@pytest.fixture()
def session(work: Path, store: FileStore) -> Session:
    machine = load_machine(work / "machine.yaml")
    ref = MachineRef(machine.name, machine.digest)
    store.create(Record.new("demo", machine.initial, ref, {}, data_dir=store.data_dir("demo")))
    return Session(store, machine, store.load("demo"), "runner test", work)


@pytest.mark.parametrize(
    "finish,final_state",
    [("finish_provision", "provisioned"), ("fail_provision", "provision_failed")],
)
def test_start_then_finish_or_fail_persists_logs_and_records(
    session: Session,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    finish: str,
    final_state: str,
) -> None:
    caplog.set_level(logging.INFO, logger="runner")
    session.fire("start_provision", phase="provision")
    on_disk = read_state(tmp_path)
    assert on_disk["state"] == "provisioning" and on_disk["serial"] == 2
    assert (session.record.state, session.record.serial) == ("provisioning", 2)
    step = "some_step" if finish.startswith("fail") else None
    session.fire(finish, phase="provision", step=step)
    on_disk = read_state(tmp_path)
    assert on_disk["state"] == final_state and on_disk["serial"] == 3
    assert session.model.state == final_state
    assert session.record == FileStore(tmp_path).load("demo")
    events = read_events(tmp_path)
    assert [(e["from"], e["to"], e["trigger"], e["serial"]) for e in events] == [
        ("created", "provisioning", "start_provision", 2),
        ("provisioning", final_state, finish, 3),
    ]
    for event in events:
        assert {
            "timestamp",
            "serial",
            "from",
            "to",
            "trigger",
            "phase",
            "step",
            "pid",
            "host",
        } <= set(event)
    messages = [r.getMessage() for r in caplog.records]
    assert "environment=demo from=created to=provisioning trigger=start_provision" in messages
    assert f"environment=demo from=provisioning to={final_state} trigger={finish}" in messages


def test_a_trigger_not_allowed_from_the_state_changes_nothing(
    session: Session, tmp_path: Path
) -> None:
    from transitions.core import MachineError as TransitionError

    before = (tmp_path / "data/demo/state.json").read_bytes()
    with pytest.raises(TransitionError):
        session.fire("finish_provision", phase="provision")
    assert (tmp_path / "data/demo/state.json").read_bytes() == before
    assert read_events(tmp_path) == []


def test_no_auto_transitions(session: Session) -> None:
    assert not hasattr(session.model, "to_provisioned")


def test_a_changed_state_file_is_a_conflict_not_overwritten(
    session: Session, tmp_path: Path
) -> None:
    other = FileStore(tmp_path)
    other.save(other.load("demo"))  # another writer moved the serial on
    before = (tmp_path / "data/demo/state.json").read_bytes()
    with pytest.raises(ConflictError):
        session.fire("start_provision", phase="provision")
    assert (tmp_path / "data/demo/state.json").read_bytes() == before


PEEKING = MACHINE.replace(
    "    steps: []\n",
    """\
    steps:
      - name: first
        uses: peek
        outputs: {first: said}
      - name: second
        uses: peek
        outputs: {second: said}
""",
)


class _Peek(Step):
    """Says what the copy of the record it is given holds, then changes the copy."""

    name = "peek"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    seen: ClassVar[list[tuple[str, dict[str, Any], int]]] = []

    def run(self, ctx: StepContext, params: dict[str, Any]) -> dict[str, Any]:
        record = ctx.environment
        _Peek.seen.append((record.state, dict(record.outputs), record.serial))
        record.state = "tampered"
        record.outputs["first"] = "tampered"
        assert ctx.environment is record  # one copy per step, changed only by the step
        ctx.environment = replacement = record.copy()
        assert ctx.environment is replacement  # a value a plugin assigns is kept
        return {"said": f"{ctx.step} ran"}


def test_a_step_gets_a_copy_of_the_record_as_the_step_starts(work: Path, store: FileStore) -> None:
    """What a plugin sees in ``ctx.environment``: the record as its step starts (the
    earlier steps' outputs, the via state); changing it changes nothing stored."""
    (work / "machine.yaml").write_text(PEEKING, encoding="utf-8")
    machine = load_machine(work / "machine.yaml")
    ref = MachineRef(machine.name, machine.digest)
    store.create(Record.new("demo", machine.initial, ref, {}, data_dir=store.data_dir("demo")))
    session = Session(store, machine, store.load("demo"), "runner test", work)
    registry = StepRegistry()
    registry.register(_Peek, source="tests")
    _Peek.seen.clear()

    result = PhaseRunner(session, registry).start(machine.phases[0])

    assert result.status == "succeeded"
    assert _Peek.seen == [
        ("provisioning", {}, 2),
        ("provisioning", {"first": "first ran"}, 3),
    ]
    stored = read_state(work)
    assert stored["state"] == "provisioned"
    assert stored["outputs"] == {"first": "first ran", "second": "second ran"}


_RUN_ONE_PHASE = """\
import json, sys
from pathlib import Path
from runner.machine import cache
from runner.run.phase import PhaseRunner
from runner.run.registry import default_registry
from runner.run.session import Session
from runner.store.files import FileStore
from runner.store.record import MachineRef, Record
work = Path.cwd()
machine = cache.load(work / "machine.yaml", work / "data" / ".cache")
before = "jinja2" in sys.modules
store = FileStore(work)
ref = MachineRef(machine.name, machine.digest)
store.create(Record.new("demo", machine.initial, ref, {}, data_dir=store.data_dir("demo")))
session = Session(store, machine, store.load("demo"), "runner test", work)
result = PhaseRunner(session, default_registry()).start(machine.phases[0])
print(json.dumps([result.status, before, "jinja2" in sys.modules, session.record.outputs]))
"""


@pytest.mark.parametrize("templated", [False, True], ids=["plain", "templated"])
def test_the_template_sandbox_is_imported_for_the_first_step_with_a_template(
    tmp_path: Path, templated: bool
) -> None:
    """A phase of steps without templates never imports Jinja2 (slow to import); one
    with a template renders it."""
    argv = '["echo", "{{ env.name }}"]' if templated else '["echo", "plain"]'
    steps = f"""\
    steps:
      - name: say
        uses: shell
        with: {{argv: {argv}}}
        outputs: {{said: stdout}}
"""
    (tmp_path / "machine.yaml").write_text(MACHINE.replace("    steps: []\n", steps))
    (tmp_path / "data").mkdir(mode=0o700)
    cache.load(tmp_path / "machine.yaml", tmp_path / "data" / ".cache")  # a warm cache
    done = subprocess.run(
        [sys.executable, "-c", _RUN_ONE_PHASE],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    status, before, after, outputs = json.loads(done.stdout.splitlines()[-1])
    assert (status, before, after) == ("succeeded", False, templated)
    assert outputs == {"said": "demo" if templated else "plain"}


class _FencedArtifact:
    """A run log whose writes fail as a store's do once its lock is lost."""

    def __init__(self, artifact: FileArtifact, store: _FencingStore) -> None:
        self._artifact, self._store, self.ref = artifact, store, artifact.ref

    def write(self, text: str) -> None:
        if self._store.lost is not None:
            raise self._store.lost
        self._artifact.write(text)

    def close(self) -> None:
        self._artifact.close()


class _FencingStore(FileStore):
    """A file store whose run logs fail with :attr:`lost` once it is set."""

    lost: LockLostError | None = None

    def open_artifact(self, name: str, kind: Any, label: str) -> Any:
        return _FencedArtifact(super().open_artifact(name, kind, label), self)


class _LosesTheLock(Step):
    """Finishes after its store lost the lock, having logged a line meanwhile (a step
    that runs no program, which the lock's watcher cannot stop)."""

    name = "lose"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    store: ClassVar[_FencingStore]

    def run(self, ctx: StepContext, params: dict[str, Any]) -> dict[str, Any]:
        _LosesTheLock.store.lost = LockLostError(
            "lost the lock of environment 'demo': the connection to the database ended",
            hint="another command may hold the environment now",
            environment="demo",
        )
        ctx.log_line("still running")
        return {}


def test_a_lock_lost_during_a_step_is_reported_as_a_lost_lock(work: Path) -> None:
    """Not as a run log that could not be written (a full disk): the lock's own message
    and hint."""
    (work / "machine.yaml").write_text(
        MACHINE.replace("steps: []", "steps:\n      - {name: go, uses: lose}"), encoding="utf-8"
    )
    store = _FencingStore(work)
    machine = load_machine(work / "machine.yaml")
    ref = MachineRef(machine.name, machine.digest)
    store.create(Record.new("demo", machine.initial, ref, {}, data_dir=store.data_dir("demo")))
    session = Session(store, machine, store.load("demo"), "runner test", work)
    registry = StepRegistry()
    registry.register(_LosesTheLock, source="tests")
    _LosesTheLock.store = store

    with pytest.raises(StorageError) as raised:
        PhaseRunner(session, registry).start(machine.phases[0])

    assert raised.value is store.lost
    assert raised.value.hint == "another command may hold the environment now"
