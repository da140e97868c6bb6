"""The `runner` command line (typer): a client of :class:`runner.Runner`.

Each command parses its arguments, calls one method of the Runner and shows the
result with :mod:`runner.cli.render` (text, or one JSON document); errors become
messages and exit codes in :func:`runner.cli.commands.execute`. Modules are imported
inside the commands so that each command loads only what it needs.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from runner.cli import commands, running
from runner.cli.commands import Settings, execute, runner_for
from runner.errors import RunnerError

if TYPE_CHECKING:
    from runner.api.runner import Runner
    from runner.machine.model import MachineDef

if os.environ.get("_RUNNER_COMPLETE"):  # a shell asks for completions (see main.fast_path)
    from typer._completion_classes import completion_init

    completion_init()  # typer's answers for bash, zsh, fish, powershell, not click's

app = typer.Typer(
    name="runner",
    help="Move deployment environments through the lifecycle declared in machine.yaml.\n\n"
    "Global options may also follow the command (runner status demo --output json).\n\n"
    "Exit codes: 0 done (or nothing to do), 1 a step or check failed, 2 bad input (or not "
    "confirmed), 3 environment "
    "locked, 4 phase not allowed from the current state, 130/143 interrupted, 141 output "
    "pipe closed.",
    # typer's own completion options detect the shell and take no SHELL argument when
    # shellingham is installed: `--install-completion`/`--show-completion [SHELL]`
    # below take either (completion requests are answered by typer all the same)
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


# --- shell completion (`runner --install-completion`) ------------------------------
# Each function gets the words typed so far (the global options among them) and what
# is being completed; it never fails (a completion that cannot be made offers nothing).


def _completion_runner(ctx: typer.Context) -> Runner:
    from runner.api.runner import Runner

    params = ctx.find_root().params
    workdir = params.get("workdir") or Path.cwd()
    return Runner(workdir, params.get("machine"))


def _complete_environments(ctx: typer.Context, incomplete: str) -> list[str]:
    """The environments under data/ of the working directory."""
    from runner.store.record import NAME_RULE

    try:
        data = _completion_runner(ctx).workdir / "data"
        names = sorted(
            entry.name
            for entry in os.scandir(data)
            if entry.is_dir(follow_symlinks=False) and (Path(entry.path) / "state.json").is_file()
        )
    except (OSError, RunnerError):
        return []
    rule = re.compile(NAME_RULE)
    return [n for n in names if rule.fullmatch(n) and n.startswith(incomplete)]


def _completion_machine(ctx: typer.Context) -> MachineDef | None:
    """The machine of the command being completed: of its environment when it names one."""
    try:
        runner = _completion_runner(ctx)
        name = ctx.params.get("name") or ctx.params.get("env")
        if isinstance(name, str):
            runner._follow_environment(name)
        return runner.machine(plugins=False)
    except (OSError, RunnerError):
        return None


def _complete_phases(ctx: typer.Context, incomplete: str) -> list[str]:
    """The machine's phases."""
    machine = _completion_machine(ctx)
    names = [p.name for p in machine.phases] if machine else []
    return [n for n in names if n.startswith(incomplete)]


def _complete_states(ctx: typer.Context, incomplete: str) -> list[str]:
    """The machine's states."""
    machine = _completion_machine(ctx)
    return [n for n in (machine.states if machine else ()) if n.startswith(incomplete)]


_DRY_RUN = (
    "Show the phase, its rendered steps and the real plan of its OpenTofu apply or "
    "destroy (when its folder exists); run and change nothing."
)


def _yes() -> Any:
    return typer.Option(
        "--yes",
        "-y",
        help="Run a phase marked `confirm: true` (destroy) without asking. Without a "
        "terminal to ask on, such a phase is refused unless --yes is given.",
    )


def _environment(help: str = "Environment name.") -> Any:
    return typer.Argument(metavar="NAME", help=help, autocompletion=_complete_environments)


_SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _completion_option(action: str) -> Callable[[typer.Context, typer.CallbackParam, Any], None]:
    def callback(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> None:
        if value is None or ctx.resilient_parsing:
            return
        if value not in (*_SHELLS, "auto"):
            raise typer.BadParameter(
                f"unknown shell {value!r} (one of: {', '.join(_SHELLS)}, auto)",
                param_hint=f"--{action}-completion",
            )
        from typer import completion

        done = completion.install_callback if action == "install" else completion.show_callback
        done(ctx, param, True if value == "auto" else value)  # True: the shell this runs in

    return callback


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
            "file the environment was created with, else the shipped Torrust Tracker machine).",
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
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            metavar="URL",
            help="Where environments are kept: file:PATH or postgresql://host/db (default: "
            "RUNNER_STATE, else state.url in runner.toml, else data/). After `list`, "
            "--state is list's own filter: give the URL before the command there.",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Stream the tools' output while steps run.")
    ] = False,
    no_color: Annotated[
        bool,
        typer.Option("--no-color", help="No colour on a terminal (also when NO_COLOR is set)."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="Print the version and exit."
        ),
    ] = False,
    install_completion: Annotated[
        str | None,
        typer.Option(
            "--install-completion",
            metavar="[SHELL]",
            is_eager=True,
            expose_value=False,
            callback=_completion_option("install"),
            help="Install completion for SHELL (bash, zsh, fish; default: auto, the current "
            "shell).",
        ),
    ] = None,
    show_completion: Annotated[
        str | None,
        typer.Option(
            "--show-completion",
            metavar="[SHELL]",
            is_eager=True,
            expose_value=False,
            callback=_completion_option("show"),
            help="Print the completion script for SHELL (default: auto), to copy or customise.",
        ),
    ] = None,
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
        color=commands.color_wanted(no_color),
        state=state,
    )


def _run(ctx: typer.Context, command: str, body: Callable[[Settings], int | None]) -> None:
    try:
        code = execute(_settings(ctx), command, body)
    finally:
        running.close_displays()
    raise typer.Exit(code)


_running = running.running


# --- machine commands --------------------------------------------------------------


@app.command()
def validate(ctx: typer.Context) -> None:
    """Check machine.yaml (syntax, schema, states, phases, plugins, templates)."""

    _run(ctx, "validate", commands.validate)


@app.command()
def graph(
    ctx: typer.Context,
    fmt: Annotated[
        GraphFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="mermaid, dot, svg or png (svg/png need Graphviz). Default: from the "
            "extension of --out (.mmd .mermaid .dot .gv .svg .png), else mermaid.",
        ),
    ] = None,
    output_file: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="FILE", help="Write to FILE instead of stdout."),
    ] = None,
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            metavar="NAME",
            help="Mark this environment's current state.",
            autocompletion=_complete_environments,
        ),
    ] = None,
) -> None:
    """Draw the state machine (states, phases, failure and resume edges)."""

    def body(s: Settings) -> int:
        chosen = fmt if fmt is not None else _graph_format(output_file)
        if (
            chosen in (GraphFormat.svg, GraphFormat.png)
            and output_file is None
            and sys.stdout.isatty()
        ):
            from runner.errors import InputError

            raise InputError(
                f"--format {chosen.value} is binary; write it to a file",
                hint=f"runner graph --format {chosen.value} -o machine.{chosen.value}",
            )
        result = runner_for(s, "runner graph").graph(chosen.value, env)
        if output_file is None:
            return commands.show(s, result)
        from runner.api.results import GraphFileResult
        from runner.machine import graph as graphs

        target = output_file if output_file.is_absolute() else Path.cwd() / output_file
        graphs.write(result.data, target)
        written = GraphFileResult(result.format, result.environment, str(target), len(result.data))
        return commands.show(s, written)

    _run(ctx, "graph", body)


#: The format of a graph written to a file with this extension (without --format).
GRAPH_EXTENSIONS = {
    ".mmd": GraphFormat.mermaid,
    ".mermaid": GraphFormat.mermaid,
    ".dot": GraphFormat.dot,
    ".gv": GraphFormat.dot,
    ".svg": GraphFormat.svg,
    ".png": GraphFormat.png,
}


