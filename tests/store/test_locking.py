"""The environment lock, with real processes: no mocked locks."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.errors import (
    EnvironmentNotFoundError,
    ExitCode,
    InvalidNameError,
    LockedError,
)
from runner.store.files import FileStore
from runner.store.locking import hold
from tests.conftest import make_record
from tests.helpers import cli_env

# Holds the lock of ENV until its stdin closes (or it is killed).
HOLDER = """
import sys
from pathlib import Path
from runner.store.files import FileStore
from runner.store.locking import hold

store = FileStore(Path(sys.argv[1]))
with hold(store, sys.argv[2], sys.argv[3], float(sys.argv[4])):
    print("locked", flush=True)
    sys.stdin.read()
print("released", flush=True)
"""

# Waits for a start file, then tries to create ENV; prints what happened.
CREATOR = """
import os, sys, time
from pathlib import Path
from runner.errors import EnvironmentExistsError
from runner.store.files import FileStore
from tests.conftest import make_record

store = FileStore(Path(sys.argv[1]))
record = make_record("race", inputs={"n": os.getpid()})
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
try:
    store.create(record)
    print("created", flush=True)
except EnvironmentExistsError as exc:
    print("exists: " + exc.message, flush=True)
"""

# Takes the lock, loads, increments a counter, saves: ROUNDS times.
INCREMENTER = """
import sys
from pathlib import Path
from runner.store.files import FileStore
from runner.store.locking import hold

