"""The process helper every step plugin runs programs through.

:class:`ProcessSupervisor` implements :class:`~runner.plugin.ProcessRunner`: it starts a
program from an argv list (never a shell string) in its own process group, streams
stdout and stderr line by line to the :class:`RunLog` and to a live callback, keeps
the output for the result, and stops the whole process group when the program
overruns its timeout or when the runner is interrupted (any ``BaseException`` raised
in the waiting thread, such as :class:`~runner.errors.InterruptSignal`).

Every line passes through the ``mask`` callable before it is written to the run log
or shown, so a secret never reaches them; the output kept for the step's result (which
it may parse) passes through ``mask_result``, which hides whole secrets only (masking
a word of a secret wherever it appears would corrupt, say, JSON the step parses).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from runner.errors import StepError, StorageError
from runner.log import logger
from runner.plugin import ProcessResult
from runner.store.contract import ProcessGroup
from runner.store.record import now_iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Literal, TypeAlias

    from runner.store.contract import ArtifactWriter

__all__ = [
    "ProcessSupervisor",
    "RunLog",
    "boot_id",
    "find_program",
    "identified",
    "install_hint",
    "leader_start",
    "live_groups",
    "sorted_leftovers",
    "stop_leftovers",
]

if TYPE_CHECKING:
    Stream: TypeAlias = Literal["out", "err"]

MAX_KEPT_BYTES = 5 * 1024 * 1024
"""Output kept in memory per stream; the run log always has all of it."""

READER_JOIN_S = 2.0
"""How long to wait for the output pipes to close once the program has exited."""

_READ_CHUNK = 64 * 1024
_MAX_LINE = 16 * 1024 * 1024
"""A line is read whole (``tofu show -json`` prints megabytes on one line) up to this
length; a longer one is passed on in pieces, and a secret across a cut is not masked."""

_INSTALL_HINTS: dict[str, str] = {
    "tofu": "install OpenTofu (https://opentofu.org/docs/intro/install/), or "
    "`pip install 'runner[embedded]'` which provides `runner-tofu`",
    "terraform": "install OpenTofu (https://opentofu.org/docs/intro/install/), or "
    "`pip install 'runner[embedded]'` which provides `runner-tofu`",
    "runner-tofu": "`pip install 'runner[embedded]'`, or install OpenTofu",
    "ansible-playbook": "`pip install ansible-core`",
    "ansible": "`pip install ansible-core`",
    "ssh": "install the OpenSSH client (Debian/Ubuntu: `apt-get install openssh-client`)",
    "ssh-keygen": "install the OpenSSH client (Debian/Ubuntu: `apt-get install openssh-client`)",
    "dot": "install Graphviz (Debian/Ubuntu: `apt-get install graphviz`)",
}


def install_hint(program: str) -> str:
    """What to install to get ``program`` (a bare name or a path)."""
    name = Path(program).name
    known = _INSTALL_HINTS.get(name)
    if known:
        return known
    return f"install '{name}' or add the folder that holds it to PATH"


_INTERPRETER_NAME = re.compile(r"python(\d+(\.\d+)?)?")


def installation_dirs() -> list[str]:
    """The folders of the runner's own installation's programs: the folder of the
    interpreter running the runner (a virtual environment's ``bin``, which pipx and
    ``uv tool`` do not put on PATH) and the scripts folder of its installation scheme."""
    return _installation_dirs(sys.executable)


@functools.cache
def _installation_dirs(executable: str) -> list[str]:
    """:func:`installation_dirs` of one interpreter (computed once: sysconfig is slow)."""
    dirs = [str(Path(executable).parent)] if executable else []
    scripts = sysconfig.get_path("scripts")
    if scripts:
        dirs.append(os.path.realpath(scripts))
    return list(dict.fromkeys(dirs))


def find_program(program: str, path: str | None = None) -> str | None:
    """The program ``program`` names, or None when there is none.

    A path (with a ``/``) is itself when it is an executable file. A bare name is looked
    for first in :func:`installation_dirs`, so the tools installed with the runner
    (``ansible-playbook``, ``runner-tofu``) are found even when their folder is not on
    PATH, then on ``path`` (default: ``$PATH``). The interpreter's own names (``python``,
    ``python3``, ``python3.11``) are only looked for on ``path``: a step that runs
    ``python3`` gets the machine's Python, not the runner's.
    """
    if os.sep in program or (os.altsep and os.altsep in program):
        return shutil.which(program)
    own, on_path = _lookups(program, path)
    return own() or on_path()


def _lookups(program: str, path: str | None) -> tuple[Callable[[], str | None], ...]:
    """The two places :func:`find_program` looks for the bare name ``program``, in
    order, each searched when called: the runner's own folders, then ``path``."""

    def own() -> str | None:
        if _INTERPRETER_NAME.fullmatch(program):
            return None
        return shutil.which(program, path=os.pathsep.join(installation_dirs()))

    def on_path() -> str | None:
        return shutil.which(
            program, path=os.environ.get("PATH", os.defpath) if path is None else path
        )

    return own, on_path


