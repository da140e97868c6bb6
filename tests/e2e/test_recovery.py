"""End to end, the original deployer's worst case: the local lifecycle fails in
`release` because of a wrong input; `runner inputs --set` fixes it and `runner resume`
finishes the phase, then the lifecycle goes on. `history` shows the failure, the
inputs change and the recovery; nothing was destroyed or built twice."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import events, runner, state, tracker_ports
from tests.e2e.test_failures import assert_failed, destroy_cleans_up, failed, ok, work

__all__ = ["work"]  # the fixture, shared with test_failures


def test_a_wrong_input_fixed_with_inputs_then_resume_destroys_nothing(work: Path) -> None:
    ok(work, "create", "demo", "--set", "tracker.log_level=verbose", *tracker_ports())
    failed(work, "up", "demo")
    assert_failed(work, "release_failed", "deploy_tracker_config",
                  "Fix the configuration value named above",
                  "invalid tracker log level 'verbose'")  # fmt: skip
    provisioned = state(work, "demo")["outputs"]
    instance = work / "build/demo"
    assert instance.is_dir()
    # the fix: one input changed; the environment stays where it is
    said = ok(work, "inputs", "demo", "--set", "tracker.log_level=info")
    assert "changed tracker.log_level" in said and "runner resume demo" in said
    assert state(work, "demo")["state"] == "release_failed"
    ok(work, "resume", "demo")
    assert state(work, "demo")["state"] == "released"
    ok(work, "up", "demo")
    record = state(work, "demo")
    assert record["state"] == "running" and record["inputs"]["tracker"]["log_level"] == "info"
    assert record["outputs"]["instance_ip"] == provisioned["instance_ip"]
    log = events(work, "demo")
    moves = [(e["from"], e["to"]) for e in log if e["type"] == "transition"]
    assert ("releasing", "release_failed") in moves
    assert ("release_failed", "releasing") in moves and ("releasing", "released") in moves
    # nothing destroyed, nothing provisioned twice
    assert [m for m in moves if m[1] == "destroying"] == []
    assert [m for m in moves if m[1] == "provisioning"] == [("created", "provisioning")]
    kinds = [e["type"] for e in log]
    failure = max(i for i, e in enumerate(log) if e.get("to") == "release_failed")
    change = kinds.index("inputs_changed")
    recovery = max(i for i, e in enumerate(log) if e.get("to") == "released")
    assert failure < change < recovery
    assert log[change]["keys"] == ["tracker.log_level"]
    assert {e.get("lineage") for e in log} == {record["lineage"]}
    history = runner(work, "history", "demo")
    assert history.returncode == 0
    text = history.stdout
    assert "releasing → release_failed" in text and "changed tracker.log_level" in text
    assert "release_failed → releasing" in text and "starting → running" in text
    destroy_cleans_up(work)
