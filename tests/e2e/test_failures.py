"""End to end: a real failure in each phase of the shipped machine, injected through
inputs or the environment, lands in that phase's failed state at the right step;
`runner status` shows the step and the recovery text; `runner destroy` works from
there and leaves no build folder and no process behind. And SIGINT in the middle of
an OpenTofu step and of an Ansible step leaves the phase interrupted, with nothing left
running, and `runner resume` finishes it."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.e2e.harness import ENV, MACHINE, free_port, runner, state, tracker_ports
from tests.helpers import cli_env

# ---------------------------------------------------------------------------- helpers


def processes_in(work: Path) -> dict[int, str]:
    """Live processes started for ``work``: their command line names a path inside it,
    or they run inside it (OpenTofu's provisioners run `./instance.sh` and `sleep` in
    build/<env>/tofu). {pid: command line}; zombies excluded."""
    inside = f"{work}{os.sep}"
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            stat = (entry / "stat").read_text()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if stat[stat.rfind(")") + 2] == "Z":
            continue
        if inside in cmdline or cwd == str(work) or cwd.startswith(inside):
            found[int(entry.name)] = cmdline
    return found


@pytest.fixture()
def work(tmp_path: Path) -> Iterator[Path]:
    """The working directory; whatever still runs for it at the end is killed."""
    try:
        yield tmp_path
    finally:
        for pid in processes_in(tmp_path):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture()
def spawn(work: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `runner ARGS` in the background; killed at the end if still running."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "--machine", str(MACHINE), *args],
            cwd=work, env=cli_env(ENV), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)


def ok(work: Path, *args: str) -> str:
    proc = runner(work, *args)
    assert proc.returncode == 0, f"runner {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def failed(work: Path, *args: str) -> None:
    proc = runner(work, *args)
    assert proc.returncode == 1, f"runner {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"


def api_port(work: Path) -> int:
    return int(state(work, "demo")["inputs"]["tracker"]["api_port"])


@contextmanager
def listening(port: int) -> Iterator[None]:
    """Another program holding a tracker port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


def assert_failed(work: Path, failed_state: str, step: str, recovery: str, *words: str) -> dict:
    """The environment is in ``failed_state``, failed at ``step`` with ``words`` in the
    summary; a trace was written; `status` shows the step and the recovery text."""
    record = state(work, "demo")
    assert record["state"] == failed_state, record
    failure = record["failure"]
    assert failure["step"] == step, failure
    for word in words:
        assert word in failure["summary"], failure["summary"]
    assert (work / failure["trace"]).is_file()
    status = ok(work, "status", "demo")
    assert f"{failed_state} - " in status
    assert f"step '{step}' ({failure['kind']})" in status
    assert recovery in status, status
    data = json.loads(ok(work, "--output", "json", "status", "demo"))
    assert data["failure"]["step"] == step and "destroy" in data["allowed_phases"]
    return dict(failure)


def destroy_cleans_up(work: Path) -> None:
    ok(work, "destroy", "demo", "--yes")
    assert state(work, "demo")["state"] == "destroyed"
    assert not (work / "build" / "demo").exists()
    assert processes_in(work) == {}


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def current_step(work: Path) -> str | None:
    try:
        return (state(work, "demo").get("run") or {}).get("current_step")
    except (OSError, ValueError):  # not written yet
        return None


# ----------------------------------------------------------------- a failure per phase


def test_provision_fails_when_the_instance_cannot_be_created(work: Path) -> None:
    ok(work, "create", "demo", "--set", "local.instance_dir=/proc/runner-cannot-create",
       *tracker_ports())  # fmt: skip
    failed(work, "up", "demo")
    failure = assert_failed(work, "provision_failed", "opentofu_apply",
                            "`runner destroy demo` and create it again",
                            "mkdir", "cannot create", "/proc/runner-cannot-create")  # fmt: skip
    assert failure["kind"] == "command_failed"
    destroy_cleans_up(work)


def test_configure_fails_when_a_tracker_port_is_in_use(work: Path) -> None:
    ok(work, "create", "demo", *tracker_ports())
    port = api_port(work)
    with listening(port):
        # taken before provision: refused at once, before any step (docs/machine-yaml.md)
        refused = runner(work, "up", "demo")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"TCP port {port} is in use" in refused.stderr
        assert state(work, "demo")["state"] == "created"
    ok(work, "up", "demo", "--to", "provisioned")
    with listening(port):  # taken after provision: the configuration finds it
        failed(work, "up", "demo")
        assert_failed(work, "configure_failed", "prepare_instance", "the playbooks are idempotent",
                      f"tracker port {port}", "already in use")  # fmt: skip
        # the documented way out, the port still taken: another port, then resume (the
        # phase renders the inventory again, so the playbooks see the new input)
        ok(work, "inputs", "demo", "--set", f"tracker.api_port={free_port()}")
        ok(work, "resume", "demo")
        assert state(work, "demo")["state"] == "configured"
    destroy_cleans_up(work)


