"""The PostgreSQL store: environments in a database that a team (or CI runners on
several machines) share.

Tables live in the schema ``runner`` (made by ``runner state init``, see
:data:`MIGRATIONS`)::

    runner.schema_version   the migrations applied (a newer one than this code is refused)
    runner.environments     one row per environment: its record as JSON, serial, state
    runner.snapshots        the kept versions of each record
    runner.events           the history, ordered by an identity column per insert
    runner.artifacts        traces and run logs (named like the file store's), written
    runner.artifact_chunks  ... in chunks, so that a run log grows by inserts
    runner.lock_holders     who holds each environment's lock (a courtesy to others)

**The lock** is a session-level advisory lock on the store's own connection, held for
the whole command: when the holder dies or its connection ends, the server releases it
at once. Its key is the two-integer form ``(NAMESPACE, hash)``: a fixed namespace for
the runner and the first 32 bits of the SHA-256 of the environment's name. Two names
with one hash (about one pair in 65,000 among 300 environments) only share a lock:
they never run at the same time, which is safe. Whether a lock is held is decided by
``pg_locks``; the ``lock_holders`` row only says who (it counts only when its backend
pid is the lock's).

**Fencing**: every write of a command goes through that one connection and it is never
reopened while a lock is held. When it ends (the server restarted, the backend
terminated, the network gone) the lock is gone too, and every later write raises
:class:`~runner.errors.LockLostError`; a watcher thread notices within
``check_interval`` seconds during a long step and stops the process groups the step
runs. A connection that goes silent (a network partition: no answer, no reset) counts
as lost too, since the server may have ended the session and another host taken the
lock: a check or request left unanswered for ``answer_within`` seconds
(``RUNNER_PG_ANSWER_S``; by default twice the interval, at least :data:`MIN_ANSWER_S`)
ends it on this side. Saves are also a compare-and-swap on the serial, so another
holder's newer record is never overwritten.

Without a lock (read-only commands) a lost connection is opened again on the next use.
Passwords never appear in the URL: libpq's own means apply (``PGPASSWORD``,
``PGPASSFILE``, service files).
"""

from __future__ import annotations

import _thread
import builtins
import contextlib
import json
import math
import os
import signal
import socket
import time

from runner import struct
from runner.errors import (
    ConflictError,
    EnvironmentExistsError,
    EnvironmentNotFoundError,
    InputError,
    LockLostError,
    StateError,
    StateFileError,
    StorageError,
)
from runner.log import logger
from runner.store import libpq
from runner.store.contract import (
    EnvironmentCopy,
    ListEntry,
    LockInfo,
    ProcessGroup,
    SnapshotInfo,
)
from runner.store.record import (
    STATE_FORMAT,
    TOO_DEEP,
    Record,
    check_name,
    checked_problem,
    light_problem,
    next_serial,
    now_iso,
    now_stamp,
    record_problem,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    import threading
    from collections.abc import Iterator, Sequence
    from typing import Any, NoReturn, Protocol

    import psycopg

    from runner.store.contract import ArtifactKind, Events

    class _Reader(Protocol):
        """What the read-only methods read with: libpq's :class:`~runner.store.libpq.
        Connection`, or :class:`_DriverReader` over psycopg's."""

        def rows(self, statement: str, params: Sequence[object] = ...) -> list[tuple[Any, ...]]: ...

        def row(self, statement: str, params: Sequence[object] = ...) -> tuple[Any, ...] | None: ...


__all__ = [
    "MIGRATIONS",
    "NAMESPACE",
    "SCHEMA_VERSION",
    "PostgresLease",
    "PostgresStore",
    "check_url",
    "lock_key",
]

#: The least time a request on a lock's connection may take before the connection
#: counts as silent and the lock as lost: a commit that stalls for a moment on a busy
#: server must not stop a step (two copies of it can run only once the server has
#: ended the session, which a partition alone does not do at once).
MIN_ANSWER_S = 5.0

#: The first half of every advisory lock key of the runner ("RUNR" as a 32-bit integer).
NAMESPACE = 0x52554E52
#: How often a lock holder checks that its connection (and so its lock) is still there.
CHECK_INTERVAL_S = 1.0
#: The variable that sets it (seconds, a number > 0, at most :data:`CHECK_INTERVAL_MAX_S`).
CHECK_ENV = "RUNNER_PG_CHECK_S"
ANSWER_ENV = "RUNNER_PG_ANSWER_S"
CHECK_INTERVAL_MAX_S = 3600.0
#: How long (ms) sent data may stay unacknowledged before the kernel drops a TCP
#: connection (libpq's ``tcp_user_timeout``): a partitioned network ends a command's
#: connection instead of leaving it waiting for TCP's own retries (about 15 minutes).
TCP_USER_TIMEOUT_MS = 20000
#: How long stopped process groups get between SIGTERM and SIGKILL.
STOP_GRACE_S = 5.0
#: Folder names of artifacts, as in the file store (refs look the same in both).
_FOLDERS: dict[str, str] = {"trace": "traces", "run": "runs"}

#: The schema, one list of statements per version; ``state init`` applies those missing.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE SCHEMA IF NOT EXISTS runner",
        """CREATE TABLE IF NOT EXISTS runner.schema_version (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now())""",
        """CREATE TABLE runner.environments (
            name text PRIMARY KEY,
            serial bigint NOT NULL,
            state text NOT NULL,
            updated_at text NOT NULL,
            document text NOT NULL)""",
        """CREATE TABLE runner.snapshots (
            name text NOT NULL REFERENCES runner.environments ON DELETE CASCADE,
            serial bigint NOT NULL,
            saved_at text NOT NULL,
            state text NOT NULL,
            change text,
            lineage text,
            document text NOT NULL,
            PRIMARY KEY (name, serial))""",
        """CREATE TABLE runner.events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name text NOT NULL REFERENCES runner.environments ON DELETE CASCADE,
            body text NOT NULL)""",
        "CREATE INDEX events_by_name ON runner.events (name, id)",
        """CREATE TABLE runner.artifacts (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name text NOT NULL REFERENCES runner.environments ON DELETE CASCADE,
            kind text NOT NULL,
            ref text NOT NULL,
            UNIQUE (name, ref))""",
        """CREATE TABLE runner.artifact_chunks (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            artifact bigint NOT NULL REFERENCES runner.artifacts ON DELETE CASCADE,
            body text NOT NULL)""",
        "CREATE INDEX chunks_by_artifact ON runner.artifact_chunks (artifact, id)",
        """CREATE TABLE runner.lock_holders (
            name text PRIMARY KEY REFERENCES runner.environments ON DELETE CASCADE,
            backend_pid integer NOT NULL,
            pid integer NOT NULL,
            host text NOT NULL,
            command text NOT NULL,
            started_at text NOT NULL,
            processes integer[] NOT NULL DEFAULT '{}')""",
    ],
    # what identifies each of ``processes`` (ProcessGroup.to_text): a runner stops a
    # dead holder's group only when its boot and leader are still the ones noted
    2: [
        "ALTER TABLE runner.lock_holders ADD COLUMN process_ids text[] NOT NULL DEFAULT '{}'",
    ],
}
#: The schema version this code reads and writes.
SCHEMA_VERSION = max(MIGRATIONS)

