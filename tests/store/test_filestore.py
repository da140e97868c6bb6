"""The JSON file store: records, their format, files on disk, events."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import (
    ConflictError,
    EnvironmentExistsError,
    EnvironmentNotFoundError,
    ExitCode,
    InvalidNameError,
    StateFileError,
    StorageError,
)
from runner.result import as_json
from runner.store.contract import LockInfo
from runner.store.files import FileStore, _serialize
from runner.store.locking import hold
from runner.store.record import MachineRef, Record, Run, record_problem
from tests.conftest import STAMP, failed_record, format_1, make_record, state_document
from tests.helpers import cli_env, run_cli


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(folder: Path) -> list[str]:
    """Dot-named entries of ``folder``, and what lies in ``.staging`` (which may stay,
    empty, in the data folder)."""
    found = sorted(
        p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".staging"
    )
    if (folder / ".staging").is_dir():
        found += sorted(f".staging/{p.name}" for p in (folder / ".staging").iterdir())
    return found


# --- records ---------------------------------------------------------------------------


def test_create_then_load_round_trips(store: FileStore, tmp_path: Path) -> None:
    record = make_record()
    assert store.create(record) is None
    assert record == make_record()  # create changes nothing in the record it was given
    assert store.load("demo") == make_record()
    assert store.load("demo") is not store.load("demo")  # a fresh copy each time
    assert store.exists("demo") and not store.exists("other")
    text = (tmp_path / "data/demo/state.json").read_text()
    assert text == json.dumps(make_record().to_json(), indent=2) + "\n"
    assert text == json.dumps(state_document(), indent=2) + "\n"
    assert json.loads(text)["format"] == 3


class Word(str):
    """A string of a class of its own (an enum's value, say)."""


_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["\u00e9t\u00e9", "\U0001f600", 'a "quote" \\ and \n', Word("w")])
)
_KEYS = st.text(max_size=6) | st.integers(-3, 3) | st.sampled_from([True, None, 1.5, Word("k")])
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(_KEYS, inner, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_VALUES)
def test_the_state_file_text_is_what_json_writes_for_any_value(value: Any) -> None:
    document = {"format": 3, "outputs": {"value": value, "empty": {}, "none": []}}
    try:
        expected = (json.dumps(document, indent=2, allow_nan=False) + "\n").encode()
    except ValueError as exc:  # NaN or infinity: refused with the same words
        with pytest.raises(ValueError) as caught:
            _serialize(document)
        assert str(caught.value) == str(exc)
    else:
        assert _serialize(document) == expected


@pytest.mark.parametrize(
    "value",
    [
        {f"s{i:03d}": f"{i:016x}" for i in range(100)},  # a run's step digests
        [f"s{i:03d}" for i in range(100)],  # its completed steps
        {"a": "x", "b": Word("y")},  # a str subclass among strings
        [Word("w"), "plain"],
        {"a": "x", 1: "y"},  # a key that is no string
        {"a": "x", "b": None},
        {"q": 'a "quote" \\ and \n', "u": "\u00e9t\u00e9 \U0001f600"},  # escapes, non-ASCII
        ['a "quote" \\', "\u00e9t\u00e9", "\U0001f600"],
    ],
)
def test_maps_and_lists_of_strings_are_written_as_json_writes_them(value: Any) -> None:
    document = {"format": 3, "run": {"value": value}}
    expected = (json.dumps(document, indent=2) + "\n").encode()
    assert _serialize(document) == expected
    assert json.dumps(as_json(document)) == json.dumps(document)  # int keys: "1" both ways
    if isinstance(value, dict):  # a key that is no string is given as one, as json does
        assert as_json(value) == {str(k): v for k, v in value.items()}
    else:
        assert as_json(value) == value


def test_files_are_0600_and_folders_0700(store: FileStore, tmp_path: Path) -> None:
    store.create(make_record())
    store.append_event("demo", {"type": "created"})
    with hold(store, "demo", "runner advance", 0):
        store.save(store.load("demo"))
    trace = store.write_artifact("demo", "trace", "build", "a trace\n")
    run_log = store.open_artifact("demo", "run", "build")
    run_log.write("a line\n")
    run_log.close()
    data = tmp_path / "data"
    assert mode(data) == 0o700
    for folder in ("demo", "demo/traces", "demo/runs"):
        assert mode(data / folder) == 0o700, folder
    for file in ("state.json", "state.lock", "events.jsonl"):
        assert mode(data / "demo" / file) == 0o600, file
    for ref in (trace, run_log.ref):
        assert mode(tmp_path / ref) == 0o600, ref
    assert leftovers(data) == [] and leftovers(data / "demo") == []


