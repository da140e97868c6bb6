"""The operator commands through the public API (``Runner``): typed results, and each
refusal as its RunnerError with the exit code the CLI gives it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner import Runner
from runner.errors import (
    ExitCode,
    InputError,
    InvalidInputsError,
    InvalidNameError,
    LineageError,
    LockedError,
    PhaseNotAllowedError,
    StateError,
)
from tests.helpers import read_events, read_state
from tests.operator.common import MACHINE, holding, workdir


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return workdir(tmp_path)


def api(work: Path) -> Runner:
    return Runner(work, lock_timeout=0, command="test")


def failed(work: Path, name: str = "demo") -> Runner:
    runner = api(work)
    runner.create(name)
    assert runner.advance(name).failed
    return runner


def test_exists_and_a_bad_name(work: Path) -> None:
    runner = api(work)
    assert not runner.exists("demo").exists
    runner.create("demo")
    assert runner.exists("demo").to_json() == {"environment": "demo", "exists": True}
    with pytest.raises(InvalidNameError):
        runner.exists("Nope")


def test_inputs_change_is_checked_audited_and_refused_in_progress(work: Path) -> None:
    runner = failed(work)
    assert runner.inputs("demo").inputs == {"ok": False, "note": "plain"}
    with pytest.raises(InvalidInputsError):
        runner.change_inputs("demo", ["port=70000"])
    with pytest.raises(InvalidInputsError):
        runner.change_inputs("demo", unset=["port"])
    nothing = runner.change_inputs("demo", ["note=plain"])
    assert nothing.changed == () and read_events(work)[-1]["type"] != "inputs_changed"
    (work / "fix.yaml").write_text("note: fixed\n")
    changed = runner.change_inputs("demo", ["ok=true"], config=work / "fix.yaml")
    assert changed.changed == ("note", "ok") and changed.inputs["ok"] is True
    assert changed.restarts_phase == "build" and read_state(work)["run"]["completed_steps"] == []
    assert read_events(work)[-1]["keys"] == ["note", "ok"]
    runner.force_state("demo", "building", "as if interrupted")
    with pytest.raises(PhaseNotAllowedError) as caught:
        runner.change_inputs("demo", ["ok=false"])
    assert caught.value.exit_code == ExitCode.NOT_ALLOWED
    with holding(work), pytest.raises(LockedError):
        api(work).change_inputs("demo", ["ok=false"])


def test_force_state_refusals_and_record(work: Path) -> None:
    runner = failed(work)
    with pytest.raises(InputError, match="reason"):
        runner.force_state("demo", "created", "")
    with pytest.raises(InputError, match="not a state"):
        runner.force_state("demo", "nowhere", "why not")
    with holding(work), pytest.raises(LockedError) as caught:
        runner.force_state("demo", "created", "while it is held")
    assert caught.value.exit_code == ExitCode.LOCKED
    result = runner.force_state("demo", "created", "cleaned by hand")
    assert (result.forced.from_state, result.forced.to) == ("build_failed", "created")
    status = runner.status("demo")
    assert status.forced == result.forced and status.run is None and status.failure is None
    # it entered its state when it was forced
    assert status.entered_at == read_events(work)[-1]["timestamp"]
    assert read_state(work)["forced"]["reason"] == "cleaned by hand"


def test_snapshots_and_restore(work: Path) -> None:
    runner = failed(work)
    kept = runner.snapshots("demo")
    assert [s.serial for s in kept.snapshots] == list(range(1, kept.current + 1))
    with pytest.raises(StateError, match="no snapshot of serial 0"):
        runner.restore("demo", 0)
    with holding(work), pytest.raises(LockedError):
        runner.restore("demo", 1)
    result = runner.restore("demo", 1)
    assert (result.restored, result.serial, result.state) == (1, kept.current + 1, "created")
    assert runner.snapshots("demo").snapshots[-1].change == "restored 1"


def test_a_foreign_state_is_refused_by_every_command_but_restore(work: Path) -> None:
    runner = failed(work)
    runner.create("other")
    serial = read_state(work)["serial"]
    foreign = read_state(work, "other")
    foreign.update(name="demo", serial=serial + 1)
    foreign["paths"] = {"data_dir": "data/demo", "build_dir": "build/demo"}
    (work / "data/demo/state.json").write_text(json.dumps(foreign))
    for call in (
        lambda: runner.status("demo"),
        lambda: runner.resume("demo"),
        lambda: runner.inputs("demo"),
        lambda: runner.force_state("demo", "created", "x"),
    ):
        with pytest.raises(LineageError) as caught:
            call()
        assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert runner.restore("demo", serial).state == "build_failed"
    assert runner.status("demo").state == "build_failed"


def test_resume_names_the_changed_steps(work: Path) -> None:
    runner = failed(work)
    runner.change_inputs("demo", ["ok=true"])
    text = MACHINE.replace("\n    ", "\n").removeprefix("    ")
    (work / "machine.yaml").write_text(text.replace("echo prepared", "echo again"))
    changed = api(work)
    assert changed.status("demo").machine_changed
    with pytest.raises(PhaseNotAllowedError) as caught:
        changed.resume("demo")
    assert caught.value.fields["steps_changed"] == ["prepare"]
    assert changed.resume("demo", accept_machine_change=True).state == "built"
    assert not changed.status("demo").machine_changed


def test_list_filters_and_purge(work: Path) -> None:
    runner = failed(work, "broken")
    runner.create("gone")
    runner.destroy("gone")
    assert [e.environment for e in runner.list(kind="failed").environments] == ["broken"]
    assert [e.environment for e in runner.list(state="destroyed").environments] == ["gone"]
    with pytest.raises(InputError):
        runner.list(kind="odd")
    with pytest.raises(PhaseNotAllowedError):
        runner.purge("broken")
    with holding(work, "gone"), pytest.raises(LockedError):
        runner.purge("gone")
    gone = runner.purge("gone")
    assert gone.warnings == () and not runner.exists("gone").exists
    forced = runner.purge("broken", force=True)
    assert forced.forced and forced.warnings and not runner.exists("broken").exists
    assert runner.list().environments == ()
