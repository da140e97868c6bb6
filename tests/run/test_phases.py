"""Running phases with real `shell` steps through the `runner` CLI (a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import build_tree, read_events, read_state, run_cli

MACHINE = """\
version: 1
name: demo
initial: created
inputs:
  type: object
  properties:
    skip_two: {type: boolean, default: false}
    nap: {type: number, default: 0}
states:
  created: {description: New}
  building: {description: Building}
  built: {description: Built}
  build_failed: {description: Build failed, recovery: "fix it, then runner resume {{ env.name }}"}
  deploying: {description: Deploying}
  deployed: {description: Deployed}
  deploy_failed: {description: Deploy failed}
  destroying: {description: Destroying}
  destroyed: {description: Gone, final: true}
  destroy_failed: {description: Destroy failed}
phases:
  - name: build
    from: created
    via: building
    to: built
    failed: build_failed
    steps:
      - name: one
        uses: shell
        with: {argv: [sh, -c, "echo one >> ran.txt; echo '{\\"ip\\": \\"10.1.2.3\\"}'"], parse: json}
        outputs: {ip: ip}
      - name: two
        uses: shell
        when: "not inputs.skip_two"
        with: {argv: [sh, -c, "echo two >> ran.txt; echo about to check; test ! -e broken"]}
      - name: three
        uses: shell
        with: {argv: [sh, -c, "echo three-{{ outputs.ip }} >> ran.txt"]}
  - name: deploy
    from: built
    via: deploying
    to: deployed
    failed: deploy_failed
    steps:
      - name: nap
        uses: shell
        with: {argv: [sh, -c, "sleep {{ inputs.nap }} & echo $! > nap.pid; wait"]}
  - name: destroy
    from: any
    via: destroying
    to: destroyed
    failed: destroy_failed
    advance: false
    steps:
      - name: clean
        uses: shell
        with: {argv: [rm, -f, ran.txt]}
