"""Retry with backoff and jitter: the pauses between attempts, with a seeded random and
a fake clock, and a real retried `shell` step through the CLI."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest

from runner.machine.loader import load_machine
from runner.machine.model import Retry
from runner.run.phase import PhaseRunner
from runner.run.registry import default_registry
from runner.run.session import Session
from runner.store.files import FileStore
from runner.store.record import MachineRef, Record
from tests.helpers import build_tree, read_state, run_cli

MACHINE = """\
version: 1
name: backoff
initial: a
states:
  a: {}
  b_running: {}
  b: {}
  b_failed: {}
phases:
  - name: go
    from: a
    via: b_running
    to: b
    failed: b_failed
    steps:
      - name: flaky
        uses: shell
        with: {argv: [sh, -c, "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; test $n -ge 5"]}
        retry: {attempts: 5, delay: 1s, backoff: 2, max_delay: 5s, jitter: 0.5}
"""


def test_attempts_and_delay_keep_their_meaning() -> None:
    """`{attempts, delay}` alone: the same pause before every new attempt."""
    retry = Retry(attempts=4, delay_s=2.0)
    assert [retry.delay(n, lambda: pytest.fail("no jitter, no draw")) for n in (1, 2, 3)] == [
        2.0,
        2.0,
        2.0,
    ]


def test_backoff_grows_the_pause_up_to_max_delay() -> None:
    retry = Retry(attempts=6, delay_s=1.0, backoff=2.0, max_delay_s=5.0)
    assert [retry.delay(n, random.random) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_takes_a_seeded_random_part_off_each_pause() -> None:
    retry = Retry(attempts=6, delay_s=1.0, backoff=2.0, max_delay_s=5.0, jitter=0.5)
    seeded = random.Random(42)
    pauses = [retry.delay(n, seeded.random) for n in range(1, 6)]
    draws = random.Random(42)
    expected = [base * (1 - 0.5 * draws.random()) for base in (1.0, 2.0, 4.0, 5.0, 5.0)]
    assert pauses == pytest.approx(expected)
    # each one between half the pause and the whole pause
    for pause, base in zip(pauses, (1.0, 2.0, 4.0, 5.0, 5.0), strict=True):
        assert base / 2 <= pause <= base


def test_full_jitter_is_anywhere_from_nothing_to_the_whole_pause(tmp_path: Path) -> None:
    text = MACHINE.replace("jitter: 0.5", "jitter: full")
    build_tree(tmp_path, {"machine.yaml": text})
    retry = load_machine(tmp_path / "machine.yaml").phases[0].steps[0].retry
    assert (retry.backoff, retry.max_delay_s, retry.jitter) == (2.0, 5.0, 1.0)
    assert retry.delay(3, lambda: 0.0) == 4.0
    assert retry.delay(3, lambda: 0.75) == pytest.approx(1.0)


def test_the_phase_waits_the_backoff_sequence_on_its_clock(work: Path, store: FileStore) -> None:
    """The engine sleeps each pause on the clock it is given (a fake one here: the test
    takes no time) and logs it; the step succeeds on its fifth attempt."""
    build_tree(work, {"machine.yaml": MACHINE})
    machine = load_machine(work / "machine.yaml")
    ref = MachineRef(machine.name, machine.digest)
    store.create(Record.new("x", machine.initial, ref, {}, data_dir=store.data_dir("x")))
    session = Session(store, machine, store.load("x"), "runner test", work)
    slept: list[float] = []
    seeded = random.Random(7)
    draws = random.Random(7)
    runner = PhaseRunner(session, default_registry(), sleep=slept.append, draw=seeded.random)
    result = runner.start(machine.phases[0])
    assert result.status == "succeeded"
    assert result.steps[0].attempts == 5
    expected = [base * (1 - 0.5 * draws.random()) for base in (1.0, 2.0, 4.0, 5.0)]
    assert slept == pytest.approx(expected)
    log = (work / result.log).read_text() if result.log else ""
    said = [float(x) for x in re.findall(r"retrying in ([0-9.]+)s", log)]
    assert said == pytest.approx(expected, rel=0.01)


def test_a_retried_shell_step_really_waits_its_backoff(tmp_path: Path) -> None:
    """End to end: attempts 3, delay 200ms, backoff 3: pauses of 0.2s then 0.6s."""
    text = MACHINE.replace(
        "retry: {attempts: 5, delay: 1s, backoff: 2, max_delay: 5s, jitter: 0.5}",
        "retry: {attempts: 3, delay: 200ms, backoff: 3}",
    ).replace("test $n -ge 5", "test $n -ge 3")
    build_tree(tmp_path, {"machine.yaml": text})
    assert run_cli("create", "x", cwd=tmp_path).returncode == 0
    started = time.monotonic()
    proc = run_cli("--output", "json", "advance", "x", cwd=tmp_path)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["phases"][0]["steps"][0]["attempts"] == 3
    assert took >= 0.8
    (log,) = (tmp_path / "data/x/runs").glob("*-go.log")
    assert re.findall(r"retrying in ([0-9.]+)s", log.read_text()) == ["0.2", "0.6"]
    assert read_state(tmp_path, "x")["state"] == "b"
