"""Bad input of every kind, through the CLI: the exit code, the message, and nothing lost.

Each case of the table prepares a working directory (machine.yaml, an environment
`demo` created in-process, then the case's own damage), runs one `runner` command as
a subprocess and checks three things: the exit code (2 bad input, 3
locked, 4 not allowed, 1 step failed, 130/143 interrupted), the key words of the
message (and no traceback anywhere), and the bytes of every file under data/ before
and after: unchanged, or changed exactly as the command may change them.

Signals at awkward moments, a full disk and a read-only data directory follow the
table; the last two mount a small tmpfs over data/ (root only).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner import Runner
from runner.errors import InterruptedRunError
from runner.store.files import FileStore
from runner.store.locking import hold
from tests.helpers import build_tree, cli_env, read_state, run_cli

MACHINE = """\
version: 1
name: hardening
initial: created
inputs:
  type: object
  additionalProperties: false
  properties:
    provider: {enum: [local, cloud], default: local}
    ssh:
      type: object
      additionalProperties: false
      properties:
        port: {type: integer, default: 22}
    nap: {type: number, default: 0}
states:
  created: {description: New}
  building: {description: Building}
  built: {description: Built}
  build_failed: {description: Build failed}
  deploying: {description: Deploying}
  deployed: {description: Deployed}
  deploy_failed: {description: Deploy failed}
  destroying: {description: Destroying}
  destroyed: {description: Gone, final: true}
  destroy_failed: {description: Destroy failed}
phases:
  - name: build
    from: created
    via: building
    to: built
    failed: build_failed
    steps:
      - name: one
        uses: shell
        with: {argv: [sh, -c, "echo $$ > one.pid; sleep {{ inputs.nap }}; echo one >> ran.txt"]}
      - name: two
        uses: shell
        with: {argv: [sh, -c, "test ! -e broken && echo two >> ran.txt"]}
  - name: deploy
    from: built
    via: deploying
    to: deployed
    failed: deploy_failed
    steps:
      - name: ship
        uses: shell
        with: {argv: [sh, -c, "echo ship >> ran.txt"]}
  - name: destroy
    from: any
    via: destroying
    to: destroyed
    failed: destroy_failed
    advance: false
    steps:
      - name: clean
        uses: shell
        with: {argv: [rm, -f, ran.txt]}