class RunLog:
    """The full output of one run, written to a run-log artifact of the store.

    Each line is written as ``<iso timestamp> [<step>] <line>`` (``[<step>:err]`` for
    a program's stderr), at once. Safe to use from several threads. Writes after
    :meth:`close` are ignored. A write that fails (a full disk) never raises: it is
    kept in :attr:`error` for the engine to report once the step ends.
    """

    def __init__(self, writer: ArtifactWriter) -> None:
        self._writer: ArtifactWriter | None = writer
        self.ref = writer.ref
        self._lock = threading.Lock()
        self.error: StorageError | None = None
        """The first write error; later lines are dropped (the program keeps running)."""

    @property
    def closed(self) -> bool:
        return self._writer is None

    def write(self, step: str, text: str, *, stream: Stream | None = None) -> None:
        """Write ``text`` (one or more lines) for ``step``; ``stream="err"`` marks stderr."""
        tag = f"{step}:err" if stream == "err" else step
        lines = text.splitlines() or [""]
        with self._lock:
            if self._writer is None:
                return
            stamp = now_iso()
            try:
                self._writer.write("".join(f"{stamp} [{tag}] {line}\n" for line in lines))
            except StorageError as exc:  # a full disk, say: the engine reports it after the step
                self.error = exc
                self._drop()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except StorageError as exc:
                self.error = self.error or exc
            self._writer = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Tail:
    """The last ``limit`` bytes of a stream, kept as whole lines."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lines: deque[str] = deque()
        self._size = 0
        self._dropped = 0
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)
            self._size += len(line)
            while self._size > self._limit and len(self._lines) > 1:
                old = self._lines.popleft()
                self._size -= len(old)
                self._dropped += len(old)

    def text(self) -> str:
        with self._lock:
            body = "".join(self._lines)
            dropped = self._dropped
        if dropped:
            return f"[runner: the first {dropped} characters were dropped; see the run log]\n{body}"
        return body


class _Lines:
    """Cuts one stream's bytes into lines for ``sink``: decoded across reads (a character
    cut by a read is not mangled), passed on whole (so a secret in a line is masked
    whole), a line longer than :data:`_MAX_LINE` in pieces."""

    def __init__(self, stream: Stream, sink: Callable[[Stream, str], None]) -> None:
        import codecs

        self._stream: Stream = stream
        self._sink = sink
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []  # a line longer than a read, so far
        self._size = 0

    def feed(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        start = 0
        while (end := text.find("\n", start)) >= 0:
            line = text[start : end + 1]
            if self._parts:
                self._parts.append(line)
                line = "".join(self._parts)
                self._parts, self._size = [], 0
            self._sink(self._stream, line)
            start = end + 1
        if start < len(text):
            self._parts.append(text[start:])
            self._size += len(text) - start
            if self._size >= _MAX_LINE:
                self._sink(self._stream, "".join(self._parts))
                self._parts, self._size = [], 0

    def end(self) -> None:
        """The stream closed: pass on its last line, which has no end of line."""
        self._parts.append(self._decoder.decode(b"", final=True))
        rest = "".join(self._parts)
        self._parts, self._size = [], 0
        if rest:
            self._sink(self._stream, rest)


#: The longest a wait for a program's output sleeps without looking again.
_WAKE_S = 0.05


class _Output:
    """A program's stdout and stderr, read in the calling thread (no reader threads:
    a step's program costs no thread start or join). Each read is passed on as lines
    with signals held (``hold``), so an interrupt never cuts a line between the kept
    output and the run log; it is raised in the wait between two reads."""

    def __init__(
        self,
        pipes: Mapping[Stream, IO[bytes]],
        sink: Callable[[Stream, str], None],
        hold: Callable[[], AbstractContextManager[None]],
    ) -> None:
        self._hold = hold
        self._open: dict[int, tuple[IO[bytes], _Lines]] = {
            pipe.fileno(): (pipe, _Lines(stream, sink)) for stream, pipe in pipes.items()
        }

    def pump(self, until: float | None, pid: int | None = None) -> str:
        """Pass the output on until both pipes are closed (``"closed"``), the time
        ``until`` (monotonic) has come (``"deadline"``), or, with ``pid``, that program
        has exited while a pipe is still open (``"exited"``: a daemonized grandchild
        may hold it)."""
        watch = _pidfd(pid) if pid is not None else None
        with _selector() as selector:
            for fd in self._open:
                selector.register(fd, selectors.EVENT_READ)
            if watch is not None:
                selector.register(watch, selectors.EVENT_READ)
            try:
                while self._open:
                    wait = None if until is None else until - time.monotonic()
                    if wait is not None and wait <= 0:
                        return "deadline"
                    # a signal taken by another thread of the runner does not end
                    # the wait: its handler runs once this thread wakes
                    wait = _WAKE_S if wait is None else min(wait, _WAKE_S)
                    exited = False
                    for key, _events in selector.select(wait):
                        if key.fd == watch:
                            exited = True
                        else:
                            self._read(key.fd, selector)
                    if watch is None and pid is not None:  # no pidfd: ask
                        exited = _exited(pid)
                    if exited and self._open:
                        return "exited"
            finally:
                if watch is not None:
                    os.close(watch)
        return "closed"

    def _read(self, fd: int, selector: selectors.BaseSelector) -> None:
        pipe, lines = self._open[fd]
        try:
            data = os.read(fd, _READ_CHUNK)
        except OSError:
            data = b""
        with self._hold():
            if data:
                lines.feed(data)
                return
            selector.unregister(fd)
            del self._open[fd]
            with contextlib.suppress(OSError):
                pipe.close()
            lines.end()

    def close(self) -> None:
        """Stop passing lines on. A pipe still open (a grandchild holds it) is drained
        by a thread of its own, so its writer never blocks, and its lines are dropped."""
        for pipe, _lines in self._open.values():
            threading.Thread(
                target=_discard, args=(pipe,), daemon=True, name="runner-pipe-drain"
            ).start()
        self._open.clear()


def _discard(pipe: IO[bytes]) -> None:
    try:
        while os.read(pipe.fileno(), _READ_CHUNK):
            pass
    except (OSError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


def _selector() -> selectors.BaseSelector:
    # poll(2) needs no descriptor of its own (epoll does) and two or three are watched
    poll = getattr(selectors, "PollSelector", None)
    return poll() if poll is not None else selectors.DefaultSelector()


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when process ``pid`` (our child) exits, where
    the system has them (Linux 5.3 and later); else None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    return fd


def _exited(pid: int) -> bool:
    """Whether our child ``pid`` has exited, without reaping it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


