"""What the whole suite shares: the working folder, records, stores.

- ``work``: a working directory holding the test module's ``MACHINE`` (when it has one)
  as ``machine.yaml``; whatever a step left running (``*.pid`` files) is killed after.
- :func:`make_record` builds a typed :class:`~runner.store.record.Record`;
  :func:`state_document` builds the stored JSON form, for raw state files and schema
  checks (it may hold what no record can: a wrong type, a missing or unknown key).
- ``store``: an empty :class:`~runner.store.files.FileStore` on ``tmp_path``.
- ``pg_server``: one PostgreSQL server for the session (``tests/pgserver.py``), and
  ``pg_url``: a new database on it with the runner's schema, for each test.

The builders are plain functions, imported where a module needs them at import time
(``from tests.conftest import make_record``), and by scripts run in subprocesses.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from runner import struct
from runner.store.files import FileStore
from runner.store.record import Failure, MachineRef, Paths, Record, Run
from tests.helpers import build_tree

if TYPE_CHECKING:
    from tests.pgserver import PgServer

#: A machine digest (any well-formed one: the store does not check it against a file).
DIGEST = "sha256:" + "0" * 64
#: The time records built here were made.
STAMP = "2026-11-22T10:30:15.123Z"


# --- records ----------------------------------------------------------------------------


def make_record(name: str = "demo", **changes: Any) -> Record:
    """A new environment's record (serial 1, state ``created``, machine
    ``tracker-deploy``, inputs ``{"provider": "local"}``), with ``changes`` to its fields
    (``make_record("other", state="provisioned", outputs={...})``)."""
    record = Record(
        name=name,
        state="created",
        machine=MachineRef("tracker-deploy", DIGEST),
        paths=Paths(data_dir=f"data/{name}", build_dir=f"build/{name}"),
        created_at=STAMP,
        updated_at=STAMP,
        inputs={"provider": "local"},
    )
    return struct.replace(record, **changes)


def failed_record(name: str = "demo", **changes: Any) -> Record:
    """The design's example: an environment whose `provision` failed at its third step,
    with every optional field of ``run`` and ``failure`` set."""
    record = make_record(
        name,
        serial=9,
        state="provision_failed",
        outputs={"instance_ip": "127.0.0.1"},
        updated_at="2026-11-22T10:32:45.678Z",
        run=Run(
            phase="provision",
            started_at=STAMP,
            pid=4242,
            host="ci-1",
            completed_steps=["render_opentofu_templates", "opentofu_init"],
            skipped_steps=[],
            current_step="opentofu_apply",
            interrupted=False,
            finished_at="2026-11-22T10:32:45.678Z",
            trace=None,
            log=f"data/{name}/runs/20261122-103015-123-provision.log",
        ),
        failure=Failure(
            phase="provision",
            step="opentofu_apply",
            kind="command_failed",
            summary="tofu apply exited with 1",
            failed_at="2026-11-22T10:32:45.678Z",
            exit_code=1,
            attempts=2,
            trace=f"data/{name}/traces/20261122-103245-678-provision.log",
            hint="see the trace for the engine's error",
            started_at="2026-11-22T10:29:12.778Z",
            duration_s=212.9,
        ),
    )
    return struct.replace(record, **changes)


def state_document(name: str = "demo", **changes: Any) -> dict[str, Any]:
    """The stored form (``state.json``, format 3) of :func:`make_record`'s record, with
    ``changes`` to its keys as JSON values: ``state_document(format=1, serial="1")``."""
    document = make_record(name).to_json()
    document.update(changes)
    return document


def format_1(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` as a format 1 runner wrote it: no ``failure.attempts``, no
    ``failure.hint``, no ``machine.file``."""
    old = dict(document, format=1)
    old["machine"] = {k: v for k, v in old["machine"].items() if k != "file"}
    if old.get("failure") is not None:
        old["failure"] = {k: v for k, v in old["failure"].items() if k not in ("attempts", "hint")}
    return old


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    """An empty file store whose working directory is ``tmp_path``."""
    return FileStore(tmp_path)


def _stop(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads, else the process."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def work(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """``tmp_path`` as the working directory, with the module's ``MACHINE`` (if it has
    one) as ``machine.yaml``. Steps may write their pids to ``*.pid`` files there: those
    processes (and their groups) are killed at the end, so that a failing test never
    leaves a sleeping step behind."""
    machine = getattr(request.module, "MACHINE", None)
    if isinstance(machine, str):
        build_tree(tmp_path, {"machine.yaml": machine})
    yield tmp_path
    for pid_file in tmp_path.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            _stop(int(pid_file.read_text()))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the whole run (started on first use, stopped at the end;
    a failed start shows the server's log)."""
    from tests import pgserver

    try:
        server = pgserver.start()
    except RuntimeError as exc:
        pytest.fail(f"cannot start the tests' PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        with contextlib.suppress(RuntimeError):
            server.stop("immediate")
        server.remove()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a new database of the tests' server, with the runner's schema."""
    from runner.store.postgres import PostgresStore

    url = pg_server.create_database(f"t{os.urandom(6).hex()}")
    PostgresStore(url).init_schema()
    return url
