"""What the commands share once their arguments are parsed, without the argument parser.

:mod:`runner.cli.app` (typer) and the fast path of :mod:`runner.cli.main` (for `status`, `list`
and `history`, which must start fast and so never import typer) both call these: the
global :class:`Settings`, the :class:`~runner.api.runner.Runner` a command gets, the
read-only commands, and :func:`execute`, the only place that turns errors into messages
and exit codes. Results are shown by :mod:`runner.cli.render`.
"""

from __future__ import annotations

import os
import sys

from runner import signals
from runner.cli import render
from runner.errors import ExitCode, RunnerError
from runner.signals import Terminated
from runner.struct import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from runner.api.results import ConfirmRequest
    from runner.api.runner import Runner
    from runner.result import Result
    from runner.run.phase import Progress
    from runner.store.contract import LockInfo

__all__ = [
    "Settings",
    "color_wanted",
    "confirmer",
    "execute",
    "exists",
    "history",
    "kinds",
    "list_environments",
    "report",
    "runner_for",
    "show",
    "status",
    "validate",
]


@struct
class Settings:
    """The global options of every command."""

    workdir: str | os.PathLike[str]
    machine: str | os.PathLike[str] | None
    output: str  # "text" or "json"
    lock_timeout: float
    verbose: bool
    #: Colour on standard output: a terminal, and neither NO_COLOR nor --no-color.
    color: bool = False
    #: ``--state URL``: where the environments are kept (None: RUNNER_STATE, runner.toml,
    #: else data/).
    state: str | None = None

    @property
    def json(self) -> bool:
        return self.output == "json"


def color_wanted(no_color: bool = False) -> bool:
    """Whether standard output gets colour: only on a terminal, never with ``--no-color``
    or with ``NO_COLOR`` set in the environment (to any value)."""
    import os

    if no_color or "NO_COLOR" in os.environ:
        return False
    try:
        return sys.stdout.isatty()
    except (OSError, ValueError):
        return False


def runner_for(
    settings: Settings,
    command: str,
    progress: Progress | None = None,
    confirm: Callable[[ConfirmRequest], bool] | None = None,
) -> Runner:
    """The :class:`~runner.api.runner.Runner` of a command (``command`` names it to whoever
    waits for its lock; ``confirm`` answers the question of a `confirm: true` phase)."""
    from runner.api.runner import Runner

    return Runner(
        settings.workdir,
        settings.machine,
        lock_timeout=settings.lock_timeout,
        progress=progress,
        command=command,
        on_lock_wait=_say_lock_wait,
        confirm=confirm,
        state=settings.state,
    )


