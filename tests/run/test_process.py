"""The process helper: streaming, separation of stdout and stderr, timeouts and
interrupts that stop the whole process group, missing programs. Real programs only."""

from __future__ import annotations

import os
import re
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from runner.errors import InterruptSignal, StepError
from runner.run import process
from runner.run.process import ProcessSupervisor, RunLog, install_hint
from runner.store.files import FileArtifact

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[(?P<tag>[^\]]+)\] (?P<text>.*)$")

# a child that starts a grandchild, prints both pids, then waits for it
FAMILY = "sleep 60 & echo grandchild=$!; echo child=$$; wait"


def open_run_log(path: Path) -> RunLog:
    """A run log writing the file ``path`` (its folder made), named by its path."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return RunLog(FileArtifact(path, str(path)))


def log_file(log: RunLog) -> Path:
    return Path(log.ref)


@pytest.fixture
def run_log(tmp_path: Path) -> Iterator[RunLog]:
    log = open_run_log(tmp_path / "runs" / "20260101-000000-provision.log")
    yield log
    log.close()


def log_lines(log: RunLog) -> list[tuple[str, str]]:
    lines = []
    for raw in log_file(log).read_text().splitlines():
        match = LINE.match(raw)
        assert match, f"badly formed run log line: {raw!r}"
        lines.append((match["tag"], match["text"]))
    return lines


def pids_in(lines: list[str]) -> dict[str, int]:
    found = {}
    for line in lines:
        name, _, value = line.partition("=")
        if name in ("child", "grandchild") and value.isdigit():
            found[name] = int(value)
    return found


def is_gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its reaper."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, within_s: float = 2.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if is_gone(pid):
            return True
        time.sleep(0.02)
    return is_gone(pid)


def test_output_streams_to_the_run_log_with_the_step_and_stays_separated(run_log: RunLog) -> None:
    seen: list[tuple[str, str]] = []
    supervisor = ProcessSupervisor(run_log, on_line=lambda step, line: seen.append((step, line)))
    script = "import sys; print('out 1'); print('err 1', file=sys.stderr); print('out 2')"

    result = supervisor([sys.executable, "-c", script], step="render")

    assert result.returncode == 0
    assert result.stdout == "out 1\nout 2\n"
    assert result.stderr == "err 1\n"
    assert result.argv == (sys.executable, "-c", script)
    assert result.duration_s >= 0
    lines = log_lines(run_log)
    assert ("render", "out 1") in lines
    assert ("render", "out 2") in lines
    assert ("render:err", "err 1") in lines
    assert lines[0][1].startswith("$ ")  # the command line comes first
    assert sorted(seen) == [("render", "err 1"), ("render", "out 1"), ("render", "out 2")]


def test_lines_are_masked_everywhere(run_log: RunLog) -> None:
    seen: list[str] = []
    supervisor = ProcessSupervisor(
        run_log,
        on_line=lambda _s, line: seen.append(line),
        mask=lambda t: t.replace("s3cret", "***"),
    )
    result = supervisor(["sh", "-c", "echo token=s3cret; echo s3cret >&2"], step="s")
    assert "s3cret" not in result.stdout + result.stderr
    assert "s3cret" not in log_file(run_log).read_text()
    assert seen and all("s3cret" not in line for line in seen)
    assert "token=***" in result.stdout


def test_a_long_line_is_masked_and_decoded_whole(run_log: RunLog) -> None:
    """A line longer than one read (a `tofu show -json` of megabytes): a secret across
    the 64 KiB read boundary is still masked, and a character cut by a read is kept."""
    secret = "Zq9SuperSecretToken4711"
    script = (
        "import sys; pad = 'x' * (65536 - 10); "
        f"sys.stdout.write(pad + '{secret}' + 'é' * 40000 + '\\n')"
    )
    seen: list[str] = []
    supervisor = ProcessSupervisor(
        run_log,
        on_line=lambda step, line: seen.append(line),
        mask=lambda text: text.replace(secret, "***"),
    )
    result = supervisor([sys.executable, "-c", script], step="s")
    log = log_file(run_log).read_text()
    for where in (log, "".join(seen), result.stdout):
        assert secret not in where and secret[:10] + "\n" not in where
        assert "***" in where
    assert "\ufffd" not in result.stdout and result.stdout.count("é") == 40000


def test_stdin_text_and_env_reach_the_program(run_log: RunLog, tmp_path: Path) -> None:
    supervisor = ProcessSupervisor(run_log)
    result = supervisor(
        ["sh", "-c", 'cat; echo "$GREETING"; pwd'],
        step="s",
        stdin="from stdin\n",
        env={"GREETING": "hello"},
        cwd=tmp_path,
    )
    assert result.stdout.splitlines() == ["from stdin", "hello", str(tmp_path)]
    # without stdin text, the program reads an empty stdin instead of our terminal
    assert supervisor(["cat"], step="s").stdout == ""


def test_a_failing_program_returns_its_exit_code(run_log: RunLog) -> None:
    result = ProcessSupervisor(run_log)(["sh", "-c", "echo bad >&2; exit 3"], step="s")
    assert result.returncode == 3
    assert result.output_tail == ["bad"]


def test_timeout_stops_the_child_and_its_children(run_log: RunLog) -> None:
    supervisor = ProcessSupervisor(run_log, grace_s=2.0)
    started = time.monotonic()
    with pytest.raises(StepError) as caught:
        supervisor(["sh", "-c", FAMILY], step="apply", timeout_s=0.5)
    elapsed = time.monotonic() - started

    assert caught.value.kind == "timeout"
    assert caught.value.summary == "sh did not finish within 0.5s; stopped it"
    pids = pids_in(caught.value.output_tail)
    assert set(pids) == {"child", "grandchild"}
    assert all(wait_gone(pid) for pid in pids.values())
    assert elapsed < 2.0  # the group obeyed SIGTERM: no need to wait for the grace period


def test_a_group_ignoring_sigterm_is_killed_after_the_grace_period(run_log: RunLog) -> None:
    supervisor = ProcessSupervisor(run_log, grace_s=0.5)
    started = time.monotonic()
    with pytest.raises(StepError) as caught:
        supervisor(["sh", "-c", "trap '' TERM; " + FAMILY], step="s", timeout_s=0.3)
    elapsed = time.monotonic() - started
    pids = pids_in(caught.value.output_tail)
    assert set(pids) == {"child", "grandchild"}
    assert all(wait_gone(pid) for pid in pids.values())
    assert 0.7 < elapsed < 3.0


def test_interrupt_from_a_signal_handler_stops_the_group(run_log: RunLog) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise InterruptSignal(signum)

    seen: list[str] = []
    ready = threading.Event()

    def on_line(_step: str, line: str) -> None:
        seen.append(line)
        if pids_in(seen).keys() == {"child", "grandchild"}:
            ready.set()

    def interrupt() -> None:
        ready.wait(5)
        os.kill(os.getpid(), signal.SIGTERM)

    supervisor = ProcessSupervisor(run_log, on_line=on_line, grace_s=2.0)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(InterruptSignal) as caught:
            supervisor(["sh", "-c", FAMILY], step="apply", timeout_s=30)
        elapsed = time.monotonic() - started
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert caught.value.signum == signal.SIGTERM
    assert elapsed < 5
    pids = pids_in(seen)
    assert all(wait_gone(pid) for pid in pids.values())
    assert "stopped sh (interrupted)" in log_file(run_log).read_text()


def test_a_missing_program_says_what_to_install(run_log: RunLog) -> None:
    supervisor = ProcessSupervisor(run_log)
    with pytest.raises(StepError) as caught:
        supervisor(["no-such-program-runner-test"], step="s")
    assert caught.value.kind == "tool_missing"
    assert caught.value.summary == (
        "program 'no-such-program-runner-test' was not found on PATH or beside the runner's Python"
    )
    assert caught.value.hint

    with pytest.raises(StepError) as by_path:
        supervisor(["./no/such/program"], step="s")
    assert by_path.value.kind == "tool_missing"


def tool(folder: Path, name: str, says: str) -> Path:
    """An executable ``folder/name`` that prints ``says``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho {says}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def installation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A runner installed like pipx does it: the interpreter in ``venv/bin`` and the
    installation's scripts in ``scripts``, neither on PATH; PATH is ``path`` only."""
    dirs = {name: tmp_path / name for name in ("venv/bin", "scripts", "path")}
    for folder in dirs.values():
        folder.mkdir(parents=True)
    real_get_path = process.sysconfig.get_path

    def get_path(name: str, *args: object, **kwargs: object) -> str:
        return str(dirs["scripts"]) if name == "scripts" else real_get_path(name)

    monkeypatch.setattr(sys, "executable", str(dirs["venv/bin"] / "python"))
    monkeypatch.setattr(process.sysconfig, "get_path", get_path)
    monkeypatch.setenv("PATH", str(dirs["path"]))
    return dirs


