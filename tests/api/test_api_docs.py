"""docs/api.md: its complete example runs and prints what the page says, and it type-checks
with `mypy --strict` (as does a small typed client), so typed use of the API works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, cli_env

DOC = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
EXAMPLE = DOC.split("## A complete example", 1)[1]
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def block(language: str) -> str:
    """The first ``language`` code block of the example section."""
    found = re.search(rf"```{language}\n(.*?)```", EXAMPLE, re.S)
    assert found, f"no {language} block in the example of docs/api.md"
    return found.group(1)


@pytest.fixture()
def example(tmp_path: Path) -> Path:
    (tmp_path / "machine.yaml").write_text(block("yaml"), encoding="utf-8")
    (tmp_path / "example.py").write_text(block("python"), encoding="utf-8")
    return tmp_path


def test_the_example_runs_and_prints_what_the_page_shows(example: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "example.py"],
        cwd=example,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""  # the library logs nowhere unless asked
    assert TIME.sub("<time>", proc.stdout) == TIME.sub("<time>", block("text"))
    assert (example / "data" / "demo" / "state.json").exists()


def test_the_example_and_a_typed_client_pass_mypy_strict(example: Path) -> None:
    client = ROOT / "tests" / "typed" / "client.py"
    env = cli_env({"MYPYPATH": str(ROOT)})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            os.fspath(example / ".mypy_cache"),
            os.fspath(example / "example.py"),
            os.fspath(client),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout
