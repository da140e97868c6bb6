"""Benchmark: the per-environment lock, alone and under contention.

- Uncontended: ``with hold(store, env, ...)`` (runner.store.locking) entered and left
  in a loop (open the lock file, flock, write who holds it, clear it, unlock, close),
  against a bare loop of open + flock + unlock + close of the same file.
- One environment, 8 processes: a machine whose two phases take turns (``flip`` a → b,
  ``flop`` b → a, one ``true`` step each), so `advance` can run forever. 8 worker
  processes (Python API, lock timeout 600 s) each run 25 phases on the SAME
  environment. Every phase must succeed, in turn (the event log's transitions chain);
  the total wall time is compared with 200 x the median time of one phase run alone
  (the serial sum; target: within 1.5x).
- Waiters do not burn CPU: this process holds the lock for a while (2 s) and 7 worker
  processes wait for it; each measures its own CPU time (time.process_time: user +
  system of the process) and wall time while it waits. Target: under 5 % of a core.
  The same is reported for the waiting done in the 8-process run above.
- Eight environments, 8 processes: each worker runs 25 phases on its own environment.
  No worker may ever find its lock taken (target: 0 attempts), and the total time is
  compared with one worker alone; the work is CPU-bound (Python and process starts),
  so the ideal is the single time x max(1, workers / cores) and the target is within
  1.5x of that ideal.

    python bench/bench_lock.py [--quick] [--profile]
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import Figure, Target, bench_main, interleaved, median

BENCH = "lock"
WORKERS = 8
LOCK_TIMEOUT_S = 600.0

MACHINE = """\
version: 1
name: bench-flipflop
initial: a
states:
  a: {description: Side a}
  flipping: {description: Flipping to b}
  flip_failed: {description: Flip failed}
  b: {description: Side b}
  flopping: {description: Flopping to a}
  flop_failed: {description: Flop failed}
phases:
  - name: flip
    from: a
    via: flipping
    to: b
    failed: flip_failed
    steps:
      - {name: touch, uses: shell, with: {argv: ["true"]}}
  - name: flop
    from: b
    via: flopping
    to: a
    failed: flop_failed
    steps:
      - {name: touch, uses: shell, with: {argv: ["true"]}}
"""


def _workspace(workdir: Path, command: str) -> Any:
    from runner import Runner

    return Runner(workdir, workdir / "machine.yaml", lock_timeout=LOCK_TIMEOUT_S, command=command)


def _instrument_lock() -> dict[str, Any]:
    """Count and time (wall and CPU) the waiting for locks in this process, and note
    when each hold of a lock began and ended (``holds``: (start, end, pid)).

    The file store takes every lock through ``filelock.acquire`` (one try, or one
    bounded wait) and releases it through the lease it returns: both are wrapped."""
    from runner.store import filelock as locking

    stats: dict[str, Any] = {
        "wait_wall": 0.0,
        "wait_cpu": 0.0,
        "busy": 0.0,
        "acquires": 0.0,
        "holds": [],
    }
    acquire, try_lock = locking.acquire, locking._try_lock

    def timed_acquire(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.monotonic(), time.process_time()
        try:
            lease = acquire(*args, **kwargs)
        finally:
            stats["wait_wall"] += time.monotonic() - wall
            stats["wait_cpu"] += time.process_time() - cpu
            stats["acquires"] += 1
        if lease is not None:
            began, release = time.monotonic(), lease.release

            def noted_release() -> None:
                try:
                    release()
                finally:
                    stats["holds"].append((began, time.monotonic(), os.getpid()))

            lease.release = noted_release
        return lease

    def counted_try(*args: Any, **kwargs: Any) -> bool:
        got: bool = try_lock(*args, **kwargs)
        if not got:
            stats["busy"] += 1
        return got

    locking.acquire = timed_acquire  # type: ignore[assignment]
    locking._try_lock = counted_try  # type: ignore[assignment]
    return stats


def _phase_worker(
    workdir: str, env: str, phases: int, warm_env: str, barrier: Any, results: Any
) -> None:
    """Run ``phases`` phases with `advance` on ``env``; report times and lock waits.
    Two phases on ``warm_env`` first, so that every import and cache is warm."""
    import logging

    from runner.errors import RunnerError

    logging.getLogger("runner").setLevel(logging.CRITICAL)
    ws = _workspace(Path(workdir), f"bench worker {os.getpid()}")
    for _ in range(2):
        ws.advance(warm_env)
    stats = _instrument_lock()
    barrier.wait()
    start, cpu = time.monotonic(), time.process_time()
    succeeded, errors, per_phase = 0, [], []
    for _ in range(phases):
        began = time.monotonic()
        try:
            result = ws.advance(env)
            if result.phases and result.phases[0].status == "succeeded":
                succeeded += 1
            else:
                errors.append(f"{env}: {result.message or result.to_json()}")
        except RunnerError as exc:
            errors.append(f"{env}: {type(exc).__name__}: {exc}")
        per_phase.append(time.monotonic() - began)
    end = time.monotonic()
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    results.put(
        {
            "start": start,
            "end": end,
            "cpu": time.process_time() - cpu,
            "children_cpu": children.ru_utime + children.ru_stime,
            "succeeded": succeeded,
            "errors": errors,
            "per_phase": per_phase,
            **stats,
        }
    )


def _waiter(workdir: str, env: str, barrier: Any, results: Any) -> None:
    """Wait for the lock another process holds; report the wait's wall and CPU time."""
    import portalocker  # noqa: F401  (imported on the first lock: not part of the wait)

    from runner.store.files import FileStore
    from runner.store.locking import hold

    store = FileStore(Path(workdir))
    barrier.wait()
    time.sleep(0.05)  # let the holder's sleep start
    wall, cpu = time.monotonic(), time.process_time()
    with hold(store, env, "bench waiter", LOCK_TIMEOUT_S):
        waited, burned = time.monotonic() - wall, time.process_time() - cpu
    results.put({"wait_wall": waited, "wait_cpu": burned})


