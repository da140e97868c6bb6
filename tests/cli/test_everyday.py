"""The everyday details an operator notices: global options anywhere, progress without a
terminal, lock waits said, hints shown, graph formats from the file name, "did you
mean", counts and resume reports that read right. Every test runs the real CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import build_tree, cli_env, run_cli

MACHINE = """\
    version: 1
    name: everyday
    initial: created
    states:
      created: {}
      building: {}
      built: {}
      build_failed:
        recovery: "Remove the file `fail`, then `runner resume {{ env.name }}`."
      running: {}
      smoking: {}
      smoke_failed: {}
      destroying: {}
      destroyed: {}
      destroy_failed: {}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - {name: first, uses: shell, with: {argv: ["true"]}}
          - {name: optional, uses: shell, when: "{{ inputs.extra | default(false) }}", with: {argv: ["true"]}}
          - {name: last, uses: shell, with: {argv: ["sh", "-c", "test ! -e fail"]}}
      - name: smoke_test
        from: built
        via: smoking
        to: running
        failed: smoke_failed
        steps:
          - {name: smoke, uses: shell, with: {argv: ["true"]}}
      - name: destroy
        advance: false
        from: [created, built, build_failed, running, smoke_failed]
        via: destroying
        to: destroyed
        failed: destroy_failed
        steps:
          - {name: remove, uses: shell, with: {argv: ["true"]}}
