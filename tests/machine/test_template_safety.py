"""Templates render in a sandbox, and the template step stays inside its folders.

A template in machine.yaml (`with:`, `when:`) or in a template file cannot reach
Python internals (the sandbox refuses: the step fails with kind `template`, nothing
runs); a template file cannot include files outside its folder; a template source
outside the machine's folder and the working directory, or a target outside the
working directory, is refused with kind `configuration` and nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runner import Runner
from runner.store.files import FileStore
from runner.store.record import Record
from tests.helpers import build_tree, run_cli

ESCAPES = {
    "mro-subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler-globals": "{{ cycler.__init__.__globals__ }}",
    "self-init": "{{ self.__init__ }}",
    "lipsum-globals": "{{ lipsum.__globals__ }}",
    "os-system": "{{ lipsum.__globals__.os.system('touch pwned') }}",
    "format-string": "{{ '{0.__class__.__mro__}'.format('') }}",
    "attr-filter": "{{ ('a' | attr('__class__')).__mro__ }}",
    "joiner-init": "{{ joiner.__init__.__globals__.__builtins__.open('/etc/hostname').read() }}",
}

MACHINE = """\
version: 1
name: sandbox
initial: created
inputs:
  type: object
  properties:
    src: {{type: string, default: tpl}}
    dst: {{type: string, default: "build/out"}}
states:
  created: {{}}
  building: {{}}
  built: {{}}
  build_failed: {{}}
phases:
  - name: build
    from: created
    via: building
    to: built
    failed: build_failed
    steps:
{steps}
"""


def step_with(payload: str) -> str:
    return (
        "      - name: poke\n"
        "        uses: shell\n"
        f"        with: {{argv: [sh, -c, {json.dumps('touch ran; echo ' + payload)}]}}\n"
    )


def step_when(payload: str) -> str:
    return (
        "      - name: poke\n"
        "        uses: shell\n"
        f"        when: {json.dumps(payload)}\n"
        "        with: {argv: [touch, ran]}\n"
    )


TEMPLATE_STEP = (
    "      - name: render\n"
    "        uses: template\n"
    '        with: {source: "{{ inputs.src }}", target: "{{ inputs.dst }}"}\n'
    "      - name: after\n"
    "        uses: shell\n"
    "        with: {argv: [touch, ran]}\n"
)


def workspace(work: Path, machine: Path | None = None) -> Runner:
    return Runner(work, machine or work / "machine.yaml", command="test")


def advance(work: Path, sets: list[str] | None = None, machine: Path | None = None) -> Record:
    """Create `demo` and advance it in-process; the stored record afterwards."""
    ws = workspace(work, machine)
    ws.create("demo", sets=sets or [])
    ws.advance("demo")
    return FileStore(work).load("demo")


def assert_refused_by_the_sandbox(record: Record, work: Path) -> None:
    assert record.state == "build_failed"
    failure = record.failure
    assert failure.kind == "template", failure
    assert "sandbox" in failure.summary and "unsafe" in failure.summary, failure
    assert not (work / "ran").exists()  # nothing after the refusal ran
    assert not (work / "pwned").exists()


@pytest.mark.parametrize("where", ["with", "when"])
@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_machine_templates_cannot_reach_python_internals(
    tmp_path: Path, name: str, where: str
) -> None:
    step = (step_with if where == "with" else step_when)(ESCAPES[name])
    build_tree(tmp_path, {"machine.yaml": MACHINE.format(steps=step)})
    assert_refused_by_the_sandbox(advance(tmp_path), tmp_path)


def test_the_refusal_through_the_cli(tmp_path: Path) -> None:
    step = step_with(ESCAPES["os-system"])
    build_tree(tmp_path, {"machine.yaml": MACHINE.format(steps=step)})
    assert run_cli("validate", cwd=tmp_path).returncode == 0  # it parses: a render error
    run_cli("create", "demo", cwd=tmp_path)
    proc = run_cli("advance", "demo", cwd=tmp_path)
    assert proc.returncode == 1
    assert "(template)" in proc.stdout and "sandbox" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "ran").exists()


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_template_files_cannot_reach_python_internals(tmp_path: Path, name: str) -> None:
    build_tree(
        tmp_path,
        {
            "machine.yaml": MACHINE.format(steps=TEMPLATE_STEP),
            "tpl/ok.txt.j2": "fine {{ env.name }}\n",
            "tpl/zz-evil.txt.j2": f"before\n{ESCAPES[name]}\nafter\n",
        },
    )
    record = advance(tmp_path)
    assert_refused_by_the_sandbox(record, tmp_path)
    assert "zz-evil.txt.j2" in record.failure.summary
    assert not (tmp_path / "build/out/zz-evil.txt").exists()


SECRET = "TOP-SECRET-c9f1e2"


@pytest.mark.parametrize(
    "include",
    [
        "{% include '/etc/passwd' %}",
        "{% include '../../secret.txt' %}",
        "{% include '../secret.txt' %}",
        "{% import '../secret.txt' as s %}",
        "{% extends '/etc/hostname' %}",
        "{% include inputs.dst ~ '/../../secret.txt' %}",
    ],
    ids=["absolute", "dotdot-2", "dotdot-1", "import", "extends", "computed"],
)
def test_template_files_only_see_their_folder(tmp_path: Path, include: str) -> None:
    work = tmp_path / "work"
    build_tree(tmp_path, {"secret.txt": SECRET, "work/secret.txt": SECRET})
    build_tree(
        work,
        {
            "machine.yaml": MACHINE.format(steps=TEMPLATE_STEP),
            "tpl/nested/peek.txt.j2": f"peek: {include}\n",
        },
    )
    record = advance(work)
    assert record.state == "build_failed"
    assert record.failure.kind == "template", record.failure
    assert "not found" in record.failure.summary
    assert not (work / "ran").exists()
    for path in (work / "build").rglob("*") if (work / "build").exists() else []:
        assert not path.is_file() or SECRET not in path.read_text()


@pytest.mark.parametrize(
    "sets",
    [["src=tpl/one.txt.j2", "dst=build/one.txt"], ["src=tpl", "dst=build/tree"]],
    ids=["file-source", "folder-source"],
)
def test_an_include_through_a_link_out_of_the_folder_is_refused(
    tmp_path: Path, sets: list[str]
) -> None:
    """The loader sees the template folder only: a symbolic link in it that leads
    outside the machine folder and the working directory must not be followed."""
    work = tmp_path / "work"
    build_tree(tmp_path, {"outside/secret.txt": SECRET})
    build_tree(
        work,
        {
            "machine.yaml": MACHINE.format(steps=TEMPLATE_STEP),
            "tpl/one.txt.j2": "one: {% include 'leak' %}\n",
        },
    )
    os.symlink(tmp_path / "outside/secret.txt", work / "tpl/leak")
    record = advance(work, sets)
    written = [p.read_text() for p in (work / "build").rglob("*") if p.is_file()]
    assert not any(SECRET in text for text in written), "the file outside was rendered"
    assert record.state == "build_failed"
    assert record.failure.kind in ("configuration", "template"), record.failure
    assert "outside" in record.failure.summary, record.failure


def _folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(machine folder, working directory, a folder outside both)."""
    machine_dir, work, outside = tmp_path / "machine", tmp_path / "work", tmp_path / "outside"
    build_tree(
        tmp_path,
        {
            "machine/machine.yaml": MACHINE.format(steps=TEMPLATE_STEP),
            "machine/tpl/app.conf.j2": "app {{ env.name }}\n",
            "work/local/w.conf.j2": "work {{ env.name }}\n",
            "outside/evil.conf.j2": f"{SECRET}\n",
            "outside/keep.txt": "keep\n",
        },
    )
    return machine_dir, work, outside


@pytest.mark.parametrize(
    "src,dst,words",
    [
        ("{outside}/evil.conf.j2", "build/x", ["source", "outside the machine folder"]),
        ("../outside/evil.conf.j2", "build/x", ["source", "outside the machine folder"]),
        ("/etc/hostname", "build/x", ["source", "outside the machine folder"]),
        (
            "tpl/app.conf.j2",
            "{outside}/written.conf",
            ["target", "not inside the working directory"],
        ),
        (
            "tpl/app.conf.j2",
            "../outside/written.conf",
            ["target", "not inside the working directory"],
        ),
        ("tpl", "../outside", ["target", "not inside the working directory"]),
        ("tpl", ".", ["target", "not inside the working directory"]),
    ],
    ids=[
        "source-absolute-outside",
        "source-dotdot-outside",
        "source-system-file",
        "target-absolute-outside",
        "target-dotdot-outside",
        "target-folder-outside",
        "target-the-workdir-itself",
    ],
)
def test_sources_and_targets_outside_are_refused(
    tmp_path: Path, src: str, dst: str, words: list[str]
) -> None:
    machine_dir, work, outside = _folders(tmp_path)
    work.mkdir(exist_ok=True)
    before = sorted(p.name for p in outside.iterdir())
    sets = [f"src={src.format(outside=outside)}", f"dst={dst.format(outside=outside)}"]
    record = advance(work, sets, machine_dir / "machine.yaml")
    assert record.state == "build_failed"
    failure = record.failure
    assert failure.kind == "configuration", failure
    for word in words:
        assert word in failure.summary, failure
    assert sorted(p.name for p in outside.iterdir()) == before  # nothing written outside
    assert not (work / "ran").exists()
    assert not any(
        SECRET in p.read_text() for p in work.rglob("*") if p.is_file() and "data" not in p.parts
    )


def test_sources_in_the_machine_folder_and_the_workdir_are_fine(tmp_path: Path) -> None:
    machine_dir, work, _outside = _folders(tmp_path)
    record = advance(work, ["src=tpl", "dst=build/a"], machine_dir / "machine.yaml")
    assert record.state == "built", record.failure
    assert (work / "build/a/app.conf").read_text() == "app demo\n"
    (work / "data").rename(work / "data-1")
    record = advance(work, [f"src={work}/local", "dst=build/b"], machine_dir / "machine.yaml")
    assert record.state == "built", record.failure
    assert (work / "build/b/w.conf").read_text() == "work demo\n"


def test_a_target_through_a_link_out_of_the_workdir_is_refused(tmp_path: Path) -> None:
    machine_dir, work, outside = _folders(tmp_path)
    (work / "build").mkdir(parents=True)
    os.symlink(outside, work / "build/escape")
    record = advance(work, ["src=tpl", "dst=build/escape/x"], machine_dir / "machine.yaml")
    assert record.state == "build_failed"
    assert record.failure.kind == "configuration"
    assert "not inside the working directory" in record.failure.summary
    assert sorted(p.name for p in outside.iterdir()) == ["evil.conf.j2", "keep.txt"]
