"""A small read-only PostgreSQL client over libpq itself (through :mod:`ctypes`).

Importing the PostgreSQL driver (psycopg) costs several times what a read-only command
such as `runner status` costs in all, and those commands need none of its machinery
(adaptation of types, transactions, pools): a few statements with text parameters and
text results. :func:`library` loads the libpq psycopg itself uses (the one bundled with
psycopg's binary package, else the system's ``libpq.so.5``) and :class:`Connection`
connects with the same connection parameters (libpq's own means for credentials apply:
``PGPASSWORD``, ``PGPASSFILE``, service files) and runs statements.
:mod:`runner.store.postgres` reads through it and keeps every write, the lock and the
fencing on psycopg.

``RUNNER_PG_LIBPQ`` chooses another library: the path of a libpq to load, or ``off``
to read through psycopg too. A library that cannot be loaded means psycopg reads.

Messages are worded as psycopg words them (``connection failed: ...``, the server's
primary message), so that either way the runner says the same.
"""

from __future__ import annotations

import ctypes
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Connection", "PqError", "library", "parse", "timeout"]

#: ``RUNNER_PG_LIBPQ``: a libpq to load instead, or ``off`` (psycopg reads).
LIBPQ_ENV = "RUNNER_PG_LIBPQ"

_CONNECTION_OK = 0
_CONNECTION_BAD = 1
_PGRES_POLLING_FAILED = 0
_PGRES_POLLING_READING = 1
_PGRES_POLLING_OK = 3
_PGRES_COMMAND_OK = 1
_PGRES_TUPLES_OK = 2
_PG_DIAG_SQLSTATE = ord("C")
_PG_DIAG_MESSAGE_PRIMARY = ord("M")
#: Severities libpq may put before a message (psycopg strips them too).
_SEVERITIES = ("ERROR", "FATAL", "PANIC", "WARNING", "NOTICE", "INFO", "LOG", "DEBUG")

_P = ctypes.c_void_p
_S = ctypes.c_char_p
_I = ctypes.c_int

#: (name, argument types, result type) of every libpq function used.
_FUNCTIONS: tuple[tuple[str, list[type], type | None], ...] = (
    ("PQconninfoParse", [_S, ctypes.POINTER(_S)], _P),
    ("PQconninfoFree", [_P], None),
    ("PQfreemem", [_P], None),
    ("PQconnectStartParams", [ctypes.POINTER(_S), ctypes.POINTER(_S), _I], _P),
    ("PQconnectPoll", [_P], _I),
    ("PQsocket", [_P], _I),
    ("PQstatus", [_P], _I),
    ("PQerrorMessage", [_P], _S),
    ("PQfinish", [_P], None),
    ("PQsendQueryParams", [_P, _S, _I, _P, ctypes.POINTER(_S), _P, _P, _I], _I),
    ("PQconsumeInput", [_P], _I),
    ("PQisBusy", [_P], _I),
    ("PQgetResult", [_P], _P),
    ("PQresultStatus", [_P], _I),
    ("PQresultErrorField", [_P, _I], _S),
    ("PQresultErrorMessage", [_P], _S),
    ("PQntuples", [_P], _I),
    ("PQnfields", [_P], _I),
    ("PQgetvalue", [_P, _I, _I], _S),
    ("PQgetisnull", [_P, _I, _I], _I),
    ("PQclear", [_P], None),
)


class _Option(ctypes.Structure):
    """libpq's ``PQconninfoOption``."""

    _fields_ = [
        ("keyword", _S),
        ("envvar", _S),
        ("compiled", _S),
        ("val", _S),
        ("label", _S),
        ("dispchar", _S),
        ("dispsize", _I),
    ]


