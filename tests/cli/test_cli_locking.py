"""The whole-command lock, seen from the CLI, with real processes (no mocked locks)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import read_state, run_cli

MACHINE = """\
version: 1
name: locks
initial: idle
inputs:
  type: object
  properties:
    nap: {type: number, default: 0}
states:
  idle: {description: Idle}
  working: {description: Working}
  done: {description: Done}
  work_failed: {description: Work failed}
  destroying: {description: Destroying}
  destroyed: {description: Destroyed, final: true}
  destroy_failed: {description: Destroy failed}
phases:
  - name: work
    from: idle
    via: working
    to: done
    failed: work_failed
    steps:
      - name: nap
        uses: shell
        with: {argv: [sh, -c, "sleep {{ inputs.nap }} & echo $! > {{ env.name }}.pid; wait"]}
  - name: destroy
    from: any
    via: destroying
    to: destroyed
    failed: destroy_failed
    advance: false
    steps:
      - name: noop
        uses: shell
        with: {argv: ["true"]}
"""


def _spawn(work: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=work,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _holder(work: Path, name: str) -> subprocess.Popen[str]:
    assert run_cli("create", name, "--set", "nap=60", cwd=work).returncode == 0
    proc = _spawn(work, "advance", name)
    _wait_for(work / f"{name}.pid")
    return proc


def test_second_command_waits_then_exits_3_naming_the_holder(work: Path) -> None:
    holder = _holder(work, "demo")
    try:
        started = time.monotonic()
        proc = run_cli("--lock-timeout", "1.5", "advance", "demo", cwd=work)
        waited = time.monotonic() - started
        assert proc.returncode == 3
        assert f"environment 'demo' is locked by pid {holder.pid}" in proc.stderr
        assert "runner advance" in proc.stderr
        assert waited >= 1.4  # it did wait for the lock
        fast = run_cli("--lock-timeout", "0", "--output", "json", "advance", "demo", cwd=work)
        assert fast.returncode == 3
        error = json.loads(fast.stdout)
        assert error["error"] == "LockedError" and str(holder.pid) in error["message"]
        # read-only commands never wait for the lock
        status = run_cli("status", "demo", cwd=work)
        assert status.returncode == 0
        assert f"locked by:   pid {holder.pid}" in status.stdout
        assert "interrupted" not in status.stdout
        assert run_cli("list", cwd=work).returncode == 0
        assert run_cli("history", "demo", cwd=work).returncode == 0
    finally:
        holder.send_signal(signal.SIGINT)
        holder.communicate(timeout=30)


def test_a_wait_for_the_lock_is_said_once_when_it_starts(work: Path) -> None:
    holder = _holder(work, "demo")
    try:
        started = json.loads(run_cli("--output", "json", "status", "demo", cwd=work).stdout)[
            "locked_by"
        ]["started_at"]
        proc = run_cli("advance", "demo", "--lock-timeout", "1.5", cwd=work)
        assert proc.returncode == 3
        said = (
            f"waiting for the lock of 'demo' held by pid {holder.pid} "
            f"(runner advance, since {started})…\n"
        )
        assert proc.stderr.startswith(said), proc.stderr
        assert proc.stderr.count("waiting for the lock") == 1
        assert proc.stdout == ""
        # no wait, nothing said: only the error
        at_once = run_cli("--lock-timeout", "0", "advance", "demo", cwd=work)
        assert at_once.returncode == 3 and "waiting for" not in at_once.stderr
        # with --output json the line is on stderr too, and stdout holds the one document
        document = run_cli("--output", "json", "--lock-timeout", "0.5", "destroy", "demo", cwd=work)
        assert document.stderr.startswith(said)
        assert json.loads(document.stdout)["error"] == "LockedError"
    finally:
        holder.send_signal(signal.SIGINT)
        holder.communicate(timeout=30)


def test_a_killed_holder_never_blocks_and_is_named_in_a_warning(work: Path) -> None:
    holder = _holder(work, "demo")
    holder.kill()  # SIGKILL: no cleanup at all
    holder.communicate(timeout=10)
    status = run_cli("status", "demo", cwd=work)
    assert "interrupted" in status.stdout  # in `working` with nobody holding the lock
    started = time.monotonic()
    proc = run_cli("--lock-timeout", "0", "destroy", "demo", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 15
    assert str(holder.pid) in proc.stderr and "WARNING" in proc.stderr
    record = read_state(work)
    assert record["state"] == "destroyed"


def test_two_environments_never_block_each_other(work: Path) -> None:
    holder = _holder(work, "one")
    try:
        assert run_cli("create", "two", cwd=work).returncode == 0
        proc = run_cli("--lock-timeout", "0", "advance", "two", cwd=work)
        assert proc.returncode == 0, proc.stderr
    finally:
        holder.send_signal(signal.SIGINT)
        holder.communicate(timeout=30)
    assert holder.returncode == 130


def test_eight_racing_creates_give_exactly_one_environment(work: Path) -> None:
    procs = [_spawn(work, "create", "same") for _ in range(8)]
    results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()
    codes = sorted(code for code, _ in results)
    assert codes == [0] + [2] * 7
    assert all("already exists" in err for code, err in results if code == 2)
    listing = json.loads(run_cli("--output", "json", "list", cwd=work).stdout)
    assert [e["environment"] for e in listing["environments"]] == ["same"]


@pytest.mark.parametrize("timeout", ["inf", "1e12"])
def test_an_endless_lock_timeout_waits_until_the_holder_ends(work: Path, timeout: str) -> None:
    """`--lock-timeout inf` waits as long as it takes (the OS timer is re-armed in
    slices, never set beyond what it can hold)."""
    holder = _holder(work, "demo")
    waiter = _spawn(work, "--lock-timeout", timeout, "--output", "json", "status", "demo")
    waiter.communicate(timeout=30)  # status never waits: a control
    waiter = _spawn(work, "--lock-timeout", timeout, "phase", "demo", "destroy")
    time.sleep(1.0)
    assert waiter.poll() is None  # still waiting
    holder.send_signal(signal.SIGINT)
    holder.communicate(timeout=30)
    out, err = waiter.communicate(timeout=60)
    assert "Traceback" not in err and "internal error" not in err, err
    assert waiter.returncode == 0, out + err
    assert read_state(work)["state"] == "destroyed"


def test_a_lock_timeout_that_is_not_a_number_is_refused(work: Path) -> None:
    proc = run_cli("--lock-timeout", "nan", "status", "demo", cwd=work)
    assert proc.returncode == 2 and "--lock-timeout" in proc.stderr
