"""`status` says when the environment entered its state: what the state's description
claims ("healthy") was true then, not necessarily now."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import build_tree, read_events, run_cli

MACHINE = """\
version: 1
name: entered
initial: new
states:
  new: {description: Just made}
  going: {}
  up: {description: Service running and healthy}
  go_failed: {}
phases:
  - name: go
    from: new
    via: going
    to: up
    failed: go_failed
    steps:
      - {name: one, uses: shell, with: {argv: ["true"]}}
      - {name: two, uses: shell, with: {argv: ["true"]}}
"""


def test_status_says_when_the_state_was_entered(tmp_path: Path) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    created = read_events(tmp_path)[0]["timestamp"]
    text = run_cli("status", "demo", cwd=tmp_path).stdout
    assert f"state:       new - Just made (at {created})\n" in text
    assert run_cli("advance", "demo", cwd=tmp_path).returncode == 0
    events = read_events(tmp_path)
    into_up = [e for e in events if e["type"] == "transition" and e["to"] == "up"]
    assert len(into_up) == 1
    entered = into_up[0]["timestamp"]
    # events after it that do not move the environment do not change the answer
    with (tmp_path / "data/demo/events.jsonl").open("a") as log:
        log.write(json.dumps({**events[-1], "type": "step", "timestamp": "2099-01-01T00:00:00Z"}))
        log.write("\n")
    text = run_cli("status", "demo", cwd=tmp_path).stdout
    assert f"state:       up - Service running and healthy (at {entered})\n" in text
    document = json.loads(run_cli("--output", "json", "status", "demo", cwd=tmp_path).stdout)
    assert document["entered_at"] == entered
    assert document["description"] == "Service running and healthy"  # JSON: unchanged
    assert document["entered_at"] != document["created_at"]


def test_without_an_event_log_it_is_the_last_change(tmp_path: Path) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    (tmp_path / "data/demo/events.jsonl").unlink()
    document = json.loads(run_cli("--output", "json", "status", "demo", cwd=tmp_path).stdout)
    assert document["entered_at"] == document["updated_at"]