store = FileStore(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    with hold(store, "demo", "runner advance", 30):
        record = store.load("demo")
        record.outputs["count"] = record.outputs.get("count", 0) + 1
        store.save(record)
"""


def python(script: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], text=True, env=cli_env(), **popen
    )


@pytest.fixture
def store(store: FileStore) -> FileStore:
    """The store with environments `demo` and `other`."""
    for name in ("demo", "other"):
        store.create(make_record(name))
    return store


class Holder:
    """A child process holding an environment's lock."""

    def __init__(self, workdir: Path, env: str, command: str = "runner advance") -> None:
        self.proc = python(
            HOLDER,
            str(workdir),
            env,
            command,
            "10",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "locked\n", line
        self.pid = self.proc.pid

    def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        assert self.proc.stdout.read() == "released\n"
        assert self.proc.wait(timeout=10) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.stop()


def hold_in_child(tmp_path: Path, holders: list[Holder], env: str = "demo") -> Holder:
    holder = Holder(tmp_path, env)
    holders.append(holder)
    return holder


def test_a_held_lock_fails_after_the_timeout_naming_the_holder(
    store: FileStore, tmp_path: Path, holders: list[Holder]
) -> None:
    holder = hold_in_child(tmp_path, holders)
    started = time.monotonic()
    with pytest.raises(LockedError) as caught, hold(store, "demo", "runner status", 0.3):
        pytest.fail("the lock was taken twice")
    waited = time.monotonic() - started
    assert 0.29 <= waited < 1.0, waited
    error = caught.value
    assert error.message.startswith(
        f"environment 'demo' is locked by pid {holder.pid} (runner advance, since 20"
    ), error.message
    assert error.hint == "wait for it to finish, or pass --lock-timeout SECONDS"
    assert error.exit_code == ExitCode.LOCKED and isinstance(error, TimeoutError)
    assert error.to_json()["pid"] == holder.pid


def test_timeout_zero_fails_at_once(
    store: FileStore, tmp_path: Path, holders: list[Holder]
) -> None:
    holder = hold_in_child(tmp_path, holders)
    started = time.monotonic()
    with pytest.raises(LockedError, match=f"pid {holder.pid}"), hold(store, "demo", "x", 0):
        pass
    assert time.monotonic() - started < 0.25


def test_waiting_costs_no_cpu(store: FileStore, tmp_path: Path, holders: list[Holder]) -> None:
    hold_in_child(tmp_path, holders)
    cpu = time.process_time()
    with pytest.raises(LockedError), hold(store, "demo", "runner advance", 1.0):
        pass
    assert time.process_time() - cpu < 0.2  # it slept between tries; it did not spin


def test_a_waiter_gets_the_lock_as_soon_as_it_is_released(
    store: FileStore, tmp_path: Path, holders: list[Holder]
) -> None:
    holder = hold_in_child(tmp_path, holders)
    assert holder.proc.stdin is not None
    timer = threading.Timer(0.5, holder.proc.stdin.close)  # the holder then finishes
    timer.start()
    started = time.monotonic()
    with hold(store, "demo", "runner advance", 10) as lease:
        waited = time.monotonic() - started
        assert lease.holder.pid == os.getpid()
        assert lease.previous is None  # the holder released it
    timer.join()
    assert 0.4 < waited < 1.5, waited
    assert holder.proc.wait(timeout=10) == 0


# In a fresh interpreter (pytest-timeout owns SIGALRM in this one, so here the wait
# polls): waits for the lock twice, printing the SIGALRM handler and timer after each.
ALARM_CHECK = """
import signal, sys
from pathlib import Path
from runner.errors import LockedError
from runner.store.files import FileStore
from runner.store.locking import hold

def state():
    return signal.getsignal(signal.SIGALRM) == signal.SIG_DFL, signal.getitimer(signal.ITIMER_REAL)

store = FileStore(Path(sys.argv[1]))
try:
    with hold(store, "demo", "runner advance", 0.2):
        print("taken", flush=True)
except LockedError as exc:
    print("timed out:", exc.message, flush=True)
print("after timeout:", state(), flush=True)
sys.stdin.readline()  # the test releases the holder, then says go
with hold(store, "demo", "runner advance", 10):
    print("taken; inside:", state(), flush=True)
print("after release:", state(), flush=True)
"""


def test_the_kernel_wait_leaves_no_alarm_behind(
    store: FileStore, tmp_path: Path, holders: list[Holder]
) -> None:
    """The main thread waits in the kernel with SIGALRM timing it: afterwards the
    handler and the timer are as they were, whether the wait timed out or not."""
    holder = hold_in_child(tmp_path, holders)
    child = python(ALARM_CHECK, str(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline().startswith(
        f"timed out: environment 'demo' is locked by pid {holder.pid}"
    )
    assert child.stdout.readline() == "after timeout: (True, (0.0, 0.0))\n"
    child.stdin.write("go\n")  # it waits again, in the kernel; then the holder ends
    child.stdin.close()
    time.sleep(0.3)
    assert holder.proc.stdin is not None
    holder.proc.stdin.close()
    assert holder.proc.wait(timeout=10) == 0
    out = child.stdout.read()
    assert child.wait(timeout=20) == 0
    assert out == "taken; inside: (True, (0.0, 0.0))\nafter release: (True, (0.0, 0.0))\n"


def test_a_thread_waits_too_and_times_out_naming_the_holder(
    store: FileStore, tmp_path: Path, holders: list[Holder]
) -> None:
    """Outside the main thread (no SIGALRM there) the wait polls; same results."""
    holder = hold_in_child(tmp_path, holders)
    outcome: list[BaseException | str] = []

    def waiter() -> None:
        try:
            with hold(store, "demo", "runner advance", 0.3):
                outcome.append("taken")
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    thread.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], LockedError), outcome
    assert f"pid {holder.pid}" in outcome[0].message
    assert holder.proc.stdin is not None
    holder.proc.stdin.close()
    assert holder.proc.wait(timeout=10) == 0
    thread = threading.Thread(target=waiter)
    thread.start()
    thread.join(timeout=10)
    assert outcome[1:] == ["taken"]


def test_a_killed_holder_never_blocks_and_is_named_in_a_warning(
    store: FileStore, tmp_path: Path, holders: list[Holder], caplog: pytest.LogCaptureFixture
) -> None:
    holder = hold_in_child(tmp_path, holders)
    holder.kill()
    stale = json.loads((tmp_path / "data/demo/state.lock").read_text())
    assert stale["pid"] == holder.pid  # the dead holder's record is still in the file
    assert store.lock_holder("demo") is None  # but nobody holds the lock
    left = store.last_holder("demo")
    assert left is not None and left.pid == holder.pid
    started = time.monotonic()
    warnings = caplog.at_level(logging.WARNING, logger="runner")
    with warnings, hold(store, "demo", "runner x", 0) as lease:
        assert time.monotonic() - started < 0.25
        assert lease.previous is not None and lease.previous.pid == holder.pid
    assert (
        f"previous holder pid {holder.pid} (runner advance) ended without releasing; taking over"
        in caplog.text
    )


def test_lock_holder_names_the_holder_and_none_after_release(
    store: FileStore, tmp_path: Path, holders: list[Holder]
) -> None:
    assert store.lock_holder("demo") is None
    holder = hold_in_child(tmp_path, holders)
    info = store.lock_holder("demo")
    assert info is not None
    assert (info.pid, info.host, info.command) == (
        holder.pid,
        socket.gethostname(),
        "runner advance",
    )
    assert store.lock_holder("other") is None
    holder.release()
    assert store.lock_holder("demo") is None
    assert (tmp_path / "data/demo/state.lock").read_bytes() == b""


def test_our_own_lock_is_recorded_and_cleared(store: FileStore, tmp_path: Path) -> None:
    path = tmp_path / "data/demo/state.lock"
    with hold(store, "demo", "runner up", 0) as lease:
        info = lease.holder
        assert info.pid == os.getpid() and info.command == "runner up"
        assert json.loads(path.read_text()) == info.to_json()
        assert store.lock_holder("demo") == info
    assert path.read_bytes() == b"" and store.lock_holder("demo") is None
    assert store.last_holder("demo") is None
    with pytest.raises(RuntimeError), hold(store, "demo", "runner up", 0):
        raise RuntimeError("a failing command")
    assert path.read_bytes() == b""
    with hold(store, "demo", "runner up", 0):  # released despite the error
        pass


def test_different_environments_never_block_each_other(
    store: FileStore, tmp_path: Path, holders: list[Holder]
) -> None:
    hold_in_child(tmp_path, holders, "demo")
    hold_in_child(tmp_path, holders, "other")  # a second process holds another one at the same time
    store.create(make_record("third"))
    started = time.monotonic()
    with hold(store, "third", "runner advance", 0):
        pass
    assert time.monotonic() - started < 0.25


def test_garbage_in_the_lock_file_breaks_nothing(
    store: FileStore, tmp_path: Path, holders: list[Holder], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "data/demo/state.lock"
    for garbage in (b"\x00\xff{not json", b'{"pid": "x"}', b"[]", b'{"pid": 1'):
        path.write_bytes(garbage)
        assert store.lock_holder("demo") is None
        warnings = caplog.at_level(logging.WARNING, logger="runner")
        with warnings, hold(store, "demo", "runner advance", 0) as lease:
            assert json.loads(path.read_text()) == lease.holder.to_json()
        assert path.read_bytes() == b""
    assert "taking over" in caplog.text
    # a holder whose record is garbage is still excluded, and the message says so
    holder = hold_in_child(tmp_path, holders)
    path.write_bytes(b"garbage")
    with pytest.raises(LockedError, match="does not say which"), hold(store, "demo", "x", 0):
        pass
    holder.release()


def test_a_missing_lock_file_is_created_0600(store: FileStore, tmp_path: Path) -> None:
    path = tmp_path / "data/demo/state.lock"
    path.unlink()
    assert store.lock_holder("demo") is None
    with hold(store, "demo", "runner advance", 0):
        assert path.stat().st_mode & 0o777 == 0o600


def test_a_holder_on_another_host_is_reported(
    store: FileStore, tmp_path: Path, holders: list[Holder]
) -> None:
    # Whether the lock is held is the lock's to say, never the record's: a record that
    # names another host while nobody holds the lock is what a holder left behind.
    record = {"pid": 1234, "host": "elsewhere", "command": "runner up", "started_at": "t"}
    path = tmp_path / "data/demo/state.lock"
    path.write_text(json.dumps(record))
    assert store.lock_holder("demo") is None
    left = store.last_holder("demo")
    assert left is not None and (left.pid, left.host) == (1234, "elsewhere")
    # held (here by a child, as by a runner on the other host of a shared data folder):
    # the record names the holder, and the message says where it runs
    holder = hold_in_child(tmp_path, holders)
    path.write_text(json.dumps(record))
    info = store.lock_holder("demo")
    assert info is not None and info.host == "elsewhere"
    refused = pytest.raises(LockedError, match="locked by pid 1234 on host elsewhere")
    with refused, hold(store, "demo", "runner advance", 0):
        pass
    holder.release()


def test_locking_checks_the_environment(store: FileStore) -> None:
    missing = pytest.raises(EnvironmentNotFoundError, match="runner list")
    with missing, hold(store, "ghost", "runner advance", 0):
        pass
    with pytest.raises(InvalidNameError), hold(store, "../demo", "runner advance", 0):
        pass


def test_the_lock_serializes_read_modify_write(store: FileStore, tmp_path: Path) -> None:
    procs = [python(INCREMENTER, str(tmp_path), "25") for _ in range(4)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    record = store.load("demo")
    assert record.outputs["count"] == 100  # no update lost, no conflict raised
    assert record.serial == 101


def test_eight_racing_creates_make_exactly_one_environment(tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [python(CREATOR, str(tmp_path), str(go), stdout=subprocess.PIPE) for _ in range(8)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    go.touch()
    results = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert results.count("created") == 1, results
    state = "exists: environment 'race' already exists (state: created)"
    assert results.count(state) == 7, results
    store = FileStore(tmp_path)
    winner = procs[results.index("created")].pid
    assert store.load("race").inputs == {"n": winner}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".staging", "race"]
    assert list((tmp_path / "data/.staging").iterdir()) == []  # the losers cleaned up
    assert sorted(p.name for p in (tmp_path / "data/race").iterdir()) == [
        "events.jsonl",
        "runs",
        "snapshots",
        "state.json",
        "state.lock",
        "traces",
    ]