def test_the_runners_own_tools_are_found_beside_its_interpreter_first(
    run_log: RunLog, installation: dict[str, Path]
) -> None:
    assert process.installation_dirs() == [
        str(installation["venv/bin"]),
        os.path.realpath(installation["scripts"]),
    ]
    beside = tool(installation["venv/bin"], "own-tool", "beside")
    tool(installation["path"], "own-tool", "on-path")
    in_scripts = tool(installation["scripts"], "scripts-tool", "scripts")
    tool(installation["path"], "path-tool", "path")
    supervisor = ProcessSupervisor(run_log)

    result = supervisor(["own-tool", "-x"], step="s")
    assert result.stdout == "beside\n"
    assert result.argv == (str(beside), "-x")  # the run log says which program ran
    assert ("s", f"$ {beside} -x") in log_lines(run_log)
    assert supervisor(["scripts-tool"], step="s").argv == (str(in_scripts),)
    # a program found on PATH alone runs as named, as before
    on_path = supervisor(["path-tool"], step="s")
    assert (on_path.argv, on_path.stdout) == (("path-tool",), "path\n")
    assert process.find_program("path-tool") == str(installation["path"] / "path-tool")
    assert process.find_program("no-such-tool") is None


def test_python_is_the_machines_not_the_runners(
    run_log: RunLog, installation: dict[str, Path]
) -> None:
    for name in ("python", "python3", "python3.11"):
        tool(installation["venv/bin"], name, "runner-python")
        tool(installation["path"], name, "machine-python")
        result = ProcessSupervisor(run_log)([name], step="s")
        assert (result.argv, result.stdout) == ((name,), "machine-python\n")


