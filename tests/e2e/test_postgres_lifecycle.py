"""End to end: the README's local lifecycle with its state in PostgreSQL (``--state``),
on the tests' server: create, up, status, list, history, destroy, all through the
database; nothing of the environment's state is left in ``data/``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import cleaned_up, runner, tracker_ports

HAPPY = ["created", "provisioning", "provisioned", "configuring", "configured", "releasing",
         "released", "starting", "running"]  # fmt: skip


@pytest.fixture()
def work(tmp_path: Path) -> Iterator[Path]:
    with cleaned_up(tmp_path):  # kills the tracker stand-in if the test fails half way
        yield tmp_path


def ok(work: Path, url: str, *args: str) -> str:
    proc = runner(work, "--state", url, *args)
    assert proc.returncode == 0, f"runner {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_the_local_lifecycle_with_state_in_postgresql(work: Path, pg_url: str) -> None:
    ok(work, pg_url, "create", "demo", *tracker_ports())
    ok(work, pg_url, "up", "demo")
    status = json.loads(ok(work, pg_url, "--output", "json", "status", "demo"))
    assert (status["state"], status["failure"]) == ("running", None)
    listing = json.loads(ok(work, pg_url, "--output", "json", "list"))
    assert [(e["environment"], e["state"]) for e in listing["environments"]] == [
        ("demo", "running")
    ]
    history = json.loads(ok(work, pg_url, "--output", "json", "history", "demo"))["events"]
    assert [e["to"] for e in history if e["type"] in ("created", "transition")] == HAPPY
    ok(work, pg_url, "destroy", "demo")
    assert "destroyed" in ok(work, pg_url, "status", "demo")
    assert not (work / "data" / "demo" / "state.json").exists()
    # the run logs of every phase are in the database, readable by reference
    import psycopg

    with psycopg.connect(pg_url) as conn:
        runs = conn.execute(
            "SELECT count(*) FROM runner.artifacts WHERE name = 'demo' AND kind = 'run'"
        ).fetchone()
    assert runs is not None and runs[0] >= 5