"""

STATE = "data/demo/state.json"
LOCK = "data/demo/state.lock"
EVENTS = "data/demo/events.jsonl"
SNAPSHOTS = "data/demo/snapshots"

Snapshot = dict[str, bytes | None]


# --- helpers ------------------------------------------------------------------------


def snapshot(work: Path) -> Snapshot:
    """Every file (its bytes) and folder (None) under data/, by path relative to ``work``.

    data/.cache is left out: it holds validated machines keyed by their content, which
    read-only commands may add to; it is no environment's data.
    """
    data = work / "data"
    if not data.exists():
        return {}
    result: Snapshot = {}
    for path in sorted(data.rglob("*")):
        relative = path.relative_to(work)
        if relative.parts[1:2] == (".cache",):
            continue
        result[relative.as_posix()] = None if path.is_dir() else path.read_bytes()
    return result


def workspace(work: Path) -> Runner:
    return Runner(work, work / "machine.yaml", command="test setup")


def ran(work: Path) -> str:
    path = work / "ran.txt"
    return path.read_text() if path.exists() else ""


def rewrite_state(work: Path, change: Callable[[dict], None]) -> None:
    data = read_state(work)
    change(data)
    (work / STATE).write_text(json.dumps(data, indent=2))


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr


def only_changed(before: Snapshot, after: Snapshot, *prefixes: str) -> None:
    """Paths outside ``prefixes`` are as they were; nothing appeared outside them."""

    def allowed(path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)

    for path, content in before.items():
        if not allowed(path):
            assert after.get(path, b"<gone>") == content, f"{path} changed"
    for path in after:
        if path not in before:
            assert allowed(path), f"{path} appeared"


def appended(before: Snapshot, after: Snapshot, path: str) -> list[dict]:
    """The events appended to ``path``; what was there stays byte for byte."""
    old, new = before[path] or b"", after[path] or b""
    assert new.startswith(old), f"{path} was rewritten, not appended to"
    return [json.loads(line) for line in new[len(old) :].splitlines() if line.strip()]


# --- setups: the damage each case starts from ---------------------------------------


def in_state(*path: str) -> Callable[[Path], None]:
    """Take `demo` (in-process) through ``path``: advance, fail (at step two), destroy."""

    def setup(work: Path) -> None:
        ws = workspace(work)
        for action in path:
            if action == "advance":
                ws.advance("demo")
            elif action == "fail":
                (work / "broken").write_text("")
                ws.advance("demo")
                (work / "broken").unlink()
            elif action == "destroy":
                ws.run_phase("demo", "destroy")
            else:
                raise AssertionError(action)

    return setup


def machine_text(text: str | bytes) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        path = work / "machine.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return setup


BROKEN_YAML = machine_text("version: 1\nname: [unclosed\nstates:\n  created: {}\n")
NO_VIA = machine_text(MACHINE.replace("    via: building\n", ""))
UNKNOWN_PLUGIN = machine_text(MACHINE.replace("uses: shell", "uses: no_such_plugin", 1))
# `created` renamed: the environment's state is no longer declared
STATE_GONE = machine_text(
    MACHINE.replace("initial: created", "initial: fresh")
    .replace("  created: {description: New}", "  fresh: {description: New}")
    .replace("from: created", "from: fresh")
)


def state_bytes(data: bytes) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        (work / STATE).write_bytes(data)

    return setup


def truncated(work: Path) -> None:
    data = (work / STATE).read_bytes()
    (work / STATE).write_bytes(data[: len(data) // 2])


def state_change(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        rewrite_state(work, change)

    return setup


def _set(key: str, value: object) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data[key] = value

    return change


def _drop(key: str) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        del data[key]

    return change


def lock_bytes(data: bytes) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        (work / LOCK).write_bytes(data)

    return setup


def dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def dead_holder(work: Path) -> None:
    import socket

    holder = {
        "pid": dead_pid(),
        "host": socket.gethostname(),
        "command": "runner advance",
        "started_at": "2026-01-01T00:00:00.000Z",
    }
    (work / LOCK).write_text(json.dumps(holder) + "\n")


def files(tree: dict[str, str | bytes]) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        build_tree(work, tree, dedent=False)

    return setup


def config_dir(work: Path) -> None:
    (work / "cfgdir").mkdir()


def config_outside(work: Path) -> None:
    build_tree(work.parent, {"cfg/outside.yaml": "provider: cloud\n"})


def state_file_removed(work: Path) -> None:
    (work / STATE).unlink()


def workdir_is_a_file(work: Path) -> None:
    (work / "plain-file").write_text("not a folder\n")


# --- checks of what a successful case may change ------------------------------------


def created_other(before: Snapshot, after: Snapshot, work: Path) -> None:
    only_changed(before, after, "data/other")
    assert read_state(work, "other")["inputs"]["provider"] == "cloud"


def advanced_despite_the_lock_file(before: Snapshot, after: Snapshot, work: Path) -> None:
    only_changed(before, after, STATE, LOCK, EVENTS, SNAPSHOTS, "data/demo/runs")
    assert read_state(work)["state"] == "built"
    assert after[LOCK] == b""  # the holder record is cleared on release
    events = appended(before, after, EVENTS)
    moves = [(e["from"], e["to"]) for e in events if e["type"] == "transition"]
    assert moves == [("created", "building"), ("building", "built")]


# --- the table ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: int
    words: tuple[str, ...]
    setup: Callable[[Path], None] | None = None
    check: Callable[[Snapshot, Snapshot, Path], None] | None = None
    cwd: str = "."  # where the command runs, relative to the working directory


NAME_RULE = "^[a-z][a-z0-9-]{0,62}$"

# fmt: off
CASES = [
    # machine.yaml broken after the environment was created, seen by every command
    Case("machine-yaml-syntax/validate", ("validate",), 2, ("machine.yaml:3:", "YAML syntax error"), BROKEN_YAML),
    Case("machine-yaml-syntax/create", ("create", "other"), 2, ("machine.yaml:3:", "YAML syntax error"), BROKEN_YAML),
    Case("machine-yaml-syntax/status", ("status", "demo"), 2, ("machine.yaml:3:", "YAML syntax error"), BROKEN_YAML),
    Case("machine-yaml-syntax/advance", ("advance", "demo"), 2, ("machine.yaml:3:", "YAML syntax error"), BROKEN_YAML),
    Case("machine-yaml-syntax/graph-env", ("graph", "--env", "demo"), 2, ("machine.yaml:3:",), BROKEN_YAML),
    Case("machine-yaml-syntax/list-still-lists", ("list",), 0, ("demo", "created"), BROKEN_YAML),
    Case("machine-no-via/up", ("up", "demo"), 2, ("machine.yaml", "'via' is a required property"), NO_VIA),
    Case("machine-no-via/destroy", ("destroy", "demo"), 2, ("machine.yaml", "'via'"), NO_VIA),
    Case("machine-unknown-plugin/advance", ("advance", "demo"), 2, ("machine.yaml:", "no_such_plugin"), UNKNOWN_PLUGIN),
    Case("machine-unknown-plugin/phase", ("phase", "demo", "destroy"), 2, ("no_such_plugin",), UNKNOWN_PLUGIN),
    Case("machine-empty/validate", ("validate",), 2, ("machine.yaml", "mapping"), machine_text("")),
    Case("machine-not-utf8/status", ("status", "demo"), 2, ("machine.yaml", "not UTF-8"), machine_text(b"version: 1\nname: \xff\xfe\n")),
    Case("machine-state-gone/status", ("status", "demo"), 2, ("'created'", "does not declare"), STATE_GONE),
    Case("machine-state-gone/advance", ("advance", "demo"), 2, ("'created'", "does not declare"), STATE_GONE),
    Case("machine-state-gone/resume", ("resume", "demo"), 2, ("'created'", "does not declare"), STATE_GONE),
    Case("machine-option-is-a-directory", ("--machine", "data", "advance", "demo"), 2, ("data", "Is a directory")),
    Case("machine-option-missing-file", ("--machine", "nope.yaml", "status", "demo"), 2, ("nope.yaml", "file not found")),
    # config files
    Case("config-missing", ("create", "other", "--config", "missing.yaml"), 2, ("missing.yaml", "No such file")),
    Case("config-is-a-directory", ("create", "other", "--config", "cfgdir"), 2, ("cfgdir", "Is a directory"), config_dir),
    Case("config-invalid-yaml", ("create", "other", "--config", "bad.yaml"), 2, ("bad.yaml:", "not valid YAML"), files({"bad.yaml": "provider: [local\n"})),
    Case("config-json-list", ("create", "other", "--config", "list.json"), 2, ("list.json", "must be a mapping"), files({"list.json": '["local"]\n'})),
    Case("config-nested-too-deep", ("create", "other", "--config", "deep.yaml"), 2, ("deep.yaml:1", "nested more than"), files({"deep.yaml": "nap: " + "[" * 60_000 + "]" * 60_000 + "\n"})),
    Case("config-alias-cycle", ("create", "other", "--config", "cycle.yaml"), 2, ("cycle.yaml", "cycle"), files({"cycle.yaml": "nap: &n\n  again: *n\n"})),
    Case("set-nested-too-deep", ("create", "other", "--set", "nap=" + "[" * 60_000), 2, ("--set value", "nested more than 100 levels deep")),
    Case("config-not-utf8", ("create", "other", "--config", "latin.yaml"), 2, ("latin.yaml", "UTF-8"), files({"latin.yaml": b"provider: caf\xe9\n"})),
    Case("config-outside-the-workdir", ("--workdir", "work", "create", "other", "--config", "cfg/outside.yaml"), 0, ("created environment 'other'",), config_outside, created_other, cwd=".."),
    # --set
    Case("set-without-equals", ("create", "other", "--set", "provider"), 2, ("--set 'provider'", "KEY=VALUE")),
    Case("set-empty-key", ("create", "other", "--set", "=cloud"), 2, ("--set '=cloud'", "KEY=VALUE")),
    Case("set-empty-key-part", ("create", "other", "--set", "ssh..port=1"), 2, ("ssh..port", "KEY=VALUE")),
    Case("set-a..b", ("create", "other", "--set", "a..b=1"), 2, ("--set 'a..b=1'", "KEY=VALUE")),
    Case("set-unknown-key", ("create", "other", "--set", "colour=blue"), 2, ("unknown input 'colour'",)),
    Case("set-wrong-type", ("create", "other", "--set", "ssh.port=many"), 2, ("inputs.ssh.port", "'many' is not of type 'integer'")),
    Case("set-below-a-scalar", ("create", "other", "--set", "provider=cloud", "--set", "provider.zone=eu"), 2, ("provider.zone", "not a mapping")),
    # state files
    Case("state-truncated/advance", ("advance", "demo"), 2, (STATE, "not valid JSON", "truncated"), truncated),
    Case("state-empty/status", ("status", "demo"), 2, (STATE, "is empty"), state_bytes(b"")),
    Case("state-not-json/advance", ("advance", "demo"), 2, (STATE, "not valid JSON"), state_bytes(b"state: created\n")),
    Case("state-json-list/status", ("status", "demo"), 2, (STATE, "JSON list"), state_bytes(b"[1, 2]\n")),
    Case("state-wrong-types/advance", ("advance", "demo"), 2, (STATE, "serial", "integer"), state_change(_set("serial", "seven"))),
    Case("state-format-99/advance", ("advance", "demo"), 2, (STATE, "format 99", "newer runner"), state_change(_set("format", 99))),
    Case("state-format-text/destroy", ("destroy", "demo"), 2, (STATE, 'unknown format "1"'), state_change(_set("format", "1"))),
    Case("state-missing-serial/advance", ("advance", "demo"), 2, (STATE, "serial"), state_change(_drop("serial"))),
    Case("state-extra-key/advance", ("advance", "demo"), 2, (STATE, "unknown property 'colour'"), state_change(_set("colour", "blue"))),
    Case("state-unknown-state/advance", ("advance", "demo"), 2, ("'nowhere'", "does not declare"), state_change(_set("state", "nowhere"))),
    Case("state-other-name/status", ("status", "demo"), 2, (STATE, "names environment 'else'"), state_change(_set("name", "else"))),
    Case("state-file-removed/advance", ("advance", "demo"), 2, (STATE, "missing"), state_file_removed),
    Case("state-corrupt/list-shows-it-unreadable", ("list",), 0, ("unreadable", "demo:"), state_bytes(b"{")),
    # lock files: never block, the command proceeds
    Case("lock-garbage-bytes", ("--lock-timeout", "0", "advance", "demo"), 0, ("now in 'built'",), lock_bytes(b"\x00\xff\xfegarbage{\n"), advanced_despite_the_lock_file),
    Case("lock-dead-pid", ("--lock-timeout", "0", "advance", "demo"), 0, ("now in 'built'",), dead_holder, advanced_despite_the_lock_file),
    Case("lock-empty", ("--lock-timeout", "0", "advance", "demo"), 0, ("now in 'built'",), lock_bytes(b""), advanced_despite_the_lock_file),
    # names
    Case("name-dotdot", ("create", "--", "../x"), 2, ("'../x'", NAME_RULE)),
    Case("name-uppercase", ("create", "A"), 2, ("'A'", NAME_RULE)),
    Case("name-slash", ("create", "x/y"), 2, ("'x/y'", NAME_RULE)),
    Case("name-empty", ("create", ""), 2, ("''", NAME_RULE)),
    Case("name-64-chars", ("create", "a" * 64), 2, (NAME_RULE,)),
    Case("name-hidden", ("create", ".hidden"), 2, ("'.hidden'", NAME_RULE)),
    Case("name-dotdot/advance", ("advance", "../demo"), 2, ("'../demo'", NAME_RULE)),
    Case("name-slash/status", ("status", "data/demo"), 2, ("'data/demo'", NAME_RULE)),
    # paths
    Case("workdir-missing", ("--workdir", "nowhere", "status", "demo"), 2, ("nowhere", "does not exist")),
    Case("workdir-is-a-file", ("--workdir", "plain-file", "status", "demo"), 2, ("plain-file", "not a directory"), workdir_is_a_file),
    # the command line itself
    Case("unknown-command", ("frobnicate", "demo"), 2, ("No such command 'frobnicate'",)),
    Case("unknown-option", ("advance", "demo", "--force"), 2, ("No such option: --force",)),
    Case("lock-timeout-negative", ("--lock-timeout", "-1", "advance", "demo"), 2, ("--lock-timeout", "-1")),
    Case("log-level-unknown", ("--log-level", "LOUD", "status", "demo"), 2, ("LOUD",)),
    Case("history-limit-zero", ("history", "demo", "--limit", "0"), 2, ("--limit",)),
    Case("phase-unknown", ("phase", "demo", "nosuchphase"), 2, ("no phase 'nosuchphase'", "build")),
    Case("phase-not-allowed", ("phase", "demo", "deploy"), 4, ("'deploy' is not allowed", "created", "build, destroy")),
    Case("resume-nothing-to-resume", ("resume", "demo"), 4, ("nothing to resume",)),
    Case("resume-from-unknown-step", ("resume", "demo", "--from-step", "nosuch"), 2, ("no step 'nosuch'", "one, two"), in_state("fail")),
    Case("advance-a-failed-env", ("advance", "demo"), 4, ("build_failed", "runner resume demo"), in_state("fail")),
    Case("up-to-a-state-behind", ("up", "demo", "--to", "created"), 2, ("'created' is not ahead of 'built'",), in_state("advance")),
    Case("up-to-an-unknown-state", ("up", "demo", "--to", "nowhere"), 2, ("'nowhere' is not a state",)),
    Case("destroy-a-destroyed-env", ("destroy", "demo"), 4, ("'destroy' is not allowed", "destroyed"), in_state("destroy")),
    Case("create-an-existing-env", ("create", "demo", "--set", "provider=cloud"), 2, ("'demo' already exists",)),
    Case("status-of-no-env", ("status", "nosuch"), 2, ("nosuch",)),
]
# fmt: on


@pytest.fixture()
def work(tmp_path: Path) -> Iterator[Path]:
    work = tmp_path / "work"
    build_tree(work, {"machine.yaml": MACHINE})
    workspace(work).create("demo")
    yield work
    pid_file = work / "one.pid"  # never leave a sleeping step behind, even when failing
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(work: Path, case: Case) -> None:
    if case.setup is not None:
        case.setup(work)
    before, ran_before = snapshot(work), ran(work)
    proc = run_cli(*case.args, cwd=work / case.cwd)
    no_traceback(proc)
    stream = proc.stdout if case.code == 0 else proc.stderr
    assert proc.returncode == case.code, proc.stdout + proc.stderr
    for word in case.words:
        assert word in stream, f"{word!r} not in:\n{stream}"
    after = snapshot(work)
    if case.check is None:
        assert after == before
    else:
        case.check(before, after, work)
    assert ran(work) == ran_before or case.code == 0  # no step ran on bad input


JSON_CASES = [
    c
    for c in CASES
    if c.code in (2, 4)
    and c.id.split("/")[0]
    in ("machine-yaml-syntax", "config-json-list", "state-format-99", "phase-not-allowed")
]


@pytest.mark.parametrize("case", JSON_CASES, ids=[c.id for c in JSON_CASES])
def test_bad_input_as_one_json_document(work: Path, case: Case) -> None:
    if case.setup is not None:
        case.setup(work)
    before = snapshot(work)
    proc = run_cli("--output", "json", *case.args, cwd=work / case.cwd)
    no_traceback(proc)
    assert proc.returncode == case.code
    error = json.loads(proc.stdout)  # exactly one JSON document
    assert error["exit_code"] == case.code
    assert error["message"] and error["error"]
    assert snapshot(work) == before


# --- signals at awkward moments -----------------------------------------------------


def _spawn(work: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=work,
        env=cli_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _waiting_for_a_lock(pid: int) -> bool:
    """True once ``pid`` has opened the lock file (it then polls for the lock)."""
    try:
        return any(
            os.readlink(f"/proc/{pid}/fd/{fd}").endswith("state.lock")
            for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except OSError:
        return False


@pytest.mark.parametrize(
    "sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_signal_while_waiting_for_the_lock_changes_nothing(
    work: Path, sig: signal.Signals, code: int
) -> None:
    store = FileStore(work)
    with hold(store, "demo", "runner test-holder", 5):
        before = snapshot(work)
        proc = _spawn(work, "--lock-timeout", "60", "advance", "demo")
        try:
            _wait_until(lambda: _waiting_for_a_lock(proc.pid), "the lock wait")
            time.sleep(0.2)
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        after = snapshot(work)
    assert "Traceback" not in out + err
    assert proc.returncode == code, f"exit {proc.returncode}, stderr: {err!r}"
    assert "interrupted" in err
    assert after == before  # the holder's record in state.lock is ours; nothing else moved
    assert read_state(work)["state"] == "created"


@pytest.mark.parametrize(
    "sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_signal_right_after_the_phase_starts(work: Path, sig: signal.Signals, code: int) -> None:
    workspace(work).create("napper", sets=["nap=30"])
    state_file, events = work / "data/napper/state.json", "data/napper/events.jsonl"
    before = snapshot(work)
    proc = _spawn(work, "advance", "napper")
    try:
        # the moment the start transition is on disk, before or while step one starts
        _wait_until(lambda: b'"building"' in state_file.read_bytes(), "the via state")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in out + err
    assert proc.returncode == code, err
    assert "interrupted" in err and "runner resume napper" in err
    after = snapshot(work)
    only_changed(before, after, "data/napper")
    state = json.loads(state_file.read_text())
    assert state["state"] == "building"
    assert state["run"]["interrupted"] is True
    assert state["run"]["completed_steps"] == []
    assert state["failure"] is None
    assert (work / state["run"]["trace"]).is_file()
    kinds = [(e["type"], e.get("to")) for e in appended(before, after, events)]
    assert kinds == [("transition", "building"), ("interrupted", None)]
    assert after["data/napper/state.lock"] == b""
    one = work / "one.pid"
    if one.exists():  # the step had started: its process group is gone
        pid = int(one.read_text())
        _wait_until(lambda: not _alive(pid), "the step's process to end", timeout=10)
    assert not (work / "ran.txt").exists()


def test_signal_while_the_step_program_is_being_started_stops_it(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT arriving while `subprocess.Popen` is still starting the step's program (it
    has forked and exec'd, Popen has not returned yet) must still stop that program: it
    may not live on and do its work after the run was reported interrupted."""
    ws = workspace(work)
    ws.create("napper", sets=["nap=30"])
    real = subprocess.Popen._execute_child  # type: ignore[attr-defined]
    started: list[int] = []

    def execute_then_interrupt(self: subprocess.Popen, *args: object, **kwargs: object) -> None:
        real(self, *args, **kwargs)
        started.append(self.pid)
        os.kill(os.getpid(), signal.SIGINT)  # delivered before Popen() returns

    monkeypatch.setattr(subprocess.Popen, "_execute_child", execute_then_interrupt)
    try:
        with pytest.raises(InterruptedRunError):
            ws.advance("napper")
        monkeypatch.undo()
        assert read_state(work, "napper")["state"] == "building"
        assert len(started) == 1
        _wait_until(lambda: not _alive(started[0]), "the step's program to stop", timeout=5)
        time.sleep(0.2)  # had it lived on, it would be writing by now
        assert not (work / "ran.txt").exists()
    finally:
        for pid in started:  # never leave the sleeper behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_a_step_deadline_while_the_program_is_being_started_stops_it(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a step's `timeout` (SIGALRM) firing while Popen starts the program:
    the step fails with kind `timeout` and the program does not live on."""
    timed = MACHINE.replace(
        '      - name: two\n', "        timeout: 60s\n      - name: two\n", 1
    )
    (work / "machine.yaml").write_text(timed)
    ws = workspace(work)
    ws.create("napper", sets=["nap=30"])
    real = subprocess.Popen._execute_child  # type: ignore[attr-defined]
    started: list[int] = []

    def execute_then_expire(self: subprocess.Popen, *args: object, **kwargs: object) -> None:
        real(self, *args, **kwargs)
        started.append(self.pid)
        os.kill(os.getpid(), signal.SIGALRM)  # the step's deadline, before Popen() returns

    monkeypatch.setattr(subprocess.Popen, "_execute_child", execute_then_expire)
    try:
        result = ws.advance("napper")
        monkeypatch.undo()
        assert result.failed
        failed = read_state(work, "napper")
        assert failed["state"] == "build_failed", failed
        assert (failed["failure"]["step"], failed["failure"]["kind"]) == ("one", "timeout")
        assert len(started) == 1
        _wait_until(lambda: not _alive(started[0]), "the step's program to stop", timeout=5)
        time.sleep(0.2)
        assert not (work / "ran.txt").exists()
    finally:
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


# --- a small file system: full, read-only -------------------------------------------

_MS_RDONLY = 1
_MS_REMOUNT = 32
_MNT_DETACH = 2


def _libc_call(name: str, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{name}: {os.strerror(number)}")


@contextlib.contextmanager
def small_fs(path: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` for the ``with`` block."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        _libc_call("mount", b"tmpfs", os.fsencode(path), b"tmpfs", 0, f"size={size}".encode())
    except OSError as exc:
        if exc.errno == errno.EPERM:
            pytest.skip("the platform does not allow mounting a test filesystem")
        raise
    try:
        yield path
    finally:
        _libc_call("umount2", os.fsencode(path), _MNT_DETACH)


def read_only(path: Path) -> None:
    _libc_call(
        "mount", b"tmpfs", os.fsencode(path), b"tmpfs", _MS_REMOUNT | _MS_RDONLY, b"size=256k"
    )


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until the file system is full."""
    path = folder / "filler"
    with open(path, "wb", buffering=0) as handle:
        chunk = b"x" * 4096
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"x")
    return path


