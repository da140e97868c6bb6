"""`runner graph`: Mermaid, DOT and Graphviz output of the machine."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from runner.machine.graph import to_dot, to_mermaid
from runner.machine.loader import load_machine
from runner.machine.model import MachineDef
from tests.helpers import ROOT, build_tree, run_cli

SHIPPED = ROOT / "machine.yaml"

MACHINE = """\
version: 1
name: graph-demo
initial: new
states:
  new: {}
  building: {}
  built: {}
  build_failed: {}
  checking: {}
  checked: {}
  check_failed: {}
  removing: {}
  removed: {final: true}
  remove_failed: {}
phases:
  - name: build
    from: new
    via: building
    to: built
    failed: build_failed
    steps: [{name: one, uses: shell, with: {argv: ["true"]}}]
  - name: check
    from: [built, checked]
    via: checking
    to: checked
    failed: check_failed
    advance: false
    steps: []
  - name: remove
    from: any
    via: removing
    to: removed
    failed: remove_failed
    advance: false
    steps: []
"""

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")


@pytest.fixture(scope="module")
def shipped() -> MachineDef:
    return load_machine(SHIPPED)


def mermaid_edges(text: str) -> set[tuple[str, str, str]]:
    return {(m[1], m[2], m[3]) for m in re.finditer(r"^\s+(\S+) --> (\S+): (.+)$", text, re.M)}


def mermaid_classes(text: str) -> dict[str, set[str]]:
    return {m[2]: set(m[1].split(",")) for m in re.finditer(r"^\s+class (\S+) (\w+)$", text, re.M)}


# --- Mermaid -------------------------------------------------------------------------


def test_mermaid_is_the_default_and_goes_to_stdout(tmp_path: Path, shipped: MachineDef) -> None:
    proc = run_cli("--machine", SHIPPED, "graph", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("stateDiagram-v2\n")
    assert "    [*] --> created" in text
    assert "    destroyed --> [*]" in text
    for state in shipped.states:
        assert re.search(rf"\b{state}\b", text), state
    edges = mermaid_edges(text)
    for phase in shipped.phases:
        for source in phase.sources:
            assert (source, phase.via, phase.name) in edges
        assert (phase.via, phase.to, phase.name) in edges
        assert (phase.via, phase.failed, f"{phase.name} failed") in edges
        assert (phase.failed, phase.via, f"resume {phase.name}") in edges
    classes = mermaid_classes(text)
    assert classes["intermediate"] == {
        "provisioning",
        "configuring",
        "releasing",
        "starting",
        "registering",
        "restarting",
        "redeploying",
        "destroying",
    }
    assert classes["failed"] == {
        "provision_failed",
        "configure_failed",
        "release_failed",
        "run_failed",
        "register_failed",
        "restart_failed",
        "redeploy_failed",
        "destroy_failed",
    }
    assert classes["final"] == {"destroyed"}
    for kind in ("intermediate", "failed", "final"):
        assert f"classDef {kind} " in text
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_mermaid_of_a_small_machine(work: Path) -> None:
    proc = run_cli("graph", cwd=work)  # machine.yaml of the working directory
    assert proc.returncode == 0, proc.stderr
    edges = mermaid_edges(proc.stdout)
    assert ("new", "building", "build") in edges
    assert ("built", "checking", "check") in edges and ("checked", "checking", "check") in edges
    # `from: any`: every non-final state but the phase's own via state
    removers = {src for src, dst, label in edges if dst == "removing" and label == "remove"}
    assert removers == {
        "new",
        "building",
        "built",
        "build_failed",
        "checking",
        "checked",
        "check_failed",
        "remove_failed",
    }


def test_current_state_is_marked(tmp_path: Path) -> None:
    machine = load_machine(build_tree(tmp_path, {"machine.yaml": MACHINE}) / "machine.yaml")
    assert "    class built current" in to_mermaid(machine, current="built")
    assert "current" not in to_mermaid(machine).split("classDef current")[1]
    dot = to_dot(machine, current="built")
    assert re.search(r'"built" \[label="built\s+\(current\)"', dot)
    assert "(current)" not in to_dot(machine)


def test_the_graph_of_an_environment_marks_its_state(work: Path) -> None:
    assert run_cli("create", "demo", cwd=work).returncode == 0
    proc = run_cli("graph", "--env", "demo", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "    class new current" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_graph_json_output(tmp_path: Path) -> None:
    proc = run_cli("--output", "json", "--machine", SHIPPED, "graph", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["format"] == "mermaid"
    assert data["graph"].startswith("stateDiagram-v2")


# --- DOT and Graphviz ----------------------------------------------------------------


def test_dot_draws_a_phase_from_any_state_once(shipped: MachineDef) -> None:
    """`destroy` (`from: any`) starts from one "any non-final state" node, not from each
    of the 21 states: the drawing stays readable; the other phases keep their edges."""
    dot = to_dot(shipped)
    into_destroying = re.findall(r'^\s+"(\S+)" -> "destroying" \[label="destroy"', dot, re.M)
    assert into_destroying == ["__any_destroy"]
    assert '"__any_destroy" [label="any non-final state"' in dot
    assert '"running" -> "restarting" [label="restart"' in dot
    assert '"run_failed" -> "restarting" [label="restart"' in dot


@needs_dot
def test_dot_output_is_accepted_by_graphviz(tmp_path: Path, shipped: MachineDef) -> None:
    proc = run_cli("--machine", SHIPPED, "graph", "--format", "dot", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('digraph "tracker-deploy" {')
    for phase in shipped.phases:
        assert f'label="{phase.name}"' in proc.stdout
        assert f'label="{phase.name} failed"' in proc.stdout
    drawn = subprocess.run(
        ["dot", "-Tsvg"], input=proc.stdout, capture_output=True, text=True, check=False, timeout=60
    )
    assert drawn.returncode == 0, drawn.stderr
    assert "<svg" in drawn.stdout
    for state in shipped.states:
        assert f"<title>{state}</title>" in drawn.stdout


@needs_dot
def test_dot_of_the_small_machine_is_accepted_by_graphviz(work: Path) -> None:
    proc = run_cli("graph", "-f", "dot", "-o", "m.dot", cwd=work)
    assert proc.returncode == 0, proc.stderr
    drawn = subprocess.run(
        ["dot", "-Tsvg", "m.dot"], cwd=work, capture_output=True, check=False, timeout=60
    )
    assert drawn.returncode == 0, drawn.stderr


@needs_dot
def test_svg_is_written_to_a_file(tmp_path: Path) -> None:
    proc = run_cli(
        "--machine", SHIPPED, "graph", "--format", "svg", "-o", "out/machine.svg", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    svg = tmp_path / "out" / "machine.svg"
    assert f"wrote {svg} (svg," in proc.stdout
    text = svg.read_text(encoding="utf-8")
    assert "<svg" in text and "</svg>" in text
    assert "provision_failed" in text


@needs_dot
def test_png_is_written_to_a_file(tmp_path: Path) -> None:
    proc = run_cli(
        "--output",
        "json",
        "--machine",
        SHIPPED,
        "graph",
        "--format",
        "png",
        "-o",
        "machine.png",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    png = tmp_path / "machine.png"
    assert data == {
        "api_version": 1,
        "format": "png",
        "environment": None,
        "file": str(png),
        "bytes": png.stat().st_size,
    }
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_svg_without_graphviz_says_how_to_install_it(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    # the interpreter is run by its absolute path; PATH holds no `dot`
    env = {"PATH": str(empty)}
    proc = run_cli(
        "--machine", SHIPPED, "graph", "--format", "svg", "-o", "m.svg", cwd=work, env=env
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Graphviz" in proc.stderr and "`dot`" in proc.stderr
    assert "install Graphviz" in proc.stderr and "apt-get install graphviz" in proc.stderr
    assert "--format mermaid" in proc.stderr
    assert not (work / "m.svg").exists()
    # the text formats need no Graphviz
    for fmt in ("mermaid", "dot"):
        assert run_cli("--machine", SHIPPED, "graph", "-f", fmt, cwd=work, env=env).returncode == 0


def test_broken_machine_makes_graph_fail(work: Path) -> None:
    machine = work / "machine.yaml"
    machine.write_text(MACHINE.replace("to: built", "to: biult"), encoding="utf-8")
    proc = run_cli("graph", cwd=work)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"{machine}:19:9: state 'biult' is not declared (did you mean 'built'?)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_format_is_refused(work: Path) -> None:
    proc = run_cli("graph", "--format", "jpeg", cwd=work)
    assert proc.returncode == 2
    assert "jpeg" in proc.stderr
