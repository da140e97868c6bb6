"""Reading the PostgreSQL backend over libpq itself (``runner.store.libpq``) gives what
reading through psycopg gives: the same output, messages and exit codes for the
read-only commands, on a real server; psycopg reads where no libpq can be loaded; and
the read-only commands never import the driver."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from runner.errors import StorageError
from runner.store import libpq
from runner.store.postgres import _OBJID, NAMESPACE, SCHEMA_VERSION, PostgresStore, _oid, lock_key
from tests import pgserver
from tests.helpers import ROOT, cli_env, run_cli
from tests.store.test_postgres import holder_backend, site, spawn, sql

__all__ = ["site"]  # the fixture, shared with the backend's own tests

#: How each reader is chosen: libpq (the default), psycopg, and a libpq that cannot be
#: loaded (psycopg then reads).
READERS = {
    "libpq": {},
    "psycopg": {"RUNNER_PG_LIBPQ": "off"},
    "unloadable": {"RUNNER_PG_LIBPQ": "/nonexistent/libpq.so.5"},
}


def outcomes(work: Path, *args: str) -> dict[str, tuple[int, str, str]]:
    """(exit code, stdout, stderr) of ``runner ARGS`` with each reader."""
    found = {}
    for reader, env in READERS.items():
        proc = run_cli(*args, cwd=work, env=env)
        found[reader] = (proc.returncode, proc.stdout, proc.stderr)
    return found


def same(work: Path, *args: str) -> tuple[int, str, str]:
    """The one outcome every reader gives for ``runner ARGS``."""
    found = outcomes(work, *args)
    assert len(set(found.values())) == 1, json.dumps(found, indent=1)
    return found["libpq"]


@pytest.fixture
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in READERS[request.param].items():
        monkeypatch.setenv(key, value)
    return str(request.param)


# --- the commands -----------------------------------------------------------------------


def test_the_read_only_commands_say_the_same_with_either_reader(site: Path, pg_url: str) -> None:
    a = site / "a"
    for name, exit in (("demo", "0"), ("broken", "1")):
        made = run_cli("--state", pg_url, "create", name, "--set", f"code={exit}", cwd=a)
        assert made.returncode == 0, made.stderr
    assert run_cli("--state", pg_url, "advance", "broken", cwd=a).returncode == 1
    assert run_cli("--state", pg_url, "create", "busy", "--set", "nap=120", cwd=a).returncode == 0
    holder = spawn(a, pg_url, "advance", "busy")
    try:
        holder_backend(pg_url, "busy")
        for args in (
            ("status", "demo"),
            ("--output", "json", "status", "broken"),
            ("status", "busy"),
            ("--output", "json", "status", "busy"),
            ("list",),
            ("--output", "json", "list"),
            ("history", "broken", "-n", "2"),
            ("--output", "json", "history", "demo"),
            ("exists", "demo"),
            ("--output", "json", "exists", "nope"),
            ("status", "nope"),
        ):
            code, _, err = same(a, "--state", pg_url, *args)
            assert "Traceback" not in err
            assert (code != 0) == (args == ("status", "nope")), err
        busy = json.loads(same(a, "--state", pg_url, "--output", "json", "status", "busy")[1])
        assert busy["locked_by"]["command"].startswith("runner advance")
        assert "is working on it" in same(a, "--state", pg_url, "status", "busy")[1]
    finally:
        holder.kill()
        holder.communicate()


def test_the_read_only_commands_never_import_the_driver(site: Path, pg_url: str) -> None:
    a = site / "a"
    assert run_cli("--state", pg_url, "create", "demo", cwd=a).returncode == 0
    probe = (
        "import sys\n"
        "from runner.cli.main import _run\n"
        "code = _run(sys.argv[1:])\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write(f'driver={\"psycopg\" in sys.modules} code={code}\\n')\n"
        "sys.stderr.write(f'files={\"runner.store.files\" in sys.modules}\\n')\n"
    )
    for args in (("status", "demo"), ("list",), ("history", "demo"), ("exists", "demo")):
        for reader, imported in (("libpq", False), ("psycopg", True)):
            proc = subprocess.run(
                [sys.executable, "-c", probe, "--state", pg_url, *args],
                cwd=a,
                env=cli_env(READERS[reader]),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert f"driver={imported} code=0" in proc.stderr, (args, reader, proc.stderr)
            assert "files=False" in proc.stderr  # nor the file backend


def test_the_machine_cache_of_a_database_lives_in_build(tmp_path: Path, pg_url: str) -> None:
    from runner import Runner
    from runner.store.files import FileStore

    pg = Runner(tmp_path, store=PostgresStore(pg_url))
    assert pg._cache_dir() == str(tmp_path / "build" / ".cache")
    files = Runner(tmp_path, store=FileStore(tmp_path))
    assert files._cache_dir() == str(tmp_path / "data" / ".cache")
    assert Runner(tmp_path, state=pg_url)._cache_dir() == str(tmp_path / "build" / ".cache")


# --- the errors -------------------------------------------------------------------------


def test_errors_are_the_same_with_either_reader(
    site: Path, pg_server: pgserver.PgServer, pg_url: str
) -> None:
    a = site / "a"
    empty = pg_server.create_database(f"t{os.urandom(6).hex()}")
    newer = pg_server.create_database(f"t{os.urandom(6).hex()}")
    PostgresStore(newer).init_schema()
    sql(newer, "INSERT INTO runner.schema_version (version) VALUES (99)")
    role = f"r{os.urandom(6).hex()}"
    sql(pg_url, f'CREATE ROLE "{role}" LOGIN')
    cases = {
        "has no runner schema yet": empty,
        f"schema version 99, newer than this runner knows ({SCHEMA_VERSION})": newer,
        "cannot reach the state database": f"postgresql:///db?host={site}/nowhere",
        'database "nosuchdb" does not exist': "postgresql:///nosuchdb?" + pg_url.split("?")[1],
        "cannot read the runner schema": pg_url.replace("user=postgres", f"user={role}"),
        "not a valid PostgreSQL URL": "postgresql://localhost/db?nonsense=1",
        "(bad value for connect_timeout: 'soon')": "postgresql:///db?connect_timeout=soon",
        "holds a password": "postgresql://u:secret@localhost/db",
    }
    for message, url in cases.items():
        for args in (("status", "demo"), ("--output", "json", "list")):
            code, out, err = same(a, "--state", url, *args)
            assert code == 2, (url, out, err)
            assert message in (out + err).replace('\\"', '"'), (url, out, err)
            assert "Traceback" not in err and "secret" not in out + err


def test_a_missing_database_is_not_taken_for_a_server_that_is_down(site: Path, pg_url: str) -> None:
    url = "postgresql:///nosuchdb?" + pg_url.split("?")[1]
    for args in (("status", "demo"), ("create", "demo")):
        code, _, err = same(site / "a", "--state", url, *args)
        assert code == 2, err
        assert 'hint: the server has no database "nosuchdb": create it' in err, err
        assert "runner state init" in err and "check that the server runs" not in err


@pytest.mark.parametrize("reader", list(READERS))
def test_ctrl_c_stops_a_read_that_waits_for_the_server(
    site: Path, pg_url: str, reader: str
) -> None:
    a = site / "a"
    assert run_cli("--state", pg_url, "create", "demo", cwd=a).returncode == 0
    with psycopg.connect(pg_url) as blocker:  # a transaction holding the table
        blocker.execute("LOCK TABLE runner.environments IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "--state", pg_url, "status", "demo"],
            cwd=a,
            env=cli_env(READERS[reader]),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while not sql(
            pg_url,
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'runner' AND "
            "wait_event_type = 'Lock' AND datname = current_database()",
        ):
            assert time.monotonic() < deadline and proc.poll() is None, "status never waited"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err


@pytest.mark.parametrize("reader", ["libpq", "psycopg"], indirect=True)
def test_a_lost_connection_is_opened_again_on_the_next_read(reader: str) -> None:
    server = pgserver.start()
    try:
        url = server.create_database("lost")
        store = PostgresStore(url)
        store.init_schema()
        assert store.list() == []
        assert (store._light is not None) == (reader == "libpq")
        server.restart()
        with pytest.raises(StorageError, match="cannot reach the state database"):
            store.list()
        assert store.list() == []
        store.close()
    finally:
        server.stop("immediate")
        server.remove()


def test_a_write_moves_the_reads_to_the_driver(pg_url: str) -> None:
    """One connection for the writes, the lock and every read after them (fencing)."""
    from tests.conftest import make_record

    store = PostgresStore(url := pg_url)
    assert store.list() == [] and store._light is not None
    store.create(make_record("demo"))
    assert store._light is None and store._conn is not None
    backends = sql(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'runner' AND "
        "datname = current_database()",
    )
    assert backends[0][0] == 1
    assert store.load("demo").name == "demo"
    store.close()


# --- the client itself ------------------------------------------------------------------


@pytest.fixture
def lib() -> ctypes.CDLL:
    found = libpq.library()
    assert found is not None, "no libpq could be loaded: psycopg's own is expected"
    return found


@contextlib.contextmanager
def connection(lib: ctypes.CDLL, url: str) -> Iterator[libpq.Connection]:
    conn = libpq.Connection(lib, libpq.parse(lib, url))
    try:
        yield conn
    finally:
        conn.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:///runner",
        "postgresql://someone@db.example.org:6543/runner?sslmode=require&application_name=x",
        "postgres://[::1]/db?connect_timeout=3",
        "host=/tmp dbname=runner user=me",
    ],
)
def test_urls_are_parsed_as_psycopg_parses_them(lib: ctypes.CDLL, url: str) -> None:
    assert libpq.parse(lib, url) == psycopg.conninfo.conninfo_to_dict(url)


@pytest.mark.parametrize(
    "url", ["postgresql://localhost/db?nonsense=1", "postgresql://[::1/db", "host=a b=c"]
)
def test_an_invalid_url_gets_psycopg_s_reason(lib: ctypes.CDLL, url: str) -> None:
    with pytest.raises(psycopg.ProgrammingError) as theirs:
        psycopg.conninfo.conninfo_to_dict(url)
    with pytest.raises(libpq.PqError) as ours:
        libpq.parse(lib, url)
    assert str(ours.value).strip() == str(theirs.value).strip()


def test_rows_come_back_as_text_with_nulls_and_parameters(lib: ctypes.CDLL, pg_url: str) -> None:
    with connection(lib, pg_url) as conn:
        rows = conn.rows(
            "SELECT %s::int + 1, %s, NULL, '', 'é', ARRAY[1, 2]::text FROM generate_series(1, 2)",
            (41, None),
        )
        assert rows == [("42", None, None, "", "é", "{1,2}")] * 2
        assert conn.row("SELECT 1 WHERE false") is None
        with pytest.raises(libpq.PqError) as failed:
            conn.rows("SELECT * FROM runner.nothing")
        assert failed.value.sqlstate == "42P01"
        assert str(failed.value) == 'relation "runner.nothing" does not exist'
        assert not conn.broken
    assert conn.broken


def test_a_connection_that_fails_says_so_as_psycopg_does(lib: ctypes.CDLL, tmp_path: Path) -> None:
    url = f"postgresql:///db?host={tmp_path}"
    with pytest.raises(psycopg.OperationalError) as theirs:
        psycopg.connect(url)
    with pytest.raises(libpq.PqError) as ours:
        libpq.Connection(lib, libpq.parse(lib, url))
    assert str(ours.value).splitlines()[0] == str(theirs.value).splitlines()[0]


def test_the_server_computes_the_lock_key_as_the_runner_does(pg_url: str) -> None:
    names = ["demo", "a", "staging-2", "x" * 63]
    for name in names:
        (found,) = sql(pg_url, f"SELECT {_OBJID}", name)[0]
        assert found == _oid(lock_key(name)[1])
    assert lock_key("demo")[0] == NAMESPACE


def test_the_libpq_psycopg_bundles_is_the_one_loaded() -> None:
    """The same library (and so the same parsing and messages) as the driver's."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from runner.store import libpq; print(libpq.library()._name)",
        ],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    if psycopg.pq.__impl__ == "binary":
        assert "psycopg_binary.libs" in proc.stdout, proc.stdout
    else:
        assert proc.stdout.strip() == "libpq.so.5"