class ProcessSupervisor:
    """Runs programs for steps; see the module docstring.

    ``on_line(step, line)`` receives every (masked) output line as it arrives, in the
    thread that called it (with signals held). ``grace_s`` is how long a stopped process
    group gets between SIGTERM and SIGKILL.
    """

    def __init__(
        self,
        run_log: RunLog,
        on_line: Callable[[str, str], None] | None = None,
        mask: Callable[[str], str] | None = None,
        grace_s: float = 5.0,
        hold_signals: Callable[[], AbstractContextManager[None]] | None = None,
        mask_result: Callable[[str], str] | None = None,
        on_group: Callable[[int | None], None] | None = None,
        withheld: Collection[str] = (),
    ) -> None:
        self.run_log = run_log
        self.on_line = on_line
        self.mask = mask
        self.mask_result = mask_result or mask
        self.grace_s = grace_s
        self._hold_signals = hold_signals or contextlib.nullcontext
        self._withheld = frozenset(withheld)
        """Variables of the runner's environment that programs do not inherit (those
        secret inputs are read from); a step passes one on purpose with ``env``."""
        self._on_group = on_group or (lambda group: None)
        """Told the process group of each program as it starts, and None once it is
        gone (the interrupt handler and the lock's holder record use it)."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        step: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        stdin: str | None = None,
    ) -> ProcessResult:
        if isinstance(argv, str) or not argv:
            raise StepError("configuration", "a program must be given as a non-empty argv list")
        args = tuple(str(arg) for arg in argv)
        child_env: dict[str, str] | None = None  # None: the runner's environment as it is
        if env or any(name in os.environ for name in self._withheld):
            child_env = {k: v for k, v in os.environ.items() if k not in self._withheld}
            child_env.update({key: str(value) for key, value in (env or {}).items()})
        if cwd is not None and not Path(cwd).is_dir():
            raise StepError("configuration", f"working directory {cwd} does not exist")
        path = (os.environ if child_env is None else child_env).get("PATH", os.defpath)
        args, executable = self._located(args, path)

        # each argument is masked before quoting: a quoted secret no longer matches
        shown = [self._masked(arg) for arg in args]
        self.run_log.write(step, "$ " + shlex.join(shown))
        if shown != list(args):
            warning = (
                f"step {step}: a secret is in the arguments of {Path(args[0]).name}, where any "
                "local user can read it (/proc/PID/cmdline); hand it over with the step's "
                "`env` or a file from secret_file()"
            )
            self.run_log.write(step, f"runner: warning: {warning}")
            logger().warning("%s", warning)
        kept: dict[Stream, _Tail] = {"out": _Tail(MAX_KEPT_BYTES), "err": _Tail(MAX_KEPT_BYTES)}

        def sink(stream: Stream, raw: str) -> None:
            body = raw.rstrip("\r\n")
            line = self._masked(body)
            kept[stream].add(raw)  # masked as a whole below: a secret may span lines
            self.run_log.write(step, line, stream=stream)
            if self.on_line is not None:
                with contextlib.suppress(Exception):  # a broken display must not stop the run
                    self.on_line(step, line)

        program = Path(args[0]).name
        started = time.monotonic()
        proc: subprocess.Popen[bytes] | None = None
        output: _Output | None = None
        try:
            try:
                # An interrupt held while Popen starts the program is raised once
                # ``proc`` is known, so the handler below can still stop the program.
                with self._hold_signals():
                    proc = _spawn(args, executable, cwd, child_env, with_stdin=stdin is not None)
                    self._on_group(proc.pid)
                assert proc.stdout is not None and proc.stderr is not None
                output = _Output({"out": proc.stdout, "err": proc.stderr}, sink, self._hold_signals)
                if stdin is not None:
                    _feed(proc, stdin)
                timed_out = self._wait(proc, output, timeout_s)
            except BaseException:
                # an interrupt (or anything else) while the program runs: stop its group
                if proc is not None:
                    self._stop_group(proc)
                    self._on_group(None)
                    if output is not None:
                        output.pump(time.monotonic() + READER_JOIN_S)
                    self.run_log.write(step, f"runner: stopped {program} (interrupted)")
                raise
        finally:
            if output is not None:
                output.close()
        self._on_group(None)
        duration = time.monotonic() - started
        result = ProcessResult(
            argv=args,
            returncode=proc.returncode,
            stdout=self._masked(kept["out"].text(), self.mask_result),
            stderr=self._masked(kept["err"].text(), self.mask_result),
            duration_s=duration,
        )
        if timed_out:
            message = f"{program} did not finish within {timeout_s:g}s; stopped it"
            self.run_log.write(step, f"runner: {message}")
            raise StepError("timeout", message, output_tail=result.output_tail)
        self.run_log.write(
            step, f"runner: {program} exited with {proc.returncode} after {duration:.1f}s"
        )
        return result

    # --- internals ---------------------------------------------------------------

    def _masked(self, text: str, mask: Callable[[str], str] | None = None) -> str:
        mask = mask or self.mask
        if mask is None:
            return text
        try:
            return mask(text)
        except Exception:
            return "[runner: line hidden, masking failed]"

    @staticmethod
    def _located(args: tuple[str, ...], path: str) -> tuple[tuple[str, ...], str | None]:
        """``args`` with the program found by :func:`find_program` (its full path when
        it is one of the runner's own tools: Popen would only search ``path``), and the
        file to run when it was found on ``path`` at an absolute place (so that Popen
        does not search ``path`` again)."""
        program = args[0]
        if os.sep in program or (os.altsep and os.altsep in program):
            return args, None  # a path: Popen says whether it exists
        own, on_path = _lookups(program, path)
        found = own()
        searched = on_path()  # what Popen would run, searching ``path``: once only
        if found is None or found == searched:
            if searched is None:
                raise _tool_missing(program, "was not found on PATH or beside the runner's Python")
            # a relative folder of PATH is the program's working directory's: Popen's
            return args, searched if os.path.isabs(searched) else None
        return (found, *args[1:]), None

    def _wait(
        self, proc: subprocess.Popen[bytes], output: _Output, timeout_s: float | None
    ) -> bool:
        """Pass ``proc``'s output on and wait for it; True when it overran ``timeout_s``
        and was stopped. Once it has exited, its pipes get :data:`READER_JOIN_S` to
        close (a daemonized grandchild may keep them open).

        Every wait lets a signal handler's exception through (poll, waitpid and sleep
        are interrupted, PEP 475), so an interrupt is never stuck behind a wait.
        """
        deadline = None if not timeout_s else time.monotonic() + timeout_s
        end = output.pump(deadline, proc.pid)
        if end == "deadline" and proc.poll() is None:
            self._stop_group(proc)
            output.pump(time.monotonic() + READER_JOIN_S)
            return True
        if end != "closed":
            output.pump(time.monotonic() + READER_JOIN_S)
        try:
            proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            return False
        except subprocess.TimeoutExpired:  # it closed its output and ran on
            self._stop_group(proc)
            return True

    def _stop_group(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the process group, give it ``grace_s``, then SIGKILL what is left."""
        pgid = proc.pid  # start_new_session: the child leads its own group
        _signal_group(pgid, signal.SIGTERM)
        try:
            deadline = time.monotonic() + self.grace_s
            while time.monotonic() < deadline:
                proc.poll()
                if proc.returncode is not None and not _group_alive(pgid):
                    break
                time.sleep(0.05)
        finally:  # also when a second interrupt arrives during the grace period
            _signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.grace_s)


