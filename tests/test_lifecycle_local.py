"""The shipped lifecycle on provider `local` with a local connection, end to end: the
`runner` CLI as a subprocess, the embedded OpenTofu-compatible engine, real
`ansible-playbook`, a real tracker stand-in serving its health check."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

from tests.e2e import (
    alive,
    cleaned_up,
    events,
    processes_mentioning,
    runner,
    spawn,
    state,
    tracker_ports,
)

HAPPY = ["created", "provisioning", "provisioned", "configuring", "configured", "releasing",
         "released", "starting", "running"]  # fmt: skip


def _api_port(work: Path, name: str) -> int:
    return int(state(work, name)["inputs"]["tracker"]["api_port"])


def test_whole_local_lifecycle(tmp_path: Path) -> None:
    with cleaned_up(tmp_path):
        assert runner(tmp_path, "create", "demo", *tracker_ports()).returncode == 0
        up = runner(tmp_path, "up", "demo")
        assert up.returncode == 0, up.stdout + up.stderr
        record = state(tmp_path, "demo")
        assert record["state"] == "running"
        assert record["outputs"]["instance_ip"] == "127.0.0.1"

        url = f"http://127.0.0.1:{_api_port(tmp_path, 'demo')}/api/health_check"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            assert "Ok" in response.read().decode()

        status = runner(tmp_path, "status", "demo")
        assert "running - Tracker running and healthy" in status.stdout
        listing = json.loads(runner(tmp_path, "--output", "json", "list").stdout)
        assert [(e["name"], e["state"]) for e in listing["environments"]] == [("demo", "running")]
        history = json.loads(runner(tmp_path, "--output", "json", "history", "demo").stdout)
        visited = [e["to"] for e in history["events"] if e["type"] in ("created", "transition")]
        assert visited == HAPPY
        assert "(current)" in runner(tmp_path, "graph", "--format", "dot", "--env", "demo").stdout

        pid_file = Path(record["outputs"]["instance_dir"]) / "run" / "tracker.pid"
        tracker_pid = int(pid_file.read_text())
        assert processes_mentioning(str(tmp_path))  # the tracker stand-in is running

        down = runner(tmp_path, "destroy", "demo")
        assert down.returncode == 0, down.stdout + down.stderr
        assert state(tmp_path, "demo")["state"] == "destroyed"
        assert not alive(tracker_pid)
        assert processes_mentioning(str(tmp_path)) == []
        assert not (tmp_path / "build" / "demo").exists()
        kept = tmp_path / "data" / "demo"
        assert (kept / "state.json").exists() and (kept / "events.jsonl").exists()
        assert list((kept / "runs").iterdir())
        assert events(tmp_path, "demo")[-1]["to"] == "destroyed"


def _wait_for_step(work: Path, name: str, step: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            run = state(work, name).get("run") or {}
        except (OSError, ValueError):
            run = {}
        if run.get("current_step") == step:
            return
        time.sleep(0.05)
    raise AssertionError(f"step {step} never started")


def test_sigint_during_opentofu_apply_then_resume(tmp_path: Path) -> None:
    with cleaned_up(tmp_path):
        runner(tmp_path, "create", "demo", "--set", "local.boot_delay=5", *tracker_ports())
        proc = spawn(tmp_path, "advance", "demo")
        _wait_for_step(tmp_path, "demo", "opentofu_apply")
        time.sleep(1.0)  # the engine is sleeping through the instance's "boot"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        record = state(tmp_path, "demo")
        assert record["state"] == "provisioning"
        assert record["run"]["interrupted"] is True
        assert record["run"]["current_step"] == "opentofu_apply"
        assert processes_mentioning("instance.sh") == [] or all(
            str(tmp_path) not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
            for pid in processes_mentioning("instance.sh")
        )
        assert "interrupted" in runner(tmp_path, "status", "demo").stdout
        resumed = runner(tmp_path, "resume", "demo")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert state(tmp_path, "demo")["state"] == "provisioned"
        assert runner(tmp_path, "destroy", "demo").returncode == 0


def test_sigint_during_an_ansible_step_then_resume(tmp_path: Path) -> None:
    with cleaned_up(tmp_path):
        runner(tmp_path, "create", "demo", *tracker_ports())
        assert runner(tmp_path, "up", "demo", "--to", "provisioned").returncode == 0
        proc = spawn(tmp_path, "advance", "demo")
        _wait_for_step(tmp_path, "demo", "prepare_instance")
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, _out + err
        record = state(tmp_path, "demo")
        assert record["state"] == "configuring", (record, _out, err)
        assert record["run"]["interrupted"] is True
        assert [
            p
            for p in processes_mentioning("ansible-playbook")
            if str(tmp_path) in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
        ] == []
        resumed = runner(tmp_path, "resume", "demo")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert state(tmp_path, "demo")["state"] == "configured"
        assert runner(tmp_path, "destroy", "demo").returncode == 0