#: The second half of an environment's lock key as ``pg_locks`` shows it (an unsigned
#: oid), computed by the server from the name (as :func:`lock_key` does): a reader
#: needs no hash library.
_OBJID = "('x' || left(encode(sha256(convert_to(%s, 'UTF8')), 'hex'), 8))::bit(32)::bigint"

#: The snapshots a store keeping ``keep_snapshots`` offers: the current version and the
#: ``keep_snapshots`` before it (a store with a larger setting may have left more).
_KEPT = "serial >= (SELECT e.serial FROM runner.environments e WHERE e.name = %s) - %s"

_INSTALL_HINT = "install the PostgreSQL extra: pip install 'runner[postgres]'"


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise InputError(
            "a postgresql:// state URL needs the PostgreSQL driver (psycopg 3), which is "
            "not installed",
            hint=_INSTALL_HINT + ", or choose a file: state (see docs/configuration.md)",
        ) from None
    return psycopg


def check_interval_setting() -> float:
    """``RUNNER_PG_CHECK_S`` in seconds (:data:`CHECK_INTERVAL_S` when unset or empty);
    InputError unless it is a number greater than 0 and at most an hour."""
    value = _seconds_setting(CHECK_ENV, "how often a lock holder checks its database connection")
    return CHECK_INTERVAL_S if value is None else value


def answer_setting(check_interval: float) -> float:
    """``RUNNER_PG_ANSWER_S`` in seconds: how long a request on a lock's connection may
    go unanswered before the lock counts as lost; by default twice ``check_interval``
    and at least :data:`MIN_ANSWER_S`."""
    value = _seconds_setting(
        ANSWER_ENV, "how long a lock holder waits for an answer of its database"
    )
    return max(2 * check_interval, MIN_ANSWER_S) if value is None else value