@pytest.fixture()
def small_work(tmp_path: Path) -> Iterator[Path]:
    """A working directory whose data/ is a 256 KiB tmpfs holding `demo`."""
    work = tmp_path / "work"
    build_tree(work, {"machine.yaml": MACHINE})
    with small_fs(work / "data"):
        workspace(work).create("demo")
        yield work


def test_advance_on_a_full_disk_changes_nothing(small_work: Path) -> None:
    work = small_work
    fill(work / "data")
    before = snapshot(work)
    proc = run_cli("advance", "demo", cwd=work)
    no_traceback(proc)
    assert proc.returncode == 2, proc.stderr
    assert "data/demo/" in proc.stderr and "No space left on device" in proc.stderr
    assert snapshot(work) == before
    assert not (work / "ran.txt").exists()


def test_advance_on_a_full_disk_with_room_for_the_lock_only(small_work: Path) -> None:
    work = small_work
    dead_holder(work)  # the lock file owns a page: taking the lock needs no new space
    fill(work / "data")
    before = snapshot(work)
    proc = run_cli("advance", "demo", cwd=work)
    no_traceback(proc)
    assert proc.returncode == 2, proc.stderr
    # the new version's snapshot is written first: the save stops there
    assert f"cannot write {SNAPSHOTS}/2.json: No space left on device" in proc.stderr
    after = snapshot(work)
    only_changed(before, after, LOCK, "data/demo/runs")
    assert after[STATE] == before[STATE]
    assert not [p for p in (work / "data/demo").iterdir() if p.name.endswith(".tmp")]
    assert not (work / "ran.txt").exists()