def confirmer(yes: bool, again: str) -> Callable[[ConfirmRequest], bool]:
    """The answer to a `confirm: true` phase: yes with ``--yes``; else the operator's, on
    a terminal; else ConfirmationError (exit 2) with the command to run instead
    (``again``, the command line, gets ``--yes``)."""

    def confirm(request: ConfirmRequest) -> bool:
        if yes:
            return True
        from runner.errors import ConfirmationError

        try:
            asking = sys.stdin.isatty() and sys.stderr.isatty()
        except (OSError, ValueError):
            asking = False
        if not asking:
            raise ConfirmationError(
                f"{request.question}; it asks for confirmation and there is no terminal to "
                f"ask on: nothing was run, '{request.environment}' stays in '{request.state}'",
                hint=f"confirm with --yes: {again} --yes",
                state=request.state,
            )
        sys.stderr.write(f"{request.question}.\nProceed? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            sys.stderr.write("not confirmed\n")
            return False
        return True

    return confirm


def _say_lock_wait(name: str, holder: LockInfo | None) -> None:
    """Said once on stderr when a command starts waiting for an environment's lock."""
    from runner.store.locking import who

    sys.stderr.write(f"waiting for the lock of '{name}' held by {who(holder)}…\n")
    sys.stderr.flush()


class OutputError(RunnerError):
    """Standard output cannot be written (a full disk, an I/O error): said on stderr."""

    exit_code = ExitCode.BAD_INPUT


def _output_error(exc: OSError) -> OutputError:
    return OutputError(
        f"cannot write the output to standard output: {exc.strerror or exc}",
        hint="free space where standard output goes, or send it elsewhere; what the "
        "command changed is saved (`runner status` shows it)",
    )


def _no_more_output() -> None:
    """Send what is left of standard output nowhere: the interpreter's last flush of a
    stream that cannot be written would fail again, with a traceback."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def report(settings: Settings | None, exc: RunnerError) -> int:
    """Show ``exc`` (one message, or one JSON document) and return its exit code."""
    if isinstance(exc, OutputError):  # never to the stream that failed
        _no_more_output()
        sys.stderr.write(f"error: {exc}\n")
    elif settings is not None and settings.json:
        try:
            render.emit_json(render.error_document(exc))
        except BrokenPipeError:
            _no_more_output()
        except OSError as failed:  # the error said where it can be, then why not there
            _no_more_output()
            sys.stderr.write(f"error: {exc}\nerror: {_output_error(failed)}\n")
    else:
        sys.stderr.write(f"error: {exc}\n")
    return int(exc.exit_code)


def execute(settings: Settings, command: str, body: Callable[[Settings], int | None]) -> int:
    """Run ``body`` and return the exit code: errors become one message, never a
    traceback; once the code is known, later signals no longer change it."""
    try:
        return _execute(settings, command, body)
    finally:
        signals.settle()


def _execute(settings: Settings, command: str, body: Callable[[Settings], int | None]) -> int:
    try:
        code = body(settings) or 0
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _output_error(exc) from exc
        return code
    except BrokenPipeError:
        # whoever read stdout stopped reading (`runner list | head -1`): say no more
        _no_more_output()
        return int(ExitCode.BROKEN_PIPE)
    except RunnerError as exc:
        return report(settings, exc)
    except KeyboardInterrupt as exc:
        sys.stderr.write("interrupted\n")
        return 128 + exc.signum if isinstance(exc, Terminated) else int(ExitCode.SIGINT)
    except Exception as exc:
        from runner.log import logger

        logger().debug("internal error", exc_info=True)
        return report(
            settings,
            RunnerError(
                f"internal error in `runner {command}`: {type(exc).__name__}: {exc}",
                hint="this is a bug in runner; run again with --log-level DEBUG for the traceback "
                "and report it",
            ),
        )


def kinds(runner: Runner) -> Callable[[str], str | None]:
    """``kind(state)``: the kind of a state of ``runner``'s machine (its colour), None when
    the machine cannot say (it does not load, or has no such state)."""
    known: dict[str, str | None] = {}

    def kind(state: str) -> str | None:
        if state not in known:
            try:
                known[state] = runner.machine(plugins=False).state_kind(state)
            except Exception:  # only a colour is at stake
                known[state] = None
        return known[state]

    return kind


def show(s: Settings, result: Result, runner: Runner | None = None) -> int:
    """Show ``result`` as the settings ask (JSON, colour on a terminal, plain text)."""
    kind_of = kinds(runner) if runner is not None and s.color else None
    try:
        return render.show(result, as_json=s.json, color=s.color, kind_of=kind_of)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _output_error(exc) from exc


# --- the read-only commands (the fast path runs them without typer) ------------------


def status(s: Settings, name: str) -> int:
    result = runner_for(s, "runner status").status(name)
    if not s.json:
        # what the description says was true when the state was entered, not now
        from runner.struct import replace

        shown = f"{result.description} (at {result.entered_at})".lstrip()
        result = replace(result, description=shown)
    return show(s, result)


def list_environments(s: Settings, state: str | None = None, kind: str | None = None) -> int:
    runner = runner_for(s, "runner list")
    return show(s, runner.list(state, kind), runner)


def history(s: Settings, name: str, limit: int | None) -> int:
    return show(s, runner_for(s, "runner history").history(name, limit))


def exists(s: Settings, name: str) -> int:
    return show(s, runner_for(s, "runner exists").exists(name))


def validate(s: Settings) -> int:
    return show(s, runner_for(s, "runner validate").validate())