def _seconds_setting(name: str, what: str) -> float | None:
    """The environment variable ``name`` as seconds (None when unset or empty)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= CHECK_INTERVAL_MAX_S:  # nan too
        raise InputError(
            f"{name}={text!r} is not a number of seconds greater than 0 and at most "
            f"{CHECK_INTERVAL_MAX_S:g}",
            hint=f"set {name} to {what}, or unset it for the default",
        )
    return value


def check_url(url: str) -> dict[str, str]:
    """The connection parameters of ``url``; InputError when it is not a usable
    PostgreSQL URL or holds a password (parsed by libpq, through psycopg or not)."""
    lib = libpq.library()
    params: dict[str, str]
    try:
        if lib is not None:
            params = libpq.parse(lib, url)
        else:
            psycopg = _driver()
            try:
                params = psycopg.conninfo.conninfo_to_dict(url)
            except psycopg.ProgrammingError as exc:
                raise libpq.PqError(str(exc)) from None
        timeout = params.get("connect_timeout")
        if timeout is not None:
            libpq.timeout(timeout)
    except libpq.PqError as exc:
        raise InputError(
            f"not a valid PostgreSQL URL: {shown_url(url)} ({str(exc).strip()})",
            hint="write it as postgresql://[user@]host[:port]/database (see docs/configuration.md)",
        ) from None
    if params.get("password"):
        raise InputError(
            "the state URL holds a password: it would be shown in messages, process lists "
            "and runner.toml",
            hint="remove it from the URL and give it through PGPASSWORD, a password file "
            "(PGPASSFILE, ~/.pgpass) or a service file",
        )
    return params


def shown_url(url: str) -> str:
    """``url`` as messages show it (any password replaced)."""
    import re

    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def lock_key(name: str) -> tuple[int, int]:
    """The advisory lock key of environment ``name``: (namespace, 32-bit hash)."""
    import hashlib

    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return NAMESPACE, int.from_bytes(digest[:4], "big", signed=True)


def _oid(value: int) -> int:
    """A signed 32-bit key half as ``pg_locks`` shows it (an unsigned oid)."""
    return value & 0xFFFFFFFF


def _add_artifact(
    db: psycopg.Connection[Any], name: str, kind: ArtifactKind, ref: str, text: str | None
) -> int:
    """Insert artifact ``ref`` of ``name`` (with ``text`` as its first chunk, if any) in
    the transaction of ``db``; its id."""
    row = db.execute(
        "INSERT INTO runner.artifacts (name, kind, ref) VALUES (%s, %s, %s) RETURNING id",
        (name, kind, ref),
    ).fetchone()
    assert row is not None
    if text:
        db.execute(
            "INSERT INTO runner.artifact_chunks (artifact, body) VALUES (%s, %s)",
            (row[0], text),
        )
    return int(row[0])


class PostgresStore:
    """Environments in the PostgreSQL database at ``url`` (see the module's docs).

    ``keep_snapshots`` versions of each record are kept besides the current one.
    ``check_interval`` is how often a lock holder checks its connection (default:
    ``RUNNER_PG_CHECK_S``, see :func:`check_interval_setting`); a check or request on
    it left unanswered for ``answer_within`` (default: ``RUNNER_PG_ANSWER_S``, see
    :func:`answer_setting`) loses the lock.
    """

    def __init__(
        self,
        url: str,
        *,
        keep_snapshots: int = 20,
        check_interval: float | None = None,
        answer_within: float | None = None,
    ) -> None:
        self.params = check_url(url)
        self.url = url
        self.keep_snapshots = keep_snapshots
        if check_interval is None:
            check_interval = check_interval_setting()
        self.check_interval = check_interval
        self.answer_within = (
            answer_setting(check_interval) if answer_within is None else answer_within
        )
        #: When the request on the lock's connection now in flight must have its
        #: answer (monotonic time), None when none is; see :meth:`_on_wire`.
        self._answer_by: float | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._leases: dict[str, PostgresLease] = {}
        self._lost: str | None = None
        self._last_stamp = ""
        self._mutex = _thread.RLock()
        self._losing = _thread.allocate_lock()
        #: The read-only connection over libpq (see :meth:`_read`); unused once psycopg's
        #: is open (``_driven``).
        self._light: libpq.Connection | None = None
        self._driven = False

    def __repr__(self) -> str:
        return f"PostgresStore({shown_url(self.url)!r})"

    # -- the connection --------------------------------------------------------------

    def _connection_params(self) -> dict[str, str]:
        """The URL's parameters, and the runner's defaults for what it leaves out."""
        params = dict(self.params)
        params.setdefault("application_name", "runner")
        params.setdefault("connect_timeout", "10")
        if not params.get("host", "/").startswith("/"):
            # a TCP connection: notice a dead peer (keepalives) instead of hanging
            params.setdefault("keepalives_idle", "10")
            params.setdefault("keepalives_interval", "3")
            params.setdefault("keepalives_count", "3")
            # ... and sent data that is never acknowledged (a partition)
            params.setdefault("tcp_user_timeout", str(TCP_USER_TIMEOUT_MS))
        return params

    def _open(self, *, check_schema: bool = True) -> psycopg.Connection[Any]:
        driver = _driver()
        params = self._connection_params()
        try:
            conn: psycopg.Connection[Any] = driver.connect(autocommit=True, **params)
        except driver.OperationalError as exc:
            raise self._unreachable(exc) from None
        if check_schema:
            try:
                self._check_schema(conn)
            except driver.Error as exc:  # e.g. no right to read the runner's schema
                conn.close()
                raise self._unreadable_schema(exc) from None
            except BaseException:
                conn.close()
                raise
        return conn

    def _unreadable_schema(self, exc: Exception) -> StorageError:
        return StorageError(
            f"cannot read the runner schema of {shown_url(self.url)}: {_first_line(exc)}",
            hint="the runner's role needs the grants of docs/teams.md",
            url=shown_url(self.url),
        )

    def _unreachable(self, exc: Exception) -> StorageError:
        import re

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        missing = re.search(r'database "(.+?)" does not exist', reason)
        if missing:  # the server answered: it has no such database
            hint = (
                f'the server has no database "{missing.group(1)}": create it (CREATE DATABASE '
                f'"{missing.group(1)}" OWNER <role>, see docs/teams.md) and run `runner state '
                "init`, or fix the name in the URL (it comes from --state, RUNNER_STATE or "
                "runner.toml); nothing was changed"
            )
        else:
            hint = (
                "check that the server runs and this machine may connect (the URL comes "
                "from --state, RUNNER_STATE or runner.toml); nothing was changed"
            )
        return StorageError(
            f"cannot reach the state database {shown_url(self.url)}: {reason}",
            hint=hint,
            url=shown_url(self.url),
        )

    def schema_version(self, conn: psycopg.Connection[Any]) -> int | None:
        """The schema version the database holds; None when it has none."""
        psycopg = _driver()
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        try:  # in a transaction, a savepoint: a missing table would abort it
            with contextlib.nullcontext() if idle else conn.transaction():
                row = conn.execute("SELECT max(version) FROM runner.schema_version").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
        return None if row is None or row[0] is None else int(row[0])

    def _check_schema(self, conn: psycopg.Connection[Any]) -> None:
        self._check_version(self.schema_version(conn))

    def _check_version(self, version: int | None) -> None:
        """StateError unless ``version`` (of the database's schema) is this code's."""
        if version is None:
            raise StateError(
                f"the state database {shown_url(self.url)} has no runner schema yet",
                hint="make it with `runner state init` (see docs/teams.md)",
            )
        if version > SCHEMA_VERSION:
            raise StateError(
                f"the state database {shown_url(self.url)} has schema version {version}, "
                f"newer than this runner knows ({SCHEMA_VERSION})",
                hint="install a runner that knows it; this one will not touch the database",
            )
        if version < SCHEMA_VERSION:
            raise StateError(
                f"the state database {shown_url(self.url)} has schema version {version}; "
                f"this runner needs {SCHEMA_VERSION}",
                hint="upgrade it with `runner state init`",
            )

    def init_schema(self) -> tuple[int, int]:
        """Apply the migrations the database lacks (in one transaction each, serialized
        by an advisory lock); (version before, version after)."""
        psycopg = _driver()
        conn = self._open(check_schema=False)
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (NAMESPACE,))
                before = self.schema_version(conn) or 0
            if before > SCHEMA_VERSION:
                self._check_schema(conn)
            for version in sorted(MIGRATIONS):
                if version <= before:
                    continue
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (NAMESPACE,))
                    if (self.schema_version(conn) or 0) >= version:
                        continue
                    for statement in MIGRATIONS[version]:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO runner.schema_version (version) VALUES (%s)", (version,)
                    )
            return before, SCHEMA_VERSION
        except psycopg.Error as exc:
            raise StorageError(
                f"cannot make the runner schema in {shown_url(self.url)}: "
                f"{str(exc).strip().splitlines()[0]}",
                hint="the runner's role needs CREATE on the database (see docs/teams.md)",
            ) from None
        finally:
            conn.close()

    def _db(self) -> psycopg.Connection[Any]:
        """The store's connection: opened on first use, and again after it was lost
        unless a lock is held on it (then the lock is gone: LockLostError)."""
        if self._lost is not None:
            self._raise_lost()
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None and self._leases:
            self._lose("the connection to the database ended")
        self._conn = self._open()
        self._driven = True  # reads go through it too from now on
        if self._light is not None:
            self._light.close()
            self._light = None
        return self._conn

    @contextlib.contextmanager
    def _tx(
        self, name: str | None = None, *, atomic: bool = True
    ) -> Iterator[psycopg.Connection[Any]]:
        """A transaction on the store's connection (``atomic=False``: statements on their
        own, for reads: no BEGIN and COMMIT round trips), database errors made runner
        errors (a lost connection under a lock: LockLostError)."""
        psycopg = _driver()
        with self._mutex:
            conn = self._db()
            try:
                with self._on_wire(), conn.transaction() if atomic else contextlib.nullcontext():
                    yield conn
            except psycopg.Error as exc:
                self._failed(exc, name)

    @contextlib.contextmanager
    def _on_wire(self, wait: float = 0.0) -> Iterator[None]:
        """Requests on the store's connection (under ``_mutex``): while a lock is held,
        their answers must come within ``answer_within`` seconds (plus ``wait``, for a
        lock wait), else the watcher counts the connection lost (see :meth:`_check`)."""
        if self._answer_by is not None:  # within another
            yield
            return
        self._answer_by = time.monotonic() + wait + self.answer_within
        try:
            yield
        finally:
            self._answer_by = None

    def _failed(self, exc: Exception, name: str | None) -> NoReturn:
        psycopg = _driver()
        conn = self._conn
        lost = conn is None or conn.closed or conn.broken
        if isinstance(exc, psycopg.OperationalError) and lost:
            if self._leases:
                self._lose(f"the connection to the database ended ({_first_line(exc)})")
            self._conn = None
            raise self._unreachable(exc) from None
        raise self._refused(exc, name) from None

    def _refused(self, exc: Exception, name: str | None) -> StorageError:
        return StorageError(
            f"the state database refused a request: {_first_line(exc)}",
            hint="check the database's health and the runner role's grants (see "
            "docs/teams.md); nothing was changed",
            environment=name,
        )

    @contextlib.contextmanager
    def _read(self, name: str | None = None) -> Iterator[_Reader]:
        """Statements that only read: over libpq itself while this store has not needed
        psycopg (no write, no lock yet: importing psycopg costs more than a read-only
        command does in all), else on psycopg's connection (see :meth:`_tx`); the same
        rows and the same errors either way."""
        with self._mutex:
            lib = None if self._driven or self._leases else libpq.library()
            if lib is None:
                with self._tx(name, atomic=False) as db:
                    yield _DriverReader(db)
                return
            reader = self._light_connection(lib)
            try:
                yield reader
            except libpq.PqError as exc:
                if reader.broken:  # the server went away: the next read connects again
                    reader.close()
                    self._light = None
                    raise self._unreachable(exc) from None
                raise self._refused(exc, name) from None

    def _light_connection(self, lib: ctypes.CDLL) -> libpq.Connection:
        """The libpq connection of :meth:`_read`, opened (and its schema checked) on
        first use, and again after it was lost."""
        conn = self._light
        if conn is not None and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
            self._light = None
        try:
            conn = libpq.Connection(lib, self._connection_params())
        except libpq.PqError as exc:
            raise self._unreachable(exc) from None
        try:
            try:
                row = conn.row("SELECT max(version) FROM runner.schema_version")
            except libpq.PqError as exc:
                if exc.sqlstate != "42P01":  # undefined_table: no schema yet
                    raise self._unreadable_schema(exc) from None
                row = None
            self._check_version(None if row is None or row[0] is None else int(row[0]))
        except BaseException:
            conn.close()
            raise
        self._light = conn
        return conn

    def _lose(self, why: str) -> NoReturn:
        """The connection of held locks ended: fence every later write, stop what the
        holders' steps run, and raise LockLostError."""
        with self._losing:  # once, whether the watcher or the command notices first
            first = self._lost is None
            if first:
                self._lost = why
        if first:
            for lease in list(self._leases.values()):
                lease.lost(why)
        self._raise_lost()

    def _raise_lost(self) -> NoReturn:
        names = ", ".join(f"'{n}'" for n in sorted(self._leases)) or "its environment"
        raise LockLostError(
            f"lost the lock of environment {names}: {self._lost}; this command stopped its "
            "steps and wrote nothing more",
            hint="another command may hold the environment now: see `runner status "
            f"{next(iter(sorted(self._leases)), 'NAME')}`, then `runner resume` it",
            environment=next(iter(sorted(self._leases)), None),
        )

    def close(self) -> None:
        with self._mutex:
            if self._light is not None:
                self._light.close()
                self._light = None
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- records ---------------------------------------------------------------------

    def data_dir(self, name: str) -> str:
        return f"data/{check_name(name)}"

    def exists(self, name: str) -> bool:
        check_name(name)
        with self._read(name) as db:
            return self._exists(db, name)

    def _not_found(self, name: str) -> EnvironmentNotFoundError:
        return EnvironmentNotFoundError(
            f"no environment '{name}'",
            hint="see the environments with `runner list`, or make this one with "
            f"`runner create {name}`",
            environment=name,
        )

    def _state_error(self, name: str, problem: str, hint: str | None = None) -> NoReturn:
        raise StateFileError(
            f"the record of environment '{name}' in {shown_url(self.url)} {problem}",
            hint=hint
            or "restore a snapshot (`runner snapshots`) or repair the row by hand; the runner "
            "never rewrites a record it cannot read",
            environment=name,
        )

    def _document(self, record: Record, serial: int, updated_at: str) -> str:
        document = record.to_json()
        document["serial"] = serial
        document["updated_at"] = updated_at
        check_name(document.get("name", ""))
        problem = record_problem(document)
        text = ""
        if problem is None:
            try:
                text = json.dumps(document, allow_nan=False)
            except ValueError as exc:
                problem = f"holds a value JSON cannot: {exc}"
        if problem:
            raise StorageError(
                f"refusing to store an invalid record for environment '{record.name}': it "
                f"{problem}",
                hint="this is a bug in runner or a step plugin; the stored state is unchanged",
                environment=record.name,
            )
        return text

    def _parsed(self, name: str, text: str, *, full: bool = True) -> Record:
        try:
            document = json.loads(text)
        except ValueError as exc:
            self._state_error(name, f"is not valid JSON ({exc})")
        except RecursionError:
            self._state_error(name, TOO_DEEP)
        problem = checked_problem(record_problem if full else light_problem, document)
        if problem is None and document.get("name") != name:
            problem = f"names environment '{document.get('name')}'"
        if problem:
            hint = None
            if "newer runner" in problem:
                hint = "install a runner that reads this format; this one will not touch it"
            self._state_error(name, problem, hint)
        try:
            return Record.from_json(document)
        except (KeyError, TypeError, ValueError, AttributeError):
            self._state_error(name, "does not match the state format")

    def create(self, record: Record) -> None:
        name = check_name(record.name)
        text = self._document(record, record.serial, record.updated_at)
        with self._tx(name) as db:
            made = self._insert_new(db, record, text)
            if made:
                self._keep(db, record, text)
        if not made:
            self._exists_error(name)

    @staticmethod
    def _insert_new(db: psycopg.Connection[Any], record: Record, text: str) -> bool:
        """Insert ``record`` (as ``text``) unless its name is taken; whether it was."""
        done = db.execute(
            "INSERT INTO runner.environments (name, serial, state, updated_at, document) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
            (record.name, record.serial, record.state, record.updated_at, text),
        )
        return done.rowcount == 1

    def _exists_error(self, name: str) -> NoReturn:
        try:
            state = f"state: {self.load(name).state}"
        except (StateFileError, EnvironmentNotFoundError) as exc:
            state = f"unreadable: {exc.message}"
        raise EnvironmentExistsError(
            f"environment '{name}' already exists ({state})",
            hint=f"choose another name, or see it with `runner status {name}`",
            environment=name,
        )

    def _keep(self, db: psycopg.Connection[Any], record: Record, text: str) -> None:
        """Keep the version just written as a snapshot; drop those beyond the limit."""
        db.execute(
            "INSERT INTO runner.snapshots (name, serial, saved_at, state, change, lineage, "
            "document) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name, serial) DO "
            "UPDATE SET document = EXCLUDED.document, saved_at = EXCLUDED.saved_at, "
            "state = EXCLUDED.state, change = EXCLUDED.change, lineage = EXCLUDED.lineage",
            (
                record.name,
                record.serial,
                record.updated_at,
                record.state,
                record.change,
                record.lineage,
                text,
            ),
        )
        db.execute(
            "DELETE FROM runner.snapshots WHERE name = %s AND serial < %s",
            (record.name, record.serial - self.keep_snapshots),
        )

    def load(self, name: str) -> Record:
        check_name(name)
        with self._read(name) as db:
            row = db.row("SELECT document FROM runner.environments WHERE name = %s", (name,))
        if row is None:
            raise self._not_found(name)
        return self._parsed(name, row[0])

    def save(self, record: Record, *, serial: int | None = None) -> None:
        name = check_name(record.name)
        expected = record.serial
        written = next_serial(expected, serial)
        updated_at = now_iso()
        text = self._document(record, written, updated_at)
        with self._tx(name) as db:
            done = db.execute(
                "UPDATE runner.environments SET serial = %s, state = %s, updated_at = %s, "
                "document = %s WHERE name = %s AND serial = %s",
                (written, record.state, updated_at, text, name, expected),
            )
            if done.rowcount == 1:
                kept = struct.replace(record, serial=written, updated_at=updated_at)
                self._keep(db, kept, text)
                stored = None
            else:
                row = db.execute(
                    "SELECT serial FROM runner.environments WHERE name = %s", (name,)
                ).fetchone()
                stored = row[0] if row else None
        if done.rowcount != 1:
            if stored is None:
                raise self._not_found(name)
            raise ConflictError(
                f"environment '{name}' changed under this command: the database holds "
                f"serial {stored}, expected {expected}; nothing was written",
                hint=f"another program changed the environment; see `runner status {name}` "
                "and run the command again",
                environment=name,
            )
        record.serial = written
        record.updated_at = updated_at
        record.format = STATE_FORMAT

    def delete(self, name: str) -> None:
        check_name(name)
        with self._tx(name) as db:
            done = db.execute("DELETE FROM runner.environments WHERE name = %s", (name,))
        if done.rowcount != 1:
            raise EnvironmentNotFoundError(
                f"no environment '{name}'",
                hint="see the environments with `runner list`",
                environment=name,
            )

    def list(self) -> builtins.list[ListEntry]:
        with self._read() as db:
            rows = db.rows(
                'SELECT name, document FROM runner.environments ORDER BY name COLLATE "C"'
            )
        result: builtins.list[ListEntry] = []
        for name, text in rows:
            try:
                record = self._parsed(name, text, full=False)
            except StateFileError as exc:
                result.append(ListEntry(name=name, error=exc.message))
                continue
            result.append(ListEntry(name=name, record=record))
        return result

    # -- snapshots -------------------------------------------------------------------

    def list_snapshots(self, name: str) -> builtins.list[SnapshotInfo]:
        check_name(name)
        with self._read(name) as db:
            rows = db.rows(
                "SELECT serial, saved_at, state, change, lineage FROM runner.snapshots "
                f"WHERE name = %s AND {_KEPT} ORDER BY serial",
                (name, name, self.keep_snapshots),
            )
            if not rows and not self._exists(db, name):
                raise self._not_found(name)
        return [
            SnapshotInfo(int(s), at, state, change, lineage)
            for s, at, state, change, lineage in rows
        ]

    def load_snapshot(self, name: str, serial: int) -> Record:
        check_name(name)
        with self._read(name) as db:
            row = db.row(
                "SELECT document FROM runner.snapshots WHERE name = %s AND serial = %s AND "
                + _KEPT,
                (name, serial, name, self.keep_snapshots),
            )
        if row is None:
            kept = [s.serial for s in self.list_snapshots(name)]
            raise StateError(
                f"environment '{name}' has no snapshot of serial {serial}",
                hint=f"the kept serials are {', '.join(map(str, kept))}; see them with "
                f"`runner snapshots {name}`",
                environment=name,
            )
        return self._parsed(name, row[0])

    @staticmethod
    def _exists(db: _Reader, name: str) -> bool:
        return db.row("SELECT 1 FROM runner.environments WHERE name = %s", (name,)) is not None

    # -- the lock --------------------------------------------------------------------

    def try_lock(self, name: str, me: LockInfo) -> PostgresLease | None:
        return self._acquire(name, me, 0.0)

    def wait_lock(self, name: str, me: LockInfo, seconds: float) -> PostgresLease | None:
        return self._acquire(name, me, seconds)

    def _acquire(self, name: str, me: LockInfo, seconds: float) -> PostgresLease | None:
        check_name(name)
        psycopg = _driver()
        key = lock_key(name)
        if name in self._leases:  # held by this store already (session locks nest)
            deadline = time.monotonic() + seconds
            while name in self._leases and time.monotonic() < deadline:
                time.sleep(0.01)
            if name in self._leases:
                return None
        with self._mutex:
            if not self.exists(name):
                raise self._not_found(name)
            conn = self._db()
            with self._on_wire(seconds):  # a lock wait may take that long
                try:
                    if seconds <= 0:
                        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
                        if not (row and row[0]):
                            return None
                    else:
                        limit = (
                            "0" if seconds == float("inf") else f"{max(1, int(seconds * 1000))}ms"
                        )
                        try:
                            with conn.transaction():
                                conn.execute(
                                    "SELECT set_config('lock_timeout', %s, true)", (limit,)
                                )
                                conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
                        except psycopg.errors.LockNotAvailable:
                            return None
                    with conn.transaction():
                        row = conn.execute(
                            "SELECT pid, host, command, started_at, processes, process_ids FROM "
                            "runner.lock_holders WHERE name = %s FOR UPDATE",
                            (name,),
                        ).fetchone()
                        conn.execute(
                            "INSERT INTO runner.lock_holders (name, backend_pid, pid, host, "
                            "command, started_at, processes, process_ids) VALUES (%s, "
                            "pg_backend_pid(), %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO "
                            "UPDATE SET backend_pid = EXCLUDED.backend_pid, pid = EXCLUDED.pid, "
                            "host = EXCLUDED.host, command = EXCLUDED.command, started_at = "
                            "EXCLUDED.started_at, processes = EXCLUDED.processes, process_ids = "
                            "EXCLUDED.process_ids",
                            (name, me.pid, me.host, me.command, me.started_at, *_columns(me)),
                        )
                except psycopg.Error as exc:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
                    self._failed(exc, name)
            lease = PostgresLease(self, name, me, _holder(row) if row else None)
            self._leases[name] = lease
        lease.watch()
        return lease

    def _release(self, lease: PostgresLease) -> None:
        psycopg = _driver()
        with self._mutex:
            if self._leases.get(lease.name) is not lease:
                return
            del self._leases[lease.name]
            conn = self._conn
            if self._lost is not None:
                if not self._leases:
                    self._lost = None  # a later command of this store starts afresh
                    self.close()
                return
            if conn is None or conn.closed or conn.broken:
                return
            try:
                with self._on_wire(), conn.transaction():
                    conn.execute(
                        "DELETE FROM runner.lock_holders WHERE name = %s AND backend_pid = "
                        "pg_backend_pid()",
                        (lease.name,),
                    )
                with self._on_wire():
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock_key(lease.name))
            except psycopg.Error as exc:  # the session ends with the process anyway
                logger().debug("environment '%s': releasing its lock failed: %s", lease.name, exc)
                self.close()

    def _check(self) -> bool:
        """Whether the connection of the held locks is lost (then it is cut, see
        :meth:`_cut`): a request of the command in flight for longer than
        ``answer_within`` (a silent connection), else a ``SELECT 1`` of the watcher's own
        not answered within that, or failed on an ended connection."""
        answer_by = self._answer_by
        if answer_by is not None:  # the command waits for an answer: it is the check
            if time.monotonic() <= answer_by:
                return False
            self._cut(self._silent())
            return True
        if not self._mutex.acquire(blocking=False):
            return False  # a request of the command starts: its answer tells
        try:
            conn = self._conn
            if self._lost is not None or conn is None or not self._leases:
                return False
            if conn.closed or conn.broken:
                why = "the connection to the database ended"
            else:
                try:
                    if not _ping(conn.pgconn, self.answer_within):
                        return False
                    why = self._silent()
                except _driver().OperationalError as exc:
                    why = f"the connection to the database ended ({_first_line(exc)})"
            self._cut(why)  # before any request of the command can start on it
            return True
        finally:
            self._mutex.release()

    def _silent(self) -> str:
        return (
            f"the database did not answer for {self.answer_within:g} s (the network or the "
            "server is gone)"
        )

    def _cut(self, why: str) -> None:
        """The connection of the held locks is lost (``why``): fence and stop the steps
        (see :meth:`_lose`), then shut its socket down, so that a request waiting on it
        fails at once and the server ends the session once it hears of it. Needs no
        ``_mutex``: a request of the command may hold it, waiting."""
        with contextlib.suppress(LockLostError):
            self._lose(why)
        conn = self._conn
        if conn is None or conn.closed:
            return
        with contextlib.suppress(OSError, _driver().Error):
            sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()

    def _note(self, lease: PostgresLease) -> None:
        with self._tx(lease.name) as db:
            db.execute(
                "UPDATE runner.lock_holders SET processes = %s, process_ids = %s WHERE "
                "name = %s AND backend_pid = pg_backend_pid()",
                (*_columns(lease.holder), lease.name),
            )

    def _holders(self, name: str) -> tuple[bool, LockInfo | None, LockInfo | None]:
        """(whether the lock is held, the holder row of the lock's backend, the row of a
        holder that is gone)."""
        with self._read(name) as db:
            rows = db.rows(
                "SELECT l.pid, h.backend_pid, h.pid, h.host, h.command, h.started_at, "
                "array_to_string(h.processes, ','), array_to_string(h.process_ids, ',') "
                "FROM (SELECT 1) one LEFT JOIN pg_locks l "
                "ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = "
                f"%s AND l.objid::bigint = {_OBJID} AND l.database = (SELECT oid FROM "
                "pg_database WHERE datname = current_database()) LEFT JOIN "
                "runner.lock_holders h ON h.name = %s",
                (_oid(NAMESPACE), name, name),
            )
        lock_pids = {r[0] for r in rows if r[0] is not None}
        row = rows[0] if rows else None
        info = _holder(row[2:]) if row is not None and row[1] is not None else None
        if not lock_pids:
            return False, None, info
        if info is not None and row is not None and row[1] in lock_pids:
            return True, info, None
        return True, None, None

    def lock_holder(self, name: str) -> LockInfo | None:
        held, info, _ = self._holders(name)
        if not held:
            return None
        return info or LockInfo.unknown()

    def last_holder(self, name: str) -> LockInfo | None:
        held, _, gone = self._holders(name)
        return None if held else gone

    # -- events ----------------------------------------------------------------------

    def append_event(self, name: str, event: dict[str, Any]) -> None:
        check_name(name)
        psycopg = _driver()
        body = json.dumps(event, separators=(",", ":"))
        try:
            with self._tx(name) as db:
                db.execute("INSERT INTO runner.events (name, body) VALUES (%s, %s)", (name, body))
        except StorageError as exc:
            if isinstance(exc.__context__, psycopg.errors.ForeignKeyViolation):
                raise self._not_found(name) from None
            raise

    def read_events(self, name: str, limit: int | None = None) -> Events:
        check_name(name)
        if limit is not None and limit <= 0:
            if not self.exists(name):
                raise self._not_found(name)
            return []
        with self._read(name) as db:
            if limit is None:
                rows = db.rows(
                    "SELECT body FROM runner.events WHERE name = %s ORDER BY id", (name,)
                )
            else:
                rows = db.rows(
                    "SELECT body FROM (SELECT id, body FROM runner.events WHERE name = %s "
                    "ORDER BY id DESC LIMIT %s) last ORDER BY id",
                    (name, limit + 16),
                )
            if not rows and not self._exists(db, name):
                raise self._not_found(name)
        events: Events = []
        for (body,) in rows:
            try:
                event = json.loads(body)
            except (ValueError, RecursionError):
                continue
            if isinstance(event, dict):
                events.append(event)
        return events if limit is None else events[-limit:]

    # -- artifacts -------------------------------------------------------------------

    def _new_ref(self, name: str, kind: ArtifactKind, label: str) -> str:
        stamp = now_stamp()
        while stamp <= self._last_stamp:
            time.sleep(0.001)
            stamp = now_stamp()
        self._last_stamp = stamp
        return f"{self.data_dir(name)}/{_FOLDERS[kind]}/{stamp}-{label}.log"

    def _insert_artifact(self, name: str, kind: ArtifactKind, ref: str, text: str | None) -> int:
        psycopg = _driver()
        try:
            with self._tx(name) as db:
                return _add_artifact(db, name, kind, ref, text)
        except StorageError as exc:
            if isinstance(exc.__context__, psycopg.errors.ForeignKeyViolation):
                raise self._not_found(name) from None
            raise

    def open_artifact(self, name: str, kind: ArtifactKind, label: str) -> PostgresArtifact:
        ref = self._new_ref(check_name(name), kind, label)
        return PostgresArtifact(self, name, self._insert_artifact(name, kind, ref, None), ref)

    def write_artifact(self, name: str, kind: ArtifactKind, label: str, text: str) -> str:
        ref = self._new_ref(check_name(name), kind, label)
        self._insert_artifact(name, kind, ref, text)
        return ref

    def _append_chunk(self, name: str, artifact: int, text: str) -> None:
        """One more piece of a run log; its commit does not wait for the disk (as a
        run log file's write is not fsynced): records and traces do."""
        with self._tx(name) as db:
            db.execute("SET LOCAL synchronous_commit = off")
            db.execute(
                "INSERT INTO runner.artifact_chunks (artifact, body) VALUES (%s, %s)",
                (artifact, text),
            )

    def read_artifact(self, name: str, ref: str) -> str:
        check_name(name)
        with self._read(name) as db:
            row = db.row(
                "SELECT (SELECT coalesce(string_agg(c.body, '' ORDER BY c.id), '') FROM "
                "runner.artifact_chunks c WHERE c.artifact = a.id) FROM runner.artifacts a "
                "WHERE a.name = %s AND a.ref = %s",
                (name, ref),
            )
            if row is None and not self._exists(db, name):
                raise self._not_found(name)
        if row is None:
            raise StateFileError(
                f"environment '{name}' has no artifact {ref}",
                hint=f"see `runner status {name}` for its trace and run log",
                environment=name,
            )
        return str(row[0])

    def list_artifacts(self, name: str, kind: ArtifactKind) -> builtins.list[str]:
        check_name(name)
        with self._read(name) as db:
            rows = db.rows(
                "SELECT ref FROM runner.artifacts WHERE name = %s AND kind = %s ORDER BY id",
                (name, kind),
            )
            if not rows and not self._exists(db, name):
                raise self._not_found(name)
        return [r[0] for r in rows]

    # -- import (migration) ----------------------------------------------------------

    def import_environment(self, copy: EnvironmentCopy) -> None:
        record = copy.record
        name = check_name(record.name)
        text = self._document(record, record.serial, record.updated_at)
        versions = [(s, self._document(s, s.serial, s.updated_at)) for s in copy.snapshots]
        with self._tx(name) as db:
            made = self._insert_new(db, record, text)
            if made:
                with db.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO runner.events (name, body) VALUES (%s, %s)",
                        [(name, json.dumps(e, separators=(",", ":"))) for e in copy.events],
                    )
                for version, document in versions:
                    self._keep(db, version, document)
                for kind, ref, body in copy.artifacts:
                    _add_artifact(db, name, kind, ref, body)
        if not made:
            self._exists_error(name)