def _run_workers(
    ctx: Any, target: Any, arglists: list[tuple[Any, ...]], hold: Any = None
) -> list[dict[str, Any]]:
    """Start one process per argument tuple (a barrier and a queue are appended), let
    them go together, collect what they put."""
    barrier = ctx.Barrier(len(arglists) + (1 if hold else 0))
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, results)) for a in arglists]
    for proc in procs:
        proc.start()
    if hold is not None:
        hold(barrier)
    collected: list[dict[str, Any]] = []
    deadline = time.monotonic() + 900
    while len(collected) < len(procs) and time.monotonic() < deadline:
        try:
            collected.append(results.get(timeout=1))
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and results.empty():
                break
    for proc in procs:
        proc.join(timeout=30)
    if len(collected) < len(procs):
        raise SystemExit(f"only {len(collected)} of {len(procs)} workers reported")
    return collected


def handoffs(results: list[dict[str, Any]]) -> dict[str, float]:
    """How long the lock lay free between one hold and the next, from the holds all
    workers noted: between holds of the same process (it took the lock again at once)
    and between holds of different processes (a waiter had to notice)."""
    holds = sorted(h for r in results for h in r["holds"])
    same, other = [], []
    for (_, end, pid), (start, _, next_pid) in itertools.pairwise(holds):
        (same if pid == next_pid else other).append(max(0.0, start - end))
    return {
        "handoffs": float(len(other)),
        "other_median": median(other) if other else 0.0,
        "other_total": sum(other),
        "same_median": median(same) if same else 0.0,
        "idle_total": sum(same) + sum(other),
    }


def _chain_problems(workdir: Path, env: str, expected: int) -> list[str]:
    """Every phase succeeded, one after another: the transitions chain a → flipping → b
    → flopping → a ... and there are ``expected`` finished phases."""
    from runner.store.files import FileStore

    store = FileStore(workdir)
    events = store.read_events(env)
    problems = []
    state = "a"
    finished = 0
    for event in events:
        if event.get("type") != "transition":
            continue
        if event["from"] != state:
            problems.append(f"transition {event['from']} → {event['to']} after {state}")
        state = event["to"]
        if state in ("a", "b"):
            finished += 1
        if state.endswith("_failed"):
            problems.append(f"phase failed: {event}")
    if finished != expected:
        problems.append(f"{finished} phases finished, expected {expected}")
    record = store.load(env)
    if record.state != state:
        problems.append(f"state.json says {record.state}, the log ends in {state}")
    return problems


