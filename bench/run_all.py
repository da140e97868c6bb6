"""Run every benchmark and print one table of figures.

    python bench/run_all.py [--quick] [--markdown FILE] [--soak] [--only NAME,...] [--profile]

Each figure is a median over repeated runs, printed beside a baseline measured in the
same run, with the ratio, the target and whether it is met. Nothing here asserts a
time: a missed target is printed (with the profile that explains it), and the exit code
is 0 unless a benchmark could not run at all.

- ``--quick``: fewer runs and smaller contention runs (about 2 minutes instead of ~6);
- ``--markdown FILE``: also write the table, the date and the machine as Markdown. If
  FILE holds the markers ``<!-- bench-results:start -->`` and
  ``<!-- bench-results:end -->`` (docs/benchmarks.md does), only what lies between them
  is replaced;
- ``--soak``: also run bench/soak.py (1,000 phases across 20 environments by 4 workers;
  200 with ``--quick``) and report its wall time and problems;
- ``--only``: run some benchmarks (cli, steps, save, lock, scale, postgres, dashboard,
  soak). ``postgres`` and ``dashboard`` are bench/bench_postgres.py and
  bench/bench_dashboard.py: when one is not there, or what it needs is not, each of its
  targets is printed as "not measured" with the reason;
- ``--profile``: profile every benchmark, even when its targets are met.

The benchmarks are modules of this folder, each runnable on its own
(``python bench/bench_cli.py --quick``); each has ``collect(quick, force_profile)``
returning its figures and the profiles of its missed targets.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from benchlib import (
    Figure,
    Target,
    fmt_value,
    load_average,
    machine_description,
    markdown_table,
    text_table,
)

BENCHMARKS = {
    "cli": ("bench_cli", "CLI latency"),
    "steps": ("bench_steps", "Per-step overhead"),
    "save": ("bench_save", "Durable save"),
    "lock": ("bench_lock", "Locking"),
    "scale": ("bench_scale", "Scale"),
    "postgres": ("bench_postgres", "PostgreSQL backend beside files"),
    "dashboard": ("bench_dashboard", "Dashboard"),
}
#: The targets of the benchmarks that need something optional (a PostgreSQL server,
#: the extra `web` and a browser), by the names their modules give the figures: when
#: the module or what it needs is absent, each is reported as "not measured" with the
#: reason, never left out of the table.
OPTIONAL_TARGETS: dict[str, list[tuple[str, Target]]] = {
    "postgres": [
        ("per-step durable save, PostgreSQL (Unix socket)", Target("ratio", 2.0)),
        ("`runner status` on PostgreSQL", Target("ratio", 1.5)),
        ("`runner list` of 10,000 environments on PostgreSQL", Target("max", 1.0)),
        ("lock handoff between processes, PostgreSQL", Target("max", 0.1)),
    ],
    "dashboard": [
        ("state save to the browser's update (10 envs)", Target("max", 0.5)),
        ("environments page (10,000 envs): server time", Target("max", 0.300)),
    ],
}
START, END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"


def collect_soak(
    quick: bool = False, force_profile: bool = False
) -> tuple[list[Figure], list[str]]:
    """bench/soak.py through its Python API (run_soak, problems), when it is there.

    The hook: a module ``soak`` in this folder with ``run_soak(workdir, phases, workers=,
    envs=)`` returning a result with ``phases`` and ``wall_s``, and ``problems(result)``
    returning a list of strings (empty when every environment is consistent).
    """
    try:
        soak = importlib.import_module("soak")
        run_soak, problems = soak.run_soak, soak.problems
    except (ImportError, AttributeError) as exc:
        print(f"soak: skipped, bench/soak.py is not usable yet ({exc})")
        return [], []
    phases, workers, envs = (200 if quick else 1000), 4, 20
    with tempfile.TemporaryDirectory(prefix="runner-bench-soak-") as tmp:
        result = run_soak(Path(tmp), phases, workers=workers, envs=envs)
        found = list(problems(result))
        errors = list(getattr(result, "errors", []))
    figures = [
        Figure(
            "soak",
            f"soak: {phases:,} phases, {envs} envs, {workers} workers: wall",
            result.wall_s,
            runs=1,
            note=f"{result.phases / result.wall_s:.1f} phases/s; failures (by design, about "
            f"1 in 10) {getattr(result, 'failures', '?')}, resumes "
            f"{getattr(result, 'resumes', '?')}",
        ),
        Figure(
            "soak",
            "  soak: inconsistent environments afterwards",
            float(len(found)),
            unit="",
            target=Target("eq", 0),
            runs=1,
            note="; ".join(
                ["checked: state file, event log chain, lock, temp files, programs", *found[:3]]
            ),
        ),
        Figure(
            "soak",
            "  soak: errors the workers reported",
            float(len(errors)),
            unit="",
            runs=1,
            note="; ".join(" ".join(e.split()) for e in errors[:3]),
        ),
    ]
    return figures, []


def not_measured(name: str, why: str) -> list[Figure]:
    """The targets of the optional benchmark ``name``, each "not measured: ``why``"."""
    return [
        Figure.not_measured(name, label, f"not measured: {why}", target)
        for label, target in OPTIONAL_TARGETS[name]
    ]


def collect_optional(
    name: str, quick: bool, force_profile: bool
) -> tuple[list[Figure], list[str]]:
    """An optional benchmark's module, when it is there (``bench/bench_postgres.py``,
    ``bench/bench_dashboard.py``): ``collect(quick=, force_profile=)`` like the others.
    A missing module, or one that cannot measure (no PostgreSQL server to start, no
    browser or no extra `web`: it says so by raising), gives one "not measured" row per
    target, with the reason."""
    module_name = BENCHMARKS[name][0]
    try:
        module: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            return not_measured(name, f"bench/{module_name}.py needs {exc.name}"), []
        return not_measured(name, f"bench/{module_name}.py is not there"), []
    try:
        figures, found = module.collect(quick=quick, force_profile=force_profile)
    except ModuleNotFoundError as exc:
        return not_measured(name, f"bench/{module_name}.py needs {exc.name}"), []
    except (RuntimeError, SystemExit) as exc:  # what it needs is not there: it says what
        return not_measured(name, " ".join(str(exc).split())[:200]), []
    return list(figures), list(found)


def markdown(
    figures: list[Figure], args: argparse.Namespace, started: str, duration_s: float, load: str
) -> str:
    machine = machine_description()
    command = "python bench/run_all.py" + (" --quick" if args.quick else "")
    command += " --soak" if args.soak and not args.only else ""
    command += f" --only {args.only}" if args.only else ""
    lines = [
        START,
        f"Latest run: {started}, `{command}`, {duration_s / 60:.1f} minutes "
        f"(load average at the start: {load}).",
        "",
        "Machine: " + "; ".join(f"{key} {value}" for key, value in machine.items()) + ".",
        "",
        markdown_table(figures),
        "",
    ]
    missed = [f for f in figures if f.met is False]
    if missed:
        lines.append("Missed targets in this run:")
        lines.append("")
        for fig in missed:
            assert fig.target is not None
            lines.append(
                f"- {fig.name.strip()}: {fmt_value(fig.value, fig.unit)} "
                f"(target {fig.target.describe(fig.unit)})"
            )
    else:
        lines.append("Every target measured was met in this run.")
    absent = [f for f in figures if f.missing]
    if absent:
        lines += ["", "Not measured in this run:", ""]
        lines += [f"- {fig.name.strip()}: {fig.missing}" for fig in absent]
    lines += ["", END]
    return "\n".join(lines)


def write_markdown(path: Path, fragment: str) -> None:
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if START in text and END in text:
            before, rest = text.split(START, 1)
            after = rest.split(END, 1)[1]
            path.write_text(before + fragment + after, encoding="utf-8")
            return
    path.write_text(fragment + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (~2 minutes)")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the table here")
    parser.add_argument("--soak", action="store_true", help="also run bench/soak.py")
    parser.add_argument("--only", metavar="NAMES", help="comma-separated benchmarks to run")
    parser.add_argument("--profile", action="store_true", help="profile every benchmark")
    args = parser.parse_args(argv)

    chosen = list(BENCHMARKS) + (["soak"] if args.soak else [])
    if args.only:
        chosen = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [n for n in chosen if n not in BENCHMARKS and n != "soak"]
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
        args.soak = args.soak or "soak" in chosen
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load = load_average()
    begin = time.monotonic()
    figures: list[Figure] = []
    findings: list[tuple[str, str]] = []
    broken: list[str] = []
    for name in chosen:
        title = "Soak" if name == "soak" else BENCHMARKS[name][1]
        print(f"== {title} ...", flush=True)
        t0 = time.monotonic()
        try:
            if name == "soak":
                got, found = collect_soak(args.quick, args.profile)
            elif name in OPTIONAL_TARGETS:
                got, found = collect_optional(name, args.quick, args.profile)
            else:
                module: Any = importlib.import_module(BENCHMARKS[name][0])
                got, found = module.collect(quick=args.quick, force_profile=args.profile)
        except (Exception, SystemExit) as exc:  # one broken benchmark must not hide the rest
            traceback.print_exc()
            broken.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        print(f"   {len(got)} figures in {time.monotonic() - t0:.0f} s", flush=True)
        figures += got
        findings += [(title, text) for text in found]
    duration = time.monotonic() - begin

    mode = "quick" if args.quick else "full"
    print(
        f"\n== runner benchmarks, {mode} run, {started}, {duration / 60:.1f} min "
        f"(load average at start {load})"
    )
    print("machine: " + "; ".join(f"{k} {v}" for k, v in machine_description().items()))
    print(text_table(figures))
    missed = [f for f in figures if f.met is False]
    absent = [f for f in figures if f.missing]
    print(
        f"\ntargets: {sum(1 for f in figures if f.met)} met, {len(missed)} missed, "
        f"{len(absent)} not measured"
    )
    for fig in missed:
        assert fig.target is not None
        print(
            f"  MISSED {fig.name.strip()}: {fmt_value(fig.value, fig.unit)} "
            f"(target {fig.target.describe(fig.unit)})"
        )
    for fig in absent:
        print(f"  {fig.name.strip()}: {fig.missing}")
    if findings:
        print("\n== profiles (missed targets, or --profile)")
        for title, text in findings:
            print(f"\n[{title}]\n{text}")
    if broken:
        print("\nbenchmarks that could not run:")
        for line in broken:
            print(f"  {line}")
    if args.markdown:
        write_markdown(args.markdown, markdown(figures, args, started, duration, load))
        print(f"\nwrote {args.markdown}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