class PqError(Exception):
    """A connection or a statement that failed: the message as psycopg words it, and
    the SQLSTATE when the server gave one."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


_loaded: dict[str, ctypes.CDLL | None] = {}


def library() -> ctypes.CDLL | None:
    """The libpq to read with (loaded once), or None: psycopg is not installed (its
    own message then says what to install), ``RUNNER_PG_LIBPQ`` is ``off``, or no
    libpq can be loaded."""
    chosen = os.environ.get(LIBPQ_ENV, "")
    if chosen not in _loaded:
        _loaded[chosen] = _load(chosen)
    return _loaded[chosen]


def _load(chosen: str) -> ctypes.CDLL | None:
    if chosen == "off" or not _installed("psycopg"):
        return None
    for path in [chosen] if chosen else _candidates():
        try:
            lib = ctypes.CDLL(path)
            for name, arguments, result in _FUNCTIONS:
                function = getattr(lib, name)
                function.argtypes = arguments
                function.restype = result
        except (OSError, AttributeError):
            continue
        return lib
    return None


def _installed(module: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _candidates() -> list[str]:
    """The libpq psycopg uses: its binary package's own, else the system's."""
    found: list[str] = []
    if os.environ.get("PSYCOPG_IMPL", "binary") == "binary":
        from importlib.util import find_spec

        try:
            spec = find_spec("psycopg_binary")
        except (ImportError, ValueError):
            spec = None
        for folder in (spec and spec.submodule_search_locations) or ():
            libs = os.path.join(os.path.dirname(folder), "psycopg_binary.libs")
            try:
                names = sorted(os.listdir(libs))
            except OSError:
                continue
            found += [os.path.join(libs, n) for n in names if n.startswith("libpq")]
    found.append("libpq.5.dylib" if sys.platform == "darwin" else "libpq.so.5")
    return found


def parse(lib: ctypes.CDLL, url: str) -> dict[str, str]:
    """The connection parameters ``url`` sets (libpq's own parsing, as psycopg's
    ``conninfo_to_dict``); PqError with libpq's reason when it is not valid."""
    error = _S()
    options = lib.PQconninfoParse(url.encode(), ctypes.byref(error))
    if not options:
        reason = (error.value or b"cannot parse the connection string").decode("utf-8", "replace")
        if error:
            lib.PQfreemem(ctypes.cast(error, _P))
        raise PqError(reason.strip())
    try:
        params: dict[str, str] = {}
        option = ctypes.cast(options, ctypes.POINTER(_Option))
        index = 0
        while option[index].keyword is not None:
            value = option[index].val
            if value is not None:
                params[option[index].keyword.decode()] = value.decode("utf-8", "replace")
            index += 1
        return params
    finally:
        lib.PQconninfoFree(options)


def timeout(value: str | None) -> float:
    """Seconds to wait for a connection, by psycopg's rule: ``connect_timeout`` (at least
    2), else 130."""
    try:
        seconds = int(float(value)) if value is not None else 130
    except (ValueError, OverflowError):  # "soon", "inf"
        raise PqError(f"bad value for connect_timeout: {value!r}") from None
    return 130.0 if seconds <= 0 else float(max(2, seconds))


def _strip(message: str) -> str:
    """``message`` without a leading severity ("FATAL:  ..."), stripped."""
    head, sep, rest = message.partition(":  ")
    return (rest if sep and head in _SEVERITIES else message).strip()


