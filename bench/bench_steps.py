"""Benchmark: what the runner adds to every step, durable saves included.

A machine with one phase of 100 no-op `shell` steps (``argv: ["true"]``). Each run
advances a fresh environment through that phase, and the same 100 ``true`` processes
are spawned by a plain Python loop (``subprocess.run``) in the same round:

- `runner advance NAME` as a subprocess, against ``python -c "<the loop>"`` (both pay
  one interpreter start, so the difference is the runner's; its own start-up and
  machine loading are spread over the 100 steps);
- ``Runner.advance`` in-process (a ``runner.Runner`` over a FileStore, machine
  loaded once), against the loop in-process.

Per-step figures are the run's median divided by 100; the target is under 5 ms added
per step over the loop. The targets of this round: the CLI's figure within 0.5 ms of the
API's (given as the whole run divided by the steps, and, for the reader, as the cost of
100 more steps: an advance of 200 steps against one of 100, which leaves the CLI's
start out), and the API within 1.5x of the floor: ``true`` started as the process
helper starts it plus one bare durable save of the same record, per step.

The in-process runs also time, per step, the durable saves (FileStore.save), the event
appends and the program runs (ProcessSupervisor) of the same runs, and a bare "write
temp, fsync, rename, fsync folder" of the same bytes in the same folder gives the
disk's floor for one save.

For the decisions the two per-step targets wait on, the same run also gives: the
engine keeping no snapshots (``[state] snapshots = 0``) against the same floor; the
record's schema check and the state file's text inside the saves, each against the
same calls on the run's last record in a loop (warm caches: a step's program and
fsyncs leave the caches cold for the Python that follows); and the CLI's start taken
apart: ``python -c pass``, the least imports any advance needs, and every module a real
advance loads, imported by ``python -c`` with nothing run.

    python bench/bench_steps.py [--quick] [--profile]
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import (
    Command,
    Figure,
    Target,
    bench_main,
    interleaved,
    median,
    profile,
    profile_command,
    runner_argv,
)

BENCH = "steps"
STEPS = 100
PER_STEP = Target("added", 0.005)
#: The CLI's cost per step within 0.5 ms of the Python API's.
CLI_OVER_API = Target("added", 0.0005)
#: The Python API within 1.5x of the floor: the step's program run through the process
#: helper's own primitives plus one durable save of the same record.
API_OVER_FLOOR = Target("ratio", 1.5)
LOOP = "import subprocess\nfor _ in range({n}):\n    subprocess.run(['true'], check=True)\n"
#: What every `runner advance` imports whatever its code: the state machine library the
#: engine is built on and the standard modules a step's run needs.
LEAST_IMPORTS = "import transitions, subprocess, json, pathlib, logging"


def machine_yaml(steps: int = STEPS) -> str:
    lines = [
        "version: 1",
        "name: bench-steps",
        "initial: idle",
        "states:",
        "  idle: {description: Idle}",
        "  working: {description: Running the steps}",
        "  done: {description: Done}",
        "  work_failed: {description: A step failed}",
        "phases:",
        "  - name: work",
        "    from: idle",
        "    via: working",
        "    to: done",
        "    failed: work_failed",
        "    steps:",
    ]
    for i in range(steps):
        lines += [
            f"      - name: s{i:03d}",
            "        uses: shell",
            '        with: {argv: ["true"]}',
        ]
    return "\n".join(lines) + "\n"


class Tally:
    """Time spent in wrapped callables, per label, since the last reset."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def wrap(self, label: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
                self.calls[label] = self.calls.get(label, 0) + 1

        return timed


def advance_modules(work: Path, name: str) -> list[str]:
    """The modules a `runner advance NAME` in ``work`` loads beyond the interpreter's
    own start (its run is real and untimed; the names are written at its exit)."""
    script = (
        "import sys, runpy, atexit\n"
        "before = set(sys.modules)\n"
        "atexit.register(lambda: sys.__stderr__.write('\\nmodules: ' + ' '.join(sorted("
        "m for m in set(sys.modules) - before if m != '__main__'))))\n"
        f"sys.argv = ['runner', 'advance', {name!r}]\n"
        "runpy.run_module('runner', run_name='__main__', alter_sys=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=work, capture_output=True, text=True, check=True
    )
    return proc.stderr.rsplit("modules: ", 1)[1].split()