def test_release_fails_on_an_invalid_tracker_log_level(work: Path) -> None:
    ok(work, "create", "demo", "--set", "tracker.log_level=verbose", *tracker_ports())
    failed(work, "up", "demo")
    assert_failed(work, "release_failed", "deploy_tracker_config",
                  "Fix the configuration value named above",
                  "invalid tracker log level 'verbose'")  # fmt: skip
    destroy_cleans_up(work)


def test_run_fails_when_the_tracker_api_port_is_taken(work: Path) -> None:
    # (A wrong tracker.health_check_path fails the health_check step only after its 60 s
    # timeout; a port taken between the release and the run fails start_services at once.)
    ok(work, "create", "demo", *tracker_ports())
    ok(work, "up", "demo", "--to", "released")
    port = api_port(work)
    with listening(port):
        failed(work, "advance", "demo")
    assert_failed(work, "run_failed", "start_services", "Look at the tracker log",
                  "the tracker service did not start", str(port))  # fmt: skip
    destroy_cleans_up(work)


def test_destroy_fails_while_another_engine_holds_the_opentofu_state_lock(work: Path) -> None:
    ok(work, "create", "demo", *tracker_ports())
    ok(work, "up", "demo", "--to", "provisioned")
    tofu = work / "build/demo/tofu"
    lock_id = "0c0ffee0-0000-4000-8000-000000000001"
    with (tofu / "terraform.tfstate").open("r+") as handle:
        # What a running OpenTofu holds: the local backend's POSIX (fcntl) lock on the
        # state file, and the lock info it writes next to it.
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        info = {"ID": lock_id, "Operation": "OperationTypeApply", "Info": "",
                "Who": "operator@elsewhere", "Version": "1.8.0",
                "Created": "2026-11-22T10:00:00Z", "Path": "terraform.tfstate"}  # fmt: skip
        (tofu / ".terraform.tfstate.lock.info").write_text(json.dumps(info))
        failed(work, "destroy", "demo", "--yes")
        (tofu / ".terraform.tfstate.lock.info").unlink()
    assert_failed(work, "destroy_failed", "destroy_infrastructure",
                  "Run `runner destroy demo` again once the cause is fixed",
                  "Error acquiring the state lock", lock_id)  # fmt: skip
    assert (work / "build/demo/instance/.runner-instance").is_file()  # nothing destroyed
    destroy_cleans_up(work)  # the lock is released: destroy again


# ------------------------------------------------------------------------- interrupts


def test_sigint_during_opentofu_apply_then_resume(
    work: Path, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    ok(work, "create", "demo", "--set", "local.boot_delay=5", *tracker_ports())
    proc = spawn("advance", "demo")
    wait_until(lambda: current_step(work) == "opentofu_apply", "opentofu_apply to start")
    # the engine's provisioner runs instance.sh, which sleeps through the "boot"
    wait_until(lambda: "sleep 5" in processes_in(work).values(), "the instance to boot")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    record = state(work, "demo")
    assert record["state"] == "provisioning"
    assert record["run"]["interrupted"] is True
    assert record["run"]["current_step"] == "opentofu_apply"
    assert "opentofu_apply" not in record["run"]["completed_steps"]
    assert (work / record["run"]["trace"]).is_file()
    assert processes_in(work) == {}  # no engine, no instance.sh, no sleep
    status = ok(work, "status", "demo")
    assert "interrupted" in status and "runner resume demo" in status
    refused = runner(work, "advance", "demo")
    assert refused.returncode == 4 and "resume" in refused.stderr

    ok(work, "resume", "demo")  # re-runs opentofu_apply (boots again), then the rest
    record = state(work, "demo")
    assert record["state"] == "provisioned"
    assert record["run"]["interrupted"] is False
    assert (work / "build/demo/instance/.runner-instance").is_file()
    destroy_cleans_up(work)


def test_sigint_during_an_ansible_step_then_resume(
    work: Path, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    ok(work, "create", "demo", *tracker_ports())
    ok(work, "up", "demo", "--to", "provisioned")
    proc = spawn("advance", "demo")
    wait_until(lambda: current_step(work) == "prepare_instance", "prepare_instance to start")
    wait_until(
        lambda: any("ansible-playbook" in c for c in processes_in(work).values()),
        "ansible-playbook to start",
    )
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    record = state(work, "demo")
    assert record["state"] == "configuring", (out, err)
    assert record["run"]["interrupted"] is True
    assert record["run"]["current_step"] == "prepare_instance"
    assert processes_in(work) == {}  # ansible-playbook and its workers were stopped
    assert "interrupted" in ok(work, "status", "demo")

    ok(work, "resume", "demo")
    assert state(work, "demo")["state"] == "configured"
    destroy_cleans_up(work)


# ------------------------------------------------------- destroy from every stable state


@pytest.mark.parametrize("target", ["created", "provisioned", "configured", "released"])
def test_destroy_works_from_every_stable_state(work: Path, target: str) -> None:
    ok(work, "create", "demo", *tracker_ports())
    if target != "created":
        ok(work, "up", "demo", "--to", target)
    assert state(work, "demo")["state"] == target
    destroy_cleans_up(work)