def test_the_data_dir_is_a_constructor_argument(tmp_path: Path) -> None:
    store = FileStore(tmp_path, tmp_path / "elsewhere" / "state")
    store.create(make_record())
    assert (tmp_path / "elsewhere/state/demo/state.json").is_file()
    assert not (tmp_path / "data").exists()
    assert store.root == tmp_path / "elsewhere/state"
    assert store.data_dir("demo") == "elsewhere/state/demo"
    assert store.relative(store.root / "demo") == "elsewhere/state/demo"
    trace = store.write_artifact("demo", "trace", "build", "text")
    assert trace.startswith("elsewhere/state/demo/traces/") and (tmp_path / trace).is_file()
    assert FileStore(tmp_path, Path("relative")).root == tmp_path / "relative"


def test_paths_are_relative_to_the_workdir(store: FileStore, tmp_path: Path) -> None:
    assert store.root == tmp_path / "data"
    assert store.root.is_absolute()
    assert store.data_dir("demo") == "data/demo"
    assert store.relative(tmp_path / "data/demo/traces/x.log") == "data/demo/traces/x.log"
    assert store.relative(Path("build/demo")) == "build/demo"
    outside = tmp_path.parent / "elsewhere" / "file"
    assert store.relative(outside) == str(outside)


def test_save_grows_the_serial_and_stamps_updated_at(store: FileStore) -> None:
    store.create(make_record())
    record = store.load("demo")
    for expected in range(2, 6):
        record.outputs["n"] = expected
        assert store.save(record) is None
        assert record.serial == expected  # set on the record it was given
        assert record.updated_at != STAMP
        assert store.load("demo") == record
        assert json.loads((store.root / "demo/state.json").read_text())["serial"] == expected


def test_a_wrong_expected_serial_is_a_conflict_and_writes_nothing(
    store: FileStore, tmp_path: Path
) -> None:
    store.create(make_record())
    store.save(store.load("demo"))
    before = (tmp_path / "data/demo/state.json").read_bytes()
    stale = make_record(state="provisioning")  # serial 1
    with pytest.raises(ConflictError) as caught:
        store.save(stale)
    assert "data/demo/state.json" in str(caught.value) and "serial 2" in str(caught.value)
    assert "expected 1" in str(caught.value)
    assert stale == make_record(state="provisioning")  # left unchanged on an error
    assert (tmp_path / "data/demo/state.json").read_bytes() == before
    assert leftovers(tmp_path / "data/demo") == []


def test_a_save_by_another_store_is_seen_as_a_conflict(tmp_path: Path) -> None:
    first, second = FileStore(tmp_path), FileStore(tmp_path)
    first.create(make_record())
    mine = first.load("demo")
    theirs = second.load("demo")
    second.save(theirs)
    with pytest.raises(ConflictError):
        first.save(mine)
    assert first.load("demo") == theirs
    # the same again in a tight loop: every stale save is caught, none is lost
    for _ in range(50):
        stale = first.load("demo")
        fresh = second.load("demo")
        assert fresh.serial == stale.serial
        second.save(fresh)
        with pytest.raises(ConflictError):
            first.save(stale)
    assert first.load("demo").serial == 52


def test_a_hand_edited_serial_is_a_conflict(store: FileStore, tmp_path: Path) -> None:
    store.create(make_record())
    record = store.load("demo")
    path = tmp_path / "data/demo/state.json"
    path.write_text(json.dumps(state_document(serial=7), indent=2))
    with pytest.raises(ConflictError, match="serial 7"):
        store.save(record)
    assert record.serial == 1