def _graph_format(output_file: Path | None) -> GraphFormat:
    """The format ``--out FILE`` asks for by its extension: mermaid for stdout or a file
    without one; an extension the runner does not draw is bad input."""
    if output_file is None or not output_file.suffix:
        return GraphFormat.mermaid
    found = GRAPH_EXTENSIONS.get(output_file.suffix.lower())
    if found is None:
        from runner.errors import InputError

        raise InputError(
            f"cannot tell the graph format from the extension of {output_file.name}",
            hint="give --format mermaid|dot|svg|png, or name the file "
            + " ".join(f"*{ext}" for ext in GRAPH_EXTENSIONS),
        )
    return found


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
        cfg = None if config is None else (config if config.is_absolute() else Path.cwd() / config)
        runner = runner_for(s, "runner create")
        if runner.machine_source == "shipped":
            sys.stderr.write(
                f"using the shipped machine {runner.machine(plugins=False).name} "
                f"({runner.machine_file}); pass --machine FILE or add machine.yaml to use "
                "another\n"
            )
        result = runner.create(name, config=cfg, sets=list(sets or []))
        return commands.show(s, result)

    _run(ctx, "create", body)


@app.command()
def status(
    ctx: typer.Context,
    name: Annotated[str, _environment()],
) -> None:
    """Where an environment is, what failed, who holds it, and what to do next."""
    _run(ctx, "status", lambda s: commands.status(s, name))


class StateKind(StrEnum):
    failed = "failed"
    intermediate = "intermediate"
    stable = "stable"
    final = "final"


@app.command(name="list")
def list_(
    ctx: typer.Context,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            metavar="STATE",
            help="Only the environments in this state (the global --state URL goes before "
            "`list`: runner --state URL list --state STATE).",
            autocompletion=_complete_states,
        ),
    ] = None,
    kind: Annotated[
        StateKind | None,
        typer.Option(
            "--kind",
            help="Only the environments in a state of this kind (stable includes the initial "
            "state).",
        ),
    ] = None,
) -> None:
    """Every environment with its state and last change."""
    _run(
        ctx,
        "list",
        lambda s: commands.list_environments(s, state, None if kind is None else kind.value),
    )


@app.command()
def history(
    ctx: typer.Context,
    name: Annotated[str, _environment()],
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", min=1, metavar="N", help="Only the last N events."),
    ] = None,
) -> None:
    """Transitions and step results from the environment's event log."""
    _run(ctx, "history", lambda s: commands.history(s, name, limit))


@app.command()
def advance(
    ctx: typer.Context,
    name: Annotated[str, _environment()],
    dry_run: Annotated[bool, typer.Option("--dry-run", help=_DRY_RUN)] = False,
    yes: Annotated[bool, _yes()] = False,
) -> None:
    """Run the next phase on the happy path."""

    _run(ctx, "advance", lambda s: running.advance(s, name, dry_run, yes))


@app.command()
def up(
    ctx: typer.Context,
    name: Annotated[str, _environment()],
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="STATE",
            help="Stop once the environment reaches this state.",
            autocompletion=_complete_states,
        ),
    ] = None,
    yes: Annotated[bool, _yes()] = False,
) -> None:
    """Advance until --to STATE or the end of the happy path."""

    def body(s: Settings) -> int:
        runner = _running(s, "runner up", yes, f"runner up {name}")
        return commands.show(s, runner.up(name, to), runner)

    _run(ctx, "up", body)


@app.command()
def resume(
    ctx: typer.Context,
    name: Annotated[str, _environment()],
    from_step: Annotated[
        str | None,
        typer.Option(
            "--from-step",
            metavar="STEP",
            help="Re-run from this step instead of the first one not completed.",
        ),
    ] = None,
    accept_machine_change: Annotated[
        bool,
        typer.Option(
            "--accept-machine-change",
            help="Resume even though the phase's steps changed in machine.yaml since its run "
            "started.",
        ),
    ] = False,
) -> None:
    """Continue an interrupted or failed phase from its first unfinished step."""

    def body(s: Settings) -> int:
        runner = _running(s, "runner resume")
        return commands.show(s, runner.resume(name, from_step, accept_machine_change), runner)

    _run(ctx, "resume", body)


@app.command()
def phase(
    ctx: typer.Context,
    name: Annotated[str, _environment()],
    phase_name: Annotated[
        str, typer.Argument(metavar="PHASE", help="Phase to run.", autocompletion=_complete_phases)
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help=_DRY_RUN)] = False,
    yes: Annotated[bool, _yes()] = False,
) -> None:
    """Run a named phase allowed from the current state (a phase marked `confirm: true`
    asks first, see --yes)."""

    def body(s: Settings) -> int:
        runner = _running(s, "runner phase", yes, f"runner phase {name} {phase_name}")
        return commands.show(s, runner.run_phase(name, phase_name, dry_run), runner)

    _run(ctx, "phase", body)


