"""What the benchmarks share: figures, targets, interleaved timing, tables, profiles.

A :class:`Figure` is a median over repeated runs, printed beside a baseline measured in
the same run (``python -c pass``, a bare fsync loop, a plain loop of processes, ...),
with the ratio and, where there is one, the target and whether it is met. Figures are
reports, never assertions: a missed target is printed, profiled and explained, not
raised.
"""

from __future__ import annotations

import cProfile
import io
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (str(ROOT), str(BENCH)):
    if _path not in sys.path:
        sys.path.insert(0, _path)


# --- figures and targets ----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a figure should reach. ``kind``:

    - ``max``: the median under ``limit`` (seconds, or the figure's unit);
    - ``ratio``: median / baseline under ``limit``;
    - ``added``: median - baseline under ``limit`` (seconds);
    - ``eq``: exactly ``limit`` (a count, e.g. 0 failures).

    ``also`` is a second target that must be met too (e.g. under 100 ms *and* under 4x).
    """

    kind: str
    limit: float
    also: Target | None = None

    def check(self, fig: Figure) -> bool | None:
        if self.kind == "max":
            ok: bool | None = fig.value < self.limit
        elif self.kind == "eq":
            ok = fig.value == self.limit
        elif fig.baseline is None or fig.baseline <= 0:
            ok = None
        elif self.kind == "ratio":
            ok = fig.value / fig.baseline < self.limit
        elif self.kind == "added":
            ok = fig.value - fig.baseline < self.limit
        else:
            raise ValueError(f"unknown target kind {self.kind!r}")
        if self.also is not None:
            other = self.also.check(fig)
            ok = None if ok is None or other is None else (ok and other)
        return ok

    def describe(self, unit: str) -> str:
        if self.kind == "max":
            text = f"< {fmt_value(self.limit, unit)}"
        elif self.kind == "ratio":
            text = f"< {self.limit:g}x"
        elif self.kind == "eq":
            text = f"= {self.limit:g}"
        else:
            text = f"+< {fmt_value(self.limit, 's')}"
        return text if self.also is None else f"{text} and {self.also.describe(unit)}"


@dataclass
class Figure:
    """One row of the table: ``value`` is a median (seconds unless ``unit`` says)."""

    bench: str
    name: str
    value: float
    unit: str = "s"  # "s", "%" or "" (a plain number)
    baseline: float | None = None
    baseline_name: str = ""
    target: Target | None = None
    runs: int = 0
    note: str = ""
    #: Why there is no figure (a command or a requirement is absent): "not measured".
    missing: str = ""

    @classmethod
    def not_measured(cls, bench: str, name: str, why: str, target: Target | None) -> Figure:
        return cls(bench, name, float("nan"), target=target, missing=why)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline <= 0:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.missing:
            return None
        return None if self.target is None else self.target.check(self)

    def verdict(self) -> str:
        if self.missing:
            return "not measured"
        met = self.met
        if met is None:
            return "" if self.target is None else "n/a"
        word = "met" if met else "MISSED"
        if self.target is not None and self.target.kind == "added" and self.baseline is not None:
            word += f" ({fmt_value(self.value - self.baseline, 's', signed=True)})"
        return word


def fmt_value(value: float, unit: str, *, signed: bool = False) -> str:
    sign = "+" if signed and value >= 0 else ""
    if unit == "s":
        if abs(value) >= 1.0:
            return f"{sign}{value:.2f} s"
        if abs(value) >= 0.01:
            return f"{sign}{value * 1000:.0f} ms"
        if abs(value) >= 0.0001 or value == 0:
            return f"{sign}{value * 1000:.2f} ms"
        return f"{sign}{value * 1e6:.1f} us"
    if unit == "%":
        return f"{sign}{value:.1f} %"
    return f"{sign}{value:g}"


def row(fig: Figure) -> list[str]:
    if fig.missing:
        target = "" if fig.target is None else fig.target.describe(fig.unit)
        return [fig.name, "-", "", "", target, fig.verdict(), "", fig.missing]
    ratio = fig.ratio
    baseline = ""
    if fig.baseline is not None:
        baseline = fmt_value(fig.baseline, fig.unit)
        if fig.baseline_name:
            baseline += f" ({fig.baseline_name})"
    return [
        fig.name,
        fmt_value(fig.value, fig.unit),
        baseline,
        "" if ratio is None else f"{ratio:.2f}x",
        "" if fig.target is None else fig.target.describe(fig.unit),
        fig.verdict(),
        str(fig.runs) if fig.runs else "",
        fig.note,
    ]


HEADER = ["benchmark", "median", "baseline (same run)", "ratio", "target", "verdict", "runs"]


def text_table(figures: Sequence[Figure]) -> str:
    """The figures as an aligned text table, grouped by benchmark (notes below)."""
    rows = [HEADER] + [row(f)[:-1] for f in figures]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = []
    current = None
    for index, cells in enumerate(rows):
        if index and figures[index - 1].bench != current:
            current = figures[index - 1].bench
            lines.append(f"[{current}]")
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("-" * len(lines[-1]))
    notes = [f"  {f.name}: {f.note}" for f in figures if f.note]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


def markdown_table(figures: Sequence[Figure]) -> str:
    header = ["bench", *HEADER, "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for fig in figures:
        cells = [fig.bench, *row(fig)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def print_figures(title: str, figures: Sequence[Figure]) -> None:
    print(f"\n== {title}")
    print(text_table(figures))


# --- timing -----------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def time_call(action: Callable[[], Any]) -> float:
    """Wall time of ``action()``; an action that returns a float times itself."""
    start = time.perf_counter()
    result = action()
    elapsed = time.perf_counter() - start
    return float(result) if isinstance(result, float) else elapsed


def interleaved(
    actions: Mapping[str, Callable[[], Any]], runs: int, *, warmup: int = 1
) -> dict[str, list[float]]:
    """Run every action once per round, ``runs`` rounds, rotating which goes first, so
    that drift (another process, a CPU frequency change) hits all of them alike.
    Returns the wall times (or the times the actions report) per action."""
    names = list(actions)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(warmup):
        for name in names:
            actions[name]()
    for round_ in range(runs):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_call(actions[name]))
    return times


_PYCACHE: list[str] = []


def pycache_dir() -> str:
    """A bytecode cache folder for the subprocesses of this run (removed at exit)."""
    if not _PYCACHE:
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="runner-bench-pycache-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _PYCACHE.append(folder)
    return _PYCACHE[0]


def cli_env(extra: Mapping[str, str] | None = None, *, bytecode: bool = True) -> dict[str, str]:
    """The environment of a CLI subprocess: ours, minus RUNNER_* settings, with the
    checkout first on PYTHONPATH (as tests/helpers.py does).

    With ``bytecode`` (the default) compiled modules are cached, as they are for an
    installed package, in a temporary folder (PYTHONPYCACHEPREFIX), never in the source
    tree; a shell with PYTHONDONTWRITEBYTECODE set would otherwise make every command
    compile every module of the checkout from source.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache_dir()
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    if extra:
        env.update(extra)
    return env


class Command:
    """A subprocess to time; calling it runs it once and returns its wall time. The CPU
    time (user + system) of each run is kept in ``cpu``."""

    def __init__(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str] | None = None,
        *,
        before: Callable[[], None] | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.cwd = cwd
        self.env = dict(env) if env is not None else cli_env()
        self.before = before
        self.cpu: list[float] = []

    def __call__(self) -> float:
        if self.before is not None:
            self.before()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            self.argv, cwd=self.cwd, env=self.env, capture_output=True, check=False
        )
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu.append((after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime))
        if proc.returncode != 0:
            raise SystemExit(
                f"{' '.join(self.argv)} failed ({proc.returncode}):\n"
                f"{proc.stderr.decode(errors='replace')[-3000:]}"
            )
        return elapsed