def collect(quick: bool = False, force_profile: bool = False) -> tuple[list[Figure], list[str]]:
    from runner.store.files import LOCK_FILE, FileStore
    from runner.store.locking import hold

    phases = 10 if quick else 25
    hold_s = 1.0 if quick else 2.0
    rounds = 10 if quick else 20
    repeats = 1 if quick else 3
    batch = 50
    cores = os.cpu_count() or 1
    ctx = multiprocessing.get_context("spawn")
    figures: list[Figure] = []
    findings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="runner-bench-lock-") as tmp:
        work = Path(tmp)
        (work / "machine.yaml").write_text(MACHINE, encoding="utf-8")
        ws = _workspace(work, "bench setup")
        names = ["shared", "solo", "waited"]
        names += [f"{kind}-{i}" for kind in ("own", "warm") for i in range(WORKERS)]
        for name in names:
            ws.create(name)
        store = FileStore(work)

        # -- uncontended -------------------------------------------------------------
        lock_path = store.root / "solo" / LOCK_FILE

        def locks() -> float:
            start = time.perf_counter()
            for _ in range(batch):
                with hold(store, "solo", "bench", 0):
                    pass
            return (time.perf_counter() - start) / batch

        def bare() -> float:
            import fcntl

            start = time.perf_counter()
            for _ in range(batch):
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return (time.perf_counter() - start) / batch

        times = interleaved({"lock": locks, "bare": bare}, rounds)
        figures.append(
            Figure(
                BENCH,
                "store lock (locking.hold) acquire+release, uncontended",
                median(times["lock"]),
                baseline=median(times["bare"]),
                baseline_name="open+flock+unlock+close",
                runs=rounds * batch,
                note="includes writing and clearing the holder record",
            )
        )

        # -- one environment alone, then 8 workers on it -----------------------------
        # one worker alone, before and after the contended runs (drift)
        def alone() -> dict[str, Any]:
            return _run_workers(ctx, _phase_worker, [(str(work), "solo", phases, "warm-0")])[0]

        solo = [alone()]
        totals, shared = [], []
        for _ in range(repeats):
            run = _run_workers(
                ctx,
                _phase_worker,
                [(str(work), "shared", phases, f"warm-{i}") for i in range(WORKERS)],
            )
            totals.append(max(r["end"] for r in run) - min(r["start"] for r in run))
            shared += run
        solo.append(alone())
        single_phase = median(t for r in solo for t in r["per_phase"])
        single_total = median(r["end"] - r["start"] for r in solo)
        succeeded = sum(r["succeeded"] for r in shared)
        errors = [e for r in shared for e in r["errors"]]
        n = WORKERS * phases
        problems = errors + _chain_problems(work, "shared", repeats * n)
        gaps = handoffs(shared[-WORKERS:])  # the last contended run
        figures.append(
            Figure(
                BENCH,
                f"{WORKERS} procs x {phases} phases, 1 env: total",
                median(totals),
                baseline=n * single_phase,
                baseline_name=f"{n} x one phase alone",
                target=Target("ratio", 1.5),
                runs=repeats,
                note=f"one phase alone: median {single_phase * 1000:.1f} ms (one worker, "
                f"{2 * phases} phases, before and after); {succeeded}/{repeats * n} phases "
                f"succeeded; lock found taken {sum(r['busy'] for r in shared):.0f} times",
            )
        )
        figures.append(
            Figure(
                BENCH,
                "  lock idle at a handoff to another process (median)",
                gaps["other_median"],
                baseline=gaps["same_median"],
                baseline_name="same process takes it again",
                runs=int(gaps["handoffs"]),
                note=f"last run: {gaps['handoffs']:.0f} handoffs between processes, lock idle "
                f"{gaps['other_total'] * 1000:.0f} ms in all at those, "
                f"{gaps['idle_total'] * 1000:.0f} ms in all between holds",
            )
        )
        figures.append(
            Figure(
                BENCH,
                f"  phases that failed or ran out of turn ({repeats * n} run)",
                float(len(problems) + (repeats * n - succeeded)),
                unit="",
                target=Target("eq", 0),
                runs=repeats,
                note="; ".join(problems[:3]),
            )
        )
        wait_wall = sum(r["wait_wall"] for r in shared)
        wait_cpu = sum(r["wait_cpu"] for r in shared)
        figures.append(
            Figure(
                BENCH,
                "  CPU of waiting workers (1 env run)",
                100 * wait_cpu / wait_wall if wait_wall else 0.0,
                unit="%",
                target=Target("max", 5.0),
                runs=1,
                note=f"{wait_cpu * 1000:.0f} ms CPU over {wait_wall:.1f} s of waiting, all workers",
            )
        )

        # -- waiters while this process holds the lock -------------------------------
        def hold_it(barrier: Any) -> None:
            with hold(store, "waited", "bench holder", 0):
                barrier.wait()
                time.sleep(hold_s)

        waiters = _run_workers(ctx, _waiter, [(str(work), "waited")] * (WORKERS - 1), hold_it)
        w_wall = sum(r["wait_wall"] for r in waiters)
        w_cpu = sum(r["wait_cpu"] for r in waiters)
        figures.append(
            Figure(
                BENCH,
                f"CPU of {WORKERS - 1} waiters, lock held {hold_s:g} s",
                100 * w_cpu / w_wall,
                unit="%",
                target=Target("max", 5.0),
                runs=len(waiters),
                note=f"{w_cpu * 1000:.1f} ms CPU over {w_wall:.1f} s of waiting "
                "(time.process_time around the acquire)",
            )
        )

        # -- eight environments, eight workers ---------------------------------------
        parallel, own = [], []
        for _ in range(repeats):
            run = _run_workers(
                ctx,
                _phase_worker,
                [(str(work), f"own-{i}", phases, f"warm-{i}") for i in range(WORKERS)],
            )
            parallel.append(max(r["end"] for r in run) - min(r["start"] for r in run))
            own += run
        ideal = max(1.0, WORKERS / cores)
        cpu_used = sum(r["cpu"] + r["children_cpu"] for r in own) / repeats
        figures.append(
            Figure(
                BENCH,
                f"{WORKERS} procs x {phases} phases, {WORKERS} envs: total",
                median(parallel),
                baseline=single_total,
                baseline_name="1 env alone",
                target=Target("ratio", 1.5 * ideal),
                runs=repeats,
                note=f"{cores} cores: {WORKERS} workers cannot finish in the time of one; the "
                f"ideal is {ideal:g}x (workers / cores) and the target 1.5x that; CPU used "
                f"{cpu_used:.1f} s per run = "
                f"{100 * cpu_used / (median(parallel) * cores):.0f} % of {cores} cores",
            )
        )
        figures.append(
            Figure(
                BENCH,
                f"  lock attempts that found the lock taken ({WORKERS} envs)",
                sum(r["busy"] for r in own),
                unit="",
                target=Target("eq", 0),
                runs=repeats,
                note=f"time in lock acquire, all workers: "
                f"{sum(r['wait_wall'] for r in own) * 1000:.1f} ms",
            )
        )
        if force_profile or any(f.met is False for f in figures):
            from runner.store import filelock as locking

            findings.append(
                "--- lock handoffs (from the holds the workers noted, last contended run)\n"
                f"handoffs between processes: {gaps['handoffs']:.0f}; the lock lay free "
                f"{gaps['other_median'] * 1000:.1f} ms (median) at each, "
                f"{gaps['other_total'] * 1000:.0f} ms in all, against "
                f"{gaps['same_median'] * 1000:.2f} ms when the releasing process takes it "
                "again.\n"
                "In the main thread a waiter waits in the kernel (woken at the release); "
                f"elsewhere it polls with a sleep from {locking.FIRST_POLL_S * 1000:g} ms "
                f"doubling up to {locking.MAX_POLL_S * 1000:g} ms (runner/store/filelock.py "
                "_wait, FIRST_POLL_S/MAX_POLL_S): a release is then noticed only at a "
                "waiter's next poll, and meanwhile the releasing process, if it has more to "
                "do, takes the lock again at once."
            )
    return figures, findings


def main(argv: list[str] | None = None) -> int:
    return bench_main("Locking (per-environment OS lock)", collect, argv)


if __name__ == "__main__":
    sys.exit(main())
