"""The storage contract: one suite every backend must pass.

Each test takes the ``backend`` fixture, parametrized over :data:`BACKENDS`; adding a
backend means adding one fixture builder there. What crosses processes (a create race,
lock exclusivity, a holder killed with SIGKILL) runs real second processes
(``tests/store/contract_worker.py``) against the same backend.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.errors import (
    ConflictError,
    EnvironmentExistsError,
    EnvironmentNotFoundError,
    LockedError,
    StateError,
    StateFileError,
)
from runner.store.contract import LockInfo, ProcessGroup, Store
from runner.store.locking import hold
from runner.store.record import MachineRef, Record, now_iso
from tests.helpers import ROOT, cli_env

MACHINE = MachineRef("contract", "sha256:" + "0" * 64)


@dataclass
class Backend:
    """One backend under test, and the backend-specific ways to damage it."""

    open: Callable[[], Store]
    """A new store object on the same data (as another command would open it)."""
    spec: str
    """What the worker process needs to open the same store."""
    tear_last_event: Callable[[str], None]
    """Leave the environment's last event half written (as a crash would)."""
    put_document: Callable[[str, str], None]
    """Replace one environment's stored record with this text, as a hand edit would."""
    plant_holder: Callable[[str, LockInfo], None]
    """Leave a holder record as a holder killed with SIGKILL would (lock not held)."""
    keeping: Callable[[int], Store]
    """A new store object on the same data keeping that many snapshots."""


def file_backend(tmp_path: Path) -> Backend:
    from runner.store.files import FileStore

    def tear(name: str) -> None:
        with open(tmp_path / "data" / name / "events.jsonl", "ab") as log:
            log.write(b'{"type": "transition", "serial": 99, "ti')

    def put_document(name: str, text: str) -> None:
        (tmp_path / "data" / name / "state.json").write_text(text)

    def plant(name: str, info: LockInfo) -> None:
        (tmp_path / "data" / name / "state.lock").write_text(json.dumps(info.to_json()))

    return Backend(
        lambda: FileStore(tmp_path),
        f"file:{tmp_path}",
        tear,
        put_document,
        plant,
        lambda keep: FileStore(tmp_path, keep_snapshots=keep),
    )


def postgres_backend(tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    """A new database of the tests' PostgreSQL server (the ``pg_url`` fixture)."""
    import psycopg

    from runner.store.postgres import PostgresStore

    url: str = request.getfixturevalue("pg_url")

    def sql(statement: str, *args: object) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement, args)

    def tear(name: str) -> None:
        sql(
            "INSERT INTO runner.events (name, body) VALUES (%s, %s)",
            name,
            '{"type": "transition", "serial": 99, "ti',
        )

    def put_document(name: str, text: str) -> None:
        sql("UPDATE runner.environments SET document = %s WHERE name = %s", text, name)

    def plant(name: str, info: LockInfo) -> None:
        sql(
            "INSERT INTO runner.lock_holders (name, backend_pid, pid, host, command, "
            "started_at, processes, process_ids) VALUES (%s, 0, %s, %s, %s, %s, %s, %s) ON "
            "CONFLICT (name) DO UPDATE SET backend_pid = 0, pid = EXCLUDED.pid, host = "
            "EXCLUDED.host, command = EXCLUDED.command, started_at = EXCLUDED.started_at, "
            "processes = EXCLUDED.processes, process_ids = EXCLUDED.process_ids",
            name,
            info.pid,
            info.host,
            info.command,
            info.started_at,
            [int(g) for g in info.processes],
            [g.to_text() for g in info.processes if isinstance(g, ProcessGroup) and g.identified],
        )

    return Backend(
        lambda: PostgresStore(url),
        url,
        tear,
        put_document,
        plant,
        lambda keep: PostgresStore(url, keep_snapshots=keep),
    )


