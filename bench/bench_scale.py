"""Benchmark: the read paths at scale, as subprocesses against ``python -c pass``.

- `runner list` with 10,000 environments (target under 2 s). The environments are
  written through ``FileStore.create`` (valid state.json records); for the setup only,
  the store's fsyncs and its sweep of leftover folders are stubbed out in this process,
  since 10,000 durable creates would take minutes and prove nothing about `list`.
  For information: one ``FileStore.create`` (real fsyncs and sweep) in that folder of
  10,000, against one in an empty data folder.
- `runner validate` and `runner graph --format dot` of a generated machine of 1,000
  phases (bench_machine.generate: 3,004 states, 1,001 phases, 3,003 steps; targets under
  0.5 s and 2 s). They run in a folder without data/, so that no machine cache helps (the
  worst case: every run validates); for information, `graph` with the cache warm, and
  the in-process parts (bench_machine's breakdown).
- `runner history NAME --limit 50` of an environment with 100,000 events (appended
  with ``FileStore.append_event``; target under 1 s), and, for information, the full
  `runner history NAME` (all 100,000 lines).

    python bench/bench_scale.py [--quick] [--profile]
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench_machine import _Model, generate
from benchlib import (
    Command,
    Figure,
    Target,
    bench_main,
    importtime,
    interleaved,
    median,
    profile,
    profile_command,
    python_pass,
    runner_argv,
)

BENCH = "scale"
ENVS = 10_000
PHASES = 1_000
EVENTS = 100_000


def record(name: str) -> Any:
    """A new environment's record, as `runner create` makes it for the shipped machine."""
    from runner.store.record import MachineRef, Paths, Record

    stamp = "2026-01-01T00:00:00.000Z"
    return Record(
        name=name,
        state="created",
        machine=MachineRef("tracker-deploy", "sha256:" + "0" * 64),
        paths=Paths(data_dir=f"data/{name}", build_dir=f"build/{name}"),
        created_at=stamp,
        updated_at=stamp,
        inputs={"provider": "local", "ssh": {"user": "torrust", "port": 22}},
    )


@contextlib.contextmanager
def fast_setup() -> Iterator[None]:
    """No fsyncs and no leftover sweep in runner.store.files (setup only)."""
    import runner.files as durable
    import runner.store.files as fs

    saved = (durable.os.fsync, fs.fsync_dir, fs.FileStore._sweep_leftovers)
    durable.os.fsync = lambda fd: None  # type: ignore[assignment]
    fs.fsync_dir = lambda folder: None  # type: ignore[assignment]  # create's folder syncs
    fs.FileStore._sweep_leftovers = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        durable.os.fsync, fs.fsync_dir, fs.FileStore._sweep_leftovers = saved  # type: ignore[method-assign]


def event(i: int) -> dict[str, Any]:
    return {
        "timestamp": "2026-01-01T00:00:00.000Z",
        "serial": i,
        "type": "step",
        "pid": 4242,
        "host": "ci-runner-7",
        "phase": "provision",
        "step": f"step_{i % 9}",
        "status": "done",
        "duration_s": 1.234,
        "attempts": 1,
    }