class Connection:
    """One connection, opened with ``params`` (text results, each statement on its
    own: libpq's default is autocommit). Not safe for two threads at once."""

    def __init__(self, lib: ctypes.CDLL, params: dict[str, str]) -> None:
        self._lib = lib
        self._statements: dict[str, bytes] = {}
        items = [*params.items(), ("client_encoding", "UTF8")]
        keywords = (_S * (len(items) + 1))(*(k.encode() for k, _ in items), None)
        values = (_S * (len(items) + 1))(*(v.encode() for _, v in items), None)
        self._conn: int | None = lib.PQconnectStartParams(keywords, values, 0)
        if not self._conn:
            raise MemoryError("libpq could not allocate a connection")
        try:
            self._connect(timeout(params.get("connect_timeout")))
        except BaseException:
            self.close()
            raise

    def _connect(self, timeout: float) -> None:
        """Poll the connection started until it is made, as psycopg does (and with its
        words when it fails)."""
        import select
        import time

        lib, conn = self._lib, self._conn
        deadline = time.monotonic() + timeout
        while True:
            if lib.PQstatus(conn) == _CONNECTION_BAD:
                raise PqError(f"connection is bad: {self._message()}")
            polled = lib.PQconnectPoll(conn)
            if polled == _PGRES_POLLING_OK:
                return
            if polled == _PGRES_POLLING_FAILED:
                raise PqError(f"connection failed: {self._message()}")
            socket = lib.PQsocket(conn)
            waiting = ([socket], []) if polled == _PGRES_POLLING_READING else ([], [socket])
            left = deadline - time.monotonic()
            if left <= 0 or not any(select.select(*waiting, [], left)[:2]):
                raise PqError("connection timeout expired")

    def __del__(self) -> None:
        self.close()

    def _message(self) -> str:
        text: bytes = self._lib.PQerrorMessage(self._conn) or b""
        return _strip(text.decode("utf-8", "replace")) or "no error details available"

    @property
    def broken(self) -> bool:
        """Whether the connection is closed or has ended (the server went away)."""
        return self._conn is None or self._lib.PQstatus(self._conn) != _CONNECTION_OK

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn:
            self._lib.PQfinish(conn)

    def rows(self, statement: str, params: Sequence[object] = ()) -> list[tuple[str | None, ...]]:
        """The rows of ``statement`` (``%s`` marks each parameter, as with psycopg),
        every value as text (None for NULL); PqError when it fails."""
        lib = self._lib
        if self._conn is None:
            raise PqError("the connection is closed")
        command = self._statements.get(statement)
        if command is None:
            pieces = statement.split("%s")
            numbered = pieces[0] + "".join(f"${i}{p}" for i, p in enumerate(pieces[1:], 1))
            command = self._statements[statement] = numbered.encode()
        result = self._execute(command, params)
        try:
            if lib.PQresultStatus(result) not in (_PGRES_TUPLES_OK, _PGRES_COMMAND_OK):
                raise self._failure(result)
            value, null = lib.PQgetvalue, lib.PQgetisnull
            columns = range(lib.PQnfields(result))
            found: list[tuple[str | None, ...]] = []
            for r in range(lib.PQntuples(result)):
                row: list[str | None] = []
                for c in columns:
                    text = value(result, r, c)  # b"" for NULL too
                    row.append(text.decode() if text or not null(result, r, c) else None)
                found.append(tuple(row))
            return found
        finally:
            lib.PQclear(result)

    def _execute(self, command: bytes, params: Sequence[object]) -> int:
        """Send ``command`` and wait for its result, as psycopg waits: in ``select``, so
        that a signal (Ctrl+C) stops the wait. A wait that ends so closes the connection
        (the next read connects again)."""
        import select

        lib, conn = self._lib, self._conn
        values = (_S * max(1, len(params)))(
            *(None if p is None else str(p).encode() for p in params)
        )
        if not lib.PQsendQueryParams(conn, command, len(params), None, values, None, None, 0):
            raise PqError(self._message())
        socket = lib.PQsocket(conn)
        result = 0
        try:
            while True:
                while lib.PQisBusy(conn):
                    select.select([socket], [], [])
                    if not lib.PQconsumeInput(conn):
                        break  # the connection failed: PQgetResult says why
                found = lib.PQgetResult(conn)
                if not found:
                    break
                if result:  # one statement, one result: the rest is the protocol's
                    lib.PQclear(found)
                else:
                    result = found
                if lib.PQstatus(conn) != _CONNECTION_OK:
                    break
        except BaseException:
            if result:
                lib.PQclear(result)
            self.close()
            raise
        if not result:
            raise PqError(self._message())
        return result

    def row(self, statement: str, params: Sequence[object] = ()) -> tuple[str | None, ...] | None:
        """The first row of ``statement``, None when there is none."""
        found = self.rows(statement, params)
        return found[0] if found else None

    def _failure(self, result: int) -> PqError:
        lib = self._lib
        primary: bytes | None = lib.PQresultErrorField(result, _PG_DIAG_MESSAGE_PRIMARY)
        if primary:
            message = primary.decode("utf-8", "replace").strip()
        else:
            whole: bytes = lib.PQresultErrorMessage(result) or b""
            message = _strip(whole.decode("utf-8", "replace")) or self._message()
        state: bytes | None = lib.PQresultErrorField(result, _PG_DIAG_SQLSTATE)
        return PqError(message, state.decode() if state else None)
