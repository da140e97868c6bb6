"""End to end: the shipped machine's whole lifecycle on provider `local` with a local
connection. The `runner` CLI runs as a subprocess in a temporary working directory with
the embedded OpenTofu-compatible engine (`runner-tofu`, what a fresh machine has), real
`ansible-playbook`, and the tracker stand-in serving its health check on free ports."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from itertools import pairwise
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

HAPPY = ["created", "provisioning", "provisioned", "configuring", "configured", "releasing",
         "released", "starting", "running"]  # fmt: skip


@pytest.fixture()
def work(tmp_path: Path) -> Iterator[Path]:
    with cleaned_up(tmp_path):  # kills the tracker stand-in if the test fails half way
        yield tmp_path


def ok(work: Path, *args: str) -> str:
    proc = runner(work, *args)
    assert proc.returncode == 0, f"runner {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_whole_local_lifecycle(work: Path) -> None:
    started = time.monotonic()
    ok(work, "create", "demo", *tracker_ports())
    ok(work, "up", "demo")
    up_s = time.monotonic() - started
    record = state(work, "demo")
    assert record["state"] == "running"
    assert record["failure"] is None
    assert record["outputs"]["instance_ip"] == "127.0.0.1"
    api_port = record["inputs"]["tracker"]["api_port"]

    # the tracker answers its health check
    url = f"http://127.0.0.1:{api_port}/api/health_check"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert "Ok" in response.read().decode()

    # status, text and JSON
    status = ok(work, "status", "demo")
    assert "running - Tracker running, healthy when it started" in status
    assert "runner destroy demo" in status
    data = json.loads(ok(work, "--output", "json", "status", "demo"))
    assert (data["environment"], data["state"], data["kind"]) == ("demo", "running", "stable")
    assert data["failure"] is None and data["interrupted"] is False
    assert data["allowed_phases"] == ["restart", "redeploy", "destroy"]

    # list, text and JSON
    assert ["demo", "running"] in [line.split()[:2] for line in ok(work, "list").splitlines()]
    listing = json.loads(ok(work, "--output", "json", "list"))
    assert [(e["environment"], e["state"]) for e in listing["environments"]] == [
        ("demo", "running")
    ]

    # history: every transition of the happy path, in order, and every step's result
    history = json.loads(ok(work, "--output", "json", "history", "demo"))["events"]
    visited = [e["to"] for e in history if e["type"] in ("created", "transition")]
    assert visited == HAPPY
    steps = {(e["phase"], e["step"]): e["status"] for e in history if e["type"] == "step"}
    assert steps[("provision", "opentofu_apply")] == "done"
    assert steps[("provision", "wait_ssh_connectivity")] == "skipped"  # local connection
    assert steps[("configure", "prepare_instance")] == "done"
    assert steps[("run", "health_check")] == "done"
    text = ok(work, "history", "demo")
    positions = [text.index(f"{a} → {b}") for a, b in pairwise(HAPPY)]
    assert positions == sorted(positions)

    # the graph marks the current state
    mermaid = ok(work, "graph", "--env", "demo")
    assert "class running current" in mermaid
    dot = ok(work, "graph", "--format", "dot", "--env", "demo")
    assert "(current)" in dot

    # the tracker's pid, read before destroy
    instance = Path(record["outputs"]["instance_dir"])
    assert instance.is_relative_to(work)
    tracker_pid = int((instance / "run" / "tracker.pid").read_text())
    assert alive(tracker_pid)
    assert tracker_pid in processes_mentioning(f"{work}{os.sep}")

    started = time.monotonic()
    ok(work, "destroy", "demo", "--yes")
    destroy_s = time.monotonic() - started
    assert state(work, "demo")["state"] == "destroyed"
    assert events(work, "demo")[-1]["to"] == "destroyed"
    assert not alive(tracker_pid)
    assert processes_mentioning(f"{work}{os.sep}") == []
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
    assert not (work / "build" / "demo").exists()
    kept = work / "data" / "demo"
    assert (kept / "state.json").is_file() and (kept / "events.jsonl").is_file()
    assert len(list((kept / "runs").glob("*.log"))) >= 5  # one per phase run
    assert "destroyed" in ok(work, "status", "demo")
    print(f"local lifecycle: create+up {up_s:.1f}s, destroy {destroy_s:.1f}s")