"""


# --- 1. global options after the command ------------------------------------------------


def test_global_options_are_accepted_after_the_command(work: Path) -> None:
    assert run_cli("create", "demo", cwd=work).returncode == 0
    done = run_cli("advance", "demo", "--lock-timeout", "0", "-v", cwd=work)
    assert done.returncode == 0, done.stderr
    assert "first | " not in done.stdout  # `true` prints nothing; -v streams what there is
    assert "environment 'demo' is now in 'built'" in done.stdout
    document = json.loads(run_cli("status", "demo", "--output", "json", cwd=work).stdout)
    assert document["state"] == "built"
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    validated = run_cli(
        "validate", "--machine", "machine.yaml", "--output=json", f"--workdir={work}", cwd=elsewhere
    )
    assert validated.returncode == 0, validated.stderr
    assert json.loads(validated.stdout)["name"] == "everyday"
    logged = run_cli(
        "phase", "demo", "smoke_test", "--log-level", "INFO", "--log-format", "json", cwd=work
    )
    assert logged.returncode == 0, logged.stderr
    assert all(json.loads(line)["level"] == "INFO" for line in logged.stderr.splitlines())
    assert logged.stderr  # the transitions were logged at INFO, as JSON lines
    assert run_cli("list", "--no-color", cwd=work).returncode == 0
    # an unknown option after the command is still typer's error
    bad = run_cli("status", "demo", "--output", "yaml", cwd=work)
    assert bad.returncode == 2 and "--output" in bad.stderr


# --- 8. counts, next actions and resume reports that read right ---------------------------


def test_one_step_is_one_step(work: Path) -> None:
    assert run_cli("create", "demo", cwd=work).returncode == 0
    assert run_cli("advance", "demo", cwd=work).returncode == 0
    done = run_cli("phase", "demo", "smoke_test", cwd=work)
    assert done.returncode == 0, done.stderr
    assert "demo: phase smoke_test (1 step)\n" in done.stdout
    assert "(1 steps)" not in done.stdout
    destroyed = run_cli("destroy", "demo", cwd=work)
    assert "demo: phase destroy (1 step)\n" in destroyed.stdout


def test_status_gives_resume_once_and_resume_reports_skipped_steps_as_skipped(work: Path) -> None:
    assert run_cli("create", "demo", cwd=work).returncode == 0
    (work / "fail").write_text("")
    failed = run_cli("advance", "demo", cwd=work)
    assert failed.returncode == 1
    assert "[2/3] optional skipped" in failed.stdout
    status = run_cli("status", "demo", cwd=work)
    assert status.stdout.count("runner resume demo") == 1, status.stdout
    document = json.loads(run_cli("--output", "json", "status", "demo", cwd=work).stdout)
    assert sum("runner resume demo" in action for action in document["next"]) == 1
    (work / "fail").unlink()
    resumed = run_cli("resume", "demo", cwd=work)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "[1/3] first already done" in resumed.stdout
    assert "[2/3] optional skipped" in resumed.stdout
    assert "optional already done" not in resumed.stdout
    (work / "fail").write_text("")
    assert run_cli("destroy", "demo", cwd=work).returncode == 0
    assert run_cli("create", "again", cwd=work).returncode == 0
    assert run_cli("advance", "again", cwd=work).returncode == 1
    (work / "fail").unlink()
    document = json.loads(run_cli("--output", "json", "resume", "again", cwd=work).stdout)
    steps = [(s["name"], s["status"]) for s in document["phases"][0]["steps"]]
    assert steps == [("first", "already_done"), ("optional", "skipped"), ("last", "done")]


# --- 7. did you mean ----------------------------------------------------------------------


def test_a_misspelt_phase_state_step_or_plugin_gets_a_suggestion(work: Path) -> None:
    assert run_cli("create", "demo", cwd=work).returncode == 0
    phase = run_cli("phase", "demo", "destory", cwd=work)
    assert phase.returncode == 2
    assert "no phase 'destory'; did you mean 'destroy'?" in phase.stderr
    up = run_cli("up", "demo", "--to", "runing", cwd=work)
    assert up.returncode == 2
    assert "--to 'runing' is not a state of machine.yaml; did you mean 'running'?" in up.stderr
    nothing_close = run_cli("up", "demo", "--to", "zzz", cwd=work)
    assert nothing_close.returncode == 2 and "did you mean" not in nothing_close.stderr
    (work / "fail").write_text("")
    assert run_cli("advance", "demo", cwd=work).returncode == 1
    step = run_cli("resume", "demo", "--from-step", "frist", cwd=work)
    assert step.returncode == 2
    assert "has no step 'frist'; did you mean 'first'?" in step.stderr
    (work / "typo.yaml").write_text(
        (work / "machine.yaml").read_text().replace("uses: shell", "uses: shel", 1)
    )
    machine = run_cli("--machine", "typo.yaml", "validate", cwd=work)
    assert machine.returncode == 2
    assert "uses unknown plugin 'shel'; did you mean 'shell'?" in machine.stderr


# --- 6. the graph format from the file's extension ----------------------------------------


def test_graph_takes_its_format_from_the_file_extension(work: Path) -> None:
    for name, fmt, start in (
        ("m.mmd", "mermaid", b"stateDiagram"),
        ("m.mermaid", "mermaid", b"stateDiagram"),
        ("m.dot", "dot", b"digraph"),
        ("m.GV", "dot", b"digraph"),
        ("m.svg", "svg", b"<?xml"),
        ("m.png", "png", b"\x89PNG"),
    ):
        done = run_cli("--output", "json", "graph", "-o", name, cwd=work)
        if fmt in ("svg", "png") and shutil.which("dot") is None:  # drawn by Graphviz
            assert done.returncode == 2 and "dot" in done.stdout, done.stdout
            continue
        assert done.returncode == 0, (name, done.stderr)
        assert json.loads(done.stdout)["format"] == fmt
        assert (work / name).read_bytes().lstrip().startswith(start), name
    # --format wins over the extension
    forced = run_cli("graph", "--format", "dot", "-o", "forced.png", cwd=work)
    assert forced.returncode == 0 and (work / "forced.png").read_bytes().startswith(b"digraph")
    unknown = run_cli("graph", "-o", "m.jpg", cwd=work)
    assert unknown.returncode == 2
    assert "cannot tell the graph format from the extension of m.jpg" in unknown.stderr
    assert "--format" in unknown.stderr and not (work / "m.jpg").exists()
    assert run_cli("graph", "--format", "mermaid", "-o", "m.jpg", cwd=work).returncode == 0


# --- 5. a failure's hint is shown -------------------------------------------------------

HINTED = """\
    version: 1
    name: hinted
    initial: created
    states:
      created: {}
      building: {}
      built: {}
      build_failed: {}
      fixing: {}
      fix_failed: {}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - {name: slow, uses: shell, timeout: 1s, with: {argv: ["sleep", "30"]}}
      - name: fix
        advance: false
        from: [build_failed]
        via: fixing
        to: built
        failed: fix_failed
        steps:
          - {name: tool, uses: shell, with: {argv: ["no-such-tool-anywhere"]}}
