"""`runner check`: the checks of the current state run, their result is recorded (the
record's last check and a `check` event), shown by `status`, `list` and `history`,
and the exit code says whether one failed; the state never changes. Every JSON
document validates against the output schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.cli.test_output_schema import check as valid
from tests.helpers import build_tree, read_events, read_state, run_cli

MACHINE = """\
version: 1
name: checked
initial: created
states:
  created: {}
  building: {}
  built: {}
  build_failed: {}
phases:
  - name: build
    from: created
    via: building
    to: built
    failed: build_failed
    steps: []
checks:
  - name: marker_present
    uses: shell
    with: {argv: [test, -f, marker]}
    in: [built]
  - name: flaky
    uses: shell
    with: {argv: [sh, -c, "n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; test $n -ge 1"]}
    retry: {attempts: 2, delay: 50ms}
    in: [built]
  - name: only_when_asked
    uses: shell
    when: "inputs.deep | default(false)"
    with: {argv: ["false"]}
    in: [built]
"""


def _built(tmp_path: Path) -> Path:
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    assert run_cli("advance", "demo", cwd=tmp_path).returncode == 0
    return tmp_path


def cli(work: Path, *args: str) -> object:
    return run_cli("--output", "json", *args, cwd=work)


def test_no_check_in_this_state_runs_nothing(tmp_path: Path) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    document = valid(run_cli("--output", "json", "check", "demo", cwd=tmp_path), 0, "check")
    assert (document["status"], document["checks"]) == ("none", [])
    assert "no check applies in state 'created'" in document["message"]
    assert "last_check" not in read_state(tmp_path, "demo")


def test_a_failing_check_exits_1_naming_it_and_the_state_stays(tmp_path: Path) -> None:
    work = _built(tmp_path)
    serial = read_state(work, "demo")["serial"]
    proc = run_cli("check", "demo", cwd=work)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"marker_present +failed: test exited with 1", proc.stdout)
    assert "1 of 3 checks failed (marker_present); the state stays 'built'" in proc.stdout
    record = read_state(work, "demo")
    assert record["state"] == "built" and record["serial"] == serial + 1
    last = record["last_check"]
    assert (last["state"], last["status"]) == ("built", "failed")
    assert [(c["name"], c["status"]) for c in last["checks"]] == [
        ("marker_present", "failed"),
        ("flaky", "passed"),  # on its second attempt
        ("only_when_asked", "skipped"),
    ]
    (event,) = [e for e in read_events(work, "demo") if e["type"] == "check"]
    assert event["status"] == "failed" and event["state"] == "built"
    assert event["checks"][0]["summary"] == "test exited with 1"

    status = run_cli("status", "demo", cwd=work).stdout
    assert f"last check:  failed at {last['checked_at']}" in status
    assert "marker_present failed: test exited with 1" in status
    listing = run_cli("list", cwd=work).stdout.splitlines()
    assert listing[0].split() == ["NAME", "STATE", "UPDATED", "CHECK"]
    assert listing[1].split()[3:] == ["failed", last["checked_at"]]
    history = run_cli("history", "demo", cwd=work).stdout
    assert "failed in built; marker_present: test exited with 1" in history


def test_passing_checks_exit_0_and_every_document_is_valid(tmp_path: Path) -> None:
    work = _built(tmp_path)
    (work / "marker").write_text("")
    (work / "count").write_text("5")
    document = valid(run_cli("--output", "json", "check", "demo", cwd=work), 0, "check")
    assert document["status"] == "passed" and document["state"] == "built"
    by_name = {c["name"]: c for c in document["checks"]}
    assert by_name["marker_present"]["attempts"] == 1
    assert by_name["only_when_asked"]["status"] == "skipped"
    assert (work / document["log"]).is_file()
    status = valid(run_cli("--output", "json", "status", "demo", cwd=work), 0, "status")
    assert status["last_check"]["status"] == "passed"
    listing = valid(run_cli("--output", "json", "list", cwd=work), 0, "list")
    assert listing["environments"][0]["last_check"]["checked_at"] == document["checked_at"]
    history = valid(run_cli("--output", "json", "history", "demo", cwd=work), 0, "history")
    assert [e["status"] for e in history["events"] if e["type"] == "check"] == ["passed"]
    failed = valid(run_cli("--output", "json", "check", "nosuch", cwd=work), 2, "error")
    assert failed["environment"] == "nosuch"


def test_check_output_is_json_on_failure_too(tmp_path: Path) -> None:
    work = _built(tmp_path)
    document = valid(run_cli("--output", "json", "check", "demo", cwd=work), 1, "check")
    assert document["status"] == "failed"
    assert json.loads(json.dumps(document))["checks"][0]["kind"] == "command_failed"