def collect(quick: bool = False, force_profile: bool = False) -> tuple[list[Figure], list[str]]:
    from runner.store.files import FileStore

    runs = 3 if quick else 7
    full_runs = 3 if quick else 5
    figures: list[Figure] = []
    findings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="runner-bench-scale-") as tmp:
        work = Path(tmp) / "envs"
        work.mkdir()
        store = FileStore(work)

        # -- list with 10,000 environments ---------------------------------------------
        started = time.perf_counter()
        with fast_setup():
            for i in range(ENVS):
                store.create(record(f"env-{i:05d}"))
        setup_s = time.perf_counter() - started
        baseline = Command(python_pass(), work)
        listing = Command(runner_argv("list"), work)
        times = interleaved({"baseline": baseline, "list": listing}, runs)
        figures.append(
            Figure(
                BENCH,
                f"runner list ({ENVS:,} envs)",
                median(times["list"]),
                baseline=median(times["baseline"]),
                baseline_name="python -c pass",
                target=Target("max", 2.0),
                runs=runs,
                note=f"setup: {ENVS:,} FileStore.create in {setup_s:.1f} s (fsync and sweep "
                "stubbed)",
            )
        )
        if figures[-1].met is False or force_profile:
            findings.append(profile("FileStore.list, 10,000 envs", store.list, 20, "tottime"))

        # one real create among 10,000, against one in an empty data folder
        empty = FileStore(Path(tmp) / "empty")
        counter = iter(range(10**6))

        def create_in(target: FileStore) -> float:
            name = f"new-{next(counter):05d}"
            start = time.perf_counter()
            target.create(record(name))
            return time.perf_counter() - start

        times = interleaved(
            {"big": lambda: create_in(store), "empty": lambda: create_in(empty)}, runs
        )
        figures.append(
            Figure(
                BENCH,
                f"FileStore.create among {ENVS:,} envs",
                median(times["big"]),
                baseline=median(times["empty"]),
                baseline_name="in an empty data folder",
                runs=runs,
                note="real fsyncs; leftovers of crashed creates/deletes are swept from "
                "data/.staging only",
            )
        )

        # -- a machine of 1,000 phases -------------------------------------------------
        chain = Path(tmp) / "chain"
        chain.mkdir()
        machine_file = chain / "machine.yaml"
        machine_file.write_text(generate(PHASES), encoding="utf-8")
        validate = Command(runner_argv("--machine", str(machine_file), "validate"), chain)
        dot_args = ["--machine", str(machine_file), "graph", "--format", "dot", "-o", "m.dot"]
        graph = Command(runner_argv(*dot_args), chain)
        warm = chain / "warm"
        (warm / "data").mkdir(parents=True)
        graph_warm = Command(runner_argv(*dot_args), warm)
        baseline = Command(python_pass(), chain)
        times = interleaved(
            {"baseline": baseline, "validate": validate, "graph": graph, "warm": graph_warm},
            runs,
        )
        size = f"{PHASES:,} phases, {machine_file.stat().st_size / 1024:.0f} KiB"
        machine_figures = []
        for label, key, target in (
            (f"runner validate ({size})", "validate", Target("max", 0.5)),
            (f"runner graph --format dot ({PHASES:,} phases)", "graph", Target("max", 2.0)),
            (f"runner graph --format dot ({PHASES:,} phases), cache warm", "warm", None),
        ):
            machine_figures.append(
                Figure(
                    BENCH,
                    label,
                    median(times[key]),
                    baseline=median(times["baseline"]),
                    baseline_name="python -c pass",
                    target=target,
                    runs=runs,
                    note="" if key == "warm" else "no data/ folder: no machine cache",
                )
            )
        figures += machine_figures + machine_breakdown(machine_file, runs)
        if force_profile or any(f.met is False for f in machine_figures):
            findings += machine_profiles(machine_file)

        # -- history of 100,000 events -------------------------------------------------
        hist = Path(tmp) / "hist"
        hist.mkdir()
        hstore = FileStore(hist)
        hstore.create(record("busy"))
        started = time.perf_counter()
        for i in range(EVENTS):
            hstore.append_event("busy", event(i))
        append_s = time.perf_counter() - started
        size_mib = (hstore.root / "busy" / "events.jsonl").stat().st_size / 2**20
        baseline = Command(python_pass(), hist)
        last = Command(runner_argv("history", "busy", "--limit", "50"), hist)
        times = interleaved({"baseline": baseline, "last": last}, runs)
        figures.append(
            Figure(
                BENCH,
                f"runner history NAME --limit 50 ({EVENTS:,} events)",
                median(times["last"]),
                baseline=median(times["baseline"]),
                baseline_name="python -c pass",
                target=Target("max", 1.0),
                runs=runs,
                note=f"events.jsonl {size_mib:.0f} MiB; setup: {EVENTS:,} append_event in "
                f"{append_s:.1f} s ({append_s / EVENTS * 1e6:.0f} µs each)",
            )
        )
        full = Command(runner_argv("history", "busy"), hist)
        times = interleaved({"baseline": baseline, "full": full}, full_runs)
        figures.append(
            Figure(
                BENCH,
                f"runner history NAME, all {EVENTS:,} events",
                median(times["full"]),
                baseline=median(times["baseline"]),
                baseline_name="python -c pass",
                runs=full_runs,
                note="text output of every event to a pipe",
            )
        )
        if force_profile or figures[-2].met is False:
            findings.append(profile_command(["history", "busy", "--limit", "50"], hist))
        if force_profile:
            findings.append(importtime(runner_argv("list"), work))
    return figures, findings


def machine_breakdown(machine_file: Path, runs: int) -> list[Figure]:
    """bench_machine's in-process figures: what `validate` and `graph` spend their time on."""
    from runner.machine.graph import to_dot
    from runner.machine.loader import load_machine
    from runner.machine.statemachine import build_machine
    from runner.run.registry import default_registry

    registry = default_registry()
    machine = load_machine(machine_file, registry)
    times = interleaved(
        {
            "registry": default_registry,
            "load": lambda: load_machine(machine_file, registry),
            "load_plain": lambda: load_machine(machine_file),
            "build": lambda: build_machine(machine, _Model()),
            "dot": lambda: to_dot(machine),
        },
        runs,
    )
    rows = [
        ("  in-process: default_registry() (entry points)", "registry"),
        ("  in-process: load_machine (with plugin checks)", "load"),
        ("  in-process: load_machine (no plugin checks)", "load_plain"),
        ("  in-process: statemachine.build_machine", "build"),
        ("  in-process: graph.to_dot", "dot"),
    ]
    return [Figure(BENCH, label, median(times[key]), runs=runs) for label, key in rows]


def machine_profiles(machine_file: Path) -> list[str]:
    from runner.machine.graph import to_dot
    from runner.machine.loader import load_machine
    from runner.machine.statemachine import build_machine
    from runner.run.registry import default_registry

    registry = default_registry()
    machine = load_machine(machine_file, registry)
    return [
        profile("load_machine (1,000 phases)", lambda: load_machine(machine_file, registry), 20),
        profile(
            "load_machine (1,000 phases), own time",
            lambda: load_machine(machine_file, registry),
            20,
            "tottime",
        ),
        profile("build_machine (1,000 phases)", lambda: build_machine(machine, _Model()), 12),
        profile("graph.to_dot (1,000 phases)", lambda: to_dot(machine), 12),
    ]


def main(argv: list[str] | None = None) -> int:
    return bench_main("Scale (subprocess, median)", collect, argv)


if __name__ == "__main__":
    sys.exit(main())
