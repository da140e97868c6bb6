"""Signals and kills at every instant of a run, with real processes and real signals.

Every run must end either *failed* (failure record + trace, exit 1) or *interrupted*
(``run.interrupted`` + trace, exit 128 + the signal), never with a traceback; a second
signal kills the step's processes at once; SIGHUP is treated like SIGTERM; a runner
killed with SIGKILL leaves no step running past the next command that takes the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_output_schema import check
from tests.helpers import build_tree, cli_env, run_cli

pytestmark = pytest.mark.e2e

MACHINE = """\
    version: 1
    name: signals
    initial: created
    states:
      created: {description: new}
      working: {description: working}
      worked: {description: done}
      work_failed: {description: failed}
      destroying: {description: going}
      destroyed: {description: gone, final: true}
      destroy_failed: {description: destroy failed}
    phases:
      - name: work
        from: created
        via: working
        to: worked
        failed: work_failed
        steps:
          - {name: first, uses: shell, with: {argv: ["true"]}}
          - name: main
            uses: shell
            with: {argv: ["sh", "-c", "{{ inputs.script }}"]}
          - {name: last, uses: shell, with: {argv: ["true"]}}
      - name: destroy
        from: any
        via: destroying
        to: destroyed
        failed: destroy_failed
        advance: false
        steps:
          - {name: clean, uses: shell, with: {argv: ["true"]}}
"""

NOISY_FAIL = "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done; exit 1"


def workdir(tmp_path: Path, script: str, name: str = "demo") -> Path:
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    created = run_cli("create", name, "--set", f"script={script}", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    return tmp_path


def spawn(work: Path, *args: str, marker: str = "") -> subprocess.Popen[str]:
    env = cli_env({"SIGNALS_TEST_MARK": marker} if marker else None)
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=work, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def state(work: Path, name: str = "demo") -> dict[str, Any]:
    return dict(json.loads((work / "data" / name / "state.json").read_text()))


def events(work: Path, name: str = "demo") -> list[dict[str, Any]]:
    text = (work / "data" / name / "events.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def marked_processes(marker: str) -> list[int]:
    """Live processes whose environment holds ``SIGNALS_TEST_MARK=marker``."""
    needle = f"SIGNALS_TEST_MARK={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "stat").read_text().split()[2] == "Z":
                continue
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def handlers_installed(pid: int) -> bool:
    """Whether ``pid`` catches SIGTERM and SIGHUP (the runner's handlers are set)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # it is gone already
    caught = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt")), 16
    )
    wanted = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGHUP - 1))
    return caught & wanted == wanted


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_for(predicate: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def step_running(work: Path, step: str = "main") -> bool:
    try:
        run = state(work).get("run") or {}
    except (OSError, ValueError):
        return False
    return run.get("current_step") == step


def assert_ended_well(work: Path, proc: subprocess.Popen[str], code: int, err: str) -> str:
    """The run ended failed+trace (exit 1) or interrupted+trace (exit 128+n): which."""
    assert "Traceback" not in err, err
    record = state(work)
    run = record["run"]
    if code == 1:
        assert record["state"] == "work_failed", (code, record["state"], err)
        failure = record["failure"]
        assert failure and failure["step"] == "main" and failure["trace"], record
        assert (work / failure["trace"]).is_file()
        kinds = [(e["type"], e.get("status"), e.get("to")) for e in events(work)]
        assert ("step", "failed", None) in kinds and ("transition", None, "work_failed") in kinds
        return "failed"
    assert code in (129, 130, 143), (code, err)
    assert record["state"] == "working", (code, record, err)
    assert run["interrupted"] is True and run["trace"], record
    assert (work / run["trace"]).is_file()
    assert events(work)[-1]["type"] == "interrupted"
    return "interrupted"


def test_a_signal_while_a_failing_step_is_recorded_never_breaks_the_record(
    tmp_path: Path,
) -> None:
    """SIGINT or SIGTERM a few ms either side of a noisy step's exit: each run is
    failed + trace or interrupted + trace; `resume` (after the cause is fixed) ends it."""
    outcomes: dict[str, int] = {"failed": 0, "interrupted": 0}
    rng = random.Random(12)
    for attempt in range(12):
        work = workdir(tmp_path / f"try{attempt}", NOISY_FAIL)
        proc = spawn(work, "advance", "demo")
        # the noisy step lasts a few ms: from the moment it is current (or already over)
        started = wait_for(lambda w=work, p=proc: step_running(w) or p.poll() is not None)
        assert started, "the step never started"
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM]))
        _out, err = proc.communicate(timeout=60)
        outcomes[assert_ended_well(work, proc, proc.returncode, err)] += 1
        fixed = run_cli("resume", "demo", cwd=work, env={"RUNNER_LOG_LEVEL": "ERROR"})
        # the script still fails: resume gets to it again and records a clean failure
        assert fixed.returncode == 1 and "Traceback" not in fixed.stderr, fixed.stderr
        assert state(work)["state"] == "work_failed"
    assert sum(outcomes.values()) == 12