def test_a_program_on_path_is_the_first_executable_one_as_a_shell_finds_it(
    run_log: RunLog, installation: dict[str, Path], tmp_path: Path
) -> None:
    first, second, third = (tmp_path / f"p{i}" for i in range(3))
    plain = first / "picked"  # not executable: passed over, as execvp and which do
    first.mkdir()
    plain.write_text("#!/bin/sh\necho plain\n")
    tool(second, "picked", "second")
    tool(third, "picked", "third")
    supervisor = ProcessSupervisor(run_log)
    os.environ["PATH"] = os.pathsep.join(map(str, (first, second, third)))
    result = supervisor(["picked"], step="s")
    assert (result.argv, result.stdout) == (("picked",), "second\n")
    assert process.find_program("picked") == str(second / "picked")
    # a step's own PATH is the one searched
    result = supervisor(["picked"], step="s", env={"PATH": str(third)})
    assert result.stdout == "third\n"
    with pytest.raises(StepError) as caught:
        supervisor(["picked"], step="s", env={"PATH": str(first)})
    assert caught.value.kind == "tool_missing"


def test_a_program_that_is_not_executable_is_missing(run_log: RunLog, tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(StepError) as caught:
        ProcessSupervisor(run_log)([str(script)], step="s")
    assert caught.value.kind == "tool_missing"


def test_install_hints_name_the_package() -> None:
    assert "runner[embedded]" in install_hint("tofu")
    assert "OpenTofu" in install_hint("tofu")
    assert "ansible-core" in install_hint("ansible-playbook")
    assert "openssh-client" in install_hint("/usr/bin/ssh")
    assert "graphviz" in install_hint("dot").lower()
    assert "frobnicate" in install_hint("frobnicate")


def test_argv_must_be_a_list(run_log: RunLog) -> None:
    with pytest.raises(StepError):
        ProcessSupervisor(run_log)("echo hello", step="s")
    with pytest.raises(StepError):
        ProcessSupervisor(run_log)([], step="s")


def test_a_missing_working_directory_is_a_configuration_error(
    run_log: RunLog, tmp_path: Path
) -> None:
    with pytest.raises(StepError) as caught:
        ProcessSupervisor(run_log)(["true"], step="s", cwd=tmp_path / "nope")
    assert caught.value.kind == "configuration"


def test_a_daemon_holding_the_pipes_does_not_hang_the_step(
    run_log: RunLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "READER_JOIN_S", 0.3)
    started = time.monotonic()
    result = ProcessSupervisor(run_log)(
        ["sh", "-c", "(sleep 3; echo late) & echo started"], step="s"
    )
    assert time.monotonic() - started < 2.5
    assert result.stdout == "started\n"


def test_memory_keeps_the_tail_and_the_log_keeps_everything(
    run_log: RunLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "MAX_KEPT_BYTES", 1000)
    script = "for i in range(500): print(f'line {i:04d}')"
    result = ProcessSupervisor(run_log)([sys.executable, "-c", script], step="s")
    assert len(result.stdout) < 1200
    assert result.stdout.startswith("[runner: the first")
    assert result.stdout.endswith("line 0499\n")
    texts = [text for tag, text in log_lines(run_log) if tag == "s"]
    assert "line 0000" in texts and "line 0499" in texts


def test_run_log_is_private_appends_and_is_thread_safe(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "x.log"
    with open_run_log(path) as log:
        log.write("engine", "first\nsecond")

        def write_many(tag: str) -> None:
            for i in range(200):
                log.write(tag, f"line {i}")

        writers = [threading.Thread(target=write_many, args=(f"t{n}",)) for n in range(4)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        log.write("s", "an error", stream="err")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    log.write("s", "after close is ignored")
    with open_run_log(path) as again:
        again.write("s", "appended")
    lines = log_lines(again)
    assert lines[:2] == [("engine", "first"), ("engine", "second")]
    assert len(lines) == 2 + 800 + 2
    assert ("s:err", "an error") in lines
    assert lines[-1] == ("s", "appended")


def test_a_program_that_closes_its_output_still_gets_its_timeout(run_log: RunLog) -> None:
    """Its pipes are closed long before it exits: the wait for it keeps the deadline."""
    started = time.monotonic()
    with pytest.raises(StepError) as caught:
        ProcessSupervisor(run_log, grace_s=1.0)(
            ["sh", "-c", "echo bye; exec >&- 2>&-; sleep 30"], step="s", timeout_s=0.5
        )
    assert caught.value.kind == "timeout"
    assert caught.value.output_tail == ["bye"]
    assert time.monotonic() - started < 3


def test_a_last_line_without_an_end_of_line_is_kept(run_log: RunLog) -> None:
    result = ProcessSupervisor(run_log)(
        ["sh", "-c", "printf 'one\\ntwo'; printf 'err' >&2"], step="s"
    )
    assert (result.stdout, result.stderr) == ("one\ntwo", "err")
    assert ("s", "two") in log_lines(run_log) and ("s:err", "err") in log_lines(run_log)
