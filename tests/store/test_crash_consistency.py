"""Kill a process at random moments while it saves: the state survives.

A small fork server (a child Python that has imported and warmed up the store) forks
one worker per round; the worker saves in a tight loop and appends an event after
each save, and is killed with SIGKILL after a random delay. Forking from a warm
process makes a round take milliseconds, so well over a hundred kills fit in seconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.store.files import FileStore
from runner.store.locking import hold
from runner.store.record import record_problem
from tests.conftest import make_record
from tests.helpers import cli_env

KILLS = 150

FORK_SERVER = """
import json, os, sys
from runner import struct
from pathlib import Path
import portalocker  # noqa: F401 - imported before forking, so that workers start warm
from runner.store.files import FileStore
from runner.store.locking import hold
from runner.store.record import record_problem

store = FileStore(Path(sys.argv[1]))
mode = sys.argv[2]
record_problem(store.load("demo").to_json())  # builds the validator


def save_forever():
    with hold(store, "demo", "runner crash-test", 10):
        record = store.load("demo")
        while True:
            record.outputs["counter"] += 1
            record.outputs["pad"] = "x" * (record.serial % 300)  # sizes vary
            store.save(record)
            store.append_event("demo", {"serial": record.serial, "pad": "y" * 100})


def create_forever():
    base = struct.replace(store.load("demo"), outputs={})
    n = len(os.listdir(sys.argv[1] + "/data"))
    while True:
        n += 1
        name = f"env-{os.getpid()}-{n}"
        store.create(struct.replace(base, name=name))


for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            save_forever() if mode == "save" else create_forever()
        except BaseException as exc:  # a worker never returns into the server's loop
            print("worker failed:", repr(exc), file=sys.stderr, flush=True)
            code = 1
        os._exit(code)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(status, flush=True)
"""


class ForkServer:
    def __init__(self, workdir: Path, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER, str(workdir), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )

    def run_and_kill(self, after_s: float) -> int:
        """Fork a worker, SIGKILL it after ``after_s``; return its wait status."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        pid = int(self.proc.stdout.readline())
        time.sleep(after_s)
        os.kill(pid, signal.SIGKILL)
        return int(self.proc.stdout.readline())  # once the server has reaped it

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def fork_server(tmp_path: Path) -> Iterator[Any]:
    servers: list[ForkServer] = []

    def start(mode: str) -> ForkServer:
        servers.append(ForkServer(tmp_path, mode))
        return servers[-1]

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def test_killing_a_saving_process_never_corrupts_or_rolls_back_the_state(
    tmp_path: Path, fork_server: Any
) -> None:
    store = FileStore(tmp_path)
    store.create(make_record(outputs={"counter": 0}))
    server = fork_server("save")
    state = tmp_path / "data/demo/state.json"
    rng = random.Random(20261122)
    last_serial = 1
    started = time.monotonic()
    kills = 0
    # at least KILLS kills, and more (up to 4x) while the workers saved too little for
    # the kills to have cut saves short: a loaded machine makes each save slower
    while kills < KILLS or (last_serial <= KILLS and kills < 4 * KILLS):
        kills += 1
        status = server.run_and_kill(rng.uniform(0.002, 0.03))
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        raw = state.read_bytes()
        record = json.loads(raw)  # always a whole file: the old one or the new one
        assert record_problem(record) is None
        assert store.load("demo").to_json() == record
        assert record["serial"] >= last_serial  # never goes backwards
        assert record["outputs"]["counter"] == record["serial"] - 1  # one write, both
        last_serial = record["serial"]
        events = store.read_events("demo")
        assert all(isinstance(event, dict) for event in events)
        serials = [event["serial"] for event in events]
        assert serials == sorted(set(serials))  # in order, none twice
        assert not serials or serials[-1] <= last_serial
        assert store.read_events("demo", limit=5) == events[-5:]
    server.close()
    elapsed = time.monotonic() - started
    assert last_serial > KILLS, "the workers hardly saved: the test proved little"
    # torn event lines come only from kills, and every later event starts a new line
    lines = (tmp_path / "data/demo/events.jsonl").read_bytes().split(b"\n")
    torn = [line for line in lines[:-1] if line and not _is_json(line)]
    assert len(torn) <= kills
    # saves cut short leave temp files; the next holder of the lock removes them
    with hold(store, "demo", "runner check", 0):
        assert [p.name for p in state.parent.iterdir() if p.name.startswith(".")] == []
    assert elapsed < 60, elapsed


def test_killing_a_creating_process_leaves_only_whole_environments(
    tmp_path: Path, fork_server: Any
) -> None:
    store = FileStore(tmp_path)
    store.create(make_record(outputs={"counter": 0}))
    server = fork_server("create")
    rng = random.Random(7)
    kills = 0
    # at least 40 kills, and on until the workers created 40 environments (fewer per
    # kill on a busy machine): each kill lands somewhere in a create
    while kills < 40 or (len(store.list()) <= 40 and kills < 1000):
        server.run_and_kill(rng.uniform(0.001, 0.02))
        kills += 1
        entries = store.list()
        assert all(entry.error is None for entry in entries), entries
        for entry in entries:
            assert store.load(entry.name) == entry.record
    server.close()
    assert len(store.list()) > 40, f"{kills} kills"  # the workers did create environments


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True