def test_a_second_interrupt_kills_the_step_at_once_without_a_traceback(tmp_path: Path) -> None:
    # the step ignores SIGTERM, so the graceful stop would last the whole grace period
    work = workdir(tmp_path, "trap '' TERM; sleep 30 & wait; sleep 30")
    marker = "second-" + str(os.getpid())
    proc = spawn(work, "advance", "demo", marker=marker)
    assert wait_for(lambda: step_running(work))
    assert wait_for(lambda: len(marked_processes(marker)) >= 3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.055)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 4, "the second interrupt waited for the grace period"
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "killed the step's processes" in err, err
    assert assert_ended_well(work, proc, proc.returncode, err) == "interrupted"
    assert wait_for(lambda: not [p for p in marked_processes(marker) if p != proc.pid], 10)


def test_sighup_is_treated_like_sigterm(tmp_path: Path) -> None:
    work = workdir(tmp_path, "sleep 30 & wait")
    marker = "hup-" + str(os.getpid())
    proc = spawn(work, "advance", "demo", marker=marker)
    assert wait_for(lambda: step_running(work))
    assert wait_for(lambda: len(marked_processes(marker)) >= 3)
    proc.send_signal(signal.SIGHUP)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 129, err
    assert assert_ended_well(work, proc, proc.returncode, err) == "interrupted"
    assert events(work)[-1]["signal"] == "SIGHUP"
    assert wait_for(lambda: marked_processes(marker) == [], 10), "the step outlived the runner"


def test_sighup_outside_a_phase_exits_129(tmp_path: Path) -> None:
    """Waiting for the lock (no phase running yet), SIGHUP ends the command like SIGTERM."""
    work = workdir(tmp_path, "sleep 30 & wait")
    holder = spawn(work, "advance", "demo")
    try:
        assert wait_for(lambda: step_running(work))
        waiter = spawn(work, "--lock-timeout", "60", "destroy", "demo", "--yes")
        time.sleep(1.0)
        waiter.send_signal(signal.SIGHUP)
        _out, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 129 and "Traceback" not in err, err
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.communicate(timeout=30)


SLEEPER = "if [ -f {base}/fast ]; then exit 0; fi; sleep 120 & echo $! > {base}/sleep.pid; wait"


def _started_sleeper(tmp_path: Path, marker: str) -> tuple[Path, subprocess.Popen[str], int]:
    work = workdir(tmp_path, SLEEPER.format(base=tmp_path))
    proc = spawn(work, "advance", "demo", marker=marker)
    pid_file = tmp_path / "sleep.pid"
    # the shell creates the file before it writes the pid: wait for the whole line
    assert wait_for(
        lambda: pid_file.exists() and pid_file.read_text().endswith("\n") and step_running(work)
    )
    return work, proc, int(pid_file.read_text())