def _ping(pg: Any, seconds: float) -> bool:
    """Whether ``SELECT 1`` sent on ``pg`` (psycopg's libpq connection: idle, in
    nonblocking mode) goes unanswered for ``seconds`` (a silent connection); False when
    the answer came. A connection that ended raises psycopg's OperationalError."""
    import selectors

    psycopg = _driver()
    deadline = time.monotonic() + seconds

    def ready(events: int) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        with selectors.DefaultSelector() as selector:
            selector.register(pg.socket, events)
            return bool(selector.select(left))

    pg.send_query(b"SELECT 1")
    while pg.flush():
        if not ready(selectors.EVENT_READ | selectors.EVENT_WRITE):
            return True
        pg.consume_input()
    failed = ""
    while True:
        while not pg.is_busy():
            result = pg.get_result()
            if result is None:
                if pg.status != psycopg.pq.ConnStatus.OK:
                    raise psycopg.OperationalError(failed or "the server closed the connection")
                return False
            if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                failed = (result.error_message or b"").decode("utf-8", "replace").strip()
        if not ready(selectors.EVENT_READ):
            return True
        pg.consume_input()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _holder(row: Any) -> LockInfo:
    """The holder of a ``lock_holders`` row (its process groups and what identifies
    them as arrays, or as the text of ``array_to_string``). A group that ``process_ids``
    does not identify (a row an older runner wrote) stays a plain number."""
    pid, host, command, started_at, processes, process_ids = row
    if isinstance(processes, str):
        processes = [int(group) for group in processes.split(",") if group]
    if isinstance(process_ids, str):
        process_ids = process_ids.split(",") if process_ids else []
    known = {int(g): g for g in map(ProcessGroup.from_text, process_ids or ()) if g is not None}
    groups = tuple(known.get(group, group) for group in processes or ())
    return LockInfo(int(pid), host, command, started_at, groups)


