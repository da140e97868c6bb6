"""Small helpers shared by the tests: write a file tree, run the `runner` CLI, read what
it stored (the raw JSON of a state file, an event log)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The checkout's root: a subprocess finds `runner` and `steps` from here even when the
# package is not installed (entry points still come from the installed metadata).
ROOT = Path(__file__).resolve().parent.parent


def build_tree(root: Path, files: Mapping[str, str | bytes], *, dedent: bool = True) -> Path:
    """Write ``{relative_path: content}`` under ``root`` (folders created); return ``root``.

    Text is dedented unless ``dedent`` is false, so tests can indent inline YAML.
    """
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content) if dedent else content, encoding="utf-8")
    return root


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a CLI subprocess gets: ours, minus the runner's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


def run_cli(
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    input: str | None = None,
    python: str | None = None,
    flags: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m runner ARGS`` in ``cwd`` and return the finished process.

    ``env`` is added to (not replacing) the test process's environment; variables
    named ``RUNNER_*`` are dropped first so the caller's shell never leaks in.
    ``python`` is the interpreter to use (default: the one running the tests), with the
    interpreter options ``flags``.
    """
    return subprocess.run(
        [python or sys.executable, *flags, "-m", "runner", *(os.fspath(a) for a in args)],
        cwd=os.fspath(cwd),
        env=cli_env(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_cli_imports(
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """:func:`run_cli` under ``python -X importtime``: the finished process (its stderr
    without the import lines) and the names of the modules the command imported."""
    done = run_cli(*args, cwd=cwd, env=env, timeout=timeout, flags=("-X", "importtime"))
    lines = done.stderr.splitlines()
    imported = {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}
    done.stderr = "\n".join(line for line in lines if not line.startswith("import time:"))
    return done, imported


def read_state(work: Path, name: str = "demo") -> dict[str, Any]:
    """The stored form of environment ``name`` in the working directory ``work``: the
    JSON of ``data/<name>/state.json``, as any reader of the file sees it."""
    data: dict[str, Any] = json.loads((work / "data" / name / "state.json").read_text())
    return data


def read_events(work: Path, name: str = "demo") -> list[dict[str, Any]]:
    """The events of ``data/<name>/events.jsonl``, oldest first (blank lines skipped)."""
    lines = (work / "data" / name / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
