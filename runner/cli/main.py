"""The `runner` entry point.

`status`, `exists`, `list` and `history` are what an operator (or a script polling an
environment) runs all day, so they must start fast, and `validate` is what an editor of
machine.yaml runs after every change. Importing typer and building its command tree
costs about a third of their run time; for these commands the arguments are simple, so
they are parsed here and the command runs without typer. So is `advance NAME`, whose
start-up is spread over its steps: a phase of short steps must not pay typer's.
Anything this parser is not sure of (another command, `--help`, an unknown option, a
bad value) goes to the typer application of :mod:`runner.cli.app`, which parses it again
and gives its usual help and errors. Both paths run the same code of
:mod:`runner.cli.commands`; the tests compare their output.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from runner import log, signals
from runner.cli import commands

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["fast_path", "hoist_globals", "main"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_FORMATS = ("text", "json")
_GLOBAL_VALUE_OPTIONS = (
    "--workdir",
    "--machine",
    "--output",
    "--log-level",
    "--log-format",
    "--lock-timeout",
    "--state",
)
_GLOBAL_FLAGS = ("-v", "--verbose", "--no-color")
#: Options of a command that share their name with a global option: after that command
#: the word is the command's (`runner list --state failed` filters by state; the state
#: backend is then given before the command: `runner --state URL list --state failed`).
_COMMAND_OWN_OPTIONS = {"list": ("--state",)}
#: The options of the commands that take a value (the value is never a global option).
_COMMAND_VALUE_OPTIONS = (
    "--config",
    "-c",
    "--set",
    "--format",
    "-f",
    "--out",
    "-o",
    "--env",
    "--to",
    "--from-step",
    "--limit",
    "-n",
    "--kind",
    "--unset",
    "--reason",
    "--serial",
)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    signals.install()
    try:
        code = _run(sys.argv[1:])
    except KeyboardInterrupt as exc:  # before a command's own handling (start-up, parsing)
        code = _interrupted(exc)
    signals.settle()
    if signals.received is not None:
        # Interrupted outside a phase. CPython 3.11 may then kill itself with SIGINT at
        # exit whatever code we give it (a KeyboardInterrupt raised inside an `eval()`,
        # as typing's annotations do while typer starts, marks it "unhandled"): leave
        # without the interpreter's shutdown, once the output is out.
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _run(argv: list[str]) -> int:
    argv = hoist_globals(argv)
    command = fast_path(argv)
    if command is not None:
        return command()
    from runner.cli.app import app

    try:
        if _wants_json(argv):
            return _run_for_json(app, _completion_shell(argv))
        app(args=_completion_shell(argv), prog_name="runner")
    except SystemExit as exit:
        if signals.received is not None:  # the parser turned an interrupt into its own exit
            return 128 + signals.received
        return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    return 0


def _wants_json(argv: list[str]) -> bool:
    """Whether the global options (hoisted before the command) ask for JSON."""
    words = iter(argv)
    for word in words:
        if not word.startswith("-"):
            return False  # the command: the global options are before it
        if word == "--output=json":
            return True
        if word in _GLOBAL_VALUE_OPTIONS and next(words, None) == "json" and word == "--output":
            return True
    return False


def _run_for_json(app: Any, args: list[str]) -> int:
    """Run the parser so that a usage error (an unknown command or option, a bad or
    missing value) is one JSON document on stdout, as every other error with
    ``--output json``, instead of the usage text alone."""
    import typer

    parse_error: type[Exception]
    try:  # typer ships its own copy of click; without one, it uses click itself
        from typer._click.exceptions import UsageError as parse_error
    except ImportError:  # pragma: no cover - a typer that depends on click
        from click.exceptions import UsageError as parse_error

    try:
        code = app(args=args, prog_name="runner", standalone_mode=False)
    except parse_error as exc:
        from runner.cli import render
        from runner.errors import UsageError

        context = getattr(exc, "ctx", None)
        command = context.command_path if context is not None else "runner"
        error = UsageError(
            getattr(exc, "format_message", exc.__str__)(), hint=f"see `{command} --help`"
        )
        render.emit_json(render.error_document(error))
        return int(error.exit_code)
    except typer.Abort:
        if signals.received is not None:  # the parser turned an interrupt into its own
            return 128 + signals.received
        sys.stderr.write("Aborted!\n")
        return 1
    return code if isinstance(code, int) else 0


_COMPLETION_OPTIONS = ("--install-completion", "--show-completion")


def _completion_shell(argv: list[str]) -> list[str]:
    """``argv`` with ``auto`` after a bare ``--install-completion``/``--show-completion``
    (the parser has no options with an optional value): the SHELL may be left out."""
    result = list(argv)
    for index, word in enumerate(argv):
        if not word.startswith("-"):
            break  # the command: its own options are its own
        if word in _COMPLETION_OPTIONS:
            following = argv[index + 1] if index + 1 < len(argv) else None
            if following is None or following.startswith("-"):
                result.insert(result.index(word) + 1, "auto")
    return result


def _interrupted(exc: BaseException | None) -> int:
    signals.settle()
    sys.stderr.write("interrupted\n")
    return 128 + exc.signum if isinstance(exc, signals.Terminated) else 130


def hoist_globals(argv: Sequence[str]) -> list[str]:
    """``argv`` with the global options given after the command moved before it:
    `runner status demo --output json` is `runner --output json status demo`. Both
    parsers see the same words; anything after ``--`` stays where it is."""
    front: list[str] = []
    rest = list(argv)
    # the global options before the command, and the command itself
    while rest and rest[0].startswith("-"):
        word = rest.pop(0)
        front.append(word)
        if word in _GLOBAL_VALUE_OPTIONS and rest:
            front.append(rest.pop(0))
    if not rest:
        return front
    moved: list[str] = []
    after = [rest.pop(0)]
    own = _COMMAND_OWN_OPTIONS.get(after[0], ())
    while rest:
        word = rest.pop(0)
        name, eq, _ = word.partition("=")
        if name in own:
            after.append(word)
            if not eq and rest:
                after.append(rest.pop(0))
            continue
        if word == "--":
            after.append(word)
            after.extend(rest)
            break
        if word in _GLOBAL_FLAGS:
            moved.append(word)
        elif name in _GLOBAL_VALUE_OPTIONS and (eq or rest):
            moved.append(word)
            if not eq:
                moved.append(rest.pop(0))
        elif word in _COMMAND_VALUE_OPTIONS and rest:
            after.extend((word, rest.pop(0)))
        else:
            after.append(word)
    return front + moved + after


def fast_path(argv: Sequence[str]) -> Callable[[], int] | None:
    """The command to run for ``argv`` if it is a plain `status`, `exists`, `list`,
    `history`, `validate` or `advance` (returning the exit code), else None: typer
    handles it.
    Global options may come before or after the command (:func:`hoist_globals`)."""
    if os.environ.get("_RUNNER_COMPLETE"):
        return None  # a shell asks for completions: typer answers (`--install-completion`)
    options: dict[str, str] = {}
    verbose = False
    no_color = False
    rest = hoist_globals(argv)
    while rest and rest[0].startswith("-"):
        word = rest.pop(0)
        if word in ("-v", "--verbose"):
            verbose = True
            continue
        if word == "--no-color":
            no_color = True
            continue
        name, eq, value = word.partition("=")
        if name not in _GLOBAL_VALUE_OPTIONS:
            return None
        if not eq:
            if not rest:
                return None
            value = rest.pop(0)
        if not value:
            return None
        options[name] = value
    if not rest:
        return None
    command, args = rest[0], rest[1:]

    output = options.get("--output", "text")
    log_format = options.get("--log-format", "text")
    level = (options.get("--log-level") or os.environ.get("RUNNER_LOG_LEVEL") or "WARNING").upper()
    if output not in _FORMATS or log_format not in _FORMATS or level not in _LEVELS:
        return None
    try:
        lock_timeout = float(options.get("--lock-timeout", "30"))
    except ValueError:
        return None
    if not lock_timeout >= 0:
        return None

    run: Callable[[commands.Settings], int]
    if command in ("status", "exists") and len(args) == 1 and not args[0].startswith("-"):
        name, read = args[0], commands.status if command == "status" else commands.exists

        def run(s: commands.Settings) -> int:
            return read(s, name)

    elif command == "list" and not args:
        run = commands.list_environments
    elif command == "validate" and not args:
        run = commands.validate
    elif command == "advance" and args:
        parsed_run = _advance_args(args)
        if parsed_run is None:
            return None
        env_name, dry_run, yes = parsed_run

        def run(s: commands.Settings) -> int:
            from runner.cli import running

            return running.advance(s, env_name, dry_run, yes)

    elif command == "history" and args:
        parsed = _history_args(args)
        if parsed is None:
            return None
        env, limit = parsed

        def run(s: commands.Settings) -> int:
            return commands.history(s, env, limit)

    else:
        return None

    def go() -> int:
        # logging is configured when something logs: a read that logs nothing never
        # imports it
        log.when_used(lambda: _setup_logging(level, log_format))
        workdir = options.get("--workdir") or os.environ.get("RUNNER_WORKDIR") or None
        machine = options.get("--machine") or os.environ.get("RUNNER_MACHINE") or None
        settings = commands.Settings(
            workdir=os.path.abspath(workdir or os.getcwd()),
            machine=machine,
            output=output,
            lock_timeout=lock_timeout,
            verbose=verbose,
            color=commands.color_wanted(no_color),
            state=options.get("--state"),
        )
        try:
            return commands.execute(settings, command, run)
        finally:
            if command == "advance":  # the display a phase left running, as the app does
                from runner.cli import running

                running.close_displays()

    return go


def _setup_logging(level: str, log_format: str) -> None:
    from runner.cli import logs

    logs.setup(level, log_format)


def _advance_args(args: list[str]) -> tuple[str, bool, bool] | None:
    """``NAME [--dry-run] [--yes | -y]`` in any order, else None."""
    flags = {"--dry-run": False, "--yes": False}
    names: list[str] = []
    for word in args:
        flag = "--yes" if word == "-y" else word
        if flag in flags and not flags[flag]:
            flags[flag] = True
        elif word.startswith("-") or names:
            return None
        else:
            names.append(word)
    if not names:
        return None
    return names[0], flags["--dry-run"], flags["--yes"]


def _history_args(args: list[str]) -> tuple[str, int | None] | None:
    """``NAME [--limit N | -n N | --limit=N]`` in any order, else None."""
    name: str | None = None
    limit: int | None = None
    rest = list(args)
    while rest:
        word = rest.pop(0)
        if word in ("--limit", "-n") or word.startswith("--limit="):
            if limit is not None:
                return None
            _, eq, value = word.partition("=")
            if not eq:
                if not rest:
                    return None
                value = rest.pop(0)
            if not (value.isascii() and value.isdigit()) or len(value) > 18 or int(value) < 1:
                return None
            limit = int(value)
        elif word.startswith("-") or name is not None:
            return None
        else:
            name = word
    if name is None:
        return None
    return name, limit
