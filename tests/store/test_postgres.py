"""The PostgreSQL backend through the real `runner` CLI, on a real server the tests
start: backend choice, schema, lock handoff after a crash, fencing after a lost
connection (a terminated backend, a restarted server, a network that goes silent), a
server that is down, many processes on two working directories, and migration both
ways."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runner.store.postgres import SCHEMA_VERSION
from tests import pgserver
from tests.cli.test_output_schema import check
from tests.helpers import build_tree, cli_env, run_cli

MACHINE = """\
version: 1
name: teams
initial: idle
inputs:
  type: object
  properties:
    nap: {type: number, default: 0}
    code: {type: integer, default: 0}
states:
  idle: {description: Idle}
  building: {description: Building}
  built: {description: Built}
  build_failed: {description: Build failed}
  shipping: {description: Shipping}
  shipped: {description: Shipped}
  ship_failed: {description: Ship failed}
  destroying: {description: Destroying}
  destroyed: {description: Destroyed, final: true}
  destroy_failed: {description: Destroy failed}
phases:
  - name: build
    from: idle
    via: building
    to: built
    failed: build_failed
    steps:
      - name: nap
        uses: shell
        with: {argv: [sh, -c, "sleep {{ inputs.nap }} & echo $! > {{ env.name }}.pid; wait"]}
      - name: mark
        uses: shell
        with: {argv: [sh, -c, "echo build {{ env.name }} >> ../ran.txt; exit {{ inputs.code }}"]}
  - name: ship
    from: built
    via: shipping
    to: shipped
    failed: ship_failed
    steps:
      - name: mark
        uses: shell
        with: {argv: [sh, -c, "echo ship {{ env.name }} >> ../ran.txt"]}
  - name: destroy
    from: any
    via: destroying
    to: destroyed
    failed: destroy_failed
    advance: false
    steps:
      - name: mark
        uses: shell
        with: {argv: [sh, -c, "echo destroy {{ env.name }} >> ../ran.txt"]}
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """Two working directories ("machines") a and b side by side with the machine; the
    steps append to ``ran.txt`` beside them. Steps still running at the end are killed."""
    for sub in ("a", "b"):
        build_tree(tmp_path / sub, {"machine.yaml": MACHINE})
    yield tmp_path
    for pid_file in tmp_path.glob("*/*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def cli(work: Path, url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli("--state", url, *args, cwd=work, timeout=timeout)


def ok(work: Path, url: str, *args: str) -> str:
    proc = cli(work, url, *args)
    assert proc.returncode == 0, f"runner {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def spawn(
    work: Path, url: str, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "--state", url, *args],
        cwd=work,
        env=cli_env(env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def sql(url: str, statement: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, args)
        return cur.fetchall() if cur.description else []


def stored(url: str, name: str = "demo") -> dict[str, Any]:
    rows = sql(url, "SELECT document FROM runner.environments WHERE name = %s", name)
    document: dict[str, Any] = json.loads(rows[0][0])
    return document


def wait_for(path: Path, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return int(path.read_text())


def gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().split(") ")[-1].startswith("Z"):
                return True
        time.sleep(0.05)
    return False


def holder_backend(url: str, name: str = "demo", timeout: float = 30.0) -> int:
    """The backend pid of the connection holding ``name``'s lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = sql(url, "SELECT backend_pid FROM runner.lock_holders WHERE name = %s", name)
        if rows:
            return int(rows[0][0])
        time.sleep(0.05)
    raise AssertionError("nobody took the lock")


# --- choosing the backend and the schema -------------------------------------------------


def test_a_database_without_the_schema_asks_for_state_init(
    site: Path, pg_server: pgserver.PgServer
) -> None:
    url = pg_server.create_database(f"t{os.urandom(6).hex()}")
    proc = cli(site / "a", url, "status", "demo")
    assert proc.returncode == 2
    assert "has no runner schema yet" in proc.stderr and "runner state init" in proc.stderr
    assert "Traceback" not in proc.stderr
    made = check(cli(site / "a", url, "--output", "json", "state", "init"), 0, "state_init")
    assert (made["backend"], made["schema_before"], made["schema_after"]) == (
        "postgresql",
        0,
        SCHEMA_VERSION,
    )
    again = check(cli(site / "a", url, "--output", "json", "state", "init"), 0, "state_init")
    assert again["schema_before"] == again["schema_after"] == SCHEMA_VERSION
    assert "no environments" in ok(site / "a", url, "list")


def test_state_init_upgrades_a_schema_1_database_whose_holder_rows_stay_readable(
    site: Path, pg_url: str
) -> None:
    """A database an older runner made (schema 1: lock holders name their process groups
    by number alone) with a holder row it left when killed: this runner asks for
    `state init`, which adds what identifies each group; the old row is then reported,
    its group never stopped (its number may be another program's by now)."""
    ok(site / "a", pg_url, "create", "demo")
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        sql(pg_url, "ALTER TABLE runner.lock_holders DROP COLUMN process_ids")
        sql(pg_url, "DELETE FROM runner.schema_version WHERE version > 1")
        sql(
            pg_url,
            "INSERT INTO runner.lock_holders (name, backend_pid, pid, host, command, "
            "started_at, processes) VALUES ('demo', 0, 999999, %s, 'runner build', "
            "'2026-01-01T00:00:00.000Z', %s)",
            os.uname().nodename,
            [stranger.pid],
        )
        refused = cli(site / "a", pg_url, "status", "demo")
        assert refused.returncode == 2 and "runner state init" in refused.stderr, refused.stderr
        made = check(cli(site / "a", pg_url, "--output", "json", "state", "init"), 0, "state_init")
        assert (made["schema_before"], made["schema_after"]) == (1, SCHEMA_VERSION)
        status = check(cli(site / "b", pg_url, "--output", "json", "status", "demo"), 0, "status")
        assert status["leftover_processes"] == [], status
        assert [u["group"] for u in status["unverified_processes"]] == [stranger.pid], status
        forced = cli(site / "a", pg_url, "force-state", "demo", "idle", "--reason", "test")
        assert forced.returncode == 0, forced.stderr
        assert f"process group {stranger.pid} may still run" in forced.stderr, forced.stderr
        assert "stopped process group" not in forced.stderr
        time.sleep(0.3)
        assert stranger.poll() is None, "the runner stopped a group it never started"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_role_with_only_create_on_the_database_is_enough(
    site: Path, pg_server: pgserver.PgServer
) -> None:
    """The set-up of docs/teams.md: a plain login role, and one grant."""
    database = f"t{os.urandom(6).hex()}"
    role = f"r{os.urandom(6).hex()}"
    admin = pg_server.create_database(database)
    sql(admin, f'CREATE ROLE "{role}" LOGIN')
    sql(admin, f'GRANT CREATE ON DATABASE "{database}" TO "{role}"')
    url = admin.replace("user=postgres", f"user={role}")
    ok(site / "a", url, "state", "init")
    ok(site / "a", url, "create", "demo")
    ok(site / "b", url, "up", "demo")
    assert stored(url)["state"] == "shipped"


def test_a_newer_schema_is_refused(site: Path, pg_url: str) -> None:
    sql(pg_url, "INSERT INTO runner.schema_version (version) VALUES (99)")
    proc = cli(site / "a", pg_url, "list")
    assert proc.returncode == 2
    assert f"schema version 99, newer than this runner knows ({SCHEMA_VERSION})" in proc.stderr


def test_the_backend_comes_from_runner_toml_and_runner_state(site: Path, pg_url: str) -> None:
    work = site / "a"
    (work / "runner.toml").write_text(f'[state]\nurl = "{pg_url}"\n')
    ok(work, pg_url, "create", "demo")
    plain = run_cli("--output", "json", "list", cwd=work)  # runner.toml: the database
    assert [e["environment"] for e in json.loads(plain.stdout)["environments"]] == ["demo"]
    assert not (work / "data" / "demo").exists()
    other = run_cli("list", cwd=work, env={"RUNNER_STATE": "file:elsewhere"})
    assert "no environments" in other.stdout  # RUNNER_STATE wins over runner.toml
    given = run_cli("--state", "file:data", "list", cwd=work, env={"RUNNER_STATE": pg_url})
    assert "no environments" in given.stdout  # --state wins over both


def test_a_password_in_the_url_is_refused(site: Path) -> None:
    proc = run_cli("--state", "postgresql://u:secret@localhost/db", "list", cwd=site / "a")
    assert proc.returncode == 2
    assert "holds a password" in proc.stderr and "PGPASSWORD" in proc.stderr
    assert "secret" not in proc.stderr + proc.stdout


#: A ``sitecustomize`` that makes the driver's packages not installed for the process.
_NO_DRIVER = """\
import sys


class NoDriver:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("psycopg", "psycopg_binary", "psycopg_c"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoDriver())
"""


@pytest.mark.parametrize("args", [("list",), ("status", "demo"), ("create", "demo")])
def test_without_the_driver_one_message_says_what_to_install(
    site: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Reads too, though they need only libpq: the driver is what the extra installs."""
    blocker = build_tree(tmp_path / "nodriver", {"sitecustomize.py": _NO_DRIVER})
    proc = run_cli(
        "--state",
        "postgresql:///db",
        *args,
        cwd=site / "a",
        env={"PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'runner[postgres]'" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- the lifecycle through the database ------------------------------------------------


def test_a_lifecycle_readable_from_another_working_directory(site: Path, pg_url: str) -> None:
    a, b = site / "a", site / "b"
    ok(a, pg_url, "create", "demo")
    ok(a, pg_url, "up", "demo")
    status = check(cli(b, pg_url, "--output", "json", "status", "demo"), 0, "status")
    assert status["state"] == "shipped"
    history = check(cli(b, pg_url, "--output", "json", "history", "demo"), 0, "history")
    visited = [e["to"] for e in history["events"] if e["type"] in ("created", "transition")]
    assert visited == ["idle", "building", "built", "shipping", "shipped"]
    listing = check(cli(b, pg_url, "--output", "json", "list"), 0, "list")
    assert [e["environment"] for e in listing["environments"]] == ["demo"]
    record = stored(pg_url)
    log = record["run"]["log"]
    assert log.startswith("data/demo/runs/")
    runs = sql(pg_url, "SELECT ref FROM runner.artifacts WHERE name = 'demo' AND kind = 'run'")
    assert log in [r[0] for r in runs] and len(runs) == 2
    assert not (a / "data" / "demo" / "state.json").exists()
    assert (site / "ran.txt").read_text().splitlines() == ["build demo", "ship demo"]


def test_a_failure_and_its_trace_are_read_from_another_machine(site: Path, pg_url: str) -> None:
    a, b = site / "a", site / "b"
    ok(a, pg_url, "create", "demo", "--set", "code=1")
    proc = cli(a, pg_url, "advance", "demo")
    assert proc.returncode == 1
    status = check(cli(b, pg_url, "--output", "json", "status", "demo"), 0, "status")
    assert status["state"] == "build_failed"
    trace = status["failure"]["trace"]
    rows = sql(
        pg_url,
        "SELECT string_agg(c.body, '' ORDER BY c.id) FROM runner.artifacts a JOIN "
        "runner.artifact_chunks c ON c.artifact = a.id WHERE a.ref = %s",
        trace,
    )
    assert "FAILED (command_failed)" in rows[0][0]


# --- the lock ----------------------------------------------------------------------------


def test_kill_9_of_the_holder_frees_the_lock_at_once(site: Path, pg_url: str) -> None:
    a, b = site / "a", site / "b"
    ok(a, pg_url, "create", "demo", "--set", "nap=120")
    holder = spawn(a, pg_url, "advance", "demo")
    step = wait_for(a / "demo.pid")
    busy = cli(b, pg_url, "--lock-timeout", "0", "advance", "demo")
    assert busy.returncode == 3
    assert f"locked by pid {holder.pid}" in busy.stderr
    shown = check(cli(b, pg_url, "--output", "json", "status", "demo"), 0, "status")
    assert shown["locked_by"]["pid"] == holder.pid
    for read in (("list",), ("history", "demo"), ("graph", "--env", "demo")):
        t0 = time.monotonic()  # read-only commands take no lock: never wait for one
        assert cli(b, pg_url, "--lock-timeout", "600", *read).returncode == 0, read
        assert time.monotonic() - t0 < 30
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    t0 = time.monotonic()
    resumed = cli(b, pg_url, "--lock-timeout", "0", "destroy", "demo")
    took = time.monotonic() - t0
    assert resumed.returncode == 0, resumed.stderr
    assert took < 15
    assert gone(step)  # the dead holder's step was stopped by the next holder
    assert stored(pg_url)["state"] == "destroyed"


def test_a_terminated_connection_stops_the_step_and_writes_nothing_more(
    site: Path, pg_url: str
) -> None:
    a, b = site / "a", site / "b"
    ok(a, pg_url, "create", "demo", "--set", "nap=120")
    holder = spawn(a, pg_url, "advance", "demo")
    step = wait_for(a / "demo.pid")
    backend = holder_backend(pg_url)
    before = stored(pg_url)
    assert before["state"] == "building"
    sql(pg_url, "SELECT pg_terminate_backend(%s)", backend)
    # another command takes the lock at once and moves the environment on
    taken = cli(b, pg_url, "--lock-timeout", "10", "destroy", "demo")
    assert taken.returncode == 0, taken.stderr
    after = stored(pg_url)
    _, err = holder.communicate(timeout=60)
    assert holder.returncode == 2, err
    assert err.startswith("error: lost the lock of environment 'demo'"), err  # said once
    assert err.count("lost the lock") == 1 and "Traceback" not in err
    assert gone(step)
    final = stored(pg_url)
    assert final == after and final["state"] == "destroyed"  # not overwritten afterwards
    assert final["serial"] > before["serial"]


class SilentProxy:
    """A TCP proxy on 127.0.0.1 in front of the server's Unix socket ``target``, until
    :meth:`go_silent`: from then on it forwards nothing more, yet keeps every connection
    open (a network partition: no answer, no reset)."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)
        self.silent = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def go_silent(self) -> None:
        self.silent.set()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.socket(socket.AF_UNIX)
                server.connect(self.target)
                self.sockets += [client, server]
                threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peer = {client: server, server: client}
        with selectors.DefaultSelector() as selector, contextlib.suppress(OSError, ValueError):
            for sock in peer:
                selector.register(sock, selectors.EVENT_READ)
            while selector.get_map():
                for key, _ in selector.select():
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = sock.recv(65536)
                    if not self.silent.is_set():
                        if not data:  # one side closed: close the other (no silence yet)
                            return
                        peer[sock].sendall(data)
                    elif not data:
                        selector.unregister(sock)  # silent: the other side never hears


@pytest.fixture
def proxy(pg_server: pgserver.PgServer) -> Iterator[SilentProxy]:
    running = SilentProxy(pg_server.socket_dir / ".s.PGSQL.5432")
    yield running
    running.close()


def test_a_silent_connection_stops_the_step_and_frees_the_environment(
    site: Path, pg_url: str, proxy: SilentProxy
) -> None:
    """The network to the server goes silent (packets dropped, no reset) while a step
    runs, and the server ends the holder's session: another command may take the lock
    at once, so the holder must stop its step within RUNNER_PG_ANSWER_S, not when
    TCP gives up."""
    a, b = site / "a", site / "b"
    ok(a, pg_url, "create", "demo", "--set", "nap=30")
    database = pg_url.split("?")[0].rsplit("/", 1)[1]
    holder = spawn(
        a,
        proxy.url(database),
        "advance",
        "demo",
        env={"RUNNER_PG_CHECK_S": "0.5", "RUNNER_PG_ANSWER_S": "1"},
    )
    try:
        step = wait_for(a / "demo.pid")
        backend = holder_backend(pg_url)
        proxy.go_silent()
        t0 = time.monotonic()
        sql(pg_url, "SELECT pg_terminate_backend(%s)", backend)
        assert gone(step, timeout=8), "the step still runs: the holder never noticed"
        assert time.monotonic() - t0 < 5
        _, err = holder.communicate(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()
    assert holder.returncode == 2, err
    assert err.startswith(
        "error: lost the lock of environment 'demo': the database did not answer for 1 s"
    ), err
    assert err.count("lost the lock") == 1 and "Traceback" not in err
    assert "runner status demo" in err and "free space" not in err, err
    taken = cli(b, pg_url, "--lock-timeout", "10", "destroy", "demo")
    assert taken.returncode == 0, taken.stderr
    assert stored(pg_url)["state"] == "destroyed"


def test_a_write_left_unanswered_fails_as_a_lost_lock(pg_url: str, proxy: SilentProxy) -> None:
    """A request of the command itself that waits on a silent connection: the watcher
    ends it after twice the interval (it raises LockLostError) instead of letting it wait
    for TCP."""
    from runner.errors import LockLostError
    from runner.store.contract import LockInfo
    from runner.store.postgres import PostgresStore
    from runner.store.record import now_iso
    from tests.conftest import make_record

    store = PostgresStore(proxy.url(pg_url.split("?")[0].rsplit("/", 1)[1]), check_interval=0.25, answer_within=0.5)
    store.create(make_record())
    lease = store.try_lock("demo", LockInfo(os.getpid(), "here", "test", now_iso()))
    assert lease is not None
    proxy.go_silent()
    raised: list[BaseException] = []

    def write() -> None:
        try:
            store.append_event("demo", {"type": "note"})
        except BaseException as exc:
            raised.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(timeout=5)
    assert not writer.is_alive(), "the write still waits for an answer"
    assert len(raised) == 1 and isinstance(raised[0], LockLostError), raised
    assert "the database did not answer for 0.5 s" in str(raised[0])
    assert lease.lost_reason is not None
    lease.release()
    store.close()


def test_a_check_interval_that_is_not_a_positive_number_is_refused(site: Path, pg_url: str) -> None:
    ok(site / "a", pg_url, "create", "demo")
    for value in ("abc", "nan", "inf", "-1", "0", "1e12"):
        proc = run_cli("--state", pg_url, "list", cwd=site / "a", env={"RUNNER_PG_CHECK_S": value})
        assert proc.returncode == 2, (value, proc.stderr)
        assert proc.stderr.startswith(
            f"error: RUNNER_PG_CHECK_S={value!r} is not a number of seconds greater than 0 "
            "and at most 3600"
        ), proc.stderr
        assert "Traceback" not in proc.stderr
    fine = run_cli("--state", pg_url, "list", cwd=site / "a", env={"RUNNER_PG_CHECK_S": "0.5"})
    assert fine.returncode == 0 and "demo" in fine.stdout, fine.stderr


def test_a_server_restart_during_a_phase_stops_the_step(site: Path) -> None:
    server = pgserver.start()
    try:
        url = server.create_database("restart")
        ok(site / "a", url, "state", "init")
        ok(site / "a", url, "create", "demo", "--set", "nap=120")
        holder = spawn(site / "a", url, "advance", "demo")
        step = wait_for(site / "a" / "demo.pid")
        holder_backend(url)
        before = stored(url)
        server.restart()
        _, err = holder.communicate(timeout=60)
        assert holder.returncode == 2, err
        assert "lost the lock of environment 'demo'" in err
        assert gone(step)
        assert stored(url) == before  # nothing written after the connection ended
        status = check(cli(site / "b", url, "--output", "json", "status", "demo"), 0, "status")
        assert status["locked_by"] is None
    finally:
        server.stop("immediate")
        server.remove()


def test_a_server_that_is_down_gives_one_message_and_loses_nothing(site: Path) -> None:
    server = pgserver.start()
    try:
        url = server.create_database("down")
        ok(site / "a", url, "state", "init")
        ok(site / "a", url, "create", "demo")
        server.stop()
        for args in (("status", "demo"), ("list",), ("history", "demo"), ("advance", "demo")):
            proc = cli(site / "a", url, *args)
            assert proc.returncode == 2, (args, proc.stderr)
            lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
            assert len(lines) == 1 and "cannot reach the state database" in lines[0], proc.stderr
            assert "Traceback" not in proc.stderr
        failed = cli(site / "a", url, "--output", "json", "status", "demo")
        check(failed, 2, "error")
        server.start()
        assert stored(url)["state"] == "idle"
        ok(site / "a", url, "advance", "demo")
    finally:
        server.stop("immediate")
        server.remove()


def test_sixteen_processes_on_two_machines_run_each_phase_once(site: Path, pg_url: str) -> None:
    a, b = site / "a", site / "b"
    ok(a, pg_url, "create", "demo")
    procs = [
        spawn(a if i % 2 else b, pg_url, "--lock-timeout", "120", "advance", "demo")
        for i in range(16)
    ]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()
    assert all(code == 0 for code, _ in results), results
    assert (site / "ran.txt").read_text().splitlines() == ["build demo", "ship demo"]
    events = json.loads(ok(b, pg_url, "--output", "json", "history", "demo"))["events"]
    serials = [e["serial"] for e in events if e["type"] in ("created", "transition", "step")]
    assert serials == sorted(serials) and len(set(serials)) == len(serials)
    visited = [e["to"] for e in events if e["type"] in ("created", "transition")]
    assert visited == ["idle", "building", "built", "shipping", "shipped"]
    steps = [(e["phase"], e["step"]) for e in events if e["type"] == "step"]
    assert steps == [("build", "nap"), ("build", "mark"), ("ship", "mark")]
    assert stored(pg_url)["serial"] == max(serials)


# --- migration ---------------------------------------------------------------------------


def _content(work: Path, url: str, name: str) -> dict[str, Any]:
    status = json.loads(ok(work, url, "--output", "json", "status", name))
    history = json.loads(ok(work, url, "--output", "json", "history", name))
    for key in ("locked_by",):
        status.pop(key, None)
    return {"status": status, "history": history["events"]}


def test_migrate_from_files_to_postgresql_and_back(site: Path, pg_url: str) -> None:
    a = site / "a"
    files = "file:data"
    ok(a, files, "create", "one")
    ok(a, files, "up", "one")
    ok(a, files, "create", "two", "--set", "code=1")
    assert cli(a, files, "advance", "two").returncode == 1
    before = {n: _content(a, files, n) for n in ("one", "two")}
    moved = check(
        cli(a, files, "--output", "json", "state", "migrate", "--to", pg_url), 0, "migrate"
    )
    assert moved["environments"] == ["one", "two"]
    after = {n: _content(a, pg_url, n) for n in ("one", "two")}
    assert after == before
    assert _content(a, files, "one") == before["one"]  # the source is untouched
    from runner.store.files import FileStore
    from runner.store.postgres import PostgresStore

    source, target = FileStore(a), PostgresStore(pg_url)
    for name in ("one", "two"):  # lineage, snapshots and artifacts came along as they were
        assert target.load(name).lineage == source.load(name).lineage
        assert target.list_snapshots(name) == source.list_snapshots(name)
        for kind in ("trace", "run"):
            refs = source.list_artifacts(name, kind)
            assert target.list_artifacts(name, kind) == refs
            assert refs or kind == "trace"
            assert [target.read_artifact(name, r) for r in refs] == [
                source.read_artifact(name, r) for r in refs
            ]
    trace = after["two"]["status"]["failure"]["trace"]
    rows = sql(pg_url, "SELECT 1 FROM runner.artifacts WHERE ref = %s", trace)
    assert rows  # the trace came along
    again = cli(a, files, "state", "migrate", "--to", pg_url)
    assert again.returncode == 2 and "already has environments 'one', 'two'" in again.stderr
    back = cli(a, pg_url, "--output", "json", "state", "migrate", "--to", "file:copy")
    assert check(back, 0, "migrate")["environments"] == ["one", "two"]
    copied = json.dumps({n: _content(a, "file:copy", n) for n in ("one", "two")})
    # the same, but for the folder artifacts and paths name (the target's own)
    assert '"data/' not in copied
    assert json.loads(copied.replace('"copy/', '"data/')) == before
    ok(a, "file:copy", "destroy", "one")  # the copy is a working backend


def test_how_long_a_lock_holder_waits_for_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """By default a request may go unanswered twice the check interval and at least 5 s
    (a commit that stalls a moment must not stop a step); RUNNER_PG_ANSWER_S sets it,
    and a value that is no number of seconds is refused."""
    from runner.errors import InputError
    from runner.store.postgres import answer_setting

    monkeypatch.delenv("RUNNER_PG_ANSWER_S", raising=False)
    assert answer_setting(1.0) == 5.0 and answer_setting(0.25) == 5.0
    assert answer_setting(4.0) == 8.0
    monkeypatch.setenv("RUNNER_PG_ANSWER_S", "1.5")
    assert answer_setting(1.0) == 1.5
    for bad in ("abc", "nan", "0", "-2", "1e12"):
        monkeypatch.setenv("RUNNER_PG_ANSWER_S", bad)
        with pytest.raises(InputError, match="RUNNER_PG_ANSWER_S"):
            answer_setting(1.0)
