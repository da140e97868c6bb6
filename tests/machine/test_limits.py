"""Bounded reads and bounded templates: a file too large (or not a file) and a template
that would make a value too large are refused with a message, quickly."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runner.machine.templating import MAX_OUTPUT, TemplateFailure, render_string
from tests.helpers import build_tree, run_cli

MACHINE = """\
    version: 1
    name: limits
    initial: created
    inputs:
      type: object
      properties:
        name: {type: string}
    states:
      created: {description: new}
      building: {description: building}
      built: {description: built}
      build_failed: {description: failed}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - {name: one, uses: shell, with: {argv: ["echo", "%s"]}}
"""


def test_a_machine_file_that_is_a_device_is_refused_at_once(tmp_path: Path) -> None:
    t0 = time.monotonic()
    done = run_cli("--machine", "/dev/zero", "validate", cwd=tmp_path, timeout=30)
    assert done.returncode == 2 and "not a regular file" in done.stderr, done.stderr
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize(
    "args",
    [["--machine", "pipe", "validate"], ["--machine", "pipe", "graph"],
     ["create", "demo", "--config", "pipe"]],
)  # fmt: skip
def test_a_named_pipe_given_as_a_file_is_refused_without_waiting_for_a_writer(
    tmp_path: Path, args: list[str]
) -> None:
    os.mkfifo(tmp_path / "pipe")
    done = run_cli(*args, cwd=tmp_path, timeout=30)
    assert done.returncode == 2 and "not a regular file" in done.stderr, done.stderr


def test_a_machine_file_too_large_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.write(b"# " + b"x" * (17 * 1024 * 1024) + b"\n")
    done = run_cli("--machine", str(big), "validate", cwd=tmp_path)
    assert done.returncode == 2 and "larger than the 16 MiB" in done.stderr, done.stderr


def test_a_config_file_too_large_is_refused(tmp_path: Path) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE % "hi"})
    (tmp_path / "inputs.yaml").write_text("name: " + "x" * (5 * 1024 * 1024) + "\n")
    done = run_cli("create", "demo", "--config", "inputs.yaml", cwd=tmp_path)
    assert done.returncode == 2 and "larger than the 4 MiB" in done.stderr, done.stderr
    assert not (tmp_path / "data" / "demo").exists()


def test_a_state_file_too_large_is_refused(tmp_path: Path) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE % "hi"})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    state = tmp_path / "data" / "demo" / "state.json"
    with state.open("ab") as handle:
        handle.write(b" " * (65 * 1024 * 1024))
    done = run_cli("status", "demo", cwd=tmp_path)
    assert done.returncode == 2 and "larger than the 64 MiB" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'a' * 10**10 }}",
        "x{{ 'a' * 10**10 }}",
        "{{ [1] * 10**9 }}",
        "{{ 10 ** 100000 }}",
        "{{ 'a' | center(10**10) }}",
        "{{ '%10000000000s' | format('a') }}",
        "{{ '{:>10000000000}'.format('a') }}",
        "{{ 'a'.ljust(10**10) }}",
        "{{ '%10000000000s' % 'a' }}",
        "{% for i in range(100000) %}{{ 'a' * 1000 }}{% endfor %}",
    ],
)
def test_a_template_that_would_make_a_huge_value_is_refused_quickly(template: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(TemplateFailure, match="sandbox"):
        render_string(template, {})
    assert time.monotonic() - t0 < 10


def test_ordinary_templates_still_work() -> None:
    assert render_string("{{ 'ab' * 3 }}", {}) == "ababab"
    assert render_string("{{ 2 ** 10 }}", {}) == 1024
    assert render_string("{{ '%5s' % 'a' }}", {}) == "    a"
    assert len(render_string("{{ 'a' * n }}", {"n": MAX_OUTPUT})) == MAX_OUTPUT


def test_a_huge_template_in_the_machine_fails_its_step_not_the_runner(tmp_path: Path) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE % "{{ 'a' * 10**10 }}"})
    assert run_cli("create", "demo", cwd=tmp_path, timeout=60).returncode == 0
    done = run_cli("advance", "demo", cwd=tmp_path, timeout=60)
    assert done.returncode == 1 and "template" in done.stdout + done.stderr, done.stderr
