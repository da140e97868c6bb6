"""Every `--output json` document is one JSON document that schemas/output.schema.json
describes: each command through the CLI (a subprocess), on success and on each kind of
error, is validated against the schema; the result classes and the schema agree."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from runner import struct
from runner.api import results
from runner.result import INTERNAL, JSON_KEY
from runner.run.checks import CheckOutcome
from runner.run.phase import PhaseResult, StepOutcome
from runner.store.contract import LockInfo, SnapshotInfo
from runner.store.record import Failure, Forced, LastCheck, Paths, Run
from runner.web.serve import ServeResult
from tests.helpers import ROOT, build_tree, cli_env, run_cli

SCHEMA: dict[str, Any] = json.loads(
    (ROOT / "schemas" / "output.schema.json").read_text(encoding="utf-8")
)
DEFS = SCHEMA["$defs"]

MACHINE = """\
    version: 1
    name: docs
    initial: created
    inputs:
      type: object
      properties:
        greeting: {type: string, default: hello}
    states:
      created: {description: Nothing built yet}
      building: {}
      built: {description: Built}
      build_failed: {recovery: "remove the file 'broken', then runner resume {{ env.name }}"}
      shipping: {}
      shipped: {}
      ship_failed: {}
      destroying: {}
      destroyed: {final: true}
      destroy_failed: {}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - {name: prepare, uses: shell, with: {argv: ["true"]}}
          - name: check
            uses: shell
            with: {argv: [sh, -c, "test ! -e broken"]}
            retry: {attempts: 2, delay: 0s}
          - {name: maybe, uses: shell, when: "{{ inputs.greeting == 'skip' }}", with: {argv: ["true"]}}
      - name: ship
        from: built
        via: shipping
        to: shipped
        failed: ship_failed
        steps:
          - name: wait
            uses: shell
            with: {argv: [sh, -c, "if [ -e slow ]; then touch started; sleep 30; fi"]}
      - name: destroy
        from: [created, built, build_failed, shipped, ship_failed]
        via: destroying
        to: destroyed
        failed: destroy_failed
        advance: false
        steps:
          - {name: remove, uses: shell, with: {argv: ["true"]}}
"""


def _validator(definition: str | None = None) -> Draft202012Validator:
    schema = dict(SCHEMA)
    if definition is not None:
        del schema["oneOf"]
        schema["$ref"] = f"#/$defs/{definition}"
    return Draft202012Validator(schema)


WHOLE = _validator()


def check(proc: subprocess.CompletedProcess[str], code: int, definition: str) -> dict[str, Any]:
    """The one JSON document on ``proc``'s stdout, valid against the schema and its
    ``definition``, after exit ``code``."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    text = proc.stdout
    document, end = json.JSONDecoder().raw_decode(text.lstrip())
    assert text.lstrip()[end:].strip() == "", f"more than one JSON document:\n{text}"
    errors = [e.message for e in WHOLE.iter_errors(document)]
    assert not errors, (errors, document)
    errors = [e.message for e in _validator(definition).iter_errors(document)]
    assert not errors, (definition, errors, document)
    assert document["api_version"] == 1
    if definition == "error":
        assert document["exit_code"] == code
    return document


def cli(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("--output", "json", *args, cwd=work)


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    return build_tree(tmp_path, {"machine.yaml": MACHINE})


def test_machine_commands(work: Path) -> None:
    valid = check(cli(work, "validate"), 0, "validate")
    assert valid["happy_path"] == ["created", "built", "shipped"]
    drawn = check(cli(work, "graph"), 0, "graph")
    assert drawn["graph"].startswith("stateDiagram") and drawn["environment"] is None
    written = check(cli(work, "graph", "--format", "dot", "-o", "m.dot"), 0, "graph_file")
    assert written["bytes"] == (work / "m.dot").stat().st_size
    check(cli(work, "create", "demo"), 0, "create")
    marked = check(cli(work, "graph", "--env", "demo"), 0, "graph")
    assert (marked["environment"], marked["state"]) == ("demo", "created")
    unknown = check(cli(work, "graph", "--env", "nosuch"), 2, "error")
    assert unknown["environment"] == "nosuch"

    (work / "broken.yaml").write_text("version: 1\nname: x\ninitial: nowhere\nstates: {}\n")
    broken = check(cli(work, "--machine", "broken.yaml", "validate"), 2, "error")
    assert broken["error"] == "MachineError" and broken["problems"]
    check(cli(work, "--machine", "broken.yaml", "status", "demo"), 2, "error")
    check(cli(work, "--machine", "broken.yaml", "advance", "demo"), 2, "error")
    check(cli(work, "--workdir", "nowhere", "list"), 2, "error")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--lock-timeout", "-1", "list"), "--lock-timeout"),
        (("status",), "Missing argument 'NAME'"),
        (("nosuchcmd",), "No such command 'nosuchcmd'"),
        (("history", "demo", "--limit", "0"), "--limit"),
        (("--log-level", "BOGUS", "list"), "BOGUS"),
        (("advance", "demo", "--no-such-option"), "--no-such-option"),
    ],
)
def test_a_wrong_command_line_is_one_error_document_too(
    work: Path, args: tuple[str, ...], said: str
) -> None:
    """With --output json (before or after the command), a usage error is the error
    document on stdout, exit 2, not the parser's usage text alone."""
    for argv in (["--output", "json", *args], [*args, "--output", "json"]):
        done = run_cli(*argv, cwd=work)
        document = check(done, 2, "error")
        assert document["error"] == "UsageError" and said in document["message"], document
        assert "--help" in document["hint"]