def _watchdogs(marker: str) -> list[int]:
    return [
        pid
        for pid in marked_processes(marker)
        if b"IFS= read" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def test_a_killed_runner_takes_its_step_with_it(tmp_path: Path) -> None:
    """kill -9 of the runner during a step: the step's programs, grandchildren
    included, are stopped within seconds (the run's watchdog sees the runner go), and
    resume then runs the step once."""
    marker = "kill9-" + str(os.getpid())
    work, proc, sleeper = _started_sleeper(tmp_path, marker)
    assert _watchdogs(marker), "the run has a watchdog"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    # the watchdog sends SIGTERM at once (SIGKILL 2 s later); the sleeper would run 120 s
    assert wait_for(lambda: not alive(sleeper), 5), "the step outlived the runner"
    assert wait_for(lambda: not marked_processes(marker), 10), marked_processes(marker)
    (tmp_path / "fast").write_text("")
    resumed = run_cli("resume", "demo", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    assert state(work)["state"] == "worked"


def test_leftovers_of_a_killed_run_are_stopped_by_the_next_command(tmp_path: Path) -> None:
    """The second line of defence: the runner and its watchdog both killed with SIGKILL
    (as by `kill -9 -1` of a user's processes). `status` names what still runs; the next
    command that takes the lock stops it before it runs anything, so resume never runs a
    second copy beside the first."""
    marker = "leftover-" + str(os.getpid())
    work, proc, sleeper = _started_sleeper(tmp_path, marker)
    for pid in _watchdogs(marker):
        os.kill(pid, signal.SIGKILL)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    time.sleep(0.5)
    assert alive(sleeper)  # nobody left to stop it yet
    status = run_cli("--output", "json", "status", "demo", cwd=work)
    document = check(status, 0, "status")
    assert document["leftover_processes"], document
    assert document["unverified_processes"] == [], document  # it noted what it ran, for sure
    assert any("still run" in line for line in document["next"]), document
    (tmp_path / "fast").write_text("")
    resumed = run_cli("resume", "demo", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    assert "stopped process group" in resumed.stderr, resumed.stderr
    assert "may still run" not in resumed.stderr, resumed.stderr
    assert not marked_processes(marker), "a process of the killed run outlived `resume`"
    assert not alive(sleeper), "the first copy of the step still runs"
    assert state(work)["state"] == "worked"


@pytest.fixture
def stranger() -> Iterator[int]:
    """A live process group the runner never started (``setsid sleep 300``), such as
    a database or a login session whose group number a stale lock record names."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        yield proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def plant_holder(work: Path, processes: list[Any], host: str | None = None) -> None:
    """The record a runner killed with SIGKILL would leave (the lock itself is free)."""
    record = {
        "pid": 999999,
        "host": host or os.uname().nodename,
        "command": "runner advance",
        "started_at": "2026-01-01T00:00:00.000Z",
        "processes": processes,
    }
    (work / "data" / "demo" / "state.lock").write_text(json.dumps(record))


def test_a_stale_record_naming_another_programs_group_stops_nothing_and_says_so(
    tmp_path: Path, stranger: int
) -> None:
    """An older runner's record (plain group numbers, as after a power loss): the group
    that number names now may be anybody's. It is reported, for a person to check, and
    never signalled."""
    work = workdir(tmp_path, "true")
    plant_holder(work, [stranger])
    document = check(run_cli("--output", "json", "status", "demo", cwd=work), 0, "status")
    assert document["leftover_processes"] == [], document
    assert [(u["group"], u["pid"]) for u in document["unverified_processes"]] == [
        (stranger, 999999)
    ], document
    hint = next(line for line in document["next"] if "may still run" in line)
    assert f"process group {stranger}" in hint and f"kill -- -{stranger}" in hint, hint
    forced = run_cli("force-state", "demo", "created", "--reason", "test", cwd=work)
    assert forced.returncode == 0, forced.stderr
    assert "stopped process group" not in forced.stderr, forced.stderr
    assert f"process group {stranger} may still run" in forced.stderr, forced.stderr
    time.sleep(0.3)
    assert alive(stranger), "the runner stopped a process group it never started"
    # the record is the new holder's now: nothing more to report
    after = check(run_cli("--output", "json", "status", "demo", cwd=work), 0, "status")
    assert after["unverified_processes"] == [] and after["leftover_processes"] == []


def test_a_record_whose_group_number_was_reused_stops_and_reports_nothing(
    tmp_path: Path, stranger: int
) -> None:
    """A record that identifies its group (boot id, leader's start time): a live group of
    that number led by another process, or seen before a reboot, is not the holder's."""
    work = workdir(tmp_path, "true")
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    plant_holder(
        work,
        [
            {"group": stranger, "boot_id": boot, "leader_start": 1},
            {"group": stranger, "boot_id": "0" * 8 + boot[8:], "leader_start": 1},
        ],
    )
    document = check(run_cli("--output", "json", "status", "demo", cwd=work), 0, "status")
    assert document["leftover_processes"] == [] and document["unverified_processes"] == []
    forced = run_cli("force-state", "demo", "created", "--reason", "test", cwd=work)
    assert forced.returncode == 0, forced.stderr
    assert "process group" not in forced.stderr, forced.stderr
    time.sleep(0.3)
    assert alive(stranger)


def test_leftovers_of_a_holder_on_another_host_are_named_for_that_host(
    tmp_path: Path, stranger: int
) -> None:
    """The dead holder ran on another machine (a shared state database, a shared
    folder): nothing here is touched, and status and the next command say what may
    still run there."""
    work = workdir(tmp_path, "true")
    plant_holder(work, [{"group": stranger}, 4242], host="build-7")
    document = check(run_cli("--output", "json", "status", "demo", cwd=work), 0, "status")
    assert document["leftover_processes"] == [], document
    assert [(u["group"], u["host"]) for u in document["unverified_processes"]] == [
        (stranger, "build-7"),
        (4242, "build-7"),
    ], document
    hints = [line for line in document["next"] if "on host build-7" in line]
    assert len(hints) == 2 and "kill -- -4242" in hints[1], document["next"]
    forced = run_cli("force-state", "demo", "created", "--reason", "test", cwd=work)
    assert forced.returncode == 0, forced.stderr
    assert "process group 4242 may still run on host build-7" in forced.stderr, forced.stderr
    assert "stopped process group" not in forced.stderr
    assert alive(stranger)


@pytest.mark.slow
def test_kill_loop_leaves_nothing_running(tmp_path: Path) -> None:
    """kill -9 of the runner at random instants, 15 times; after the next command no
    process of any killed run is alive, and the state is always readable."""
    rng = random.Random(7)
    work = workdir(tmp_path, "sleep 5 & sleep 5 & wait")
    for attempt in range(15):
        marker = f"loop-{os.getpid()}-{attempt}"
        command = "resume" if state(work)["state"] == "working" else "advance"
        proc = spawn(work, command, "demo", marker=marker)
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        after = run_cli("--output", "json", "status", "demo", cwd=work)
        assert after.returncode == 0, after.stderr
        nxt = (
            run_cli("--lock-timeout", "10", "destroy", "demo", "--yes", cwd=work)
            if attempt == 14
            else None
        )
        if nxt is None:
            # the next command that takes the lock: resume (it stops the leftovers first)
            follow = spawn(work, "resume", "demo")
            time.sleep(0.3)
            follow.send_signal(signal.SIGINT)
            follow.communicate(timeout=30)
        assert wait_for(lambda m=marker: not marked_processes(m), 10), f"attempt {attempt}"


STORM_SCRIPT = (
    "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done; sleep 0.{pause}; "
    "if [ -f {flag} ]; then exit 0; fi; touch {flag}; exit {code}"
)


def _storm_run(base: Path, index: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    flag = base / f"flag{index}"
    code = rng.choice([0, 1])
    script = STORM_SCRIPT.format(pause=rng.randint(0, 3), flag=flag, code=code)
    work = workdir(base / f"run{index}", script)
    proc = spawn(work, "advance", "demo")
    # from the moment the runner's handlers are in place (before, the interpreter is
    # still starting: its own import machinery is not the runner's to guard)
    assert wait_for(lambda: handlers_installed(proc.pid))
    time.sleep(rng.uniform(0.0, 0.8))
    signums = [rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP])]
    if rng.random() < 0.4:
        signums.append(rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP]))
    for n, signum in enumerate(signums):
        if n:
            time.sleep(rng.uniform(0.0, 0.08))
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
    _out, err = proc.communicate(timeout=60)
    found = {"signals": len(signums), "tracebacks": int("Traceback" in err)}
    record = state(work)
    if proc.returncode == 0:
        assert record["state"] == "worked", (record, err)
        found["outcome"] = "done"
    elif record["state"] == "created":  # stopped before the phase began: nothing changed
        assert proc.returncode in (129, 130, 143), (proc.returncode, err)
        found["outcome"] = "not started"
    else:
        found["outcome"] = assert_ended_well(work, proc, proc.returncode, err)
    # then the phase is finished: a failing step fails once (its flag then exists)
    for _ in range(3):
        now = state(work)["state"]
        if now == "worked":
            break
        again = run_cli("advance" if now == "created" else "resume", "demo", cwd=work)
        assert again.returncode in (0, 1) and "Traceback" not in again.stderr, again.stderr
    assert state(work)["state"] == "worked"
    return found


@pytest.mark.slow
def test_signal_storm(tmp_path: Path) -> None:
    """Single and double SIGINT/SIGTERM/SIGHUP at random instants, over phases whose
    step passes or fails: every run ends done, failed + trace or interrupted + trace,
    with exit 0/1/129/130/143, never a traceback, and resume completes each time."""
    runs = 90
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda i: _storm_run(tmp_path, i, 1000 + i), range(runs)))
    assert sum(r["tracebacks"] for r in results) == 0
    outcomes = {r["outcome"] for r in results}
    assert {"failed", "interrupted"} <= outcomes, outcomes
    print(f"signal storm: {runs} runs, {sum(r['signals'] for r in results)} signals, {outcomes}")


def test_a_crash_between_a_save_and_its_event_is_recorded_by_the_next_command(
    tmp_path: Path,
) -> None:
    """The state was saved but the runner died before appending the event (simulated
    by a save through the store alone): the next command that takes the lock appends a
    `recovered` event naming the serials the log missed, before anything else."""
    from runner.store.files import FileStore

    work = workdir(tmp_path, "exit 0")
    store = FileStore(work)
    record = store.load("demo")
    record.outputs["seen"] = 1
    store.save(record)  # serial 2, and no event for it
    done = run_cli("advance", "demo", cwd=work)
    assert done.returncode == 0, done.stderr
    log = events(work)
    assert [e["type"] for e in log[:2]] == ["created", "recovered"]
    assert log[1]["missing"] == [2] and log[1]["state"] == "created"
    serials = [e["serial"] for e in log]
    assert serials == sorted(serials) and serials[-1] == state(work)["serial"]
    again = run_cli("advance", "demo", cwd=work)  # nothing missing now: nothing added
    assert [e["type"] for e in events(work)].count("recovered") == 1, again.stderr
