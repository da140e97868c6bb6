"""JSON has no NaN, no infinity and no key twice in one object: inputs and state files
holding them are refused, and every `--output json` document is strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import build_tree, run_cli

MACHINE = """\
    version: 1
    name: strict
    initial: created
    inputs:
      type: object
      properties:
        ratio: {type: number}
        nested: {type: object}
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
          - {name: one, uses: shell, with: {argv: ["true"]}}
"""


def _strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise AssertionError(f"{name} in a JSON document")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN"])
def test_a_non_finite_input_is_refused(tmp_path: Path, value: str) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    for args in (["--set", f"ratio={value}"], ["--set", f"nested.x={value}"]):
        done = run_cli("--output", "json", "create", "demo", *args, cwd=tmp_path)
        assert done.returncode == 2, done.stdout
        document = _strict(done.stdout)
        assert isinstance(document, dict) and "not a number JSON can hold" in document["message"]
    assert not (tmp_path / "data" / "demo").exists()


def test_a_non_finite_input_in_a_config_file_is_refused(tmp_path: Path) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE, "inputs.yaml": "ratio: .inf\n"})
    done = run_cli("create", "demo", "--config", "inputs.yaml", cwd=tmp_path)
    assert done.returncode == 2 and "not a number JSON can hold" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda text: text.replace('"outputs": {}', '"outputs": {"x": NaN}'), "NaN"),
        (lambda text: text.replace('"outputs": {}', '"outputs": {"x": Infinity}'), "Infinity"),
        (
            lambda text: text.replace('"state": "created"', '"state": "built", "state": "created"'),
            "twice",
        ),
    ],
)
def test_a_state_file_that_is_not_strict_json_is_refused(
    tmp_path: Path, damage: object, words: str
) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    state = tmp_path / "data" / "demo" / "state.json"
    broken = damage(state.read_text())  # type: ignore[operator]
    state.write_text(broken)
    for command in (["status", "demo"], ["advance", "demo"]):
        done = run_cli(*command, cwd=tmp_path)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert words in done.stderr and "Traceback" not in done.stderr
    assert state.read_text() == broken  # never rewritten