def _timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def spawn_floor() -> float:
    """``true`` started as the process helper starts a step's program (its own process
    group, stdout and stderr piped and read to the end, the exit status reaped)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["true"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    proc.communicate()
    return time.perf_counter() - start


def fsync_floor(folder: Path, data: bytes, *, sync: bool = True) -> float:
    """One bare durable replace of ``data`` in ``folder``: the disk's floor for a save
    (without ``sync``: the same file operations with no fsync)."""
    temp, final = folder / ".floor.tmp", folder / "floor.json"
    start = time.perf_counter()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if sync:
            os.fsync(dfd)
    finally:
        os.close(dfd)
    return time.perf_counter() - start


def collect(quick: bool = False, force_profile: bool = False) -> tuple[list[Figure], list[str]]:
    import logging

    from runner import Runner
    from runner.run import process
    from runner.store import files
    from runner.store.files import FileStore

    logging.getLogger("runner").setLevel(logging.ERROR)
    runs = 3 if quick else 7
    figures: list[Figure] = []
    findings: list[str] = []
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="runner-bench-steps-") as tmp:
        work = Path(tmp)
        (work / "machine.yaml").write_text(machine_yaml(), encoding="utf-8")

        class TimedStore(FileStore):
            save = tally.wrap("save", FileStore.save)
            append_event = tally.wrap("event", FileStore.append_event)

        store = TimedStore(work)
        ws = Runner(work, work / "machine.yaml", command="bench advance", store=store)
        ws.machine()  # loaded and checked once, outside the timings
        # the same engine keeping no snapshots (`[state] snapshots = 0`): what a save's
        # snapshot costs a step, measured as the product would run without it
        unkept = TimedStore(work)
        unkept.keep_snapshots = 0
        ws_unkept = Runner(work, work / "machine.yaml", command="bench advance", store=unkept)
        ws_unkept.machine()
        counter = itertools.count()
        original_call = process.ProcessSupervisor.__call__
        process.ProcessSupervisor.__call__ = tally.wrap("program", original_call)  # type: ignore[method-assign]
        # inside the saves: the record's schema check and the state file's text
        original_check, original_text = files.record_problem, files._serialize
        files.record_problem = tally.wrap("check", original_check)
        files._serialize = tally.wrap("text", original_text)
        breakdown: list[dict[str, float]] = []
        floors: list[float] = []
        step_floors: list[float] = []  # per step: spawn_floor + one bare durable save
        finished: list[bytes] = []  # the state file each timed API run left

        def fresh() -> str:
            name = f"env-{next(counter):03d}"
            ws.create(name)
            return name

        def api() -> float:
            name = fresh()
            tally.reset()
            start = time.perf_counter()
            result = ws.advance(name)
            elapsed = time.perf_counter() - start
            assert result.state == "done", result
            breakdown.append({**tally.seconds, "saves": tally.calls.get("save", 0)})
            data = (work / "data" / name / "state.json").read_bytes()
            finished.append(data)
            floors.append(median(fsync_floor(work / "data" / name, data) for _ in range(5)))
            step_floors.append(
                median(
                    spawn_floor() + fsync_floor(work / "data" / name, data) for _ in range(STEPS)
                )
            )
            return elapsed

        def api_unkept() -> float:
            name = f"unkept-{next(counter):03d}"
            ws_unkept.create(name)
            start = time.perf_counter()
            result = ws_unkept.advance(name)
            elapsed = time.perf_counter() - start
            assert result.state == "done", result
            data = (work / "data" / name / "state.json").read_bytes()
            for _ in range(STEPS):  # what follows `api` too, so both meet the same disk
                spawn_floor() + fsync_floor(work / "data" / name, data)
            return elapsed

        # the two in alternation, each first in every other round: one right after the
        # other, the second would always meet the journal the first one left
        kept_times: list[float] = []
        unkept_times: list[float] = []
        pairs = itertools.count()

        def api_pair() -> float:
            order = [(api, kept_times), (api_unkept, unkept_times)]
            if next(pairs) % 2:
                order.reverse()
            total = 0.0
            for action, into in order:
                into.append(action())
                total += into[-1]
            return total

        def api_loop() -> float:
            start = time.perf_counter()
            for _ in range(STEPS):
                subprocess.run(["true"], check=True)
            return time.perf_counter() - start

        cli = Command(runner_argv("advance", "NAME"), work)

        def prepare_cli() -> None:
            cli.argv[-1] = fresh()  # a new environment for every run, made untimed

        cli.before = prepare_cli

        cli_loop = Command([sys.executable, "-c", LOOP.format(n=STEPS)], work)
        # the least an advance's start can take: the interpreter and LEAST_IMPORTS
        cli_least = Command([sys.executable, "-c", LEAST_IMPORTS], work)
        # every module an advance loads, imported and nothing else: the start's share
        # that is imports (the runner's own modules included)
        advance_modules(work, fresh())  # the first CLI command here checks the machine
        loaded = advance_modules(work, fresh())  # as every later advance: from the cache
        imports = (
            f"import importlib\nfor m in {loaded!r}:\n    try:\n"
            "        importlib.import_module(m)\n    except ImportError:\n        pass\n"
        )
        cli_imports = Command([sys.executable, "-c", imports], work)
        cli_pass = Command([sys.executable, "-c", "pass"], work)
        # the same phase with twice the steps: the difference is what a step costs the
        # CLI once its start (interpreter, imports, machine checks) is paid
        double = work / "double"
        double.mkdir()
        (double / "machine.yaml").write_text(machine_yaml(2 * STEPS), encoding="utf-8")
        doubles = itertools.count()
        cli_double = Command(runner_argv("advance", "NAME"), double)

        def prepare_double() -> None:
            cli_double.argv[-1] = f"env-{next(doubles):03d}"
            Command(runner_argv("create", cli_double.argv[-1]), double)()

        cli_double.before = prepare_double
        # the API's own cost of 100 more steps: a record holding 200 steps' outcomes
        # costs every later save more, so the CLI's marginal is compared with this
        ws_double = Runner(double, double / "machine.yaml", command="bench advance")
        ws_double.machine()
        api_doubles = itertools.count()

        def api_double() -> float:
            name = f"api-{next(api_doubles):03d}"
            ws_double.create(name)
            start = time.perf_counter()
            result = ws_double.advance(name)
            elapsed = time.perf_counter() - start
            assert result.state == "done", result
            return elapsed

        try:
            times = interleaved(
                {
                    "cli": cli,
                    "cli_double": cli_double,
                    "cli_loop": cli_loop,
                    "cli_least": cli_least,
                    "cli_imports": cli_imports,
                    "cli_pass": cli_pass,
                    "api": api_pair,
                    "api_double": api_double,
                    "api_loop": api_loop,
                },
                runs,
            )
        finally:
            process.ProcessSupervisor.__call__ = original_call  # type: ignore[method-assign]
            files.record_problem, files._serialize = original_check, original_text
        # the pair's own times, without its warm-up round
        times["api"], times["api_unkept"] = kept_times[1:], unkept_times[1:]
        figures.append(
            Figure(
                BENCH,
                f"advance, {STEPS} `true` steps, CLI: per step",
                median(times["cli"]) / STEPS,
                baseline=median(times["cli_loop"]) / STEPS,
                baseline_name="python loop subprocess",
                target=PER_STEP,
                runs=runs,
                note=f"whole run {median(times['cli']):.2f} s vs loop "
                f"{median(times['cli_loop']):.2f} s (one interpreter start each)",
            )
        )
        api_fig = Figure(
            BENCH,
            f"advance, {STEPS} `true` steps, Python API: per step",
            median(times["api"]) / STEPS,
            baseline=median(times["api_loop"]) / STEPS,
            baseline_name="loop in-process",
            target=PER_STEP,
            runs=runs,
            note=f"whole run {median(times['api']):.2f} s vs loop "
            f"{median(times['api_loop']):.2f} s",
        )
        figures.append(api_fig)
        cli_step = median(times["cli"]) / STEPS
        marginal = (median(times["cli_double"]) - median(times["cli"])) / STEPS
        api_marginal = (median(times["api_double"]) - median(times["api"])) / STEPS
        figures += [
            Figure(
                BENCH,
                "  CLI per step (whole run / steps) against the API's",
                cli_step,
                baseline=api_fig.value,
                baseline_name="Python API per step",
                target=CLI_OVER_API,
                runs=runs,
                note="the CLI's start (interpreter, imports, machine checks) spread over the "
                f"{STEPS} steps",
            ),
            Figure(
                BENCH,
                "  CLI's start over the API's (whole run minus the API's)",
                median(times["cli"]) - median(times["api"]),
                baseline=CLI_OVER_API.limit * STEPS,
                baseline_name=f"what the target allows ({STEPS} x 0.5 ms)",
                runs=runs,
                note="the target above, as the time the CLI's start may take",
            ),
            Figure(
                BENCH,
                "  least start of any CLI advance",
                median(times["cli_least"]),
                baseline=CLI_OVER_API.limit * STEPS,
                baseline_name=f"what the target allows ({STEPS} x 0.5 ms)",
                runs=runs,
                note=f"`python -c '{LEAST_IMPORTS}'`: the interpreter "
                f"({median(times['cli_pass']) * 1000:.1f} ms for `pass`) and the modules every "
                "advance imports; above the allowance, the target needs another design "
                "(no state machine library on the run path, or a resident process)",
            ),
            Figure(
                BENCH,
                "  every module an advance loads, imported (nothing run)",
                median(times["cli_imports"]),
                baseline=median(times["cli_least"]),
                baseline_name="least start",
                runs=runs,
                note=f"the {len(loaded)} modules a real advance loads beyond the "
                "interpreter's start, imported by `python -c`: the start's share that is "
                "imports; the rest of the start is the machine check, lock, session and exit",
            ),
            Figure(
                BENCH,
                "  CLI per added step (200 vs 100 steps) against the API's",
                marginal,
                baseline=api_marginal,
                baseline_name="Python API per added step",
                target=CLI_OVER_API,
                runs=runs,
                note=f"(advance of {2 * STEPS} steps - advance of {STEPS}) / {STEPS}, each "
                "way: the start paid once is out, and both pay the larger record of the "
                "later steps; a figure, not the target's own definition",
            ),
            Figure(
                BENCH,
                "  Python API per step against the floor",
                api_fig.value,
                baseline=median(step_floors),
                baseline_name="spawn + one durable save",
                target=API_OVER_FLOOR,
                runs=len(step_floors),
                note="floor: `true` started as the process helper does (own group, pipes "
                "read, reaped) plus one bare durable replace of the same record, per step",
            ),
            Figure(
                BENCH,
                "  the same engine keeping no snapshots",
                median(times["api_unkept"]) / STEPS,
                baseline=median(step_floors),
                baseline_name="spawn + one durable save",
                runs=runs,
                note="`[state] snapshots = 0` (the default keeps 20): what a save's snapshot "
                "costs a step, for a decision on fewer snapshots; not the target",
            ),
        ]
        n = len(breakdown)
        save = median(b.get("save", 0.0) for b in breakdown) / STEPS
        event = median(b.get("event", 0.0) for b in breakdown) / STEPS
        program = median(b.get("program", 0.0) for b in breakdown) / STEPS
        rest = api_fig.value - save - event - program
        saves_per_run = int(median(b["saves"] for b in breakdown))
        check = median(b.get("check", 0.0) for b in breakdown) / STEPS
        text = median(b.get("text", 0.0) for b in breakdown) / STEPS
        # the same two on the finished run's record, called in a loop: warm caches
        document = json.loads(finished[-1])
        warm_check = median(_timed(lambda: original_check(document)) for _ in range(500))
        warm_text = median(_timed(lambda: original_text(document)) for _ in range(500))
        figures += [
            Figure(
                BENCH,
                "  of which durable saves (FileStore.save)",
                save,
                baseline=median(floors) * saves_per_run / STEPS,
                baseline_name="bare fsync+rename, same bytes",
                runs=n,
                note=f"{saves_per_run} saves per run of {STEPS} steps; baseline: the same "
                "number of bare durable replaces in the same folder",
            ),
            Figure(
                BENCH,
                "    in the saves: the record's schema check",
                check,
                baseline=warm_check * saves_per_run / STEPS,
                baseline_name="same check, finished record, warm loop",
                runs=n,
                note="the check every save makes of the record it writes; the baseline is "
                "the same number of checks of the run's last record called in a loop (warm "
                "caches): a step's program and fsyncs leave the caches cold for the Python "
                "after them",
            ),
            Figure(
                BENCH,
                "    in the saves: the state file's text",
                text,
                baseline=warm_text * saves_per_run / STEPS,
                baseline_name="same text, finished record, warm loop",
                runs=n,
            ),
            Figure(BENCH, "  of which event appends", event, runs=n),
            Figure(
                BENCH,
                "  of which running `true` (ProcessSupervisor)",
                program,
                baseline=api_fig.baseline,
                baseline_name="subprocess.run",
                runs=n,
                note="process group, stdout/stderr read line by line, run log",
            ),
            Figure(
                BENCH,
                "  of which the rest (engine, templating, checks)",
                rest,
                runs=n,
                note="per-step API figure minus the three above",
            ),
        ]
        if force_profile or figures[0].met is False:
            findings.append(profile_command(["advance", fresh()], work, top=25, warm=False))
        if force_profile or any(f.met is False for f in figures):
            name = fresh()
            findings.append(
                profile(
                    f"Runner.advance, {STEPS} steps, in-process",
                    lambda: ws.advance(name),
                    top=25,
                    sort="tottime",
                )
            )
            name2 = fresh()
            findings.append(
                profile(
                    f"Runner.advance, {STEPS} steps, in-process",
                    lambda: ws.advance(name2),
                    top=25,
                )
            )
    return figures, findings


def main(argv: list[str] | None = None) -> int:
    return bench_main("Per-step overhead (median over runs, per step)", collect, argv)


if __name__ == "__main__":
    sys.exit(main())