def runner_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]


def python_pass() -> list[str]:
    return [sys.executable, "-c", "pass"]


# --- profiles ---------------------------------------------------------------------------


def profile(label: str, action: Callable[[], Any], top: int = 15, sort: str = "cumulative") -> str:
    """cProfile ``action`` once; the top functions as text."""
    profiler = cProfile.Profile()
    profiler.runcall(action)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats(sort).print_stats(top)
    body = "\n".join(line for line in text.getvalue().splitlines() if line.strip())
    return tidy(f"--- profile: {label} ({sort}, top {top})\n{body[:7000]}")


def importtime(argv: Sequence[str], cwd: Path, top: int = 12) -> str:
    """Run a Python command under ``-X importtime``: the slowest top-level imports
    (cumulative) and the modules with the most import time of their own, as text."""
    argv = list(argv)
    assert argv[0] == sys.executable
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    entries: list[tuple[int, int, str]] = []  # cumulative us, self us, name (indented)
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or "cumulative" in line:
            continue
        entries.append((int(parts[1]), int(parts[0].split(":", 1)[1]), parts[2][1:]))
    top_level = sorted((e for e in entries if not e[2].startswith(" ")), reverse=True)
    own = sorted(entries, key=lambda e: e[1], reverse=True)
    total = sum(e[0] for e in top_level)
    lines = [
        f"--- python -X importtime {' '.join(argv[1:])}",
        f"all imports: {total / 1000:.1f} ms; top-level imports (cumulative):",
    ]
    lines += [f"  {cum / 1000:7.1f} ms  {name}" for cum, _, name in top_level[:top]]
    lines.append("modules with the most import time of their own:")
    lines += [f"  {own_us / 1000:7.1f} ms  {name.strip()}" for _, own_us, name in own[:top]]
    return "\n".join(lines)


# --- the machine ------------------------------------------------------------------------


def machine_description() -> dict[str, str]:
    """CPU model, cores, RAM, OS and Python: generic facts, no paths or host names."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    kernel = ".".join(platform.release().split(".")[:2])
    system = f"{platform.system()} {kernel}"
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("PRETTY_NAME="):
                    system = f"{line.split('=', 1)[1].strip().strip(chr(34))} ({system})"
                    break
    except OSError:
        pass
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count() or "?"),
        "RAM": ram or "?",
        "OS": system,
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def profile_command(args: Sequence[str], cwd: Path, top: int = 20, *, warm: bool = True) -> str:
    """cProfile ``python -m runner ARGS`` in a subprocess (imports included): the top
    functions by cumulative and by own time, as text."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="runner-bench-prof-") as tmp:
        out = Path(tmp) / "prof"
        if warm:  # once without the profiler, so that the bytecode cache is warm
            subprocess.run(runner_argv(*args), cwd=cwd, env=cli_env(), capture_output=True)
        subprocess.run(
            [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "runner", *args],
            cwd=cwd,
            env=cli_env(),
            capture_output=True,
            check=False,
        )
        parts = [f"--- profile: runner {' '.join(args)} (subprocess, imports included)"]
        for sort in ("cumulative", "tottime"):
            text = io.StringIO()
            pstats.Stats(str(out), stream=text).sort_stats(sort).print_stats(top)
            body = [line for line in text.getvalue().splitlines() if line.strip()]
            # drop the preamble up to the column header
            start = next((i for i, line in enumerate(body) if "ncalls" in line), 0)
            parts.append(f"by {sort}:")
            parts += body[start : start + top + 1]
    return tidy("\n".join(parts))


def tidy(text: str) -> str:
    """Profile text with file names shortened: the checkout's relative, site-packages and
    the standard library without their folders."""
    import re
    import sysconfig

    text = text.replace(str(ROOT) + os.sep, "")
    for key, label in (("purelib", ""), ("platlib", ""), ("stdlib", "")):
        folder = sysconfig.get_paths().get(key)
        if folder:
            text = text.replace(folder + os.sep, label)
    return re.sub(r"/\S*/(site-packages|lib/python3\.\d+)/", "", text)


def bench_main(
    title: str, collect: Callable[..., tuple[list[Figure], list[str]]], argv: list[str] | None
) -> int:
    """The command line of one benchmark module: ``--quick`` and ``--profile``."""
    import argparse

    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--quick", action="store_true", help="fewer runs (a short run)")
    parser.add_argument(
        "--profile", action="store_true", help="profile even when every target is met"
    )
    args = parser.parse_args(argv)
    figures, findings = collect(quick=args.quick, force_profile=args.profile)
    print_figures(title, figures)
    for finding in findings:
        print("\n" + finding)
    return 0


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
