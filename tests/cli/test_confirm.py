"""Phases marked `confirm: true` ask before they run: on a terminal (a real
pseudo-terminal here) naming the environment, its state and the steps; `--yes` skips
the question; without a terminal and without `--yes` they are refused (exit 2)."""

from __future__ import annotations

import json
import os
import pty
import select
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import build_tree, cli_env, read_events, read_state, run_cli

MACHINE = """\
version: 1
name: confirming
initial: created
states:
  created: {}
  building: {}
  built: {}
  build_failed: {}
  wiping: {}
  wiped: {final: true}
  wipe_failed: {}
phases:
  - name: build
    from: created
    via: building
    to: built
    failed: build_failed
    steps:
      - {name: make, uses: shell, with: {argv: [touch, built.marker]}}
  - name: wipe
    from: any
    via: wiping
    to: wiped
    failed: wipe_failed
    advance: false
    confirm: true
    steps:
      - {name: remove_marker, uses: shell, with: {argv: [rm, -f, built.marker]}}
      - {name: never_here, uses: shell, when: false, with: {argv: ["false"]}}
"""


def _work(tmp_path: Path) -> Path:
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    assert run_cli("advance", "demo", cwd=tmp_path).returncode == 0
    assert (tmp_path / "built.marker").exists()
    return tmp_path


def on_terminal(cwd: Path, answer: str | None, *args: str) -> tuple[int, str]:
    """``runner ARGS`` on a pseudo-terminal; ``answer`` is typed once it asks."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-m", "runner", *args], cli_env())
        finally:
            os._exit(127)
    out = b""
    answered = answer is None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if not answered and b"Proceed? [y/N]" in out:
            os.write(fd, (answer or "").encode() + b"\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_without_a_terminal_and_without_yes_it_is_refused(tmp_path: Path) -> None:
    work = _work(tmp_path)
    proc = run_cli("phase", "demo", "wipe", cwd=work)
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr
    assert "Traceback" not in message
    for words in ("'wipe'", "'demo'", "'built'", "remove_marker", "no terminal", "--yes"):
        assert words in message, message
    assert "runner phase demo wipe --yes" in message
    assert (work / "built.marker").exists()  # nothing ran
    assert read_state(work, "demo")["state"] == "built"
    assert not [e for e in read_events(work, "demo") if e.get("phase") == "wipe"]


def test_refusal_as_json_is_an_error_document(tmp_path: Path) -> None:
    work = _work(tmp_path)
    proc = run_cli("--output", "json", "phase", "demo", "wipe", cwd=work)
    assert proc.returncode == 2
    document = json.loads(proc.stdout)
    assert document["error"] == "ConfirmationError" and document["exit_code"] == 2
    assert document["environment"] == "demo" and document["state"] == "built"


def test_yes_runs_it_without_asking(tmp_path: Path) -> None:
    work = _work(tmp_path)
    proc = run_cli("phase", "demo", "wipe", "--yes", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert not (work / "built.marker").exists()
    assert read_state(work, "demo")["state"] == "wiped"


def test_dry_run_never_asks(tmp_path: Path) -> None:
    work = _work(tmp_path)
    proc = run_cli("phase", "demo", "wipe", "--dry-run", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "remove_marker" in proc.stdout and (work / "built.marker").exists()


def test_on_a_terminal_it_asks_and_a_yes_runs_it(tmp_path: Path) -> None:
    work = _work(tmp_path)
    code, out = on_terminal(work, "y", "phase", "demo", "wipe")
    assert code == 0, out
    question = out[: out.index("Proceed? [y/N]")]
    for words in ("phase 'wipe'", "environment 'demo'", "now in 'built'", "remove_marker"):
        assert words in question, out
    assert "skipped here: never_here" in question
    assert not (work / "built.marker").exists()
    assert read_state(work, "demo")["state"] == "wiped"


def test_on_a_terminal_anything_but_yes_runs_nothing(tmp_path: Path) -> None:
    work = _work(tmp_path)
    code, out = on_terminal(work, "n", "phase", "demo", "wipe")
    assert code == 2, out
    assert "not confirmed" in out and "stays in 'built'" in out
    assert (work / "built.marker").exists()
    assert read_state(work, "demo")["state"] == "built"


def test_a_phase_without_confirm_never_asks_on_a_terminal(tmp_path: Path) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    code, out = on_terminal(tmp_path, None, "advance", "demo")
    assert code == 0, out
    assert "Proceed?" not in out
    assert read_state(tmp_path, "demo")["state"] == "built"


def test_the_api_asks_its_confirm_callback_under_the_lock(tmp_path: Path) -> None:
    """The Python API asks only a `confirm` callback it is given: False refuses the
    phase (ConfirmationError, exit 2, nothing run); without one nothing is asked."""
    from runner import Runner
    from runner.api.results import ConfirmRequest
    from runner.errors import ConfirmationError

    work = _work(tmp_path)
    asked: list[ConfirmRequest] = []

    def refuse(request: ConfirmRequest) -> bool:
        asked.append(request)
        return False

    with pytest.raises(ConfirmationError) as refused:
        Runner(work, confirm=refuse).run_phase("demo", "wipe")
    assert refused.value.exit_code == 2 and "not confirmed" in refused.value.message
    (request,) = asked
    assert (request.environment, request.state, request.phase, request.to) == (
        "demo",
        "built",
        "wipe",
        "wiped",
    )
    assert (request.runs, request.skips) == (("remove_marker",), ("never_here",))
    assert (work / "built.marker").exists()
    assert Runner(work, confirm=refuse).run_phase("demo", "wipe", dry_run=True).dry_run
    assert len(asked) == 1  # a dry run asks nothing
    result = Runner(work).run_phase("demo", "wipe")  # no callback: the call decides
    assert result.state == "wiped" and not (work / "built.marker").exists()