def test_advance_on_a_read_only_data_dir_changes_nothing(small_work: Path) -> None:
    work = small_work
    read_only(work / "data")
    before = snapshot(work)
    proc = run_cli("advance", "demo", cwd=work)
    no_traceback(proc)
    assert proc.returncode == 2, proc.stderr
    assert LOCK in proc.stderr and "Read-only file system" in proc.stderr
    created = run_cli("create", "other", cwd=work)
    no_traceback(created)
    assert created.returncode == 2 and "Read-only file system" in created.stderr
    status = run_cli("status", "demo", cwd=work)  # reading needs no writes
    assert status.returncode == 0, status.stderr
    assert snapshot(work) == before


FILLING_MACHINE = MACHINE.replace(
    '[sh, -c, "echo $$ > one.pid; sleep {{ inputs.nap }}; echo one >> ran.txt"]',
    '[sh, -c, "if test -e fill-me; then cat /dev/zero > data/filler 2>/dev/null; fi; '
    'seq 1 4000; echo one >> ran.txt"]',
)


def test_disk_filling_up_during_a_step_loses_nothing(small_work: Path) -> None:
    work = small_work
    build_tree(work, {"machine.yaml": FILLING_MACHINE, "fill-me": ""})
    proc = run_cli("advance", "demo", cwd=work)
    no_traceback(proc)
    state = FileStore(work).load("demo")  # still a valid record
    assert state.state in ("building", "build_failed")
    assert proc.returncode == 2, proc.stderr
    assert "data/demo/" in proc.stderr and "No space left on device" in proc.stderr
    assert "internal error" not in proc.stderr
    if state.state == "building":  # stopped mid-phase: the way on is resume, said so
        assert "free " in proc.stderr and "runner resume demo" in proc.stderr
        assert "nothing stored was changed" not in proc.stderr
    (work / "data/filler").unlink()
    (work / "fill-me").unlink()
    resumed = run_cli("resume", "demo", cwd=work)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert FileStore(work).load("demo").state == "built"
