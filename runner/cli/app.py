"""The `runner` command line: a thin shell over :mod:`runner.api.operations`.

It parses arguments, calls one operation, renders the result as text or one JSON
document, and is the only place that turns errors into messages and exit codes.
Modules are imported inside the commands so that each command loads only what it
needs (`status` and `list` must start fast).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from runner.cli import commands
from runner.cli.commands import Settings, emit_json, execute, workspace
from runner.errors import ExitCode

app = typer.Typer(
    name="runner",
    help="Move deployment environments through the lifecycle declared in machine.yaml.\n\n"
    "Exit codes: 0 done (or nothing to do), 1 a step failed, 2 bad input, 3 environment "
    "locked, 4 phase not allowed from the current state, 130/143 interrupted, 141 output "
    "pipe closed.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    svg = "svg"
    png = "png"


def _settings(ctx: typer.Context) -> Settings:
    obj = ctx.obj
    assert isinstance(obj, Settings)
    return obj


def _show_version(value: bool) -> None:
    if value:
        from runner import __version__

        print(f"runner {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global(
    ctx: typer.Context,
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir",
            envvar="RUNNER_WORKDIR",
            metavar="DIR",
            help="Working directory holding data/ and build/ (default: the current directory).",
        ),
    ] = None,
    machine: Annotated[
        Path | None,
        typer.Option(
            "--machine",
            envvar="RUNNER_MACHINE",
            metavar="FILE",
            help="machine.yaml to use (default: machine.yaml in the working directory, else the "
            "shipped Torrust Tracker machine).",
        ),
    ] = None,
    output: Annotated[
        OutputFormat,
        typer.Option("--output", help="text for people, json for scripts (one JSON document)."),
    ] = OutputFormat.text,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            envvar="RUNNER_LOG_LEVEL",
            metavar="LEVEL",
            help="Log level on stderr: DEBUG, INFO, WARNING, ERROR.",
        ),
    ] = "WARNING",
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="Log line format.")
    ] = LogFormat.text,
    lock_timeout: Annotated[
        float,
        typer.Option(
            "--lock-timeout",
            min=0,
            metavar="SECONDS",
            help="Seconds to wait for an environment another command holds; 0 fails at once.",
        ),
    ] = 30.0,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Stream the tools' output while steps run.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    from runner.cli import logs

    if lock_timeout != lock_timeout:  # NaN
        raise typer.BadParameter("not a number of seconds", param_hint="--lock-timeout")
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    logs.setup(level, log_format.value)
    ctx.obj = Settings(
        workdir=(workdir or Path.cwd()).absolute(),
        machine=machine,
        output=output.value,
        lock_timeout=lock_timeout,
        verbose=verbose,
    )


def _run(ctx: typer.Context, command: str, body: Callable[[Settings], int | None]) -> None:
    raise typer.Exit(execute(_settings(ctx), command, body))


def _progress(settings: Settings) -> Any:
    if settings.json:
        from runner.run.phase import NullProgress

        return NullProgress()
    from runner.cli.progress import LiveProgress, PlainProgress

    if sys.stdout.isatty():
        return LiveProgress(verbose=settings.verbose)
    return PlainProgress(verbose=settings.verbose)


# --- machine commands --------------------------------------------------------------


@app.command()
def validate(ctx: typer.Context) -> None:
    """Check machine.yaml (syntax, schema, states, phases, plugins, templates)."""

    def body(s: Settings) -> int:
        from runner.api.operations import validate as do_validate

        result = do_validate(workspace(s, "runner validate"))
        if s.json:
            emit_json(result.to_json())
            return 0
        m = result.machine
        kinds = result.to_json()["states"]
        print(f"{m.file}: valid machine '{m.name}'")
        print(
            f"  states ({len(m.states)}): "
            + ", ".join(
                f"{n}{'' if k in ('stable', 'initial') else f' ({k})'}" for n, k in kinds.items()
            )
        )
        print(
            f"  phases ({len(m.phases)}): "
            + ", ".join(
                f"{p.name}{'' if p.advance else ' (manual)'} "
                f"[{len(p.steps)} step{'' if len(p.steps) == 1 else 's'}]"
                for p in m.phases
            )
        )
        print("  happy path: " + " → ".join(m.happy_path()))
        return 0

    _run(ctx, "validate", body)


@app.command()
def graph(
    ctx: typer.Context,
    fmt: Annotated[
        GraphFormat,
        typer.Option(
            "--format",
            "-f",
            help="mermaid (default, to stdout), dot, svg or png (svg/png need Graphviz).",
        ),
    ] = GraphFormat.mermaid,
    output_file: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="FILE", help="Write to FILE instead of stdout."),
    ] = None,
    env: Annotated[
        str | None,
        typer.Option("--env", metavar="NAME", help="Mark this environment's current state."),
    ] = None,
) -> None:
    """Draw the state machine (states, phases, failure and resume edges)."""

    def body(s: Settings) -> int:
        from runner.machine import graph as graphs
        from runner.store.contract import check_name

        ws = workspace(s, "runner graph")
        machine = ws.machine(plugins=False)
        current = None
        if env is not None:
            check_name(env)
            current = ws.repo.load(env).state
        if (
            fmt in (GraphFormat.svg, GraphFormat.png)
            and output_file is None
            and sys.stdout.isatty()
        ):
            from runner.errors import InputError

            raise InputError(
                f"--format {fmt.value} is binary; write it to a file",
                hint=f"runner graph --format {fmt.value} -o machine.{fmt.value}",
            )
        data = graphs.render(machine, fmt.value, current)
        target = (
            output_file
            if output_file is None or output_file.is_absolute()
            else (Path.cwd() / output_file)
        )
        if s.json:
            if target is not None:
                graphs.write(data, target)
                emit_json({"format": fmt.value, "file": str(target), "bytes": len(data)})
            else:
                emit_json({"format": fmt.value, "graph": data.decode(errors="replace")})
            return 0
        graphs.write(data, target)
        if target is not None:
            print(f"wrote {target} ({fmt.value}, {len(data)} bytes)")
        return 0

    _run(ctx, "graph", body)


# --- environment commands ----------------------------------------------------------


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Environment name: ^[a-z][a-z0-9-]{0,62}$")
    ],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", metavar="FILE", help="YAML or JSON file of inputs."),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Set an input, KEY=VALUE with dotted keys (ssh.port=2222); repeatable.",
        ),
    ] = None,
) -> None:
    """Create an environment in the machine's initial state."""

    def body(s: Settings) -> int:
        from runner.api.operations import create as do_create

        cfg = None if config is None else (config if config.is_absolute() else Path.cwd() / config)
        result = do_create(workspace(s, "runner create"), name, cfg, list(sets or []))
        if s.json:
            emit_json(result.to_json())
        else:
            print(f"created environment '{name}' in state '{result.record.state}'")
            print(f"next: runner advance {name}   (or runner up {name})")
        return 0

    _run(ctx, "create", body)


