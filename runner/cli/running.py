"""What the commands that run phases share, without the argument parser: the progress
display of a run, the :class:`~runner.api.runner.Runner` that asks for confirmation,
and `advance`, which the fast path of :mod:`runner.cli.main` runs without typer (a
phase of a hundred short steps would otherwise pay typer's start on top of them)."""

from __future__ import annotations

import sys

from runner.cli import commands

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.api.runner import Runner
    from runner.cli.commands import Settings
    from runner.cli.progress import PlainProgress

__all__ = ["advance", "close_displays", "progress", "running"]

_DISPLAYS: list[PlainProgress] = []


def close_displays() -> None:
    """Stop the displays still running (a phase that ended by an error of the store
    leaves one)."""
    while _DISPLAYS:
        _DISPLAYS.pop().close()


def progress(settings: Settings) -> PlainProgress | None:
    """The progress display of a run: none for --output json (only the document)."""
    if settings.json:
        return None
    from runner.cli.progress import LiveProgress, PlainProgress

    display = (
        LiveProgress(verbose=settings.verbose, color=settings.color)
        if sys.stdout.isatty()
        else PlainProgress(verbose=settings.verbose)
    )
    _DISPLAYS.append(display)
    return display


def running(settings: Settings, command: str, yes: bool = False, again: str = "") -> Runner:
    """The Runner of a command that runs phases, with its progress display; a phase
    marked `confirm: true` is confirmed by ``yes`` or asked on the terminal (``again``:
    the command line to repeat with --yes)."""
    display = progress(settings)
    confirm = commands.confirmer(yes, again or command)
    runner = commands.runner_for(settings, command, display, confirm)
    if display is not None:
        from runner.cli.progress import LiveProgress

        if isinstance(display, LiveProgress):
            display.kind_of = commands.kinds(runner)
    return runner


def advance(settings: Settings, name: str, dry_run: bool = False, yes: bool = False) -> int:
    """`runner advance NAME [--dry-run] [--yes]`."""
    runner = running(settings, "runner advance", yes, f"runner advance {name}")
    return commands.show(settings, runner.advance(name, dry_run=dry_run), runner)
