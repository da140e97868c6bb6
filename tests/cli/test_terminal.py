"""The command line on a real pseudo-terminal: the animated line never has a log line
glued to it, colour appears (states by kind, FAILED red), and none with NO_COLOR or
--no-color; `list` and `history` are tables whose columns never break a long name."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time
from collections.abc import Mapping
from pathlib import Path

from tests.helpers import cli_env, run_cli

LONG = "e" + "x" * 62  # the longest name an environment may have: 63 characters
LONG_STEP = "a_step_with_a_rather_long_name_that_would_not_fit_a_column"

MACHINE = f"""\
    version: 1
    name: terminal
    initial: created
    states:
      created: {{}}
      building: {{}}
      built: {{}}
      build_failed: {{}}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - {{name: {LONG_STEP}, uses: shell, with: {{argv: ["sleep", "1"]}}}}
          - {{name: breaks, uses: shell, with: {{argv: ["sh", "-c", "sleep 0.5; test ! -e fail"]}}}}
"""

SGR = re.compile(r"\x1b\[([0-9;]*)m")
SPINNER = set("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")


def on_terminal(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, columns: int = 80
) -> tuple[int, str]:
    """Run ``python -m runner ARGS`` with a pseudo-terminal as stdin, stdout and stderr;
    its exit code and everything it wrote."""
    environment = cli_env(env)
    if not (env and "NO_COLOR" in env):
        environment.pop("NO_COLOR", None)
    environment["TERM"] = "xterm-256color"
    environment.pop("COLUMNS", None)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal's size, then the runner
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-m", "runner", *args], environment)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def colours(output: str) -> list[str]:
    """The colour parameters of the SGR sequences in ``output`` (30-37, 90-97, 38;...)."""
    colour = re.compile(r"3[0-8]|4[0-8]|9[0-7]|10[0-7]")
    return [p for p in SGR.findall(output) if any(colour.fullmatch(x) for x in p.split(";"))]


def segments(output: str) -> list[str]:
    """What is drawn between two carriage returns or newlines, escapes removed."""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    return [s for s in re.split(r"[\r\n]", plain) if s]


def test_a_failing_phase_on_a_terminal_never_glues_a_log_line_to_the_spinner(work: Path) -> None:
    assert run_cli("create", "demo", cwd=work).returncode == 0
    (work / "fail").write_text("")
    code, output = on_terminal("advance", "demo", "--log-level", "INFO", cwd=work)
    assert code == 1, output
    drawn = segments(output)
    assert any(s[0] in SPINNER for s in drawn), output  # it was animated
    logged = [s for s in drawn if " INFO " in s]
    assert logged, output  # the transitions were logged (at INFO) while the line ran
    for line in drawn:
        if any(ch in SPINNER for ch in line):
            assert " INFO " not in line and "environment=" not in line, repr(line)
            assert line.lstrip()[0] in SPINNER, repr(line)  # a frame starts its line
    assert "phase 'build' failed at step 'breaks' (command_failed)" in output
    # colour: FAILED and the failed state red, ok green
    assert re.search(r"\x1b\[[0-9;]*31mFAILED", output), output
    assert re.search(r"\x1b\[[0-9;]*32mok", output), output
    assert re.search(r"\x1b\[[0-9;]*31mbuild_failed", output), output


def test_status_and_list_are_coloured_by_state_kind_and_never_with_no_color(work: Path) -> None:
    assert run_cli("create", "demo", cwd=work).returncode == 0
    assert run_cli("create", "other", cwd=work).returncode == 0
    (work / "fail").write_text("")
    assert run_cli("advance", "demo", cwd=work).returncode == 1
    code, status = on_terminal("status", "demo", cwd=work)
    assert code == 0
    assert re.search(r"state:\s+\x1b\[[0-9;]*31mbuild_failed", status), repr(status)
    code, listing = on_terminal("list", cwd=work)
    assert code == 0
    assert re.search(r"\x1b\[[0-9;]*31mbuild_failed", listing), repr(listing)
    assert re.search(r"\x1b\[[0-9;]*32mcreated", listing), repr(listing)
    for env, args in (({"NO_COLOR": "1"}, ()), ({"NO_COLOR": ""}, ()), (None, ("--no-color",))):
        for command in (("status", "demo"), ("list",), ("history", "demo")):
            code, output = on_terminal(*command, *args, cwd=work, env=env)
            assert code == 0, output
            assert colours(output) == [], (command, env, repr(output))
            assert "build_failed" in output
        code, output = on_terminal("resume", "demo", *args, cwd=work, env=env)
        assert code == 1 and "FAILED" in output
        assert colours(output) == [], repr(output)
    # without a terminal: plain lines, no escape at all
    for command in (("status", "demo"), ("list",), ("history", "demo"), ("resume", "demo")):
        done = run_cli(*command, cwd=work)
        assert "\x1b" not in done.stdout + done.stderr, command


def test_long_names_never_break_the_columns_of_list_and_history(work: Path) -> None:
    assert run_cli("create", LONG, cwd=work).returncode == 0
    assert run_cli("create", "b", cwd=work).returncode == 0
    assert run_cli("advance", LONG, cwd=work).returncode == 0
    for drawn in (on_terminal("list", cwd=work)[1], run_cli("list", cwd=work).stdout):
        lines = segments(drawn)
        row = next(line for line in lines if LONG in line)
        assert re.fullmatch(rf"{LONG}\s+built\s+\S+Z\s+-\s*", row), repr(row)  # CHECK: never
        short = next(line for line in lines if line.startswith("b "))
        assert short.index("created") == row.index("built")  # the columns line up
    for drawn in (
        on_terminal("history", LONG, cwd=work)[1],
        run_cli("history", LONG, cwd=work).stdout,
    ):
        lines = segments(drawn)
        row = next(line for line in lines if LONG_STEP in line)
        assert re.search(rf"\bstep\s+build\s+{LONG_STEP}\s+done \d", row), repr(row)
        header = next(line for line in lines if line.startswith("TIME"))
        assert header.index("DETAIL") == row.index("done")