# Each invalid record: as the stored form (what the check sees), and as a typed record
# given to the store (None: a record cannot hold it, only a document can).
INVALID: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    "state": ({"state": "Not A State"}, {"state": "Not A State"}),
    "outputs": ({"outputs": ["x"]}, {"outputs": ["x"]}),
    "digest": (
        {"machine": {"name": "x", "digest": "md5:abc"}},
        {"machine": MachineRef("x", "md5:abc")},
    ),
    "run": (
        {"run": {"phase": "provision"}},
        {"run": Run(phase="provision", started_at="yesterday", pid=1, host="h")},
    ),
    "surprise": ({"surprise": True}, None),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_an_invalid_record_is_refused_before_any_write(
    store: FileStore, tmp_path: Path, case: str
) -> None:
    document_change, record_change = INVALID[case]
    assert record_problem(state_document(**document_change)) is not None
    if record_change is None:  # no typed record has an unknown field to store
        assert "surprise" not in make_record().to_json()
        return
    store.create(make_record())
    before = (tmp_path / "data/demo/state.json").read_bytes()
    bad = make_record(**record_change)
    with pytest.raises(StorageError, match="refusing to store an invalid record"):
        store.save(bad)
    assert bad.serial == 1
    assert (tmp_path / "data/demo/state.json").read_bytes() == before
    assert leftovers(tmp_path / "data/demo") == []
    bad.name = "other"
    with pytest.raises(StorageError):
        store.create(bad)
    assert not (tmp_path / "data/other").exists()
    assert leftovers(tmp_path / "data") == []


def test_create_of_a_taken_name_says_its_state(store: FileStore) -> None:
    store.create(make_record(state="provisioned"))
    with pytest.raises(EnvironmentExistsError) as caught:
        store.create(make_record())
    assert caught.value.message == "environment 'demo' already exists (state: provisioned)"
    assert store.load("demo").state == "provisioned"


def test_a_missing_environment_points_to_list_and_create(store: FileStore) -> None:
    with pytest.raises(EnvironmentNotFoundError) as caught:
        store.load("ghost")
    text = str(caught.value)
    assert "ghost" in text and "runner list" in text and "runner create" in text
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    for call in (
        lambda: store.save(make_record("ghost")),
        lambda: store.append_event("ghost", {}),
        lambda: store.read_events("ghost"),
        lambda: store.delete("ghost"),
        lambda: store.open_artifact("ghost", "run", "build"),
        lambda: store.write_artifact("ghost", "trace", "build", "text"),
        lambda: store.read_artifact("ghost", "data/ghost/traces/x.log"),
        lambda: store.list_artifacts("ghost", "trace"),
    ):
        with pytest.raises(EnvironmentNotFoundError):
            call()
    with pytest.raises(EnvironmentNotFoundError), hold(store, "ghost", "runner advance", 0):
        pass


@pytest.mark.parametrize("name", ["../x", "demo/../../x", "", "Demo", ".hidden", "a" * 64])
def test_every_method_checks_the_name(store: FileStore, tmp_path: Path, name: str) -> None:
    me = LockInfo(os.getpid(), "host", "runner advance", STAMP)
    calls: list[Callable[[], object]] = [
        lambda: store.exists(name),
        lambda: store.load(name),
        lambda: store.save(make_record(name)),
        lambda: store.create(make_record(name)),
        lambda: store.try_lock(name, me),
        lambda: store.wait_lock(name, me, 0.1),
        lambda: store.lock_holder(name),
        lambda: store.append_event(name, {}),
        lambda: store.read_events(name),
        lambda: store.delete(name),
        lambda: store.data_dir(name),
        lambda: store.open_artifact(name, "run", "build"),
        lambda: store.write_artifact(name, "trace", "build", "text"),
        lambda: store.read_artifact(name, "data/demo/traces/x.log"),
        lambda: store.list_artifacts(name, "trace"),
    ]
    for call in calls:
        with pytest.raises(InvalidNameError):
            call()
    with pytest.raises(InvalidNameError), hold(store, name, "runner advance", 0):
        pass
    assert list(tmp_path.iterdir()) == []


# --- state files this runner cannot read -------------------------------------------------

