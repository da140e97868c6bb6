"""A property: random sequences of phases, `force-state`, `inputs`, `restore`, `purge`
and crashes (a real `runner` process killed by its own step, SIGKILL) keep the state,
its snapshots and the event log consistent: every serial up to the current one is in
the log, the log carries the record's lineage and never runs ahead of the record, the
snapshots are the versions saved (serials in a row up to the current one), and a
restore of any listed serial gives that version's content."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import Runner
from runner.errors import LockedError, RunnerError
from runner.store.files import FileStore
from tests.helpers import build_tree, run_cli
from tests.operator.common import MACHINE

#: The states `force-state` picks from (the machine's `build` fails while the input `ok`
#: is false, its default; its step `crash` kills the runner while a file `crash` exists).
STATES = ["created", "building", "built", "build_failed", "destroying", "destroyed"]
#: The fields a restore brings back as they were (serial, time, machine and change are
#: the new save's).
CONTENT = ("state", "inputs", "outputs", "run", "failure", "lineage", "forced", "created_at")

OPERATIONS = st.one_of(
    st.just(("advance",)),
    st.just(("resume",)),
    st.just(("destroy",)),
    st.just(("crash",)),
    st.just(("purge",)),
    st.tuples(st.just("inputs"), st.booleans()),
    st.tuples(st.just("force"), st.sampled_from(STATES)),
    st.tuples(st.just("restore"), st.integers(min_value=0, max_value=40)),
)


def check_consistent(store: FileStore, name: str = "demo") -> None:
    record = store.load(name)
    events = store.read_events(name)
    logged: set[int] = set()
    for event in events:
        logged.add(event["serial"])
        logged.update(event.get("missing", ()))
        assert event.get("lineage") == record.lineage, event
    assert set(range(1, record.serial + 1)) <= logged, (record.serial, sorted(logged))
    assert max(logged) == record.serial  # the log never runs ahead of the record
    kept = store.list_snapshots(name)
    serials = [s.serial for s in kept]
    assert serials == list(range(serials[0], record.serial + 1))
    assert len(serials) == min(record.serial, store.keep_snapshots + 1)
    for info in kept:
        version = store.load_snapshot(name, info.serial)
        assert (version.serial, version.state, version.lineage) == (
            info.serial,
            info.state,
            record.lineage,
        )
    assert store.load_snapshot(name, record.serial) == record


def content(record: Any) -> dict[str, Any]:
    document = record.to_json()
    return {key: document[key] for key in CONTENT}


def apply(work: Path, operation: tuple[Any, ...]) -> None:
    runner = Runner(work, lock_timeout=5, command="property")
    kind = operation[0]
    try:
        if kind == "advance":
            runner.advance("demo")
        elif kind == "resume":
            runner.resume("demo", accept_machine_change=True)
        elif kind == "destroy":
            runner.destroy("demo")
        elif kind == "crash":
            (work / "crash").touch()
            proc = run_cli("up", "demo", cwd=work)
            (work / "crash").unlink(missing_ok=True)
            assert proc.returncode in (-9, 0, 1, 2, 4), proc.stderr
            assert "Traceback" not in proc.stderr
        elif kind == "purge":
            runner.purge("demo", force=True)
            runner.create("demo")
        elif kind == "inputs":
            runner.change_inputs("demo", [f"ok={str(operation[1]).lower()}"])
        elif kind == "force":
            runner.force_state("demo", operation[1], "property test")
        elif kind == "restore":
            store = FileStore(work)
            listed = [s.serial for s in store.list_snapshots("demo")]
            serial = listed[operation[1] % len(listed)]
            wanted = content(store.load_snapshot("demo", serial))
            before = store.load("demo").serial
            result = runner.restore("demo", serial)
            after = store.load("demo")
            assert result.serial == after.serial == before + 1
            assert content(after) == wanted
    except LockedError:
        raise
    except RunnerError as exc:  # refused (not allowed here): nothing may have changed
        assert exc.exit_code in (2, 4), exc


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(OPERATIONS, min_size=1, max_size=10))
def test_random_operations_keep_state_snapshots_and_log_consistent(
    operations: list[tuple[Any, ...]],
) -> None:
    work = Path(tempfile.mkdtemp(prefix="runner-ops-"))
    try:
        build_tree(work, {"machine.yaml": MACHINE, "runner.toml": "[state]\nsnapshots = 5\n"})
        Runner(work).create("demo")
        for operation in operations:
            apply(work, operation)
            check_consistent(FileStore(work, keep_snapshots=5))
    finally:
        shutil.rmtree(work, ignore_errors=True)
