"""Benchmark: CLI latency of the everyday commands, against ``python -c pass``.

A temporary working directory gets a copy of the shipped machine.yaml and templates
and 10 environments made with `runner create`. Then each command runs as a subprocess
(``python -m runner ...``), interleaved with ``python -c pass`` (baseline, command,
baseline, command, ...) so that drift on a shared machine hits both alike; each figure
is the median wall time, with the child's CPU time in the notes:

- `runner status NAME`, `runner list` (10 environments), `runner history NAME`,
  `runner validate` and `runner graph` (mermaid to stdout), machine cache warm;
- `runner status NAME` cold: data/.cache removed before every run (the first read-only
  command after an edit of machine.yaml validates it and writes the cache); for
  information, `runner validate` so too (the full check, plugins included);
- `runner status NAME` without a bytecode cache (PYTHONDONTWRITEBYTECODE=1). Every
  other figure caches bytecode in a temporary folder (PYTHONPYCACHEPREFIX), as an
  installed package would have it, whatever the calling shell says;
- `runner status` and `runner list` through the `runner` console script, when one is on
  PATH (and the interpreter's own script, if the one on PATH is a wrapper).

Targets: `status`, `list`, `history` and `exists` (when this runner has it) within 3x
``python -c pass`` (and under 100 ms, 150 ms for history); `status` with a cold
machine cache within 8x; `validate` of the shipped machine within 5x.

    python bench/bench_cli.py [--quick] [--profile]
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchlib import (
    ROOT,
    Command,
    Figure,
    Target,
    bench_main,
    cli_env,
    importtime,
    interleaved,
    median,
    profile_command,
    python_pass,
    runner_argv,
)

BENCH = "cli"
ENVS = 10
#: The read-only commands: within 3x the interpreter's own start (and under the earlier
#: absolute limits: 100 ms, 150 ms for history).
FAST = Target("ratio", 3.0, also=Target("max", 0.100))
HISTORY = Target("ratio", 3.0, also=Target("max", 0.150))
#: `status` when machine.yaml changed since the last read (the cache is rebuilt).
COLD = Target("ratio", 8.0)
#: `runner validate` of the shipped machine.
VALIDATE = Target("ratio", 5.0)


def setup(work: Path) -> list[str]:
    """Copy the shipped machine and templates into ``work``; create the environments."""
    shutil.copy2(ROOT / "machine.yaml", work / "machine.yaml")
    shutil.copytree(ROOT / "templates", work / "templates")
    names = [f"env-{i:02d}" for i in range(ENVS)]
    for name in names:
        Command(runner_argv("create", name), work)()
    # a history worth printing: the events of one full `runner up` (4 phases), all of
    # the record's serial (an event log ahead of its record is refused as a put-back
    # old copy)
    from runner.store.files import FileStore

    store = FileStore(work)
    serial = store.load(names[0]).serial
    for phase, steps in [("provision", 9), ("configure", 5), ("release", 4), ("run", 2)]:
        base = {"timestamp": "2026-01-01T00:00:00.000Z", "pid": 1, "host": "bench"}
        transition = {**base, "serial": serial, "type": "transition", "phase": phase}
        store.append_event(names[0], {**transition, "trigger": f"start_{phase}"})
        for step in range(steps):
            store.append_event(
                names[0],
                {
                    **base,
                    "serial": serial,
                    "type": "step",
                    "phase": phase,
                    "step": f"step_{step}",
                    "status": "done",
                    "duration_s": 1.5,
                    "attempts": 1,
                },
            )
        store.append_event(names[0], {**transition, "trigger": f"finish_{phase}"})
    return names


def _has_command(work: Path, command: str) -> bool:
    """Whether this runner has ``command`` (its ``--help`` succeeds)."""
    import subprocess

    proc = subprocess.run(
        runner_argv(command, "--help"), cwd=work, env=cli_env(), capture_output=True
    )
    return proc.returncode == 0


def console_scripts() -> list[tuple[str, str]]:
    """(label, script) of the `runner` console scripts worth timing."""
    found: list[tuple[str, str]] = []
    on_path = shutil.which("runner")
    own = Path(sysconfig.get_path("scripts")) / "runner"
    if on_path:
        found.append(("console script on PATH", on_path))
    differs = not on_path or Path(on_path).resolve() != own.resolve()
    wrapper = not on_path or not _is_python_script(Path(on_path))
    if own.is_file() and differs and wrapper:
        found.append(("console script of this interpreter", str(own)))
    return found


def _is_python_script(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            first = handle.readline()
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


def _cpu_note(command: Command, baseline: Command) -> str:
    return (
        f"cpu {median(command.cpu) * 1000:.0f} ms vs {median(baseline.cpu) * 1000:.0f} ms "
        "for python -c pass"
    )


def collect(quick: bool = False, force_profile: bool = False) -> tuple[list[Figure], list[str]]:
    runs = 15 if quick else 25
    cold_runs = 7 if quick else 11
    figures: list[Figure] = []
    findings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="runner-bench-cli-") as tmp:
        work = Path(tmp)
        names = setup(work)
        name = names[0]
        cache = work / "data" / ".cache"

        def measure(
            label: str,
            args: list[str],
            target: Target | None,
            n: int,
            *,
            before: Callable[[], None] | None = None,
            env: dict[str, str] | None = None,
        ) -> Figure:
            command = Command(args, work, env, before=before)
            baseline = Command(python_pass(), work, env)
            times = interleaved({"baseline": baseline, "command": command}, n)
            fig = Figure(
                BENCH,
                label,
                median(times["command"]),
                baseline=median(times["baseline"]),
                baseline_name="python -c pass",
                target=target,
                runs=n,
                note=_cpu_note(command, baseline),
            )
            figures.append(fig)
            return fig

        Command(runner_argv("status", name), work)()  # warms data/.cache
        measure(f"runner status NAME ({ENVS} envs)", runner_argv("status", name), FAST, runs)
        measure(f"runner list ({ENVS} envs)", runner_argv("list"), FAST, runs)
        from runner.store.files import FileStore

        events = len(FileStore(work).read_events(name))
        measure(
            f"runner history NAME ({events} events)", runner_argv("history", name), HISTORY, runs
        )
        if _has_command(work, "exists"):
            measure(f"runner exists NAME ({ENVS} envs)", runner_argv("exists", name), FAST, runs)
        else:
            figures.append(
                Figure.not_measured(
                    BENCH,
                    f"runner exists NAME ({ENVS} envs)",
                    "not measured: this runner has no `exists` command",
                    FAST,
                )
            )
        measure("runner validate (shipped machine)", runner_argv("validate"), VALIDATE, runs)
        measure("runner graph (mermaid, shipped)", runner_argv("graph"), None, runs)
        cold = measure(
            "runner status NAME, cold machine cache",
            runner_argv("status", name),
            COLD,
            cold_runs,
            before=lambda: shutil.rmtree(cache, ignore_errors=True),
        )
        cold.note += "; data/.cache removed before each run"
        cold_validate = measure(
            "runner validate (shipped machine), cold machine cache",
            runner_argv("validate"),
            None,
            cold_runs,
            before=lambda: shutil.rmtree(cache, ignore_errors=True),
        )
        cold_validate.note += "; data/.cache removed before each run"
        Command(runner_argv("status", name), work)()  # warm again
        nobytecode = measure(
            "runner status NAME, no bytecode cache",
            runner_argv("status", name),
            None,
            cold_runs,
            env=cli_env(bytecode=False),
        )
        nobytecode.note += "; PYTHONDONTWRITEBYTECODE=1: every module compiled from source"
        for label, script in console_scripts():
            for what, args in (("status NAME", ["status", name]), ("list", ["list"])):
                fig = measure(f"runner {what} ({label})", [script, *args], None, runs)
                if not _is_python_script(Path(script)):
                    fig.note += "; this PATH entry is a shell wrapper, not the Python script"

        missed = [f for f in figures if f.met is False]
        if missed or force_profile:
            findings.append(importtime(runner_argv("status", name), work))
            findings.append(profile_command(["status", name], work))
            if any("list" in f.name for f in missed):
                findings.append(profile_command(["list"], work))
            if any("history" in f.name for f in missed):
                findings.append(profile_command(["history", name], work))
    return figures, findings


def main(argv: list[str] | None = None) -> int:
    return bench_main("CLI latency (subprocess, median, interleaved)", collect, argv)


if __name__ == "__main__":
    sys.exit(main())