"""


def ran(work: Path) -> list[str]:
    path = work / "ran.txt"
    return path.read_text().split() if path.exists() else []


def test_phase_success_records_steps_outputs_and_events(work: Path) -> None:
    assert run_cli("create", "demo", cwd=work).returncode == 0
    proc = run_cli("advance", "demo", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "now in 'built'" in proc.stdout
    record = read_state(work)
    assert record["state"] == "built"
    assert record["outputs"] == {"ip": "10.1.2.3"}
    assert record["run"]["completed_steps"] == ["one", "two", "three"]
    assert record["failure"] is None
    assert ran(work) == ["one", "two", "three-10.1.2.3"]
    transitions = [
        (e["from"], e["to"], e["trigger"]) for e in read_events(work) if e["type"] == "transition"
    ]
    assert transitions == [
        ("created", "building", "start_build"),
        ("building", "built", "finish_build"),
    ]
    steps = [(e["step"], e["status"]) for e in read_events(work) if e["type"] == "step"]
    assert steps == [("one", "done"), ("two", "done"), ("three", "done")]
    log = (work / record["run"]["log"]).read_text()
    assert "[two] about to check" in log


def test_failure_in_step_two_of_three_lands_in_failed_state(work: Path) -> None:
    run_cli("create", "demo", cwd=work)
    (work / "broken").write_text("")
    proc = run_cli("advance", "demo", cwd=work)
    assert proc.returncode == 1
    assert "failed at step 'two'" in proc.stdout
    record = read_state(work)
    assert record["state"] == "build_failed"
    failure = record["failure"]
    assert failure["phase"] == "build" and failure["step"] == "two"
    assert failure["kind"] == "command_failed" and failure["exit_code"] == 1
    assert ran(work) == ["one", "two"]  # step three never ran
    trace = (work / failure["trace"]).read_text()
    assert "command_failed" in trace
    assert "about to check" in trace  # the output tail
    assert '"argv"' in trace  # the rendered parameters
    status = run_cli("status", "demo", cwd=work)
    assert "build_failed" in status.stdout and "step 'two'" in status.stdout
    assert "fix it, then runner resume demo" in status.stdout


def test_resume_after_failure_runs_only_the_remaining_steps(work: Path) -> None:
    run_cli("create", "demo", cwd=work)
    (work / "broken").write_text("")
    assert run_cli("advance", "demo", cwd=work).returncode == 1
    (work / "broken").unlink()
    proc = run_cli("resume", "demo", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert read_state(work)["state"] == "built"
    assert ran(work) == ["one", "two", "two", "three-10.1.2.3"]  # one ran once
    triggers = [e["trigger"] for e in read_events(work) if e["type"] == "transition"]
    assert triggers == ["start_build", "fail_build", "resume_build", "finish_build"]


def test_resume_from_step_reruns_from_that_step(work: Path) -> None:
    run_cli("create", "demo", cwd=work)
    (work / "broken").write_text("")
    run_cli("advance", "demo", cwd=work)
    (work / "broken").unlink()
    proc = run_cli("resume", "demo", "--from-step", "one", cwd=work)
    assert proc.returncode == 0
    assert ran(work) == ["one", "two", "one", "two", "three-10.1.2.3"]


def test_when_false_skips_and_records_the_step(work: Path) -> None:
    run_cli("create", "demo", "--set", "skip_two=true", cwd=work)
    assert run_cli("advance", "demo", cwd=work).returncode == 0
    assert ran(work) == ["one", "three-10.1.2.3"]
    record = read_state(work)
    assert record["run"]["skipped_steps"] == ["two"]
    assert ("two", "skipped") in [
        (e["step"], e["status"]) for e in read_events(work) if e["type"] == "step"
    ]


def test_phase_not_allowed_changes_nothing(work: Path) -> None:
    run_cli("create", "demo", cwd=work)
    before = (work / "data/demo/state.json").read_bytes()
    events_before = (work / "data/demo/events.jsonl").read_bytes()
    proc = run_cli("phase", "demo", "deploy", cwd=work)
    assert proc.returncode == 4
    assert "created" in proc.stderr and "build" in proc.stderr and "destroy" in proc.stderr
    assert (work / "data/demo/state.json").read_bytes() == before
    assert (work / "data/demo/events.jsonl").read_bytes() == events_before


def test_up_to_stops_at_the_state_and_advance_at_the_end_says_so(work: Path) -> None:
    run_cli("create", "demo", cwd=work)
    proc = run_cli("up", "demo", "--to", "built", cwd=work)
    assert proc.returncode == 0
    assert read_state(work)["state"] == "built"
    assert run_cli("up", "demo", cwd=work).returncode == 0
    assert read_state(work)["state"] == "deployed"
    proc = run_cli("advance", "demo", cwd=work)
    assert proc.returncode == 0
    assert "nothing to advance" in proc.stdout
    proc = run_cli("up", "demo", "--to", "nowhere", cwd=work)
    assert proc.returncode == 2 and "nowhere" in proc.stderr


def test_dry_run_renders_and_runs_nothing(work: Path) -> None:
    run_cli("create", "demo", cwd=work)
    proc = run_cli("advance", "demo", "--dry-run", cwd=work)
    assert proc.returncode == 0
    assert "echo one" in proc.stdout and "dry run" in proc.stdout
    assert ran(work) == []
    assert read_state(work)["state"] == "created"
    proc = run_cli("--output", "json", "advance", "demo", "--dry-run", cwd=work)
    plan = json.loads(proc.stdout)["dry_run"][0]
    assert [s["name"] for s in plan["steps"]] == ["one", "two", "three"]
    assert plan["steps"][1]["when"] is True


def test_destroy_from_a_failed_state(work: Path) -> None:
    run_cli("create", "demo", cwd=work)
    (work / "broken").write_text("")
    run_cli("advance", "demo", cwd=work)
    proc = run_cli("destroy", "demo", cwd=work)
    assert proc.returncode == 0
    assert read_state(work)["state"] == "destroyed"
    assert run_cli("destroy", "demo", cwd=work).returncode == 4  # final: nothing allowed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive for our purpose
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def _spawn(work: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=work,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_a_step_leaves_the_via_state_interrupted(
    work: Path, sig: int, code: int
) -> None:
    run_cli("create", "demo", "--set", "nap=60", cwd=work)
    assert run_cli("advance", "demo", cwd=work).returncode == 0
    proc = _spawn(work, "advance", "demo")
    _wait_for(work / "nap.pid")
    nap = int((work / "nap.pid").read_text())
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    record = read_state(work)
    assert record["state"] == "deploying"
    assert record["run"]["interrupted"] is True
    assert record["run"]["current_step"] == "nap"
    assert (work / record["run"]["trace"]).exists()
    assert not _pid_alive(nap)
    status = run_cli("status", "demo", cwd=work)
    assert "interrupted" in status.stdout and "runner resume demo" in status.stdout
    refused = run_cli("advance", "demo", cwd=work)
    assert refused.returncode == 4 and "resume" in refused.stderr


def test_timeout_stops_the_step_and_its_children(tmp_path: Path) -> None:
    machine = MACHINE.replace(
        'with: {argv: [sh, -c, "sleep {{ inputs.nap }} & echo $! > nap.pid; wait"]}',
        'with: {argv: [sh, -c, "sleep {{ inputs.nap }} & echo $! > nap.pid; wait"]}\n'
        "        timeout: 1s",
    )
    build_tree(tmp_path, {"machine.yaml": machine})
    run_cli("create", "demo", "--set", "nap=60", cwd=tmp_path)
    run_cli("advance", "demo", cwd=tmp_path)
    started = time.monotonic()
    proc = run_cli("advance", "demo", cwd=tmp_path)
    assert proc.returncode == 1
    assert time.monotonic() - started < 20
    record = read_state(tmp_path)
    assert record["state"] == "deploy_failed"
    assert record["failure"]["kind"] == "timeout"
    nap = int((tmp_path / "nap.pid").read_text())
    assert not _pid_alive(nap)


ONE_STEP_MACHINE = """\
version: 1
name: retry
initial: a
states:
  a: {}
  b_running: {}
  b: {}
  b_failed: {}
