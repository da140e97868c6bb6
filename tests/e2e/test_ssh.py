"""End to end over real SSH: a real sshd on 127.0.0.1 (tests/e2e/sshd.py) is the instance
of provider `local`. `wait_ssh_connectivity` and every Ansible step go through it; a
key the server does not know fails provisioning with `key_rejected`."""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    alive,
    cleaned_up,
    events,
    processes_mentioning,
    runner,
    state,
    tracker_ports,
)
from tests.e2e.sshd import SshServer, ssh_server

__all__ = ["ssh_server"]  # the fixture


@pytest.fixture()
def work(tmp_path: Path) -> Iterator[Path]:
    with cleaned_up(tmp_path):  # kills the tracker stand-in if the test fails half way
        yield tmp_path


def ok(work: Path, *args: str) -> str:
    proc = runner(work, *args)
    assert proc.returncode == 0, f"runner {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def ssh_inputs(server: SshServer, key: Path) -> list[str]:
    return [
        "--set", "ssh.host=127.0.0.1",
        "--set", f"ssh.port={server.port}",
        "--set", f"ssh.user={server.user}",
        "--set", f"ssh.private_key={key}",
        "--set", "ssh.wait_timeout=30s",
        # the instance is this machine: the tests' Python runs Ansible's modules and the
        # tracker stand-in (no interpreter discovery over SSH)
        "--set", f"ssh.python={sys.executable}",
    ]  # fmt: skip


def step_results(work: Path) -> dict[tuple[str, str], str]:
    return {(e["phase"], e["step"]): e["status"] for e in events(work, "demo")
            if e["type"] == "step"}  # fmt: skip


def test_whole_lifecycle_over_ssh(work: Path, ssh_server: SshServer) -> None:
    started = time.monotonic()
    ok(work, "create", "demo", *ssh_inputs(ssh_server, ssh_server.key), *tracker_ports())

    # provision: wait_ssh_connectivity really ran (not skipped) and logged in with the key
    ok(work, "up", "demo", "--to", "provisioned")
    run = state(work, "demo")["run"]
    assert run["phase"] == "provision"
    assert "wait_ssh_connectivity" in run["completed_steps"]
    assert "wait_ssh_connectivity" not in run["skipped_steps"]
    assert step_results(work)[("provision", "wait_ssh_connectivity")] == "done"
    assert ssh_server.accepted(ssh_server.key) >= 1
    inventory = (work / "build/demo/ansible/inventory.yml").read_text()
    assert "ansible_connection: ssh" in inventory
    assert f"ansible_port: {ssh_server.port}" in inventory

    # configure, release, run: each phase's Ansible steps run their commands over SSH
    # (logged in with the key; Ansible keeps one connection open across playbooks)
    for target in ("configured", "released", "running"):
        sessions = ssh_server.sessions()
        ok(work, "up", "demo", "--to", target)
        assert state(work, "demo")["state"] == target
        assert ssh_server.sessions() > sessions, target
    assert ssh_server.accepted(ssh_server.key) >= 2  # wait_ssh, then Ansible
    up_s = time.monotonic() - started
    results = step_results(work)
    for step in ("prepare_instance", "deploy_tracker_config", "deploy_compose_files",
                 "start_services", "health_check"):  # fmt: skip
        assert step in {s for (_phase, s), status in results.items() if status == "done"}

    record = state(work, "demo")
    port = record["inputs"]["tracker"]["api_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health_check", timeout=5) as r:
        assert r.status == 200
        assert "Ok" in r.read().decode()
    tracker_pid = int((Path(record["outputs"]["instance_dir"]) / "run/tracker.pid").read_text())

    sessions = ssh_server.sessions()
    started = time.monotonic()
    ok(work, "destroy", "demo", "--yes")
    destroy_s = time.monotonic() - started
    assert ssh_server.sessions() > sessions  # stop_services went through SSH
    assert state(work, "demo")["state"] == "destroyed"
    assert not alive(tracker_pid)
    assert processes_mentioning(f"{work}{os.sep}") == []
    assert not (work / "build/demo").exists()
    print(f"ssh lifecycle: create+up {up_s:.1f}s, destroy {destroy_s:.1f}s")


def test_a_rejected_key_fails_provisioning_with_key_rejected(
    work: Path, ssh_server: SshServer
) -> None:
    ok(work, "create", "demo", *ssh_inputs(ssh_server, ssh_server.wrong_key), *tracker_ports())
    up = runner(work, "up", "demo")
    assert up.returncode == 1, up.stdout + up.stderr
    record = state(work, "demo")
    assert record["state"] == "provision_failed"
    failure = record["failure"]
    assert (failure["phase"], failure["step"], failure["kind"]) == (
        "provision", "wait_ssh_connectivity", "key_rejected"
    )  # fmt: skip
    assert f"127.0.0.1:{ssh_server.port}" in failure["summary"]
    assert "Permission denied" in failure["summary"]
    assert ssh_server.accepted() == 0
    assert ssh_server.rejected(ssh_server.wrong_key) >= 3  # the key was offered and refused
    assert step_results(work)[("provision", "wait_ssh_connectivity")] == "failed"
    status = ok(work, "status", "demo")
    assert "provision_failed" in status
    assert "step 'wait_ssh_connectivity' (key_rejected)" in status
    assert "`runner destroy demo` and create it again" in status  # the recovery text

    ok(work, "destroy", "demo", "--yes")
    assert state(work, "demo")["state"] == "destroyed"
    assert not (work / "build/demo").exists()
    assert processes_mentioning(f"{work}{os.sep}") == []