@app.command()
def status(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Environment name.")],
) -> None:
    """Where an environment is, what failed, who holds it, and what to do next."""
    _run(ctx, "status", lambda s: commands.status(s, name))


@app.command(name="list")
def list_(ctx: typer.Context) -> None:
    """Every environment with its state and last change."""
    _run(ctx, "list", commands.list_environments)


@app.command()
def history(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Environment name.")],
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", min=1, metavar="N", help="Only the last N events."),
    ] = None,
) -> None:
    """Transitions and step results from the environment's event log."""
    _run(ctx, "history", lambda s: commands.history(s, name, limit))


def _render_run(s: Settings, result: Any) -> int:
    if s.json:
        emit_json(result.to_json())
    else:
        if result.dry_run:
            for plan in result.dry_run:
                print(f"phase {plan['phase']}: {plan['from']} → {plan['via']} → {plan['to']}")
                for i, step in enumerate(plan["steps"], start=1):
                    if "error" in step:
                        print(
                            f"  [{i}] {step['name']} ({step['uses']}): cannot render: "
                            f"{step['error']}"
                        )
                    elif not step["when"]:
                        print(f"  [{i}] {step['name']} ({step['uses']}): skipped (when is false)")
                    else:
                        print(
                            f"  [{i}] {step['name']} ({step['uses']}): "
                            f"{json.dumps(step['params'], default=str)}"
                        )
            print("dry run: nothing was run")
        elif result.message:
            print(result.message)
        for phase in result.phases:
            if phase.status == "failed" and phase.failure:
                f = phase.failure
                print(f"phase '{phase.phase}' failed at step '{f.step}' ({f.kind}): {f.summary}")
                if f.trace:
                    print(f"trace: {f.trace}")
                print(f"state: {phase.state}; see `runner status {phase.environment}`")
        if result.phases and not result.failed:
            print(f"environment '{result.environment}' is now in '{result.state}'")
    return ExitCode.STEP_FAILED if result.failed else 0


@app.command()
def advance(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Environment name.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the phase and its rendered steps; run nothing.")
    ] = False,
) -> None:
    """Run the next phase on the happy path."""

    def body(s: Settings) -> int:
        from runner.api.operations import advance as do_advance

        ws = workspace(s, "runner advance")
        return _render_run(s, do_advance(ws, name, _progress(s), dry_run=dry_run))

    _run(ctx, "advance", body)


@app.command()
def up(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Environment name.")],
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="STATE", help="Stop once the environment reaches this state."),
    ] = None,
) -> None:
    """Advance until --to STATE or the end of the happy path."""

    def body(s: Settings) -> int:
        from runner.api.operations import up as do_up

        return _render_run(s, do_up(workspace(s, "runner up"), name, to, _progress(s)))

    _run(ctx, "up", body)


@app.command()
def resume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Environment name.")],
    from_step: Annotated[
        str | None,
        typer.Option(
            "--from-step",
            metavar="STEP",
            help="Re-run from this step instead of the first one not completed.",
        ),
    ] = None,
) -> None:
    """Continue an interrupted or failed phase from its first unfinished step."""

    def body(s: Settings) -> int:
        from runner.api.operations import resume as do_resume

        return _render_run(
            s, do_resume(workspace(s, "runner resume"), name, from_step, _progress(s))
        )

    _run(ctx, "resume", body)


@app.command()
def phase(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Environment name.")],
    phase_name: Annotated[str, typer.Argument(metavar="PHASE", help="Phase to run.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, run nothing.")] = False,
) -> None:
    """Run a named phase allowed from the current state."""

    def body(s: Settings) -> int:
        from runner.api.operations import run_phase

        ws = workspace(s, "runner phase")
        return _render_run(s, run_phase(ws, name, phase_name, _progress(s), dry_run=dry_run))

    _run(ctx, "phase", body)


@app.command()
def destroy(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Environment name.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, run nothing.")] = False,
) -> None:
    """Run the destroy phase (allowed from any non-final state)."""

    def body(s: Settings) -> int:
        from runner.api.operations import destroy_phase_name, run_phase

        ws = workspace(s, "runner destroy")
        phase_name = destroy_phase_name(ws.machine())
        return _render_run(s, run_phase(ws, name, phase_name, _progress(s), dry_run=dry_run))

    _run(ctx, "destroy", body)