def postgres_driver_backend(tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    """The PostgreSQL backend reading through psycopg too (``RUNNER_PG_LIBPQ=off``), as
    it does where no libpq can be loaded: both readers must give the same answers."""
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("RUNNER_PG_LIBPQ", "off")
    return postgres_backend(tmp_path, request)


#: Every backend the contract runs against: (id, builder from a temp folder and the test's
#: request, for the fixtures a backend needs). "postgres" reads over libpq itself (see
#: runner.store.libpq), "postgres-psycopg" through the driver.
BACKENDS: list[tuple[str, Callable[[Path, pytest.FixtureRequest], Backend]]] = [
    ("file", lambda tmp_path, _: file_backend(tmp_path)),
    ("postgres", postgres_backend),
    ("postgres-psycopg", postgres_driver_backend),
]


@pytest.fixture(params=[builder for _, builder in BACKENDS], ids=[i for i, _ in BACKENDS])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    builder: Callable[[Path, pytest.FixtureRequest], Backend] = request.param
    return builder(tmp_path, request)


def new_record(name: str = "demo", state: str = "created") -> Record:
    return Record.new(name, state, MACHINE, {"provider": "local"}, data_dir=f"data/{name}")


def me(command: str = "test") -> LockInfo:
    return LockInfo(os.getpid(), os.uname().nodename, command, now_iso())


def worker(backend: Backend, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.contract_worker", backend.spec, *args],
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def holder(backend: Backend) -> Iterator[Callable[[str, float], subprocess.Popen[str]]]:
    """Start a worker process that holds an environment's lock (killed at the end)."""
    started: list[subprocess.Popen[str]] = []

    def start(name: str, seconds: float) -> subprocess.Popen[str]:
        proc = worker(backend, "hold", name, str(seconds))
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# --- records -----------------------------------------------------------------------------


def test_create_then_load_gives_an_equal_independent_record(backend: Backend) -> None:
    store = backend.open()
    record = new_record()
    store.create(record)
    assert store.exists("demo")
    loaded = backend.open().load("demo")
    assert loaded == record and loaded is not record
    loaded.outputs["x"] = 1
    assert "x" not in backend.open().load("demo").outputs


def test_create_refuses_a_name_that_exists(backend: Backend) -> None:
    store = backend.open()
    store.create(new_record())
    with pytest.raises(EnvironmentExistsError):
        backend.open().create(new_record())


def test_save_is_a_compare_and_swap_on_the_serial(backend: Backend) -> None:
    backend.open().create(new_record())
    first, second = backend.open(), backend.open()
    mine, theirs = first.load("demo"), second.load("demo")
    mine.state = "provisioning"
    first.save(mine)
    assert mine.serial == 2
    theirs.state = "destroying"
    with pytest.raises(ConflictError):
        second.save(theirs)
    assert theirs.serial == 1  # a refused save changes nothing, not even the record given
    stored = backend.open().load("demo")
    assert (stored.serial, stored.state) == (2, "provisioning")
    assert stored.updated_at == mine.updated_at
    infos = backend.open().list_snapshots("demo")  # and the refused version is not kept
    assert [(i.serial, i.state) for i in infos] == [(1, "created"), (2, "provisioning")]


def test_serials_grow_by_one_per_save(backend: Backend) -> None:
    store = backend.open()
    record = new_record()
    store.create(record)
    for expected in range(2, 12):
        record.outputs["n"] = expected
        store.save(record)
        assert record.serial == expected
    assert backend.open().load("demo").outputs == {"n": 11}


def test_a_save_told_a_higher_serial_writes_it_and_keeps_the_version(backend: Backend) -> None:
    """What a restore after an old copy was put back needs: a serial above every one
    the environment had, still compared with the stored one (and never lower)."""
    store = backend.open()
    record = new_record()
    store.create(record)
    record.outputs["n"] = 1
    store.save(record, serial=9)
    assert record.serial == 9
    assert backend.open().load("demo").serial == 9
    assert backend.open().load_snapshot("demo", 9).outputs == {"n": 1}
    stale = new_record()  # serial 1, as stored before the save above
    with pytest.raises(ConflictError):
        backend.open().save(stale, serial=20)
    record.outputs["n"] = 2
    store.save(record, serial=3)  # not above serial + 1: serial + 1
    assert backend.open().load("demo").serial == 10


def test_create_race_across_processes_has_one_winner(backend: Backend) -> None:
    procs = [worker(backend, "create", "race") for _ in range(8)]
    answers = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert answers == ["created"] + ["exists"] * 7
    assert backend.open().load("race").serial == 1


def test_load_of_an_unknown_name_says_so(backend: Backend) -> None:
    with pytest.raises(EnvironmentNotFoundError):
        backend.open().load("nobody")


def test_listing_survives_a_broken_entry(backend: Backend) -> None:
    store = backend.open()
    for name in ("a", "b", "c"):
        store.create(new_record(name))
    backend.put_document("b", '{"format": 2, "name": ')
    entries = backend.open().list()
    assert [e.name for e in entries] == ["a", "b", "c"]
    assert [e.record.name if e.record else None for e in entries] == ["a", None, "c"]
    assert entries[1].error and not entries[0].error
    with pytest.raises(StateFileError):
        backend.open().load("b")


@pytest.mark.parametrize("depth", [200_000, 990])
def test_a_record_nested_too_deeply_is_unreadable_not_a_crash(
    backend: Backend, depth: int
) -> None:
    """Deeper than the JSON parser follows (200,000), or parsed but deeper than the
    record's checks can walk (990, inside the outputs): one unreadable entry, and a
    StateFileError for that record, as for any damaged one."""
    store = backend.open()
    for name in ("a", "b"):
        store.create(new_record(name))
    if depth > 1000:
        text = "[" * depth + "]" * depth
    else:
        document = new_record("b").to_json()
        document["outputs"] = {"deep": "DEEP"}
        text = json.dumps(document).replace('"DEEP"', "[" * depth + "]" * depth)
    backend.put_document("b", text)
    entries = backend.open().list()
    assert [e.name for e in entries] == ["a", "b"]
    assert entries[0].record is not None and entries[1].record is None
    assert entries[1].error and "nested too deeply" in entries[1].error
    with pytest.raises(StateFileError, match="nested too deeply"):
        backend.open().load("b")


def test_delete_removes_everything_and_frees_the_name(backend: Backend) -> None:
    store = backend.open()
    store.create(new_record())
    store.append_event("demo", {"type": "created", "serial": 1})
    ref = store.write_artifact("demo", "trace", "provision", "boom\n")
    store.delete("demo")
    other = backend.open()
    assert not other.exists("demo")
    assert [e.name for e in other.list()] == []
    with pytest.raises(EnvironmentNotFoundError):
        other.load("demo")
    with pytest.raises(EnvironmentNotFoundError):
        other.read_events("demo")
    with pytest.raises((EnvironmentNotFoundError, StateFileError)):
        other.read_artifact("demo", ref)
    other.create(new_record())
    assert other.read_events("demo") == []
    assert other.list_artifacts("demo", "trace") == []


# --- snapshots ---------------------------------------------------------------------------


def saved_versions(store: Store, count: int) -> list[Record]:
    """Create ``demo`` and save it ``count`` times, each version different; every
    version as it was stored (serial 1 first)."""
    record = new_record()
    store.create(record)
    versions = [record.copy()]
    for n in range(count):
        record.outputs["n"] = n
        record.state = f"state_{n}"
        record.change = f"step {n}"
        store.save(record)
        versions.append(record.copy())
    return versions


def test_create_keeps_the_first_version_as_a_snapshot(backend: Backend) -> None:
    store = backend.open()
    record = new_record()
    store.create(record)
    [only] = backend.open().list_snapshots("demo")
    assert (only.serial, only.state, only.change) == (1, "created", "created")
    assert only.lineage == record.lineage and only.saved_at == record.updated_at
    assert backend.open().load_snapshot("demo", 1) == record


def test_every_save_keeps_the_version_it_wrote(backend: Backend) -> None:
    versions = saved_versions(backend.open(), 5)
    other = backend.open()
    infos = other.list_snapshots("demo")
    assert [i.serial for i in infos] == [1, 2, 3, 4, 5, 6]  # oldest first, current last
    assert [i.state for i in infos] == [v.state for v in versions]
    assert [i.change for i in infos] == [
        "created",
        "step 0",
        "step 1",
        "step 2",
        "step 3",
        "step 4",
    ]
    assert {i.lineage for i in infos} == {versions[0].lineage}
    for version in versions:
        assert other.load_snapshot("demo", version.serial) == version
    snapshot = other.load_snapshot("demo", 2)
    snapshot.outputs["n"] = "changed"
    assert other.load_snapshot("demo", 2).outputs == {"n": 0}  # a fresh copy each time


def test_snapshots_beyond_the_setting_are_dropped(backend: Backend) -> None:
    saved_versions(backend.keeping(3), 9)
    assert [i.serial for i in backend.keeping(3).list_snapshots("demo")] == [7, 8, 9, 10]
    none_kept = backend.keeping(0)
    assert [i.serial for i in none_kept.list_snapshots("demo")] == [10]
    assert none_kept.load_snapshot("demo", 10).serial == 10


def test_a_snapshot_that_is_not_kept_is_an_error_naming_the_kept_ones(
    backend: Backend,
) -> None:
    saved_versions(backend.keeping(2), 4)
    store = backend.keeping(2)
    for serial in (1, 2, 6, 0, -1):
        with pytest.raises(StateError) as caught:
            store.load_snapshot("demo", serial)
        assert not isinstance(caught.value, EnvironmentNotFoundError)
        assert "3, 4, 5" in (caught.value.hint or ""), caught.value.hint
    with pytest.raises(EnvironmentNotFoundError):
        store.list_snapshots("nobody")
    with pytest.raises(EnvironmentNotFoundError):
        store.load_snapshot("nobody", 1)


def test_delete_drops_the_snapshots_with_the_name(backend: Backend) -> None:
    saved_versions(backend.open(), 3)
    store = backend.open()
    store.delete("demo")
    again = new_record()
    store.create(again)
    [only] = backend.open().list_snapshots("demo")
    assert (only.serial, only.lineage) == (1, again.lineage)
    with pytest.raises(StateError):
        backend.open().load_snapshot("demo", 2)


# --- the lock ----------------------------------------------------------------------------


def test_the_lock_is_exclusive_across_processes(
    backend: Backend, holder: Callable[..., subprocess.Popen[str]]
) -> None:
    backend.open().create(new_record())
    proc = holder("demo", 30)
    store = backend.open()
    assert store.try_lock("demo", me()) is None
    found = store.lock_holder("demo")
    assert found is not None and found.pid == proc.pid and found.command == "worker hold"
    proc.kill()
    proc.wait()
    # the kernel frees a file lock as the holder dies; a database server frees a session
    # lock once its backend has seen the connection close, a moment later
    deadline = time.monotonic() + 10
    lease = store.try_lock("demo", me())
    while lease is None and time.monotonic() < deadline:
        time.sleep(0.01)
        lease = store.try_lock("demo", me())
    assert lease is not None
    check = worker(backend, "try", "demo")
    assert check.communicate(timeout=60)[0].strip() == "busy"
    lease.release()
    again = worker(backend, "try", "demo")
    assert again.communicate(timeout=60)[0].strip() == "taken"
    assert store.lock_holder("demo") is None


def test_a_dead_holder_releases_the_lock_at_once(
    backend: Backend, holder: Callable[..., subprocess.Popen[str]]
) -> None:
    backend.open().create(new_record())
    proc = holder("demo", 300)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stale = backend.open().lock_holder("demo")
    assert stale is None  # decided by the lock, not by what the dead holder wrote
    left = backend.open().last_holder("demo")
    assert left is not None and left.pid == proc.pid
    t0 = time.monotonic()
    with hold(backend.open(), "demo", "after the crash", 0) as lease:
        took = time.monotonic() - t0
        assert lease.previous is not None and lease.previous.pid == proc.pid
        now = backend.open().lock_holder("demo")
        assert now is not None and now.pid == os.getpid()
        assert backend.open().last_holder("demo") is None
    assert took < 5  # no stale lock to wait out, and no timeout needed (0 = one try)
    assert backend.open().last_holder("demo") is None  # a clean release leaves nothing


def test_a_lock_wait_ends_when_the_holder_releases(
    backend: Backend, holder: Callable[..., subprocess.Popen[str]]
) -> None:
    backend.open().create(new_record())
    proc = holder("demo", 0.5)
    told: list[LockInfo | None] = []
    with hold(backend.open(), "demo", "waiter", 60, on_wait=told.append) as mine:
        assert proc.poll() is not None or proc.wait(timeout=10) == 0
        assert mine.holder.pid == os.getpid()
        assert mine.previous is None  # the worker released it cleanly
    assert len(told) == 1 and told[0] is not None and told[0].pid == proc.pid


def test_a_lock_wait_times_out_naming_the_holder(
    backend: Backend, holder: Callable[..., subprocess.Popen[str]]
) -> None:
    backend.open().create(new_record())
    proc = holder("demo", 60)
    t0 = time.monotonic()
    with pytest.raises(LockedError) as caught, hold(backend.open(), "demo", "waiter", 0.3):
        pass
    assert time.monotonic() - t0 >= 0.3
    assert str(proc.pid) in caught.value.message
    assert caught.value.fields["pid"] == proc.pid


def test_a_holder_records_its_process_groups_for_the_next_one(
    backend: Backend,
) -> None:
    backend.open().create(new_record())
    store = backend.open()
    lease = store.try_lock("demo", me())
    assert lease is not None
    lease.note_processes((4242, 4343))
    seen = backend.open().lock_holder("demo")
    assert seen is not None and seen.processes == (4242, 4343)
    lease.note_processes(())
    seen = backend.open().lock_holder("demo")
    assert seen is not None and seen.processes == ()
    lease.release()


def test_a_dead_holder_leaves_what_identifies_its_process_groups(backend: Backend) -> None:
    """A holder killed with SIGKILL after noting its step's groups: the next one reads
    each group with its boot id and leader's start time, as noted; one noted by its
    number alone (as older runners did) stays a plain number."""
    backend.open().create(new_record())
    proc = worker(backend, "note", "demo", "60")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "noted"
        seen = backend.open().lock_holder("demo")
        assert seen is not None and seen.processes == (4242, 4343)
        proc.kill()
        proc.wait()
        for info in (backend.open().last_holder("demo"), _taken_over(backend)):
            assert info is not None and info.pid == proc.pid and info.processes == (4242, 4343)
            first, second = info.processes
            assert isinstance(first, ProcessGroup)
            assert (first.boot_id, first.leader_start) == ("boot-a", 77)
            assert not (isinstance(second, ProcessGroup) and second.identified)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_planted_record_keeps_its_groups_as_written(backend: Backend) -> None:
    store = backend.open()
    store.create(new_record())
    groups = (ProcessGroup(4242, "boot-a", 77), 4343)
    backend.plant_holder("demo", LockInfo(1, os.uname().nodename, "runner up", now_iso(), groups))
    left = store.last_holder("demo")
    assert left is not None and left.processes == (4242, 4343)
    assert isinstance(left.processes[0], ProcessGroup) and left.processes[0].identified
    assert not (isinstance(left.processes[1], ProcessGroup) and left.processes[1].identified)


def _taken_over(backend: Backend) -> LockInfo | None:
    lease = backend.open().try_lock("demo", me())
    assert lease is not None
    try:
        return lease.previous
    finally:
        lease.release()


def test_a_live_process_named_by_a_dead_holder_does_not_make_the_lock_held(
    backend: Backend,
) -> None:
    """A crashed holder's pid now used by an unrelated live process (here: pid 1 and
    this test's own pid): the lock is free, and the record is the last holder's."""
    store = backend.open()
    store.create(new_record())
    for pid in (1, os.getpid()):
        backend.plant_holder("demo", LockInfo(pid, os.uname().nodename, "runner up", now_iso()))
        assert store.lock_holder("demo") is None
        left = store.last_holder("demo")
        assert left is not None and left.pid == pid
        lease = store.try_lock("demo", me())
        assert lease is not None and lease.previous is not None and lease.previous.pid == pid
        lease.release()


def test_the_lock_of_another_environment_is_free(
    backend: Backend, holder: Callable[..., subprocess.Popen[str]]
) -> None:
    store = backend.open()
    store.create(new_record("one"))
    store.create(new_record("two"))
    holder("one", 30)
    lease = store.try_lock("two", me())
    assert lease is not None
    lease.release()


def test_threads_waiting_for_one_lock_take_turns(backend: Backend) -> None:
    backend.open().create(new_record())
    inside: list[int] = []
    most = [0]

    def work(i: int) -> None:
        with hold(backend.open(), "demo", f"thread {i}", 30):
            inside.append(i)
            most[0] = max(most[0], len(inside))
            time.sleep(0.01)
            inside.remove(i)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(8)))
    assert most[0] == 1


