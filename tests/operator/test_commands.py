"""Each operator command through the real CLI (a subprocess), with its JSON document
validated against the output schema, and every refusal: locked, missing reason,
undeclared state, phase in progress, lineage mismatch, changed steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import read_events, read_state
from tests.operator.common import (
    MACHINE,
    cli,
    document,
    failed_in_build,
    holding,
    refused,
    workdir,
)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return workdir(tmp_path)


def test_exists_says_true_or_false_and_refuses_a_bad_name(work: Path) -> None:
    absent = cli(work, "exists", "demo")
    assert (absent.returncode, absent.stdout) == (0, "false\n")
    assert cli(work, "create", "demo").returncode == 0
    present = cli(work, "exists", "demo")
    assert (present.returncode, present.stdout) == (0, "true\n")
    data = document(cli(work, "exists", "demo", "--output", "json"), 0, "exists")
    assert (data["environment"], data["exists"]) == ("demo", True)
    refused(cli(work, "exists", "Bad_Name", "--output", "json"), 2, "invalid environment name")
    # a folder of the name with no state in it: no environment, and create says what to do
    (work / "data/ghost").mkdir(parents=True)
    assert cli(work, "exists", "ghost").stdout == "false\n"
    refused(cli(work, "create", "ghost", "--output", "json"), 2, "data/ghost holds no environment")


def test_inputs_fix_a_failed_phase_that_resume_then_finishes(work: Path) -> None:
    failed_in_build(work, "demo", "port=80")
    shown = document(cli(work, "inputs", "demo", "--output", "json"), 0, "inputs")
    assert shown["inputs"] == {"ok": False, "note": "plain", "port": 80}
    assert shown["changed"] == []
    (work / "token.txt").write_text("s3cret-value\n")
    changed = cli(
        work, "inputs", "demo", "--set", "ok=true", "--set", "token.file=token.txt",
        "--unset", "port", "--output", "json",
    )  # fmt: skip
    data = document(changed, 0, "inputs")
    assert data["changed"] == ["ok", "port", "token"]
    assert data["inputs"] == {"ok": True, "note": "plain", "token": {"file": "token.txt"}}
    [event] = [e for e in read_events(work) if e["type"] == "inputs_changed"]
    assert event["keys"] == ["ok", "port", "token"] and event["state"] == "build_failed"
    assert "s3cret" not in (work / "data/demo/events.jsonl").read_text()
    assert event["lineage"] == read_state(work)["lineage"]
    assert data["restarts_phase"] == "build" and event["restarts_phase"] == "build"
    document(cli(work, "history", "demo", "--output", "json"), 0, "history")
    resumed = cli(work, "resume", "demo")
    assert resumed.returncode == 0, resumed.stderr
    assert read_state(work)["state"] == "built"
    # the steps done before used the old inputs: the phase ran again from its start
    assert (work / "ran.txt").read_text() == "prepared\nprepared\nfinished\n"


def test_inputs_refusals(work: Path) -> None:
    failed_in_build(work)
    before = read_state(work)
    refused(cli(work, "inputs", "demo", "--set", "port=0", "--output", "json"), 2, "port")
    refused(cli(work, "inputs", "demo", "--unset", "nothing", "--output", "json"), 2, "nothing")
    refused(cli(work, "inputs", "demo", "--set", "extra=1", "--output", "json"), 2, "extra")
    assert read_state(work) == before  # a refused change changes nothing
    # a phase in progress (or interrupted): not while it runs
    forced = cli(work, "force-state", "demo", "building", "--reason", "as if interrupted")
    assert forced.returncode == 0, forced.stderr
    refused(cli(work, "inputs", "demo", "--set", "ok=true", "--output", "json"), 4, "in progress")
    with holding(work):
        refused(
            cli(work, "--lock-timeout", "0", "inputs", "demo", "--set", "ok=true", "--output",
                "json"),
            3,
        )  # fmt: skip
    # showing them never waits for the lock
    with holding(work):
        assert cli(work, "inputs", "demo").returncode == 0


def test_force_state_is_audited_and_shown_until_the_next_phase(work: Path) -> None:
    failed_in_build(work)
    refused(cli(work, "force-state", "demo", "created", "--output", "json"), 2, "--reason")
    refused(
        cli(work, "force-state", "demo", "created", "--reason", "  ", "--output", "json"),
        2,
        "reason",
    )
    refused(
        cli(work, "force-state", "demo", "craeted", "--reason", "x", "--output", "json"),
        2,
        "not a state",
        "did you mean 'created'",
    )
    with holding(work):
        data = refused(
            cli(work, "force-state", "demo", "created", "--reason", "x", "--output", "json"),
            3,
            "never waits",
        )
        assert "--lock-timeout" not in data["hint"]  # it would not help: none is waited for
    assert read_state(work)["state"] == "build_failed"
    done = cli(work, "force-state", "demo", "created", "--reason", "cleaned by hand", "--output",
               "json")  # fmt: skip
    data = document(done, 0, "force_state")
    assert data["state"] == "created" and data["forced"]["from"] == "build_failed"
    assert data["forced"]["reason"] == "cleaned by hand" and data["forced"]["user"]
    state = read_state(work)
    assert (state["state"], state["run"], state["failure"]) == ("created", None, None)
    [event] = [e for e in read_events(work) if e["type"] == "state_forced"]
    assert (event["from"], event["to"], event["reason"]) == (
        "build_failed",
        "created",
        "cleaned by hand",
    )
    assert event["user"] == data["forced"]["user"] and event["pid"] and event["host"]
    assert not (work / "ran.txt").read_text().count("finished")  # nothing ran
    status = document(cli(work, "status", "demo", "--output", "json"), 0, "status")
    assert status["forced"]["reason"] == "cleaned by hand"
    assert "forced:      from 'build_failed' to 'created' by" in cli(work, "status", "demo").stdout
    history = cli(work, "history", "demo").stdout
    assert "state_forced" in history and "build_failed → created" in history
    document(cli(work, "history", "demo", "--output", "json"), 0, "history")
    cli(work, "advance", "demo")  # the next phase runs (and fails again): forced is cleared
    assert document(cli(work, "status", "demo", "--output", "json"), 0, "status")["forced"] is None


def test_snapshots_list_and_restore_brings_a_version_back_as_a_new_save(work: Path) -> None:
    failed_in_build(work)
    data = document(cli(work, "snapshots", "demo", "--output", "json"), 0, "snapshots")
    serials = [s["serial"] for s in data["snapshots"]]
    assert serials == list(range(1, data["current"] + 1))
    assert data["snapshots"][0]["state"] == "created"
    assert data["snapshots"][-1]["state"] == "build_failed"
    first = json.loads((work / "data/demo/snapshots/1.json").read_text())
    text = cli(work, "snapshots", "demo").stdout
    assert "SERIAL" in text and "(current)" in text and "fail_build" in text
    with holding(work):
        refused(cli(work, "restore", "demo", "--serial", "1", "--output", "json"), 3, "never waits")
    refused(cli(work, "restore", "demo", "--serial", "99", "--output", "json"), 2, "kept serials")
    current = data["current"]
    restored = document(
        cli(work, "restore", "demo", "--serial", "1", "--output", "json"), 0, "restore"
    )
    assert (restored["restored"], restored["serial"]) == (1, current + 1)
    assert (restored["from"], restored["state"]) == ("build_failed", "created")
    state = read_state(work)
    for field in ("state", "inputs", "outputs", "run", "failure", "lineage", "created_at"):
        assert state[field] == first[field], field
    assert state["serial"] == current + 1 and state["change"] == "restored 1"
    [event] = [e for e in read_events(work) if e["type"] == "restored"]
    assert (event["restored"], event["serial"]) == (1, current + 1)
    assert "serial 1 restored" in cli(work, "history", "demo").stdout
    logged = document(cli(work, "history", "demo", "--output", "json"), 0, "history")["events"]
    assert {"created", "transition", "step", "restored"} <= {e["type"] for e in logged}
    # the restored version runs like any other
    assert cli(work, "inputs", "demo", "--set", "ok=true").returncode == 0
    assert cli(work, "advance", "demo").returncode == 0
    assert read_state(work)["state"] == "built"


def test_a_state_file_of_another_lineage_is_refused_and_restore_is_the_way_back(
    work: Path,
) -> None:
    failed_in_build(work, "demo")
    assert cli(work, "create", "other").returncode == 0
    good = (work / "data/demo/state.json").read_text()
    # another environment's state copied over, renamed by hand to fit the folder
    foreign = read_state(work, "other")
    foreign.update(name="demo", paths={"data_dir": "data/demo", "build_dir": "build/demo"})
    foreign["serial"] = read_state(work)["serial"] + 1
    (work / "data/demo/state.json").write_text(json.dumps(foreign))
    for command in (
        ["status", "demo"],
        ["advance", "demo"],
        ["inputs", "demo", "--set", "ok=true"],
    ):
        data = refused(cli(work, *command, "--output", "json"), 2, "lineage", "runner restore demo")
        assert data["error"] == "LineageError"
    serial = json.loads(good)["serial"]
    document(
        cli(work, "restore", "demo", "--serial", str(serial), "--output", "json"), 0, "restore"
    )
    assert document(cli(work, "status", "demo", "--output", "json"), 0, "status")["state"] == (
        "build_failed"
    )
    # an old copy of its own state put back by hand: refused too
    old = (work / "data/demo/snapshots/2.json").read_text()
    (work / "data/demo/state.json").write_text(old)
    refused(cli(work, "resume", "demo", "--output", "json"), 2, "old copy", "runner restore")
    assert cli(work, "restore", "demo", "--serial", "2").returncode == 0
    assert cli(work, "status", "demo").returncode == 0


def test_after_an_old_copy_is_put_back_the_later_versions_stay_listed_and_restorable(
    work: Path,
) -> None:
    """An old snapshot copied over state.json by hand: `snapshots` still offers the
    versions after it, `restore` brings the newest back, and its save takes a serial no
    version had (nothing kept is written over, the event log's serials go on growing)."""
    failed_in_build(work, "demo")
    assert cli(work, "inputs", "demo", "--set", "ok=true").returncode == 0
    assert cli(work, "resume", "demo").returncode == 0
    latest = read_state(work)
    newest = latest["serial"]
    assert newest >= 5, newest
    snapshots = work / "data/demo/snapshots"
    later = {s: (snapshots / f"{s}.json").read_bytes() for s in range(3, newest)}
    (work / "data/demo/state.json").write_bytes((snapshots / "2.json").read_bytes())
    refused(cli(work, "status", "demo", "--output", "json"), 2, "old copy", "runner snapshots")
    listed = document(cli(work, "snapshots", "demo", "--output", "json"), 0, "snapshots")
    serials = [s["serial"] for s in listed["snapshots"]]
    assert listed["current"] == 2
    assert serials == sorted(serials) and set(range(1, newest + 1)) <= set(serials), serials
    shown = cli(work, "snapshots", "demo").stdout
    assert f"\n{newest} " in shown and "(current)" in shown
    restored = document(
        cli(work, "restore", "demo", "--serial", str(newest), "--output", "json"), 0, "restore"
    )
    assert (restored["restored"], restored["serial"]) == (newest, newest + 1)
    state = read_state(work)
    assert (state["serial"], state["state"]) == (newest + 1, latest["state"])
    assert state["outputs"] == latest["outputs"] and state["run"] == latest["run"]
    for serial, data in later.items():  # the versions after the old copy, untouched
        assert (snapshots / f"{serial}.json").read_bytes() == data, serial
    logged = [e["serial"] for e in read_events(work)]
    assert logged == sorted(logged) and logged[-1] == newest + 1
    assert cli(work, "status", "demo").returncode == 0


def test_a_record_of_format_2_gets_a_lineage_on_its_next_save(work: Path) -> None:
    assert cli(work, "create", "demo").returncode == 0
    state = read_state(work)
    old = {k: v for k, v in state.items() if k not in ("lineage", "change", "forced")}
    old["format"] = 2
    (work / "data/demo/state.json").write_text(json.dumps(old))
    events = [{k: v for k, v in e.items() if k != "lineage"} for e in read_events(work)]
    (work / "data/demo/events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert cli(work, "status", "demo").returncode == 0
    assert cli(work, "advance", "demo").returncode == 1  # runs (and fails at `check`)
    new = read_state(work)
    assert new["format"] == 3 and len(new["lineage"]) == 32
    assert read_events(work)[-1]["lineage"] == new["lineage"]


def test_resume_of_a_phase_whose_steps_changed_is_refused_unless_accepted(work: Path) -> None:
    failed_in_build(work)
    changed = MACHINE.replace('"echo finished >> ran.txt"', '"echo changed >> ran.txt"')
    changed = changed.replace(
        "          - name: check\n",
        '          - {name: extra, uses: shell, with: {argv: ["true"]}}\n          - name: check\n',
    )
    (work / "machine.yaml").write_text(changed.replace("\n    ", "\n").removeprefix("    "))
    status = document(cli(work, "status", "demo", "--output", "json"), 0, "status")
    assert status["machine_changed"] is True
    assert "machine:     changed since" in cli(work, "status", "demo").stdout
    assert cli(work, "inputs", "demo", "--set", "ok=true").returncode == 0
    data = refused(cli(work, "resume", "demo", "--output", "json"), 4, "--accept-machine-change")
    assert (data["steps_added"], data["steps_removed"], data["steps_changed"]) == (
        ["extra"],
        [],
        ["finish"],
    )
    assert "added extra" in data["message"] and "changed finish" in data["message"]
    assert read_state(work)["state"] == "build_failed"
    resumed = cli(work, "resume", "demo", "--accept-machine-change")
    assert resumed.returncode == 0, resumed.stderr
    assert (work / "ran.txt").read_text() == "prepared\nprepared\nchanged\n"
    # a machine of another name is never accepted
    (work / "machine.yaml").write_text(
        (work / "machine.yaml").read_text().replace("name: ops", "name: other")
    )
    refused(
        cli(work, "resume", "demo", "--accept-machine-change", "--output", "json"),
        2,
        "machine 'ops'",
    )


def test_list_filters_by_state_and_kind(work: Path) -> None:
    failed_in_build(work, "broken")
    assert cli(work, "create", "fresh").returncode == 0
    assert cli(work, "create", "gone").returncode == 0
    assert cli(work, "destroy", "gone").returncode == 0

    def names(*args: str) -> list[str]:
        data = document(cli(work, "list", *args, "--output", "json"), 0, "list")
        return [e["environment"] for e in data["environments"]]

    assert names() == ["broken", "fresh", "gone"]
    assert names("--kind", "failed") == ["broken"]
    assert names("--kind", "final") == ["gone"]
    assert names("--kind", "stable") == ["fresh"]
    assert names("--state", "created") == ["fresh"]
    assert names("--kind", "intermediate") == []
    assert (
        "no environment matches --kind intermediate"
        in cli(work, "list", "--kind", "intermediate").stdout
    )
    refused(cli(work, "list", "--state", "craeted", "--output", "json"), 2, "craeted")
    assert cli(work, "list", "--kind", "broken").returncode == 2


def test_purge_frees_the_name_and_says_what_may_remain(work: Path) -> None:
    failed_in_build(work)
    (work / "build/demo/tofu").mkdir(parents=True)
    (work / "build/demo/tofu/terraform.tfstate").write_text("{}")
    refused(cli(work, "purge", "demo", "--output", "json"), 4, "not a final state", "--force")
    assert cli(work, "exists", "demo").stdout == "true\n"
    with holding(work):
        refused(cli(work, "purge", "demo", "--force", "--output", "json"), 3, "never waits")
    assert cli(work, "exists", "demo").stdout == "true\n"
    data = document(cli(work, "purge", "demo", "--force", "--output", "json"), 0, "purge")
    assert data["state"] == "build_failed" and data["build_kept"] and not data["build_removed"]
    said = " ".join(data["warnings"])
    assert "build/demo still exists" in said and "build/demo/tofu/terraform.tfstate" in said
    assert "never destroyed" in said
    assert not (work / "data/demo").exists() and (work / "build/demo/tofu").is_dir()
    assert cli(work, "exists", "demo").stdout == "false\n"
    # the name is free, but not the build folder: a new environment would take over the
    # OpenTofu state of the old one, so create refuses until the folder is gone
    data = refused(
        cli(work, "create", "demo", "--output", "json"), 2, "build/demo/tofu/terraform.tfstate"
    )
    assert "earlier environment" in data["message"] and "nothing was created" in data["hint"]
    assert cli(work, "exists", "demo").stdout == "false\n"
    shutil.rmtree(work / "build/demo")
    # a destroyed environment purges without --force, --build too
    assert cli(work, "create", "demo").returncode == 0
    assert cli(work, "destroy", "demo").returncode == 0
    text = cli(work, "purge", "demo", "--build")
    assert text.returncode == 0 and "purged environment 'demo'" in text.stdout
    assert "warning" not in text.stdout
    assert not (work / "build/demo").exists() and not (work / "data/demo").exists()
    refused(cli(work, "purge", "demo", "--output", "json"), 2, "no environment 'demo'")


def test_a_serial_edited_by_hand_is_bounded_in_the_state_and_in_the_event_log(
    work: Path,
) -> None:
    """A serial beyond what JSON numbers hold exactly is a damaged state file (exit 2),
    not a crash; a large jump is recovered with an event that names the first missing
    serials and counts them, not one that lists millions."""
    assert cli(work, "create", "demo").returncode == 0
    state = read_state(work)
    state["serial"] = 10**30
    (work / "data/demo/state.json").write_text(json.dumps(state))
    for command in (["status", "demo"], ["force-state", "demo", "created", "--reason", "x"]):
        data = refused(cli(work, *command, "--output", "json"), 2, "serial", "snapshots")
        assert data["error"] == "StateFileError"
    state["serial"] = 10**7
    (work / "data/demo/state.json").write_text(json.dumps(state))
    forced = cli(work, "force-state", "demo", "created", "--reason", "x")
    assert forced.returncode == 0, forced.stderr
    [recovered] = [e for e in read_events(work) if e["type"] == "recovered"]
    assert recovered["missing"][:2] == [2, 3] and len(recovered["missing"]) == 1000
    assert recovered["missing_count"] == 10**7 - 1
    assert (work / "data/demo/events.jsonl").stat().st_size < 64 * 1024


def test_resume_from_a_step_after_the_failed_one_is_refused(work: Path) -> None:
    """`--from-step` re-runs from an earlier step; a later one would not skip the steps
    between (resume starts at the first step not done), so it is refused, naming it."""
    failed_in_build(work)  # failed at `check`, after `prepare` and `crash`
    data = refused(
        cli(work, "resume", "demo", "--from-step", "finish", "--output", "json"),
        2,
        "comes after 'check'",
        "runner resume demo",
    )
    assert data["error"] == "InputError"
    assert read_state(work)["state"] == "build_failed"
    assert cli(work, "inputs", "demo", "--set", "ok=true").returncode == 0
    again = cli(work, "resume", "demo", "--from-step", "prepare")
    assert again.returncode == 0, again.stderr
    assert read_state(work)["state"] == "built"


def test_control_characters_in_a_reason_never_reach_the_terminal(work: Path) -> None:
    """A `--reason` holding terminal escapes (set the title, clear the screen) is kept
    as given, and shown by `status` and `history` with them made visible."""
    assert cli(work, "create", "demo").returncode == 0
    reason = "fixed\x1b]0;owned\x07 by hand\x1b[2J\rdone"
    assert cli(work, "force-state", "demo", "created", "--reason", reason).returncode == 0
    assert read_events(work)[-1]["reason"] == reason
    for command in ("status", "history"):
        shown = cli(work, command, "demo").stdout
        assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown, command
        assert "fixed\\x1b]0;owned\\x07 by hand\\x1b[2J\\x0ddone" in shown, (command, shown)