GOOD = json.dumps(state_document(), indent=2) + "\n"
CORRUPT: dict[str, tuple[bytes, str]] = {
    "truncated": (GOOD[: len(GOOD) // 2].encode(), "not valid JSON"),
    "cut-at-the-end": (GOOD.rstrip()[:-1].encode(), "truncated"),
    "empty": (b"", "is empty"),
    "blank": (b"  \n", "is empty"),
    "not-json": (b"state: created\n", "not valid JSON"),
    "not-utf8": (b'{"format": 2, "name": "\xff\xfe"}', "not"),
    "a-list": (b"[1, 2]", "not an object"),
    "wrong-types": (GOOD.replace('"serial": 1', '"serial": "1"').encode(), "serial"),
    "missing-key": (
        json.dumps({k: v for k, v in state_document().items() if k != "run"}).encode(),
        "run",
    ),
    "no-format": (
        json.dumps({k: v for k, v in state_document().items() if k != "format"}).encode(),
        "no 'format'",
    ),
    "format-99": (
        json.dumps(state_document(format=99)).encode(),
        "has format 99: it was written by a newer runner; upgrade runner",
    ),
    "format-4": (json.dumps(state_document(format=4)).encode(), "written by a newer runner"),
    "format-0": (json.dumps(state_document(format=0)).encode(), "unknown format 0"),
    "format-string": (
        json.dumps(state_document(format="1.0")).encode(),
        'unknown format "1.0" (this runner reads formats 1, 2 and 3)',
    ),
    "format-true": (json.dumps(state_document(format=True)).encode(), "unknown format true"),
    "other-name": (json.dumps(state_document("other")).encode(), "'other'"),
}


@pytest.mark.parametrize("variant", sorted(CORRUPT))
def test_an_unreadable_state_file_is_reported_and_never_rewritten(
    store: FileStore, tmp_path: Path, variant: str
) -> None:
    content, says = CORRUPT[variant]
    store.create(make_record())
    path = tmp_path / "data/demo/state.json"
    path.write_bytes(content)
    with pytest.raises(StateFileError) as caught:
        store.load("demo")
    error = caught.value
    assert error.message.startswith("data/demo/state.json "), error.message
    assert says in error.message
    assert error.exit_code == ExitCode.BAD_INPUT and error.hint
    assert error.to_json()["path"] == "data/demo/state.json"
    # nothing writes over it: not a save, not a lock, not a listing
    with pytest.raises((StateFileError, ConflictError)):
        store.save(make_record())
    with hold(store, "demo", "runner advance", 0):
        pass
    [entry] = store.list()
    assert entry.name == "demo" and entry.record is None
    assert entry.error and entry.error.startswith("data/demo/state.json")
    with pytest.raises(EnvironmentExistsError, match="unreadable"):
        store.create(make_record())
    assert path.read_bytes() == content
    assert leftovers(tmp_path / "data/demo") == []


def test_a_folder_without_state_json_is_not_mistaken_for_a_free_name(
    store: FileStore, tmp_path: Path
) -> None:
    store.create(make_record())
    (tmp_path / "data/demo/state.json").unlink()
    with pytest.raises(StateFileError, match="missing"):
        store.load("demo")
    with pytest.raises(EnvironmentExistsError):
        store.create(make_record())
    assert (tmp_path / "data/demo/events.jsonl").exists()


def test_record_problem_accepts_the_design_example() -> None:
    document = failed_record().to_json()
    assert record_problem(document) is None
    assert record_problem(format_1(document)) is None  # as a format 1 runner wrote it
    # the design's own text: only the keys a run and a failure must have
    minimal = dict(
        document,
        run={k: document["run"][k] for k in ("phase", "started_at", "pid", "host",
                                             "completed_steps", "current_step",
                                             "interrupted")},
        failure={k: document["failure"][k] for k in ("phase", "step", "kind", "summary",
                                                     "exit_code", "failed_at",
                                                     "duration_s", "trace")},
    )  # fmt: skip
    assert record_problem(minimal) is None
    assert "run" in (record_problem(state_document(run={"phase": 1})) or "")
    # 0 attempts: the step failed before its plugin ran (in rendering, say)
    assert record_problem(dict(document, failure=dict(document["failure"], attempts=0))) is None
    negative = dict(document, failure=dict(document["failure"], attempts=-1))
    assert "failure" in (record_problem(negative) or "")


def test_a_format_1_file_is_read_and_written_back_as_format_3(
    store: FileStore, tmp_path: Path
) -> None:
    store.create(failed_record())
    path = tmp_path / "data/demo/state.json"
    old = format_1(failed_record().to_json())
    assert "attempts" not in old["failure"] and "hint" not in old["failure"]
    path.write_text(json.dumps(old, indent=2))
    record = store.load("demo")
    assert record.format == 3
    assert record.failure is not None
    assert (record.failure.attempts, record.failure.hint) == (None, None)
    expected = failed_record()
    assert expected.failure is not None
    expected.failure.attempts = expected.failure.hint = None
    assert record == expected
    [entry] = store.list()
    assert entry.error is None and entry.record == record
    store.save(record)
    written = json.loads(path.read_text())
    assert written["format"] == 3 and written["serial"] == 10
    assert written["failure"]["attempts"] is None and written["failure"]["hint"] is None
    assert record_problem(written) is None
    assert store.load("demo") == record


# --- listing and deleting ----------------------------------------------------------------


def test_list_is_sorted_skips_dot_folders_and_reports_broken_entries(
    store: FileStore, tmp_path: Path
) -> None:
    assert store.list() == []  # no data dir yet, and none is made by reading
    assert not (tmp_path / "data").exists()
    for name in ("zeta", "alpha", "mid"):
        store.create(make_record(name))
    (tmp_path / "data/mid/state.json").write_text("{")
    (tmp_path / "data/.staging/create-beta-123").mkdir()
    (tmp_path / "data/lost+found").mkdir()
    (tmp_path / "data/notes.txt").write_text("not an environment")
    entries = store.list()
    assert [e.name for e in entries] == ["alpha", "mid", "zeta"]
    assert entries[0].record == make_record("alpha") and entries[0].error is None
    assert isinstance(entries[0].record, Record)
    assert entries[1].record is None and "data/mid/state.json" in (entries[1].error or "")


def test_delete_removes_everything(store: FileStore, tmp_path: Path) -> None:
    store.create(make_record())
    store.append_event("demo", {"type": "created"})
    (tmp_path / "data/demo/runs/x.log").write_text("output")
    store.write_artifact("demo", "trace", "build", "a trace")
    store.delete("demo")
    assert not store.exists("demo") and store.list() == []
    assert [p.name for p in (tmp_path / "data").iterdir()] == [".staging"]
    assert leftovers(tmp_path / "data") == []
    store.create(make_record())  # the name is free again
    assert store.read_events("demo") == []
    assert store.list_artifacts("demo", "trace") == [] == store.list_artifacts("demo", "run")


# --- an unwritable data directory ---------------------------------------------------------

WRITE_UNDER_LIMIT = """
import json, resource, signal, sys
from runner import struct
from pathlib import Path
from runner.errors import StorageError
from runner.store.files import FileStore

store = FileStore(Path(sys.argv[1]))
record = store.load("demo")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
results = {}
for what, call in [
    ("save", lambda: store.save(record)),
    ("event", lambda: store.append_event("demo", {"type": "x" * 200})),
    ("create", lambda: store.create(struct.replace(record, name="other"))),
    ("trace", lambda: store.write_artifact("demo", "trace", "build", "x" * 200)),
]:
    try:
        call()
        results[what] = None
    except StorageError as exc:
        results[what] = str(exc)
print(json.dumps(results))
"""


def test_a_failing_disk_keeps_the_old_state_and_says_what_to_do(
    store: FileStore, tmp_path: Path
) -> None:
    store.create(make_record(outputs={"big": "x" * 500}))
    before = (tmp_path / "data/demo/state.json").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", WRITE_UNDER_LIMIT, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env=cli_env(),
    )
    results = json.loads(proc.stdout)
    # the new version's snapshot is written first: the save stops there
    assert "cannot write data/demo/snapshots/2.json: File too large" in results["save"]
    assert "then run the command again" in results["save"]
    assert "cannot append to data/demo/events.jsonl" in results["event"]
    assert results["create"] and "data" in results["create"]
    assert "cannot write data/demo/traces/" in results["trace"]
    assert (tmp_path / "data/demo/state.json").read_bytes() == before
    assert store.load("demo").serial == 1
    assert leftovers(tmp_path / "data/demo") == [] and leftovers(tmp_path / "data") == []
    assert leftovers(tmp_path / "data/demo/snapshots") == []
    assert not (tmp_path / "data/demo/snapshots/2.json").exists()  # no half a snapshot
    assert [s.serial for s in store.list_snapshots("demo")] == [1]
    assert not (tmp_path / "data/other").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file modes")
def test_a_read_only_folder_is_a_persistence_error(store: FileStore, tmp_path: Path) -> None:
    store.create(make_record())
    before = (tmp_path / "data/demo/state.json").read_bytes()
    (tmp_path / "data/demo").chmod(0o500)
    (tmp_path / "data").chmod(0o500)
    try:
        with pytest.raises(StorageError, match=r"cannot write data/demo/state\.json"):
            store.save(store.load("demo"))
        with pytest.raises(StorageError, match="Permission denied"):
            store.create(make_record("other"))
    finally:
        (tmp_path / "data/demo").chmod(0o700)
        (tmp_path / "data").chmod(0o700)
    assert (tmp_path / "data/demo/state.json").read_bytes() == before


# --- events -------------------------------------------------------------------------------


def test_events_are_appended_as_json_lines_and_read_oldest_first(
    store: FileStore, tmp_path: Path
) -> None:
    store.create(make_record())
    for i in range(5):
        store.append_event("demo", {"n": i, "text": "é and \n"})
    lines = (tmp_path / "data/demo/events.jsonl").read_text().splitlines()
    assert lines[0] == '{"n":0,"text":"\\u00e9 and \\n"}'
    assert [e["n"] for e in store.read_events("demo")] == [0, 1, 2, 3, 4]
    assert [e["n"] for e in store.read_events("demo", limit=2)] == [3, 4]
    assert store.read_events("demo", limit=0) == []
    assert len(store.read_events("demo", limit=100)) == 5


def test_a_torn_last_line_is_ignored_and_the_next_event_starts_its_own_line(
    store: FileStore, tmp_path: Path
) -> None:
    store.create(make_record())
    store.append_event("demo", {"n": 1})
    path = tmp_path / "data/demo/events.jsonl"
    with path.open("ab") as file:
        file.write(b'{"n": 2, "tex')  # a crash in the middle of a write
    assert store.read_events("demo") == [{"n": 1}]
    assert store.read_events("demo", limit=5) == [{"n": 1}]
    store.append_event("demo", {"n": 3})
    assert path.read_bytes().endswith(b'{"n": 2, "tex\n{"n":3}\n')
    assert store.read_events("demo") == [{"n": 1}, {"n": 3}]
    assert store.read_events("demo", limit=1) == [{"n": 3}]


def test_events_of_an_environment_without_a_log_are_empty(store: FileStore, tmp_path: Path) -> None:
    store.create(make_record())
    (tmp_path / "data/demo/events.jsonl").unlink()
    assert store.read_events("demo") == [] and store.read_events("demo", 3) == []
    store.append_event("demo", {"n": 1})
    assert mode(tmp_path / "data/demo/events.jsonl") == 0o600


def test_the_tail_of_a_large_log_is_read_from_the_end(store: FileStore, tmp_path: Path) -> None:
    store.create(make_record())
    path = tmp_path / "data/demo/events.jsonl"
    with path.open("w") as file:
        for i in range(100_000):
            file.write(json.dumps({"n": i, "pad": "x" * (i % 97)}, separators=(",", ":")) + "\n")
    started = time.perf_counter()
    tail = store.read_events("demo", limit=50)
    elapsed = time.perf_counter() - started
    assert [e["n"] for e in tail] == list(range(99_950, 100_000))
    assert elapsed < 0.05, f"read_events(limit=50) took {elapsed * 1000:.1f} ms"
    everything = store.read_events("demo")
    assert len(everything) == 100_000
    # every limit, across block boundaries, is the same as the end of the whole log
    for limit in (1, 2, 333, 1_000, 4_321, 99_999, 100_000, 100_001):
        assert store.read_events("demo", limit=limit) == everything[-limit:], limit


def test_the_tail_skips_bad_lines_without_counting_them(store: FileStore, tmp_path: Path) -> None:
    store.create(make_record())
    path = tmp_path / "data/demo/events.jsonl"
    path.write_bytes(b'{"n":0}\n\n[1]\nnot json\n{"n":1}\n{"n":2\n"str"\n{"n":3}\n')
    assert store.read_events("demo") == [{"n": 0}, {"n": 1}, {"n": 3}]
    assert store.read_events("demo", limit=2) == [{"n": 1}, {"n": 3}]
    assert store.read_events("demo", limit=9) == [{"n": 0}, {"n": 1}, {"n": 3}]


def test_leftovers_of_a_crashed_create_or_delete_are_swept_after_an_hour(
    store: FileStore, tmp_path: Path
) -> None:
    """A create or delete killed half way leaves a folder in data/.staging, out of
    sight of `list`; the next create removes it once it is an hour old (one still being
    written by a running command is younger)."""
    store.create(make_record("first"))
    staging = tmp_path / "data/.staging"
    old, young = staging / "create-gone-0a0b", staging / "delete-gone-0c0d"
    for folder in (old, young):
        (folder / "runs").mkdir(parents=True)
        (folder / "state.json").write_text("{}")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert [e.name for e in store.list()] == ["first"]
    store.create(make_record("second"))
    assert not old.exists() and young.is_dir()
    assert [e.name for e in store.list()] == ["first", "second"]


# --- snapshots on disk -------------------------------------------------------------------


def test_a_save_fsyncs_no_more_for_its_snapshot(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create(make_record())
    record = store.load("demo")
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    store.save(record)
    assert len(calls) == 2  # the new state.json and its folder; the snapshot is a copy
    assert (tmp_path / "data/demo/snapshots/2.json").read_bytes() == (
        tmp_path / "data/demo/state.json"
    ).read_bytes()


def test_a_snapshot_left_by_a_crash_before_the_state_is_ignored_then_replaced(
    store: FileStore, tmp_path: Path
) -> None:
    store.create(make_record())
    # a crash between the snapshot and the state: serial 2 was never current
    ghost = dict(state_document(), serial=2, state="destroyed")
    (tmp_path / "data/demo/snapshots/2.json").write_text(json.dumps(ghost))
    assert [s.serial for s in store.list_snapshots("demo")] == [1]
    record = store.load("demo")
    record.state = "provisioning"
    store.save(record)
    assert [(s.serial, s.state) for s in store.list_snapshots("demo")] == [
        (1, "created"),
        (2, "provisioning"),
    ]


def test_a_folder_from_before_snapshots_gets_them_on_its_next_save(
    store: FileStore, tmp_path: Path
) -> None:
    store.create(failed_record())
    folder = tmp_path / "data/demo/snapshots"
    for file in folder.iterdir():
        file.unlink()
    folder.rmdir()
    old = dict(failed_record().to_json(), format=2, lineage=None, change=None)
    (tmp_path / "data/demo/state.json").write_text(json.dumps(old))
    assert [s.serial for s in store.list_snapshots("demo")] == [9]
    record = store.load("demo")
    store.save(record)
    assert [s.serial for s in store.list_snapshots("demo")] == [10]  # 9 was never copied
    assert mode(folder) == 0o700 and mode(folder / "10.json") == 0o600


def test_a_damaged_snapshot_is_left_out_and_loading_it_says_why(
    store: FileStore, tmp_path: Path
) -> None:
    store.create(make_record())
    store.save(store.load("demo"))
    (tmp_path / "data/demo/snapshots/1.json").write_text("{not json")
    assert [s.serial for s in store.list_snapshots("demo")] == [2]
    with pytest.raises(StateFileError, match=r"snapshots/1\.json"):
        store.load_snapshot("demo", 1)


def test_a_state_folder_outside_the_working_directory_is_refused_at_once(
    tmp_path: Path,
) -> None:
    """Records name their files relative to the working directory and must stay inside
    it: `--state file:` of a folder outside it is an input error, not a record refused
    later as "a bug in runner"; inside it, relative or absolute, works."""
    from runner.errors import InputError
    from runner.store.backends import open_url

    work = tmp_path / "work"
    work.mkdir()
    for url in (f"file:{tmp_path / 'elsewhere'}", "file:../elsewhere"):
        with pytest.raises(InputError, match="outside the working directory"):
            open_url(url, work)
    done = run_cli("--state", f"file:{tmp_path / 'elsewhere'}", "create", "demo", cwd=work)
    assert done.returncode == 2 and "outside the working directory" in done.stderr
    assert "bug in runner" not in done.stderr
    assert open_url(f"file:{work / 'kept'}", work).root == work / "kept"
    assert run_cli("--state", f"file:{work / 'kept'}", "create", "demo", cwd=work).returncode == 0