# --- events ------------------------------------------------------------------------------


def test_events_come_back_in_order(backend: Backend) -> None:
    store = backend.open()
    store.create(new_record())
    for i in range(50):
        store.append_event("demo", {"type": "step", "serial": i, "n": i})
    events = backend.open().read_events("demo")
    assert [e["n"] for e in events] == list(range(50))
    assert [e["n"] for e in backend.open().read_events("demo", limit=5)] == list(range(45, 50))


def test_a_torn_last_event_is_ignored_and_the_log_goes_on(backend: Backend) -> None:
    store = backend.open()
    store.create(new_record())
    store.append_event("demo", {"type": "created", "serial": 1})
    backend.tear_last_event("demo")
    assert [e["type"] for e in backend.open().read_events("demo")] == ["created"]
    store.append_event("demo", {"type": "transition", "serial": 2})
    assert [e["serial"] for e in backend.open().read_events("demo")] == [1, 2]
    assert [e["serial"] for e in backend.open().read_events("demo", limit=1)] == [2]


# --- artifacts ---------------------------------------------------------------------------


def test_artifacts_round_trip(backend: Backend) -> None:
    store = backend.open()
    store.create(new_record())
    log = store.open_artifact("demo", "run", "provision")
    log.write("line 1\n")
    log.write("line 2\n")
    assert (
        backend.open().read_artifact("demo", log.ref) == "line 1\nline 2\n"
    )  # readable while written
    log.close()
    trace = store.write_artifact("demo", "trace", "provision", "FAILED\nüñí\n")
    other = backend.open()
    assert other.read_artifact("demo", trace) == "FAILED\nüñí\n"
    assert other.list_artifacts("demo", "run") == [log.ref]
    assert other.list_artifacts("demo", "trace") == [trace]
    later = store.write_artifact("demo", "trace", "configure", "x\n")
    assert other.list_artifacts("demo", "trace") == [trace, later]


def test_an_unknown_artifact_is_an_error_not_an_empty_text(backend: Backend) -> None:
    store = backend.open()
    store.create(new_record())
    store.create(new_record("other"))
    ref = store.write_artifact("other", "trace", "provision", "theirs\n")
    with pytest.raises(StateFileError):
        store.read_artifact("demo", "data/demo/traces/nothing.log")
    with pytest.raises(StateFileError):
        store.read_artifact("demo", ref)  # another environment's artifact is not this one's