@app.command()
def destroy(
    ctx: typer.Context,
    name: Annotated[str, _environment()],
    dry_run: Annotated[bool, typer.Option("--dry-run", help=_DRY_RUN)] = False,
    yes: Annotated[bool, _yes()] = False,
) -> None:
    """Run the destroy phase (allowed from any non-final state).

    The shipped machine marks it `confirm: true`: on a terminal it asks first, naming
    the environment, its state and the steps it will run; --yes skips the question;
    without a terminal and without --yes it is refused (exit 2)."""

    def body(s: Settings) -> int:
        runner = _running(s, "runner destroy", yes, f"runner destroy {name}")
        return commands.show(s, runner.destroy(name, dry_run), runner)

    _run(ctx, "destroy", body)


@app.command()
def check(
    ctx: typer.Context,
    name: Annotated[str, _environment()],
) -> None:
    """Run the checks of the environment's current state (machine.yaml's `checks:`).

    Each check is a step (a health endpoint, drift of the infrastructure, ...) that
    looks and changes nothing; the state never changes. The result is recorded (shown
    by `status`, `list` and `history`). Exit 0 when all pass (or none applies), 1 when
    one fails."""

    def body(s: Settings) -> int:
        runner = _running(s, "runner check")
        return commands.show(s, runner.check(name), runner)

    _run(ctx, "check", body)


# --- operator commands: getting out of trouble -------------------------------------


@app.command()
def exists(ctx: typer.Context, name: Annotated[str, _environment()]) -> None:
    """Print true or false: whether the environment exists (exit 0 either way)."""
    _run(ctx, "exists", lambda s: commands.exists(s, name))


@app.command()
def purge(
    ctx: typer.Context,
    name: Annotated[str, _environment()],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Purge an environment that is not in a final state (its infrastructure may "
            "still exist: the command says what to look at).",
        ),
    ] = False,
    build: Annotated[
        bool, typer.Option("--build", help="Also remove its build folder (build/NAME).")
    ] = False,
) -> None:
    """Remove an environment's record, event log, traces, run logs and snapshots, and free
    its name. Allowed in a final state; elsewhere only with --force. Keeps build/NAME
    unless --build. Refused while another command holds the environment."""

    def body(s: Settings) -> int:
        return commands.show(s, runner_for(s, "runner purge").purge(name, force, build))

    _run(ctx, "purge", body)


@app.command()
def inputs(
    ctx: typer.Context,
    name: Annotated[str, _environment()],
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Change an input, KEY=VALUE with dotted keys (ssh.port=2222); repeatable.",
        ),
    ] = None,
    unset: Annotated[
        list[str] | None,
        typer.Option("--unset", metavar="KEY", help="Remove an input (dotted key); repeatable."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", metavar="FILE", help="YAML or JSON file merged into the inputs."
        ),
    ] = None,
) -> None:
    """Show the environment's inputs (secrets as their references), or change them with
    --set, --unset and --config: checked against the machine's inputs schema, allowed in
    stable and failed states, recorded as an inputs_changed event. A failure caused by
    an input is fixed with `runner inputs NAME --set ...` then `runner resume NAME`."""

    def body(s: Settings) -> int:
        runner = runner_for(s, "runner inputs")
        if not sets and not unset and config is None:
            return commands.show(s, runner.inputs(name))
        cfg = None if config is None else (config if config.is_absolute() else Path.cwd() / config)
        return commands.show(s, runner.change_inputs(name, sets or [], unset or [], cfg))

    _run(ctx, "inputs", body)


