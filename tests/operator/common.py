"""A small machine whose `build` phase fails while the input `ok` is false (and whose
step `crash` kills its runner with SIGKILL while a file `crash` exists), and helpers to
run the CLI on it and validate its JSON documents."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from tests.helpers import ROOT, build_tree, cli_env, run_cli

MACHINE = """\
    version: 1
    name: ops
    initial: created
    inputs:
      type: object
      properties:
        ok: {type: boolean, default: false}
        note: {type: string, default: plain}
        port: {type: integer, minimum: 1, maximum: 65535}
        token:
          secret: true
          type: object
          properties: {env: {type: string}, file: {type: string}}
      additionalProperties: false
    states:
      created: {}
      building: {}
      built: {}
      build_failed: {}
      destroying: {}
      destroyed: {final: true}
      destroy_failed: {}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - {name: prepare, uses: shell, with: {argv: [sh, -c, "echo prepared >> ran.txt"]}}
          - name: crash
            uses: shell
            with: {argv: [sh, -c, "if [ -e crash ]; then rm crash; kill -9 $PPID; sleep 5; fi"]}
          - name: check
            uses: shell
            with: {argv: ["{{ 'true' if inputs.ok else 'false' }}"]}
          - {name: finish, uses: shell, with: {argv: [sh, -c, "echo finished >> ran.txt"]}}
      - name: destroy
        from: [created, built, build_failed]
        via: destroying
        to: destroyed
        failed: destroy_failed
        advance: false
        steps:
          - {name: remove, uses: shell, with: {argv: ["true"]}}
"""

SCHEMA: dict[str, Any] = json.loads((ROOT / "schemas/output.schema.json").read_text())


def workdir(tmp_path: Path, machine: str = MACHINE) -> Path:
    return build_tree(tmp_path / "work", {"machine.yaml": machine})


def cli(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=work)


def document(proc: subprocess.CompletedProcess[str], code: int, definition: str) -> dict[str, Any]:
    """The JSON document of ``proc`` (exit ``code``), valid against the output schema and
    its ``definition``."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    whole = Draft202012Validator(SCHEMA)
    assert not [e.message for e in whole.iter_errors(data)], data
    one = dict(SCHEMA)
    del one["oneOf"]
    one["$ref"] = f"#/$defs/{definition}"
    errors = [e.message for e in Draft202012Validator(one).iter_errors(data)]
    assert not errors, (definition, errors, data)
    return data


def refused(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> dict[str, Any]:
    """An error document of exit ``code`` whose message or hint has ``words``."""
    data = document(proc, code, "error")
    said = data["message"] + " " + data.get("hint", "")
    for word in words:
        assert word in said, (word, data)
    return data


@contextmanager
def holding(work: Path, name: str = "demo") -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``name``'s lock for the duration."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.store.contract_worker", f"file:{work}", "hold", name, "60"],
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def failed_in_build(work: Path, name: str = "demo", *sets: str) -> None:
    """``name`` created (``sets`` as --set) and failed in `build` at step `check`."""
    created = cli(work, "create", name, *(f"--set={s}" for s in sets))
    assert created.returncode == 0, created.stderr
    failed = cli(work, "advance", name)
    assert failed.returncode == 1, failed.stdout + failed.stderr