def _spawn(
    args: tuple[str, ...],
    executable: str | None,
    cwd: Path | None,
    env: dict[str, str] | None,
    *,
    with_stdin: bool,
) -> subprocess.Popen[bytes]:
    """Start ``args`` as the leader of a new process group (so it can be stopped with
    all its children); a program that cannot be started is a ``tool_missing`` failure."""
    try:
        return subprocess.Popen(
            args,
            executable=executable,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if with_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
    except FileNotFoundError as exc:
        raise _tool_missing(args[0], "was not found") from exc
    except PermissionError as exc:
        raise _tool_missing(args[0], "could not be run (permission denied)") from exc


#: The watchdog: a small shell that outlives nothing. Its stdin is a pipe from the
#: runner that nothing is written to: it ends when the runner is gone (killed, even with
#: SIGKILL) or closes it. Then the shell reads fd 3, a file the runner rewrites in place
#: with the process group of the program a step runs now (0: none), and stops that
#: group. Telling it a group is a write to a file the shell does not read until then:
#: no wake-up of the shell for every program. ``kill -SIG -GROUP`` takes no ``--``: the
#: ``kill`` of dash (Debian's ``/bin/sh``) rejects it ("Illegal number: -").
_WATCHDOG = r"""
while IFS= read -r line; do :; done
read -r group rest <&3 || group=0
case "$group" in ''|*[!0-9]*) exit 0 ;; esac
if [ "$group" -gt 1 ]; then
  kill -TERM "-$group" 2>/dev/null
  sleep 2
  kill -KILL "-$group" 2>/dev/null
fi
"""
#: The width of the group's line in the watchdog's file (rewritten whole each time).
_GROUP_LINE = 20


def _group_file() -> int:
    """A private file with no name, for the watchdog's fd 3."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None:
        with contextlib.suppress(OSError):
            fd: int = memfd("runner-watchdog")
            return fd
    import tempfile

    with tempfile.TemporaryFile() as temp:  # unlinked at once where O_TMPFILE is missing
        return os.dup(temp.fileno())


class Watchdog:
    """Stops the running step's process group when the runner dies without doing so
    (SIGKILL, a crash): step processes never outlive the runner. It runs in a session
    of its own (a Ctrl+C of the terminal's process group does not reach it), started
    with ``posix_spawn`` (no fork of the runner) on the first program of a run."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._pipe: int | None = None
        self._file: int | None = None

    def running(self, group: int | None) -> None:
        """The process group of the program a step runs now (None: none)."""
        if self._pipe is None and (group is None or not self._start()):
            return
        self._note(group or 0)

    def _start(self) -> bool:
        read, write = os.pipe()  # both ends close on exec; the child's stdin is a dup
        try:
            group_file = _group_file()
        except OSError:
            os.close(read)
            os.close(write)
            return False
        try:
            self._pid = os.posix_spawn(
                "/bin/sh",
                ["sh", "-c", _WATCHDOG],
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, read, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, group_file, 3),
                ],
                setsid=True,
            )
        except OSError:
            os.close(write)
            os.close(group_file)
            return False  # no watchdog: the next command that takes the lock stops it
        finally:
            os.close(read)
        self._pipe = write
        self._file = group_file
        return True

    def _note(self, group: int) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.pwrite(self._file, f"{group}".ljust(_GROUP_LINE - 1).encode() + b"\n", 0)

    def close(self) -> None:
        """The run is over: the watchdog leaves without stopping anything."""
        if self._pipe is None:
            return
        self._note(0)
        os.close(self._pipe)
        self._pipe = None
        if self._file is not None:
            os.close(self._file)  # the shell has its own descriptor of it
            self._file = None
        deadline = time.monotonic() + 5
        while self._pid is not None and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                pid, _status = os.waitpid(self._pid, os.WNOHANG)
                if pid == 0:
                    time.sleep(0.002)
                    continue
            self._pid = None


