"""Benchmark: loading, validating and drawing a machine of 1,000 phases.

The generated machine is a chain ``s0 → p0 (via v0, failed f0) → s1 → ... → s1000``,
each phase running 3 `shell` steps, plus a `destroy` phase from `any` (3,004 states,
1,001 phases, 3,003 steps). Each figure is the median of several runs; the
subprocess figures are compared with ``python -c pass`` measured in the same run.

    python bench/bench_machine.py [--phases N] [--runs N] [--profile]

Targets: `runner validate` under 1 s, `runner graph --format dot` under 2 s.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runner.machine.loader import load_machine  # noqa: E402
from runner.machine.statemachine import build_machine  # noqa: E402
from runner.run.registry import StepRegistry, default_registry  # noqa: E402

TARGETS = {"runner validate": 1.0, "runner graph --format dot": 2.0}


def generate(phases: int) -> str:
    """machine.yaml text of a chain of ``phases`` phases plus a destroy phase."""
    out = [
        "# yaml-language-server: $schema=schemas/machine.schema.json",
        "version: 1",
        "name: bench-chain",
        f"description: A chain of {phases} phases for the benchmark.",
        "initial: s0",
        "inputs:",
        "  type: object",
        "  properties:",
        "    target: {type: string, default: all}",
        "states:",
    ]
    for i in range(phases + 1):
        out.append(f"  s{i}: {{description: Stable state {i}}}")
    for i in range(phases):
        out.append(f"  v{i}: {{description: Running phase p{i}}}")
        out.append(
            f'  f{i}: {{description: Phase p{i} failed, recovery: "runner resume '
            '{{ env.name }}"}'
        )
    out += [
        "  destroying: {description: Destroying}",
        "  destroyed: {description: Destroyed, final: true}",
        "  destroy_failed: {description: Destroy failed}",
        "phases:",
    ]
    for i in range(phases):
        out += [
            f"  - name: p{i}",
            f"    from: s{i}",
            f"    via: v{i}",
            f"    to: s{i + 1}",
            f"    failed: f{i}",
            "    steps:",
            "      - name: prepare",
            "        uses: shell",
            f"        with: {{argv: [echo, prepare, p{i}]}}",
            "      - name: work",
            "        uses: shell",
            '        with: {argv: [make, "{{ inputs.target }}"], cwd: "{{ env.build_dir }}"}',
            "        when: \"inputs.target != 'none'\"",
            "        timeout: 10m",
            "        retry: {attempts: 2, delay: 1s}",
            "      - name: report",
            "        uses: shell",
            '        with: {argv: [echo, "done {{ phase }}"], parse: lines}',
            "        outputs: {last_phase: stdout}",
        ]
    out += [
        "  - name: destroy",
        "    from: any",
        "    via: destroying",
        "    to: destroyed",
        "    failed: destroy_failed",
        "    advance: false",
        "    steps:",
    ]
    for name in ("stop", "remove", "clean"):
        out += [
            f"      - name: {name}",
            "        uses: shell",
            f"        with: {{argv: [echo, {name}]}}",
        ]
    return "\n".join(out) + "\n"


def median_time(action: Callable[[], Any], runs: int) -> tuple[float, float]:
    """(median, min) wall time of ``action`` in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def run(argv: list[str], cwd: Path) -> Callable[[], None]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("RUNNER_MACHINE", None)

    def action() -> None:
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(
                f"{' '.join(argv)} failed ({proc.returncode}):\n"
                f"{proc.stderr.decode(errors='replace')}"
            )

    return action


class _Model:
    state = "s0"


def profile(label: str, action: Callable[[], Any], top: int = 15) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(action)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    print(f"\n--- profile: {label} (cumulative, top {top})")
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[:6000])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=1000, help="phases in the chain")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process steps")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        work = Path(tmp)
        machine_file = work / "machine.yaml"
        machine_file.write_text(generate(args.phases), encoding="utf-8")
        size_kib = machine_file.stat().st_size / 1024

        registry_s, _ = median_time(default_registry, args.runs)
        registry: StepRegistry = default_registry()
        machine = load_machine(machine_file, registry)
        steps = sum(len(p.steps) for p in machine.phases)
        py = sys.executable
        rows: list[tuple[str, float, float, bool]] = []  # label, median, min, subprocess?

        def add(label: str, action: Callable[[], Any], subprocess_: bool = False) -> None:
            med, low = median_time(action, args.runs)
            rows.append((label, med, low, subprocess_))

        rows.append(("default_registry() (entry points)", registry_s, registry_s, False))
        add("load_machine (with the registry)", lambda: load_machine(machine_file, registry))
        add("load_machine (no plugin checks)", lambda: load_machine(machine_file))
        add("statemachine.build_machine", lambda: build_machine(machine, _Model()))
        add("python -c pass", run([py, "-c", "pass"], work), True)
        add(
            "runner validate",
            run([py, "-m", "runner", "--machine", str(machine_file), "validate"], work),
            True,
        )
        add(
            "runner graph --format dot",
            run(
                [
                    py,
                    "-m",
                    "runner",
                    "--machine",
                    str(machine_file),
                    "graph",
                    "--format",
                    "dot",
                    "-o",
                    str(work / "m.dot"),
                ],
                work,
            ),
            True,
        )
        add(
            "runner validate (shipped machine)",
            run([py, "-m", "runner", "--machine", str(ROOT / "machine.yaml"), "validate"], work),
            True,
        )

        baseline = next(med for label, med, _, _ in rows if label == "python -c pass")
        print(
            f"machine: {len(machine.states)} states, {len(machine.phases)} phases, "
            f"{steps} steps, {size_kib:.0f} KiB; median of {args.runs} runs; "
            f"Python {sys.version.split()[0]}"
        )
        print()
        print(f"{'what':<38} {'median':>9} {'min':>9} {'python -c pass x':>17}  target")
        print("-" * 84)
        missed = []
        for label, med, low, is_subprocess in rows:
            ratio = f"{med / baseline:>16.1f}x" if is_subprocess else f"{'':>17}"
            target = TARGETS.get(label)
            verdict = ""
            if target is not None:
                verdict = f"< {target:.0f} s " + ("ok" if med < target else "MISSED")
                if med >= target:
                    missed.append(label)
            print(f"{label:<38} {med * 1000:>7.0f}ms {low * 1000:>7.0f}ms {ratio}  {verdict}")

        if args.profile or missed:
            profile("load_machine", lambda: load_machine(machine_file, registry))
            profile("build_machine", lambda: build_machine(machine, _Model()))
            from runner.machine.graph import to_dot

            profile("graph.to_dot", lambda: to_dot(machine))
        return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