def _columns(holder: LockInfo) -> tuple[list[int], list[str]]:
    """The ``processes`` and ``process_ids`` of ``holder``'s row."""
    groups = holder.processes
    return [int(g) for g in groups], [
        g.to_text() for g in groups if isinstance(g, ProcessGroup) and g.identified
    ]


class _DriverReader:
    """Reads on psycopg's connection, as :class:`~runner.store.libpq.Connection` reads on
    libpq's."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def rows(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(statement, params or None).fetchall()

    def row(self, statement: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        return self._conn.execute(statement, params or None).fetchone()


class PostgresArtifact:
    """A run log being written: each write one insert, readable at once by others."""

    def __init__(self, store: PostgresStore, name: str, artifact: int, ref: str) -> None:
        self._store = store
        self._name = name
        self._artifact = artifact
        self.ref = ref

    def write(self, text: str) -> None:
        if text:
            self._store._append_chunk(self._name, self._artifact, text)

    def close(self) -> None:
        return None


class PostgresLease:
    """A held advisory lock, watched: when its connection ends, the process groups the
    holder noted are stopped (SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`)."""

    def __init__(
        self, store: PostgresStore, name: str, me: LockInfo, previous: LockInfo | None
    ) -> None:
        self._store = store
        self.name = name
        self.holder = me
        self.previous = previous
        import threading

        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost_reason: str | None = None

    def watch(self) -> None:
        if self._store.check_interval <= 0:
            return
        import threading

        self._thread = threading.Thread(
            target=self._watch, name=f"runner-lock-{self.name}", daemon=True
        )
        self._thread.start()

    def _watch(self) -> None:
        store = self._store
        while not self._done.wait(store.check_interval):
            if store._lost is not None:
                return
            if store._check():
                return

    def lost(self, why: str) -> None:
        """The lock is gone: say so and stop the step's processes."""
        self.lost_reason = why
        groups = self.holder.processes
        logger().info(  # the command's error says it, once
            "environment=%s lost its lock: %s; stopping the step's processes %s",
            self.name,
            why,
            ", ".join(map(str, groups)) or "(none)",
        )
        if groups:
            import threading

            threading.Thread(target=_stop_groups, args=(groups,), daemon=True).start()

    def note_processes(self, groups: tuple[int, ...]) -> None:
        self.holder = struct.replace(self.holder, processes=groups)
        if self.lost_reason is not None:
            if groups:
                _stop_groups(groups)
            return
        try:
            self._store._note(self)
        except StorageError as exc:  # the record is a courtesy; a lost lock stops groups
            logger().debug("environment '%s': cannot note its processes: %s", self.name, exc)

    def release(self) -> None:
        self._done.set()
        self._store._release(self)


def _stop_groups(groups: tuple[int, ...]) -> None:
    for group in groups:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    alive = list(groups)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [g for g in alive if _group_alive(g)]
    for group in alive:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except OSError:
        return False
    return True
