"""The shipped lifecycle over real SSH: a real sshd on 127.0.0.1 is the instance;
`wait_ssh_connectivity` and every Ansible step go through it."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from tests.e2e import cleaned_up, events, processes_mentioning, runner, state, tracker_ports
from tests.sshd import SshServer, ssh_server

__all__ = ["ssh_server"]  # the fixture


def _ssh_inputs(server: SshServer, key: Path) -> list[str]:
    return [
        "--set", "ssh.host=127.0.0.1",
        "--set", f"ssh.port={server.port}",
        "--set", f"ssh.user={server.user}",
        "--set", f"ssh.private_key={key}",
        "--set", "ssh.wait_timeout=20s",
        # the instance is this machine: use the tests' Python, not interpreter discovery
        "--set", f"ssh.python={sys.executable}",
    ]  # fmt: skip


def test_whole_lifecycle_over_ssh(tmp_path: Path, ssh_server: SshServer) -> None:
    with cleaned_up(tmp_path):
        created = runner(tmp_path, "create", "demo", *_ssh_inputs(ssh_server, ssh_server.key),
                         *tracker_ports())  # fmt: skip
        assert created.returncode == 0, created.stderr
        up = runner(tmp_path, "up", "demo")
        assert up.returncode == 0, up.stdout + up.stderr
        record = state(tmp_path, "demo")
        assert record["state"] == "running"
        steps = {(e["phase"], e["step"]): e["status"] for e in events(tmp_path, "demo")
                 if e["type"] == "step"}  # fmt: skip
        assert steps[("provision", "wait_ssh_connectivity")] == "done"
        for step in ("prepare_instance",):
            assert steps[("configure", step)] == "done"
        for step in ("deploy_tracker_config", "deploy_compose_files"):
            assert steps[("release", step)] == "done"
        assert steps[("run", "start_services")] == "done"
        inventory = (tmp_path / "build/demo/ansible/inventory.yml").read_text()
        assert "ansible_connection: ssh" in inventory
        # wait_ssh + at least one command per Ansible step
        assert ssh_server.sessions() >= 6
        port = record["inputs"]["tracker"]["api_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health_check", timeout=5) as r:
            assert r.status == 200
        before = ssh_server.sessions()
        down = runner(tmp_path, "destroy", "demo")
        assert down.returncode == 0, down.stdout + down.stderr
        assert ssh_server.sessions() > before  # stop_services went through SSH
        assert state(tmp_path, "demo")["state"] == "destroyed"
        assert processes_mentioning(str(tmp_path)) == []
        assert not (tmp_path / "build/demo").exists()


def test_a_rejected_key_fails_provisioning_with_key_rejected(
    tmp_path: Path, ssh_server: SshServer
) -> None:
    with cleaned_up(tmp_path):
        runner(tmp_path, "create", "demo", *_ssh_inputs(ssh_server, ssh_server.wrong_key),
               *tracker_ports())  # fmt: skip
        up = runner(tmp_path, "up", "demo")
        assert up.returncode == 1
        record = state(tmp_path, "demo")
        assert record["state"] == "provision_failed"
        assert record["failure"]["step"] == "wait_ssh_connectivity"
        assert record["failure"]["kind"] == "key_rejected"
        status = runner(tmp_path, "status", "demo")
        assert "wait_ssh_connectivity" in status.stdout and "key_rejected" in status.stdout
        down = runner(tmp_path, "destroy", "demo")
        assert down.returncode == 0, down.stdout + down.stderr
        assert state(tmp_path, "demo")["state"] == "destroyed"
        assert not (tmp_path / "build/demo").exists()