@app.command(name="force-state")
def force_state(
    ctx: typer.Context,
    name: Annotated[str, _environment()],
    state: Annotated[
        str,
        typer.Argument(
            metavar="STATE", help="A state the machine declares.", autocompletion=_complete_states
        ),
    ],
    reason: Annotated[
        str | None,
        typer.Option("--reason", metavar="TEXT", help="Why (required; kept in the history)."),
    ] = None,
) -> None:
    """Move the environment to any declared state without running anything (audited: a
    state_forced event with from, to, reason and who). Clears the run and failure
    records. Refused while another command holds the environment."""

    def body(s: Settings) -> int:
        runner = runner_for(s, "runner force-state")
        return commands.show(s, runner.force_state(name, state, reason or ""))

    _run(ctx, "force-state", body)


@app.command()
def snapshots(ctx: typer.Context, name: Annotated[str, _environment()]) -> None:
    """The kept versions of the environment's state (serial, time, state, what changed
    it), oldest first; `runner restore NAME --serial N` brings one back."""
    _run(
        ctx,
        "snapshots",
        lambda s: commands.show(s, runner_for(s, "runner snapshots").snapshots(name)),
    )


@app.command()
def restore(
    ctx: typer.Context,
    name: Annotated[str, _environment()],
    serial: Annotated[
        int,
        typer.Option(
            "--serial", metavar="N", help="The kept version to bring back (see snapshots)."
        ),
    ],
) -> None:
    """Make a kept version of the environment's state current again, as a new save (the
    serial goes on growing) with a restored event. Refused while another command holds
    the environment."""

    def body(s: Settings) -> int:
        return commands.show(s, runner_for(s, "runner restore").restore(name, serial))

    _run(ctx, "restore", body)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            metavar="ADDRESS",
            help="Address to listen on. Anything but loopback needs --token-file.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free one)."),
    ] = 8400,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="File (mode 600) holding the token every request must carry: header "
            "'Authorization: Bearer TOKEN', or open any page once with ?token=TOKEN.",
        ),
    ] = None,
    allow_actions: Annotated[
        bool,
        typer.Option(
            "--allow-actions",
            help="Offer advance, resume, check and destroy, each behind a confirmation "
            "(default: read-only).",
        ),
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            metavar="NAME",
            help="Another name requests may call the server by (repeatable): a proxy's "
            "in front of it. Others than its address and loopback's are refused.",
        ),
    ] = None,
) -> None:
    """The web dashboard: every environment live, failures with their traces, history,
    the machine's graph, run logs; its JSON API under /api/v1/ serves the documents of
    --output json. Needs the extra `web` (pip install 'runner[web]')."""

    def body(s: Settings) -> int:
        try:
            from runner.web.serve import serve as run_server
        except ImportError as exc:
            from runner.errors import ToolMissingError

            raise ToolMissingError(
                f"the dashboard needs the extra 'web' ({exc.name or exc} is not installed)",
                hint="pip install 'runner[web]'",
            ) from None

        def started(result: Any) -> None:
            if s.json:
                from runner.cli import render

                render.emit_json(render.document(result))
            else:
                mode = "actions allowed" if result.allow_actions else "read-only"
                guard = ", token required" if result.token else ""
                print(f"runner dashboard on {result.url} ({mode}{guard}); Ctrl+C stops it")
            sys.stdout.flush()

        run_server(
            lambda command: runner_for(s, command),
            host=host,
            port=port,
            token_file=token_file,
            allow_actions=allow_actions,
            allowed_hosts=tuple(allowed_host or ()),
            started=started,
        )
        return 0

    _run(ctx, "serve", body)


# --- backends ------------------------------------------------------------------------

state_app = typer.Typer(
    name="state",
    help="The backend that keeps the environments: make it ready, move them to another.",
    no_args_is_help=True,
)
app.add_typer(state_app)


@state_app.command("init")
def state_init(ctx: typer.Context) -> None:
    """Make the backend ready (PostgreSQL: create or upgrade the runner's schema)."""

    def body(s: Settings) -> int:
        return commands.show(s, runner_for(s, "runner state init").init_state())

    _run(ctx, "state init", body)


@state_app.command("migrate")
def state_migrate(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="URL",
            help="The backend to copy every environment to: file:PATH or postgresql://host/db.",
        ),
    ],
) -> None:
    """Copy every environment (record, events, snapshots, artifacts, lineage) to another
    backend and verify it; names it has already are refused; the source is unchanged."""

    def body(s: Settings) -> int:
        return commands.show(s, runner_for(s, "runner state migrate").migrate_state(to))

    _run(ctx, "state migrate", body)