def test_environment_commands_success_and_errors(work: Path) -> None:
    created = check(cli(work, "create", "demo", "--set", "greeting=hi"), 0, "create")
    assert created["environment"] == "demo" and created["inputs"] == {"greeting": "hi"}
    bad = check(cli(work, "create", "Bad/Name"), 2, "error")
    assert bad["error"] == "InvalidNameError" and bad["environment"] == "Bad/Name"
    taken = check(cli(work, "create", "demo"), 2, "error")
    assert (taken["error"], taken["environment"]) == ("EnvironmentExistsError", "demo")
    check(cli(work, "create", "other", "--set", "greeting=1"), 2, "error")  # not a string

    status = check(cli(work, "status", "demo"), 0, "status")
    assert (status["environment"], status["state"], status["failure"]) == ("demo", "created", None)
    listing = check(cli(work, "list"), 0, "list")
    assert [e["environment"] for e in listing["environments"]] == ["demo"]
    history = check(cli(work, "history", "demo"), 0, "history")
    assert history["environment"] == "demo" and history["events"][0]["type"] == "created"

    for args in (("status", "nosuch"), ("history", "nosuch"), ("advance", "nosuch")):
        missing = check(cli(work, *args), 2, "error")
        assert (missing["error"], missing["environment"]) == ("EnvironmentNotFoundError", "nosuch")
    check(cli(work, "status", "Bad/Name"), 2, "error")

    plan = check(cli(work, "advance", "demo", "--dry-run"), 0, "run")
    assert [s["name"] for s in plan["dry_run"][0]["steps"]] == ["prepare", "check", "maybe"]
    assert plan["phases"] == [] and plan["status"] == "ok"

    (work / "broken").write_text("")
    failed = check(cli(work, "advance", "demo"), 1, "run")
    assert (failed["error"], failed["exit_code"], failed["status"]) == ("StepError", 1, "failed")
    assert failed["failure"] == failed["phases"][0]["failure"]
    assert failed["failure"]["step"] == "check" and failed["state"] == "build_failed"
    assert "check" in failed["message"]
    status = check(cli(work, "status", "demo"), 0, "status")
    assert status["failure"]["step"] == "check" and status["kind"] == "failed"
    listing = check(cli(work, "list"), 0, "list")
    assert listing["environments"][0]["failed_step"] == "check"

    refused = check(cli(work, "advance", "demo"), 4, "error")
    assert refused["error"] == "PhaseNotAllowedError" and refused["environment"] == "demo"
    not_allowed = check(cli(work, "phase", "demo", "ship"), 4, "error")
    assert not_allowed["allowed"] == ["destroy"]
    check(cli(work, "phase", "demo", "nosuch"), 2, "error")
    check(cli(work, "resume", "demo"), 1, "run")  # still broken
    (work / "broken").unlink()
    resumed = check(cli(work, "resume", "demo"), 0, "run")
    assert resumed["state"] == "built" and resumed["failure"] is None
    assert [s["status"] for s in resumed["phases"][0]["steps"]] == [
        "already_done",
        "done",
        "skipped",
    ]
    check(cli(work, "resume", "demo"), 4, "error")  # nothing to resume

    check(cli(work, "phase", "demo", "ship", "--dry-run"), 0, "run")
    shipped = check(cli(work, "phase", "demo", "ship"), 0, "run")
    assert shipped["state"] == "shipped"
    nothing = check(cli(work, "advance", "demo"), 0, "run")
    assert nothing["phases"] == [] and "nothing to advance" in nothing["message"]
    check(cli(work, "up", "demo"), 0, "run")  # already there
    check(cli(work, "up", "demo", "--to", "created"), 2, "error")
    check(cli(work, "destroy", "demo", "--dry-run"), 0, "run")
    destroyed = check(cli(work, "destroy", "demo"), 0, "run")
    assert destroyed["state"] == "destroyed" and destroyed["phases"][0]["phase"] == "destroy"
    check(cli(work, "destroy", "demo"), 4, "error")  # final