#: A random id Linux makes at each boot.
_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


@functools.cache
def boot_id() -> str | None:
    """This system's boot id, or None where it has none to read (no Linux /proc)."""
    try:
        with open(_BOOT_ID_FILE, encoding="ascii") as file:
            text = file.read().strip()
    except (OSError, ValueError):
        return None
    return text or None


def leader_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (field 22 of
    ``/proc/PID/stat``); None when it is gone or there is no /proc to say."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # the name (field 2) is in parentheses and may hold anything: count after its end
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def identified(group: int) -> ProcessGroup:
    """The process group a step just started (its leader's pid is ``group``), with what
    tells it apart from any later group of that number: this boot's id and the leader's
    start time. Unidentified where /proc does not say (then nobody stops it for us: the
    next holder only reports it)."""
    boot = boot_id()
    start = None if boot is None else leader_start(group)
    return ProcessGroup(group) if start is None else ProcessGroup(group, boot, start)


def sorted_leftovers(groups: Sequence[int]) -> tuple[list[int], list[tuple[int, str]]]:
    """The process groups a holder on this host that ended without releasing noted,
    sorted: those still running that are for certain the groups it noted (the same boot,
    the same leader, started at the same tick), which may be stopped; and those still
    running that may be, with why it cannot be told, for a person to check. A group
    that is gone, noted before the last boot, or whose number another process leads
    now is neither: those programs have ended."""
    ours: list[int] = []
    unsure: list[tuple[int, str]] = []
    boot = boot_id()
    for group in groups:
        if group <= 1 or not _group_alive(group):
            continue
        if not isinstance(group, ProcessGroup) or not group.identified:
            why = (
                "the lock record does not identify it (an older runner wrote it, or one "
                "on a system without /proc)"
            )
        elif boot is None:
            why = "this system has no /proc to tell it apart from a later group of that number"
        elif group.boot_id != boot:
            continue  # noted before a reboot: that group ended with it
        else:
            start = leader_start(group)
            if start == group.leader_start:
                ours.append(int(group))
                continue
            if start is not None:
                continue  # another process leads a group of that number now
            why = "its leader has ended, so it cannot be told apart from a later group"
        unsure.append((int(group), why))
    return ours, unsure


