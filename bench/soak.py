"""Soak: worker processes run phases across many environments at once.

Four workers (processes, each with its own FileStore and real OS locks) draw
environments at random from twenty and run `advance` on them until the requested
number of phases has started. The machine cycles forever (``idle → work → busy →
rest → idle``) with `shell` steps; one step counts its runs in a per-environment file
and fails every tenth time, so about a tenth of the phases fail. A worker that meets a
failed environment resumes it (the count has moved on, so the step passes), and once
the workers are done every environment still failed is resumed. Then every
environment is checked: its state file loads, its event log's transitions chain from
the initial state to the stored state, nobody holds its lock and it can be locked at
once, and no step's program is left running.

    python bench/soak.py [--phases 1000] [--workers 4] [--envs 20] [--seed N]

The test suite runs the same soak smaller (tests/api/test_soak.py, `RUNNER_SOAK_PHASES`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import random
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

INITIAL = "idle"
FAIL_EVERY = 10
LOCK_TIMEOUT_S = 60.0

# The step that fails every tenth run: $0 is a marker that names this soak (so that
# leftover programs can be found), $1 the environment's build folder.
TICK = (
    'mkdir -p "$1"; n=$(cat "$1/count" 2>/dev/null || echo 0); n=$((n + 1)); '
    'echo $n > "$1/count"; test $((n % ' + str(FAIL_EVERY) + ")) -ne 0"
)


def machine_yaml(marker: str) -> str:
    """The soak's machine: two phases that take turns forever."""

    def step(name: str, script: str) -> str:
        return (
            f"      - name: {name}\n"
            "        uses: shell\n"
            f"        with: {{argv: [sh, -c, '{script}', {marker}, "
            '"{{ env.build_dir }}"]}\n'
        )

    return (
        "version: 1\n"
        "name: soak\n"
        f"initial: {INITIAL}\n"
        "states:\n"
        "  idle: {description: Idle}\n"
        "  working: {description: Working}\n"
        "  busy: {description: Busy}\n"
        "  work_failed: {description: Work failed}\n"
        "  resting: {description: Resting}\n"
        "  rest_failed: {description: Rest failed}\n"
        "phases:\n"
        "  - name: work\n"
        "    from: idle\n"
        "    via: working\n"
        "    to: busy\n"
        "    failed: work_failed\n"
        "    steps:\n"
        + step("prepare", 'echo prepare "$1"')
        + step("tick", TICK)
        + step("finish", 'echo finish "$1"')
        + "  - name: rest\n"
        "    from: busy\n"
        "    via: resting\n"
        "    to: idle\n"
        "    failed: rest_failed\n"
        "    steps:\n" + step("tick", TICK)
    )


@dataclass
class WorkerStats:
    phases: int = 0
    failures: int = 0
    resumes: int = 0
    contended: int = 0  # environments found locked by another worker when picked
    errors: list[str] = field(default_factory=list)


def _workspace(workdir: Path, command: str) -> Any:
    from runner import Runner

    return Runner(workdir, workdir / "machine.yaml", lock_timeout=LOCK_TIMEOUT_S, command=command)


def _worker(
    number: int,
    workdir: str,
    names: list[str],
    left: Any,
    seed: int,
    results: Any,
    start: Any,
) -> None:
    """Run phases on random environments until ``left`` (a shared counter) is used up."""
    import logging

    from runner.errors import PhaseNotAllowedError, RunnerError

    logging.getLogger("runner").setLevel(logging.CRITICAL)
    ws = _workspace(Path(workdir), f"soak worker {number}")
    rng = random.Random(seed)
    stats = WorkerStats()
    store = ws.store
    ws.machine()  # loaded before the start, so that all workers start together
    start.wait()
    while True:
        with left.get_lock():
            if left.value <= 0:
                break
            left.value -= 1
        name = rng.choice(names)
        if store.lock_holder(name) is not None:
            stats.contended += 1  # advance waits for it below
        try:
            for _attempt in range(3):
                try:
                    result = ws.advance(name)
                except PhaseNotAllowedError:  # failed earlier (by anyone): resume it first
                    try:
                        resumed = ws.resume(name)
                    except PhaseNotAllowedError:
                        continue  # another worker resumed it between the two commands
                    stats.resumes += 1
                    if resumed.failed:
                        stats.failures += 1
                    continue
                stats.phases += 1
                if result.failed:
                    stats.failures += 1
                break
            else:
                stats.errors.append(f"{name}: could not start a phase in 3 attempts")
        except RunnerError as exc:
            stats.errors.append(f"{name}: {type(exc).__name__}: {exc}")
    results.put((number, stats))


@dataclass
class SoakResult:
    workdir: Path
    names: list[str]
    marker: str
    phases: int
    failures: int
    resumes: int
    contended: int
    wall_s: float
    errors: list[str]


