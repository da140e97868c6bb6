"""End to end, day two of the shipped machine on provider `local`: `runner check` against
reality (the tracker stopped by hand, infrastructure drift), `restart` and `redeploy`
without destroying anything, and `register` of an existing server over the real sshd
fixture, which `destroy` then leaves alone. Real CLI, real Ansible, the embedded
OpenTofu-compatible engine, the tracker stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
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
    with cleaned_up(tmp_path):
        yield tmp_path


def ok(work: Path, *args: str) -> str:
    proc = runner(work, *args)
    assert proc.returncode == 0, f"runner {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def check(work: Path, code: int) -> dict[str, object]:
    proc = runner(work, "--output", "json", "check", "demo")
    assert proc.returncode == code, proc.stdout + proc.stderr
    document: dict[str, object] = json.loads(proc.stdout)
    return document


def results(document: dict[str, object]) -> dict[str, str]:
    checks = document["checks"]
    assert isinstance(checks, list)
    return {c["name"]: c["status"] for c in checks}


def health(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def stop_tracker(instance: Path) -> None:
    """Stop the tracker stand-in by hand, as an operator (or a crash) would."""
    subprocess.run(
        [sys.executable, str(instance / "bin/tracker-service.py"), "stop",
         "--pidfile", str(instance / "run/tracker.pid")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def test_check_restart_redeploy_and_drift(work: Path) -> None:
    ok(work, "create", "demo", *tracker_ports())
    ok(work, "up", "demo")
    record = state(work, "demo")
    port = record["inputs"]["tracker"]["api_port"]
    instance = Path(record["outputs"]["instance_dir"])
    assert results(check(work, 0)) == {"tracker_health": "passed", "infrastructure_drift": "passed"}

    # the tracker stops behind the runner's back: `check` says so, the state stays
    stop_tracker(instance)
    proc = runner(work, "check", "demo")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 of 2 checks failed (tracker_health); the state stays 'running'" in proc.stdout
    assert "Connection refused" in proc.stdout
    status = ok(work, "status", "demo")
    assert "last check:  failed at" in status
    assert "tracker_health failed: GET http://127.0.0.1:" in status
    assert "runner phase demo restart" in status
    listing = ok(work, "list").splitlines()
    assert listing[1].split()[:2] == ["demo", "running"] and " failed " in listing[1]
    assert state(work, "demo")["state"] == "running"

    # restart brings it back without touching the infrastructure
    ok(work, "phase", "demo", "restart")
    assert health(port, "/api/health_check") == 200
    assert results(check(work, 0))["tracker_health"] == "passed"
    restart = [e for e in events(work, "demo") if e["type"] == "step" and e["phase"] == "restart"]
    assert [e["step"] for e in restart] == [
        "render_ansible_templates", "stop_services", "start_services", "health_check"
    ]  # fmt: skip

    # an input changes; redeploy releases it and restarts
    ok(work, "inputs", "demo", "--set", "tracker.health_check_path=/api/v2/health")
    ok(work, "phase", "demo", "redeploy")
    assert state(work, "demo")["state"] == "running"
    assert health(port, "/api/v2/health") == 200  # the new value is live
    assert health(port, "/api/health_check") == 404
    passed = check(work, 0)
    assert results(passed)["tracker_health"] == "passed"
    log = (work / str(passed["log"])).read_text()
    assert "/api/v2/health: status 200" in log

    # drift: the rendered configuration changes behind the runner's back
    main_tf = work / "build/demo/tofu/main.tf"
    main_tf.write_text(main_tf.read_text() + '\nresource "terraform_data" "stray" {}\n')
    drifted = check(work, 1)
    assert results(drifted) == {"tracker_health": "passed", "infrastructure_drift": "failed"}
    (failed,) = [c for c in drifted["checks"] if c["status"] == "failed"]  # type: ignore[union-attr]
    assert failed["kind"] == "drift"
    assert "1 to add, 0 to change, 0 to destroy" in failed["summary"]
    assert "terraform_data.stray will be created" in failed["summary"]
    assert state(work, "demo")["last_check"]["status"] == "failed"

    # a dry run shows the real plan of the destroy, and changes nothing
    serial = state(work, "demo")["serial"]
    tfstate = (work / "build/demo/tofu/terraform.tfstate").read_bytes()
    dry = runner(work, "--output", "json", "destroy", "demo", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    (plan,) = json.loads(dry.stdout)["dry_run"]
    previews = {s["name"]: s["preview"] for s in plan["steps"]}
    assert previews["destroy_infrastructure"] == (
        "plan: 0 to add, 0 to change, 1 to destroy (terraform_data.instance will be destroyed)"
    )
    assert previews["stop_services"] is None
    text = ok(work, "destroy", "demo", "--dry-run")
    assert "      plan: 0 to add, 0 to change, 1 to destroy" in text
    assert state(work, "demo")["serial"] == serial
    assert (work / "build/demo/tofu/terraform.tfstate").read_bytes() == tfstate
    assert health(port, "/api/v2/health") == 200  # nothing was stopped

    tracker_pid = int((instance / "run/tracker.pid").read_text())
    ok(work, "destroy", "demo", "--yes")
    assert not alive(tracker_pid)
    assert not instance.exists()


def test_destroy_without_a_terminal_needs_yes(work: Path) -> None:
    ok(work, "create", "demo", *tracker_ports())
    refused = runner(work, "destroy", "demo")
    assert refused.returncode == 2
    assert "environment 'demo' (now in 'created', then 'destroyed')" in refused.stderr
    assert "runner destroy demo --yes" in refused.stderr
    assert state(work, "demo")["state"] == "created"


def test_register_an_existing_server_over_ssh(work: Path, ssh_server: SshServer) -> None:
    # the "existing server": a folder reached over SSH, with something of its own
    server = work / "existing-server"
    server.mkdir()
    marker = server / "precious.txt"
    marker.write_text("the server's own data\n")
    ok(
        work, "create", "demo",
        "--set", "ssh.host=127.0.0.1",
        "--set", f"ssh.port={ssh_server.port}",
        "--set", f"ssh.user={ssh_server.user}",
        "--set", f"ssh.private_key={ssh_server.key}",
        "--set", "ssh.wait_timeout=30s",
        "--set", f"ssh.python={sys.executable}",
        "--set", f"local.instance_dir={server}",
        *tracker_ports(),
    )  # fmt: skip
    ok(work, "phase", "demo", "register")
    record = state(work, "demo")
    assert record["state"] == "provisioned"
    assert record["outputs"] == {"instance_ip": "127.0.0.1", "registered": True}
    assert ssh_server.accepted(ssh_server.key) >= 1
    assert not (work / "build/demo/tofu").exists()  # no infrastructure was made

    sessions = ssh_server.sessions()
    ok(work, "up", "demo")  # configure, release, run: over SSH
    assert ssh_server.sessions() > sessions
    port = state(work, "demo")["inputs"]["tracker"]["api_port"]
    assert health(port, "/api/health_check") == 200
    checked = check(work, 0)
    assert results(checked) == {"tracker_health": "passed", "infrastructure_drift": "skipped"}
    tracker_pid = int((server / "run/tracker.pid").read_text())

    destroyed = ok(work, "destroy", "demo", "--yes")
    assert state(work, "demo")["state"] == "destroyed"
    steps = {e["step"]: e["status"] for e in events(work, "demo")
             if e["type"] == "step" and e["phase"] == "destroy"}  # fmt: skip
    assert steps["destroy_infrastructure"] == "skipped"
    assert steps["leave_registered_server"] == "done"
    (run_log,) = (work / "data/demo/runs").glob("*-destroy.log")
    assert "demo was registered: the server 127.0.0.1 is left as it is" in run_log.read_text()
    assert "now in 'destroyed'" in destroyed
    assert marker.read_text() == "the server's own data\n"  # untouched
    assert not (work / "build/demo").exists()  # the runner's own files are gone
    assert not alive(tracker_pid)  # the runner's tracker was stopped
    assert processes_mentioning(f"{work}{os.sep}") == []
