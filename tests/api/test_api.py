"""The Python API in-process: `runner.Runner`, its typed results and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runner import Runner, struct
from runner.api.results import RunResult, StatusResult
from runner.errors import (
    EnvironmentNotFoundError,
    InputError,
    InvalidInputsError,
    InvalidNameError,
    PhaseNotAllowedError,
)
from tests.helpers import build_tree, cli_env

MACHINE = """\
    version: 1
    name: api
    initial: created
    inputs:
      type: object
      properties:
        greeting: {type: string, default: hello}
        ssh:
          type: object
          properties:
            port: {type: integer, default: 22}
            user: {type: string, default: root}
    states:
      created: {}
      building: {}
      built: {}
      build_failed: {}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - {name: one, uses: shell, with: {argv: ["true"]}}
          - {name: two, uses: shell, with: {argv: [sh, -c, "test ! -e broken"]}}
"""


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    return build_tree(tmp_path, {"machine.yaml": MACHINE})


def test_import_runner_stays_cheap_and_exports_runner() -> None:
    code = (
        "import sys, runner\n"
        "assert 'runner.api.runner' not in sys.modules\n"
        "assert runner.Runner.__name__ == 'Runner' and runner.__version__\n"
        "assert 'runner.api.runner' in sys.modules\n"
        "try:\n    runner.Nothing\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit(1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True)
    assert proc.returncode == 0, proc.stderr


def test_inputs_config_then_mapping_then_sets(work: Path) -> None:
    (work / "inputs.yaml").write_text("greeting: from-file\nssh: {port: 2200, user: admin}\n")
    created = Runner(work).create(
        "demo", inputs={"ssh": {"port": 2222}}, config=work / "inputs.yaml", sets=["ssh.user=me"]
    )
    assert created.inputs == {"greeting": "from-file", "ssh": {"port": 2222, "user": "me"}}
    assert created.paths.data_dir == "data/demo"
    stored = json.loads((work / "data/demo/state.json").read_text())
    assert stored["inputs"] == created.inputs


@pytest.mark.parametrize(
    "inputs",
    [{"greeting": 3}, {"ssh": {"port": "x"}}, {"greeting": Path("x")}, ["greeting"]],
    ids=["wrong type", "nested wrong type", "not JSON", "not a mapping"],
)
def test_bad_inputs_are_refused(work: Path, inputs: Any) -> None:
    with pytest.raises(InvalidInputsError) as caught:
        Runner(work).create("demo", inputs=inputs)
    assert caught.value.environment == "demo"
    assert not (work / "data" / "demo").exists()


def test_errors_name_the_environment(work: Path) -> None:
    runner = Runner(work)
    with pytest.raises(EnvironmentNotFoundError) as missing:
        runner.status("nosuch")
    assert missing.value.environment == "nosuch"
    assert missing.value.to_json()["environment"] == "nosuch"
    assert missing.value.to_json()["api_version"] == 1
    with pytest.raises(InvalidNameError):
        runner.advance("Bad/Name")
    with pytest.raises(InputError, match="does not exist"):
        Runner(work / "nowhere")


def test_a_run_with_progress_and_typed_results(work: Path) -> None:
    calls: list[tuple[Any, ...]] = []

    class Recorder:
        def phase_started(self, env: str, phase: str, total: int) -> None:
            calls.append(("phase_started", env, phase, total))

        def step_started(self, index: int, total: int, step: str) -> None:
            calls.append(("step_started", index, step))

        def step_finished(
            self,
            index: int,
            total: int,
            step: str,
            status: str,
            duration_s: float,
            detail: str = "",
        ) -> None:
            calls.append(("step_finished", index, step, status))

        def output_line(self, step: str, line: str) -> None:
            pass

        def phase_finished(self, phase: str, status: str, state: str) -> None:
            calls.append(("phase_finished", phase, status, state))

    runner = Runner(work, progress=Recorder())
    runner.create("demo")
    (work / "broken").write_text("")
    failed = runner.advance("demo")
    assert isinstance(failed, RunResult) and failed.failed and failed.exit_code == 1
    assert failed.failure is not None and failed.failure.step == "two"
    assert failed.phases[0].failure == failed.failure
    assert calls[0] == ("phase_started", "demo", "build", 2)
    assert calls[-1] == ("phase_finished", "build", "failed", "build_failed")
    with pytest.raises(AttributeError):  # frozen, as a frozen dataclass
        failed.state = "built"  # type: ignore[misc]

    status = runner.status("demo")
    assert isinstance(status, StatusResult) and status.failure == failed.failure
    assert status.to_json()["failure"]["step"] == "two"
    with pytest.raises(PhaseNotAllowedError) as refused:
        runner.advance("demo")
    assert refused.value.environment == "demo" and refused.value.exit_code == 4

    (work / "broken").unlink()
    done = runner.resume("demo")
    assert (done.state, done.failed, done.exit_code) == ("built", False, 0)
    assert [s.status for s in done.phases[0].steps] == ["already_done", "done"]
    assert [e.environment for e in runner.list().environments] == ["demo"]
    assert runner.history("demo", limit=1).events[0]["to"] == "built"
    drawing = runner.graph("dot", env="demo")
    assert drawing.state == "built" and drawing.data.decode() == drawing.graph
    with pytest.raises(InputError, match="unknown graph format"):
        runner.graph("gif")


def test_results_hold_no_stored_record(work: Path) -> None:
    runner = Runner(work)
    created = runner.create("demo", inputs={"ssh": {"port": 2222}})
    status = runner.status("demo")
    for result in (created, status):
        for field in struct.fields(result):
            value = getattr(result, field.name)
            assert not (isinstance(value, dict) and "serial" in value), field.name