def test_up_runs_every_phase(work: Path) -> None:
    check(cli(work, "create", "demo"), 0, "create")
    went = check(cli(work, "up", "demo", "--to", "built"), 0, "run")
    assert [p["phase"] for p in went["phases"]] == ["build"] and went["state"] == "built"
    check(cli(work, "create", "again"), 0, "create")
    went = check(cli(work, "up", "again"), 0, "run")
    assert [p["phase"] for p in went["phases"]] == ["build", "ship"]
    (work / "data/unreadable").mkdir(mode=0o700)
    (work / "data/unreadable/state.json").write_text("{")
    listing = check(cli(work, "list"), 0, "list")
    assert [e["environment"] for e in listing["unreadable"]] == ["unreadable"]
    check(cli(work, "status", "unreadable"), 2, "error")


@pytest.fixture()
def holder(work: Path) -> Iterator[subprocess.Popen[str]]:
    """A second process holding `demo`'s lock (the store's own lock) until stopped."""
    assert run_cli("create", "demo", cwd=work).returncode == 0
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from runner.store.files import FileStore
        from runner.store.locking import hold

        with hold(FileStore(Path.cwd()), "demo", "runner test-holder", 0):
            print("held", flush=True)
            sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=work,
        env=cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    try:
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def test_locked(work: Path, holder: subprocess.Popen[str]) -> None:
    for args in (("advance", "demo"), ("destroy", "demo"), ("phase", "demo", "build")):
        locked = check(cli(work, "--lock-timeout", "0", *args), 3, "error")
        assert (locked["error"], locked["environment"]) == ("LockedError", "demo")
        assert locked["pid"] == holder.pid and locked["command"] == "runner test-holder"
    status = check(cli(work, "status", "demo"), 0, "status")
    assert status["locked_by"]["pid"] == holder.pid


def test_interrupted(work: Path) -> None:
    assert run_cli("create", "demo", cwd=work).returncode == 0
    assert run_cli("advance", "demo", cwd=work).returncode == 0
    (work / "slow").write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "--output", "json", "advance", "demo"],
        cwd=work,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (work / "started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    stopped = check(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 130, "error")
    assert (stopped["error"], stopped["environment"]) == ("InterruptedRunError", "demo")
    status = check(cli(work, "status", "demo"), 0, "status")
    assert status["interrupted"] is True and status["run"]["interrupted"] is True
    check(cli(work, "advance", "demo"), 4, "error")


# --- the schema itself ------------------------------------------------------------------


def test_the_schema_is_valid_and_describes_every_property() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    for name in ("failure", "environment_summary", "error", "phase_result", "step_outcome"):
        assert name in DEFS
    for name in ("lock_holder", "event"):
        assert name in DEFS

    def walk(node: Any, where: str) -> Iterator[str]:
        if isinstance(node, dict):
            for key, sub in (node.get("properties") or {}).items():
                if "description" not in sub:
                    yield f"{where}/{key}"
            for key, sub in node.items():
                yield from walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                yield from walk(sub, f"{where}/{i}")

    # `if`/`then` only restate properties of the same definition
    missing = [p for p in walk(SCHEMA, "#") if "/then/" not in p and "/if/" not in p]
    assert not missing, missing


# each typed result and the schema definition of its JSON form
RESULT_DEFS: dict[type, str] = {
    Failure: "failure",
    LockInfo: "lock_holder",
    results.EnvironmentSummary: "environment_summary",
    results.Unreadable: "unreadable",
    StepOutcome: "step_outcome",
    PhaseResult: "phase_result",
    results.StepPlan: "step_plan",
    results.PhasePlan: "phase_plan",
    Run: "run_record",
    Paths: "paths",
    results.PhaseSummary: "machine_phase",
    results.ValidateResult: "validate",
    results.GraphResult: "graph",
    results.GraphFileResult: "graph_file",
    results.CreateResult: "create",
    results.StatusResult: "status",
    results.ListResult: "list",
    results.HistoryResult: "history",
    results.RunResult: "run",
    results.CheckResult: "check",
    CheckOutcome: "check_outcome",
    LastCheck: "last_check",
    results.ExistsResult: "exists",
    results.PurgeResult: "purge",
    results.InputsResult: "inputs",
    results.ForceStateResult: "force_state",
    results.SnapshotsResult: "snapshots",
    results.RestoreResult: "restore",
    SnapshotInfo: "snapshot_info",
    Forced: "forced",
    results.ArtifactsResult: "artifacts",
    results.ArtifactResult: "artifact",
    ServeResult: "serve",
}
# keys the rendering layer adds: api_version to every document, the error keys of a
# failed run
ENVELOPE = {"api_version"}
RUN_ENVELOPE = {"error", "exit_code"}


@pytest.mark.parametrize("cls", list(RESULT_DEFS), ids=lambda c: c.__name__)
def test_result_fields_are_the_schema_properties(cls: type) -> None:
    keys = {
        f.metadata.get(JSON_KEY, f.name)
        for f in struct.fields(cls)
        if not f.metadata.get(next(iter(INTERNAL)))
    }
    added = ENVELOPE | (RUN_ENVELOPE if cls is results.RunResult else set())
    assert keys == set(DEFS[RESULT_DEFS[cls]]["properties"]) - added