phases:
  - name: go
    from: a
    via: b_running
    to: b
    failed: b_failed
    steps:
"""


def test_retry_succeeds_on_the_third_attempt(tmp_path: Path) -> None:
    machine = ONE_STEP_MACHINE + """\
      - name: flaky
        uses: shell
        with: {argv: [sh, -c, "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; test $n -ge 3"]}
        retry: {attempts: 3, delay: 100ms}
"""
    build_tree(tmp_path, {"machine.yaml": machine})
    run_cli("create", "x", cwd=tmp_path)
    proc = run_cli("--output", "json", "advance", "x", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    result = json.loads(proc.stdout)
    assert result["phases"][0]["steps"][0]["attempts"] == 3
    assert (tmp_path / "count").read_text().strip() == "3"
    assert read_state(tmp_path, "x")["state"] == "b"


def test_retry_does_not_repeat_a_failure_another_attempt_cannot_fix(tmp_path: Path) -> None:
    """A program that is not installed stays missing: `retry` gives up at once, and says
    how many attempts were made."""
    machine = ONE_STEP_MACHINE + """\
      - name: missing
        uses: shell
        with: {argv: [no-such-program-anywhere]}
        retry: {attempts: 5, delay: 2s}
"""
    build_tree(tmp_path, {"machine.yaml": machine})
    run_cli("create", "x", cwd=tmp_path)
    proc = run_cli("advance", "x", cwd=tmp_path)
    assert proc.returncode == 1
    (log,) = (tmp_path / "data/x/runs").glob("*-go.log")
    assert "retrying" not in log.read_text()
    failure = read_state(tmp_path, "x")["failure"]
    assert failure["kind"] == "tool_missing"
    assert "no-such-program-anywhere" in failure["summary"]
    assert "attempts" not in failure["summary"]


def test_json_output_of_a_failed_phase(work: Path) -> None:
    run_cli("create", "demo", cwd=work)
    (work / "broken").write_text("")
    proc = run_cli("--output", "json", "advance", "demo", cwd=work)
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["status"] == "failed" and data["state"] == "build_failed"
    assert data["phases"][0]["failure"]["step"] == "two"