def stop_leftovers(groups: Sequence[int], grace_s: float = 5.0) -> list[int]:
    """Stop the process groups among ``groups`` that still run (SIGTERM, up to
    ``grace_s``, then SIGKILL to those still running): what the steps of a runner killed
    with SIGKILL left, once :func:`sorted_leftovers` found them to be its own. Returns
    the groups that were still running."""
    alive = [g for g in groups if g > 1 and _group_alive(g)]
    for group in alive:
        _signal_group(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_alive(g) for g in alive):
        time.sleep(0.05)
    for group in alive:
        if _group_alive(group):  # one that ended is not signalled again: its number may be reused
            _signal_group(group, signal.SIGKILL)
    return alive


def live_groups(groups: Sequence[int]) -> list[int]:
    """The process groups among ``groups`` that still have a running process."""
    return [g for g in groups if g > 1 and _group_alive(g)]


def _tool_missing(program: str, what: str) -> StepError:
    where = f"program '{program}' {what}"
    return StepError("tool_missing", where, hint=install_hint(program))


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_has_live_member(pgid)


def _proc_has_live_member(pgid: int) -> bool:
    """On systems with /proc: whether a non-zombie process is in group ``pgid``. An
    orphaned zombie may wait long for its reaper; it must not delay the SIGKILL."""
    proc_root = Path("/proc")
    if not (proc_root / "self" / "stat").exists():
        return True
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _feed(proc: subprocess.Popen[bytes], text: str) -> None:
    """Write ``text`` to the child's stdin from a thread, so a child that does not read
    it cannot block us."""
    pipe = proc.stdin
    assert pipe is not None

    def write() -> None:
        try:
            pipe.write(text.encode("utf-8"))
        except (BrokenPipeError, OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                pipe.close()

    threading.Thread(target=write, daemon=True, name="runner-stdin-writer").start()