def run_soak(
    workdir: Path, phases: int, *, workers: int = 4, envs: int = 20, seed: int = 0
) -> SoakResult:
    """Create ``envs`` environments in ``workdir`` and run ``phases`` phases on them."""
    marker = f"soak-{secrets.token_hex(6)}"
    (workdir / "machine.yaml").write_text(machine_yaml(marker))
    ws = _workspace(workdir, "soak setup")
    names = [f"env-{i:02d}" for i in range(envs)]
    for index, name in enumerate(names):
        ws.create(name)
        # counts start at different places, so that every tenth phase fails overall
        build = workdir / "build" / name
        build.mkdir(parents=True)
        (build / "count").write_text(f"{index % FAIL_EVERY}\n")
    context = multiprocessing.get_context("spawn")
    left = context.Value("i", phases)
    results = context.Queue()
    start = context.Barrier(workers)
    procs = [
        context.Process(
            target=_worker,
            args=(n, str(workdir), names, left, seed * 1000 + n, results, start),
        )
        for n in range(workers)
    ]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    collected: list[tuple[int, WorkerStats]] = []
    deadline = time.monotonic() + 3600
    while len(collected) < len(procs) and time.monotonic() < deadline:
        try:
            collected.append(results.get(timeout=1))
        except queue.Empty:
            if not any(proc.is_alive() for proc in procs) and results.empty():
                break
    for proc in procs:
        proc.join(timeout=60)
    wall = time.monotonic() - started
    totals = WorkerStats()
    for proc in procs:
        if proc.exitcode != 0:
            totals.errors.append(f"worker pid {proc.pid} ended with exit code {proc.exitcode}")
    for _number, stats in collected:
        totals.phases += stats.phases
        totals.failures += stats.failures
        totals.resumes += stats.resumes
        totals.contended += stats.contended
        totals.errors += stats.errors
    # what the workers left failed is resumed now
    from runner.store.files import FileStore

    store = FileStore(workdir)
    for name in names:
        if store.load(name).state.endswith("_failed"):
            result = ws.resume(name)
            totals.resumes += 1
            if result.failed:
                totals.failures += 1
    return SoakResult(
        workdir,
        names,
        marker,
        totals.phases,
        totals.failures,
        totals.resumes,
        totals.contended,
        wall,
        totals.errors,
    )


def leftover_programs(marker: str) -> list[str]:
    """Command lines of running processes that carry this soak's marker."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as handle:
                zombie = handle.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if not zombie and marker.encode() in argv:
            found.append(" ".join(a.decode(errors="replace") for a in argv))
    return found


def problems(result: SoakResult) -> list[str]:
    """Everything wrong with the environments after a soak (an empty list: all good)."""
    from runner.errors import RunnerError
    from runner.store.files import FileStore
    from runner.store.locking import hold

    store = FileStore(result.workdir)
    found: list[str] = []
    for name in result.names:
        try:
            record = store.load(name)
        except RunnerError as exc:
            found.append(f"{name}: state file does not load: {exc}")
            continue
        events = store.read_events(name)
        if not events or events[0].get("type") != "created":
            found.append(f"{name}: the event log does not start with its creation")
            continue
        state = events[0]["to"]
        for event in events[1:]:
            if event.get("type") != "transition":
                continue
            if event["from"] != state:
                found.append(f"{name}: transition {event['from']} → {event['to']} after {state}")
            state = event["to"]
        if state != record.state:
            found.append(f"{name}: the event log ends in {state}, state.json says {record.state}")
        if record.state not in (INITIAL, "busy"):
            found.append(f"{name}: left in {record.state}")
        if store.lock_holder(name) is not None:
            found.append(f"{name}: lock still held by {store.lock_holder(name)}")
        try:
            with hold(store, name, "soak check", 0):
                pass
        except RunnerError as exc:
            found.append(f"{name}: cannot be locked at once: {exc}")
        folder = store.root / name
        temps = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
        if temps:
            found.append(f"{name}: temp files left: {temps}")
    leftovers = leftover_programs(result.marker)
    if leftovers:
        found.append(f"step programs still running: {leftovers}")
    if multiprocessing.active_children():
        found.append(f"workers still running: {multiprocessing.active_children()}")
    return found


def transitions_total(result: SoakResult) -> int:
    from runner.store.files import FileStore

    store = FileStore(result.workdir)
    return sum(
        1 for name in result.names for e in store.read_events(name) if e["type"] == "transition"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--envs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runner-soak-") as folder:
        result = run_soak(
            Path(folder), args.phases, workers=args.workers, envs=args.envs, seed=args.seed
        )
        found = problems(result) + result.errors
        print(f"soak: {args.workers} workers, {args.envs} environments, {result.phases} phases")
        print(f"  wall time      {result.wall_s:8.2f} s")
        print(f"  phases/s       {result.phases / result.wall_s:8.1f}")
        print(f"  failures       {result.failures:8d}")
        print(f"  resumes        {result.resumes:8d}")
        print(f"  lock waits     {result.contended:8d}   (environment held by another worker)")
        print(f"  transitions    {transitions_total(result):8d}")
        print(f"  problems       {len(found):8d}")
        for problem in found:
            print(f"    {problem}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
