"""What the commands do once their arguments are parsed, without the argument parser.

:mod:`runner.cli.app` (typer) and the fast path of :mod:`runner.cli.main` (for `status`, `list`
and `history`, which must start fast and so never import typer) both call these. This
is the only place that turns errors into messages and exit codes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import signals
from runner.errors import ExitCode, RunnerError
from runner.signals import Terminated

__all__ = [
    "Settings",
    "emit_json",
    "execute",
    "history",
    "list_environments",
    "report",
    "status",
    "workspace",
]


@dataclass
class Settings:
    """The global options of every command."""

    workdir: Path
    machine: Path | None
    output: str  # "text" or "json"
    lock_timeout: float
    verbose: bool

    @property
    def json(self) -> bool:
        return self.output == "json"


def workspace(settings: Settings, command: str) -> Any:
    from runner.api.operations import Workspace, machine_for

    def repository() -> Any:
        from runner.store.files import FileStore

        return FileStore(settings.workdir)

    if not settings.workdir.is_dir():
        from runner.errors import InputError

        problem = "is not a directory" if settings.workdir.exists() else "does not exist"
        raise InputError(
            f"working directory {settings.workdir} {problem}",
            hint="pass --workdir DIR (or set RUNNER_WORKDIR) to an existing folder",
        )
    return Workspace(
        workdir=settings.workdir,
        repo_factory=repository,
        machine_file=machine_for(settings.workdir, settings.machine),
        lock_timeout_s=settings.lock_timeout,
        command=command,
    )


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def report(settings: Settings | None, exc: RunnerError) -> int:
    """Show ``exc`` (one message, or one JSON document) and return its exit code."""
    if settings is not None and settings.json:
        emit_json(exc.to_json())
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
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # whoever read stdout stopped reading (`runner list | head -1`): say no more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.BROKEN_PIPE)
    except RunnerError as exc:
        return report(settings, exc)
    except KeyboardInterrupt as exc:
        sys.stderr.write("interrupted\n")
        return 128 + exc.signum if isinstance(exc, Terminated) else int(ExitCode.SIGINT)
    except Exception as exc:
        import logging

        logging.getLogger("runner").debug("internal error", exc_info=True)
        return report(
            settings,
            RunnerError(
                f"internal error in `runner {command}`: {type(exc).__name__}: {exc}",
                hint="this is a bug in runner; run again with --log-level DEBUG for the traceback "
                "and report it",
            ),
        )


# --- the read-only commands ---------------------------------------------------------


def status(s: Settings, name: str) -> int:
    from runner.api.operations import status as do_status

    result = do_status(workspace(s, "runner status"), name)
    if s.json:
        emit_json(result.to_json())
        return 0
    r = result.record
    lines = [f"environment: {r.name}"]
    flag = " (interrupted)" if result.interrupted else ""
    lines.append(f"state:       {r.state}{flag} - {result.description}")
    lines.append(f"updated:     {r.updated_at}")
    if result.holder:
        h = result.holder
        lines.append(f"locked by:   pid {h.pid} on {h.host} ({h.command}, since {h.started_at})")
    run = r.run
    if result.interrupted and run:
        lines.append(
            f"interrupted: phase '{run.phase}' at step '{run.current_step}'"
            f" (completed: {', '.join(run.completed_steps) or 'none'})"
        )
        if run.trace:
            lines.append(f"trace:       {run.trace}")
    failure = r.failure
    if failure and result.kind == "failed":
        lines.append(
            f"failed:      phase '{failure.phase}', step '{failure.step}' "
            f"({failure.kind}) at {failure.failed_at}"
        )
        lines.append(f"             {failure.summary}")
        if failure.trace:
            lines.append(f"trace:       {failure.trace}")
    if r.outputs:
        lines.append("outputs:     " + ", ".join(f"{k}={v}" for k, v in sorted(r.outputs.items())))
    lines.append("next:")
    lines.extend(f"  {action}" for action in result.next_actions)
    print("\n".join(lines))
    return 0


def list_environments(s: Settings) -> int:
    from runner.api.operations import list_environments as do_list

    result = do_list(workspace(s, "runner list"))
    if s.json:
        emit_json(result.to_json())
        return 0
    good = [e for e in result.entries if e.record is not None]
    bad = [e for e in result.entries if e.record is None]
    if not good and not bad:
        print("no environments (create one with `runner create NAME`)")
        return 0
    lines = []
    if good:
        width = max(len("NAME"), *(len(e.name) for e in good))
        swidth = max(len("STATE"), *(len(e.record.state) for e in good if e.record))
        lines.append(f"{'NAME':<{width}}  {'STATE':<{swidth}}  UPDATED")
        for e in good:
            assert e.record is not None
            lines.append(f"{e.name:<{width}}  {e.record.state:<{swidth}}  {e.record.updated_at}")
    if bad:
        lines.append("\nunreadable:")
        lines.extend(f"  {e.name}: {e.error}" for e in bad)
    print("\n".join(lines))
    return 0


def history(s: Settings, name: str, limit: int | None) -> int:
    from runner.api.operations import history as do_history

    result = do_history(workspace(s, "runner history"), name, limit)
    if s.json:
        emit_json(result.to_json())
        return 0
    lines = [f"{'TIME':<24}  {'TYPE':<12}  {'PHASE':<12}  {'STEP':<28}  DETAIL"]
    for ev in result.events:
        kind = str(ev.get("type", "transition"))
        if kind in ("transition", "created"):
            detail = f"{ev.get('from') or '-'} → {ev.get('to')} ({ev.get('trigger')})"
        elif kind == "step":
            detail = str(ev.get("status", ""))
            if ev.get("duration_s") is not None:
                detail += f" {ev['duration_s']}s"
            if ev.get("summary"):
                detail += f": {ev['summary']}"
        else:
            detail = " ".join(f"{k}={ev[k]}" for k in ("signal", "state") if ev.get(k))
        lines.append(
            f"{ev.get('timestamp', ''):<24}  {kind:<12}  {ev.get('phase') or '-':<12}  "
            f"{ev.get('step') or '-':<28}  {detail}"
        )
    print("\n".join(lines))
    return 0