"""


def test_the_hint_of_a_failure_is_shown_in_the_summary_and_in_status(work: Path) -> None:
    build_tree(work, {"machine.yaml": HINTED})
    assert run_cli("create", "demo", cwd=work).returncode == 0
    timed_out = run_cli("advance", "demo", cwd=work)
    assert timed_out.returncode == 1
    hint = "raise the step's `timeout` in machine.yaml if it needs longer"
    assert f"\nhint: {hint}\n" in timed_out.stdout
    status = run_cli("status", "demo", cwd=work)
    assert f"hint:        {hint}" in status.stdout
    document = json.loads(run_cli("--output", "json", "status", "demo", cwd=work).stdout)
    assert document["failure"]["hint"] == hint
    missing = run_cli("phase", "demo", "fix", cwd=work)
    assert missing.returncode == 1
    failure = json.loads(run_cli("--output", "json", "status", "demo", cwd=work).stdout)["failure"]
    assert failure["kind"] == "tool_missing" and failure["hint"]
    assert f"hint: {failure['hint']}" in missing.stdout
    assert f"hint:        {failure['hint']}" in run_cli("status", "demo", cwd=work).stdout


# --- 2. without a terminal: a line when a step starts, a heartbeat, a failure said once ---

SLOW = """\
    version: 1
    name: slow
    initial: created
    states:
      created: {}
      building: {}
      built: {}
      build_failed: {}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - {name: opentofu_apply, uses: shell, with: {argv: ["sleep", "1.6"]}}
          - {name: breaks, uses: shell, with: {argv: ["false"]}}
"""


def test_without_a_terminal_steps_say_when_they_start_and_that_they_still_run(
    work: Path,
) -> None:
    build_tree(work, {"machine.yaml": SLOW})
    assert run_cli("create", "demo", cwd=work).returncode == 0
    done = run_cli("advance", "demo", cwd=work, env={"RUNNER_HEARTBEAT_S": "0.5"})
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[:2] == ["demo: phase build (2 steps)", "[1/2] opentofu_apply ..."]
    beats = [line for line in lines if "still running" in line]
    assert 2 <= len(beats) <= 4, done.stdout
    assert all(re.fullmatch(r"\[1/2\] opentofu_apply still running \(\ds\)", b) for b in beats)
    finished = lines.index(
        next(line for line in lines if line.startswith("[1/2] opentofu_apply ok"))
    )
    assert lines.index(beats[-1]) < finished  # no heartbeat once the step is over
    assert "[2/2] breaks ..." in lines
    # the failure is said once: in the summary on stdout, not again as an ERROR log line
    assert done.stdout.count("false exited with 1") == 2  # the step's line and the summary
    assert "phase 'build' failed at step 'breaks' (command_failed)" in done.stdout
    assert done.stderr == ""
    # a louder log level may log it
    (work / "data").rename(work / "old")
    assert run_cli("create", "demo", cwd=work).returncode == 0
    logged = run_cli("advance", "demo", "--log-level", "INFO", cwd=work)
    assert "step=breaks failed (command_failed): false exited with 1" in logged.stderr


def test_each_long_step_gets_its_own_heartbeat_and_none_after_it_ends(work: Path) -> None:
    """One heartbeat serves every step: it counts again from each step's start, names
    the step that runs, and says nothing between steps or after the last one."""
    build_tree(
        work,
        {"machine.yaml": SLOW.replace('["false"]', '["sleep", "1.3"]').replace('"1.6"', '"1.3"')},
    )
    assert run_cli("create", "demo", cwd=work).returncode == 0
    done = run_cli("advance", "demo", cwd=work, env={"RUNNER_HEARTBEAT_S": "0.5"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for index, step in ((1, "opentofu_apply"), (2, "breaks")):
        start = lines.index(f"[{index}/2] {step} ...")
        end = next(i for i, line in enumerate(lines) if line.startswith(f"[{index}/2] {step} ok"))
        between = lines[start + 1 : end]
        assert 1 <= len(between) <= 3, done.stdout
        assert all(re.fullmatch(rf"\[{index}/2\] {step} still running \(\ds\)", b) for b in between)
    assert not any("still running" in line for line in lines[end:])


def test_the_heartbeat_is_a_minute_unless_runner_heartbeat_s_says_otherwise() -> None:
    from runner.cli.progress import elapsed

    code = "from runner.cli.progress import HEARTBEAT_S; print(HEARTBEAT_S)"
    for given, seconds in ((None, "60.0"), ("2.5", "2.5"), ("soon", "60.0"), ("-1", "60.0")):
        extra = {} if given is None else {"RUNNER_HEARTBEAT_S": given}
        said = subprocess.run(
            [sys.executable, "-c", code], env=cli_env(extra), capture_output=True, text=True
        )
        assert said.stdout.strip() == seconds, (given, said.stderr)
    assert (elapsed(42.9), elapsed(300), elapsed(3723)) == ("42s", "5m00s", "1h02m03s")
