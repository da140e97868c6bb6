"""machine.yaml validation: every broken definition ends as exit 2 with file:line:col.

One table of broken machines, each a small edit of a valid one (``BASE``). Every case
runs twice: in-process through :func:`runner.machine.loader.load_machine` (fast, checks the
structured :class:`~runner.errors.Problem`) and through the real CLI
(``python -m runner --machine machine.yaml validate``) as a subprocess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.errors import ExitCode, InputError, MachineError, Problem
from runner.machine.loader import load_machine
from runner.machine.model import parse_duration
from runner.run.registry import StepRegistry
from tests.helpers import ROOT, build_tree, run_cli

BASE = """\
version: 1
name: demo
description: A small machine for the loader tests.
initial: created
inputs:
  type: object
  properties:
    target: {type: string, default: all}
states:
  created: {description: New}
  building: {description: Building}
  built: {description: Built}
  build_failed:
    description: Build failed
    recovery: "Fix it, then runner resume {{ env.name }}"
  destroying: {description: Destroying}
  destroyed: {description: Gone, final: true}
  destroy_failed: {description: Destroy failed}
phases:
  - name: build
    from: created
    via: building
    to: built
    failed: build_failed
    steps:
      - name: render
        uses: template
        with: {source: templates/app, target: "{{ env.build_dir }}/app"}
      - name: compile
        uses: shell
        with: {argv: [make, "{{ inputs.target }}"]}
        when: "inputs.target != 'none'"
        timeout: 10m
        retry: {attempts: 2, delay: 1s}
        outputs: {binary: stdout}
  - name: destroy
    from: any
    via: destroying
    to: destroyed
    failed: destroy_failed
    advance: false
    steps:
      - name: clean
        uses: shell
        with: {argv: [rm, -rf, build]}
"""


def edit(*changes: tuple[str, str], text: str = BASE) -> str:
    """``text`` with each ``(old, new)`` applied; ``old`` must occur exactly once."""
    for old, new in changes:
        count = text.count(old)
        if count != 1:
            raise ValueError(f"{old!r} occurs {count} times in the machine, not once")
        text = text.replace(old, new)
    return text


def rename(old: str, new: str, text: str = BASE) -> str:
    """``text`` with every whole-word ``old`` replaced by ``new`` (a state rename)."""
    return re.sub(rf"\b{re.escape(old)}\b", new, text)


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    at: str  # the text where the error is reported starts
    words: tuple[str, ...]  # all of them appear in that error's message
    nth: int = 0  # which line holding `at` (1-based); 0: it must be on one line only

    def position(self) -> tuple[int, int]:
        """(line, column), 1-based, where ``at`` starts in ``text``; a ``»`` in ``at``
        marks the exact column (``"- name: »build"``)."""
        if not self.text:
            return 1, 1
        plain = self.at.replace("»", "")
        offset = max(self.at.find("»"), 0)
        hits = [
            (n, line.index(plain) + offset + 1)
            for n, line in enumerate(self.text.splitlines(), 1)
            if plain in line
        ]
        if self.nth:
            return hits[self.nth - 1]
        if len(hits) != 1:
            raise ValueError(f"case {self.id}: {plain!r} is on {len(hits)} lines, not one")
        return hits[0]


CHECKS = """\
checks:
  - name: alive
    uses: shell
    with: {argv: [test, -d, build]}
    in: [built]
"""

UNREACHABLE = """\
  - name: wake
    from: idle
    via: waking
    to: awake
    failed: wake_failed
    steps: []
"""

CASES = [
    # --- the file itself
    Case("empty-file", "", "", ("must be a mapping", "empty")),
    Case("comment-only-file", "# nothing here\n", "# nothing", ("must be a mapping", "empty")),
    Case("file-is-a-list", "- created\n- built\n", "- created", ("must be a mapping", "list")),
    Case(
        "yaml-syntax-error",
        edit(("name: demo", "name: demo: again")),
        ": again",
        ("YAML syntax error", "mapping values are not allowed"),
    ),
    Case(
        "yaml-tab-indent",
        edit(("  built: {description: Built}", "\tbuilt: {}")),
        "\tbuilt",
        ("YAML syntax error", "cannot start any token"),
    ),
    Case(
        "yaml-duplicate-key",
        edit(("  built: {description: Built}", "  built: {description: Built}\n  built: {}")),
        "built",
        ("YAML syntax error", "duplicate key", "built"),
        nth=2,
    ),
    # --- types and values
    Case(
        "version-is-a-string",
        edit(("version: 1", 'version: "1"')),
        '"1"',
        ("'version' must be 1", "'1'"),
    ),
    Case(
        "version-2",
        edit(("version: 1", "version: 2")),
        "2",
        ("'version' must be 1", "not 2"),
        nth=1,
    ),
    Case(
        "steps-not-a-list",
        edit(
            (
                "    steps:\n      - name: clean\n        uses: shell\n"
                "        with: {argv: [rm, -rf, build]}",
                "    steps: clean",
            )
        ),
        "clean",
        ("'steps' must be array", "str 'clean'"),
    ),
    Case(
        "advance-quoted-yes",
        edit(("advance: false", 'advance: "yes"')),
        '"yes"',
        ("'advance' must be boolean", "'yes'"),
    ),
    Case(
        "advance-bare-yes",
        edit(("advance: false", "advance: yes")),
        "yes",
        ("'advance' must be boolean", "'yes'", "write true or false"),
    ),
    Case(
        "timeout-as-bool",
        edit(("timeout: 10m", "timeout: true")),
        "timeout: »true",
        ("'timeout' must be number or string", "True"),
    ),
    Case(
        "retry-attempts-zero",
        edit(("attempts: 2", "attempts: 0")),
        "0,",
        ("'attempts'", "less than the minimum of 1"),
    ),
    # --- unknown and missing keys
    Case(
        "unknown-top-key",
        edit(("name: demo\n", "name: demo\ncolour: blue\n")),
        "colour",
        ("unknown key 'colour'", "allowed keys here", "phases"),
    ),
    Case(
        "unknown-state-key",
        edit(("{description: New}", "{description: New, colour: red}")),
        "colour",
        ("unknown key 'colour'", "final", "recovery"),
    ),
    Case(
        "unknown-phase-key",
        edit(("    via: building\n", "    via: building\n    parallel: true\n")),
        "parallel",
        ("unknown key 'parallel'", "advance", "failed"),
    ),
    Case(
        "unknown-step-key",
        edit(("timeout: 10m\n", "timeout: 10m\n        shell: bash\n")),
        "shell: bash",
        ("unknown key 'shell'", "retry", "uses", "when"),
    ),
    Case(
        "unknown-retry-key",
        edit(("delay: 1s}", "delay: 1s, factor: 2}")),
        "factor",
        ("unknown key 'factor'", "attempts, backoff, delay, jitter, max_delay"),
    ),
    Case(
        "missing-initial",
        edit(("initial: created\n", "")),
        "version",
        ("'initial' is a required property", "add the missing key"),
    ),
    Case(
        "missing-step-uses",
        edit(("- name: clean\n        uses: shell\n", "- name: clean\n")),
        "name: clean",
        ("'uses' is a required property",),
    ),
    Case(
        "missing-phase-failed",
        edit(
            ("    failed: destroy_failed\n", ""),
            ("  destroy_failed: {description: Destroy failed}\n", ""),
        ),
        "name: destroy",
        ("'failed' is a required property",),
    ),
    # --- states: declared, used, reachable, named
    Case(
        "undeclared-initial",
        edit(("initial: created", "initial: craeted")),
        "craeted",
        ("state 'craeted' is not declared", "did you mean 'created'?"),
    ),
    Case(
        "undeclared-from",
        edit(("from: created", "from: creatd")),
        "creatd",
        ("state 'creatd' is not declared", "did you mean 'created'?"),
    ),
    Case(
        "undeclared-via",
        edit(("via: building", "via: bilding")),
        "bilding",
        ("state 'bilding' is not declared", "did you mean 'building'?"),
    ),
    Case(
        "undeclared-to",
        edit(("to: built", "to: biult")),
        "biult",
        ("state 'biult' is not declared", "did you mean 'built'?"),
    ),
    Case(
        "undeclared-failed",
        edit(("failed: build_failed", "failed: build_fialed")),
        "build_fialed",
        ("state 'build_fialed' is not declared", "did you mean 'build_failed'?"),
    ),
    Case(
        "undeclared-without-hint",
        edit(("to: built", "to: zzz")),
        "zzz",
        ("state 'zzz' is not declared", "declare it under `states:`"),
    ),
    Case(
        "unused-state",
        edit(
            (
                "  built: {description: Built}\n",
                "  built: {description: Built}\n  spare: {description: Spare}\n",
            )
        ),
        "spare",
        ("state 'spare' is declared but never used", "remove it"),
    ),
    Case(
        "unreachable-state",
        edit(
            (
                "  built: {description: Built}\n",
                "  built: {description: Built}\n  idle: {}\n  waking: {}\n"
                "  awake: {}\n  wake_failed: {}\n",
            ),
            ("  - name: destroy\n", UNREACHABLE + "  - name: destroy\n"),
        ),
        "idle: {}",
        ("state 'idle' cannot be reached from the initial state 'created'",),
    ),
    Case(
        "state-name-capitalised",
        edit(("  created: {description: New}", "  Created: {description: New}")),
        "Created",
        ("invalid name 'Created'", "snake_case"),
    ),
    Case(
        "state-name-dashed",
        rename("built", "pre-prod"),
        "pre-prod: {",
        ("invalid name 'pre-prod'", "snake_case"),
    ),
    Case(
        "state-name-in-from-capitalised",
        edit(("from: created", "from: Created")),
        "Created",
        ("'Created' is not a valid name for 'from'", "snake_case"),
    ),
    Case(
        "state-named-on",
        rename("created", "on"),
        "on: {",
        ("state name 'on'", "boolean", "YAML 1.1"),
    ),
    Case(
        "state-named-off",
        rename("built", "off"),
        "off: {",
        ("state name 'off'", "boolean", "YAML 1.1"),
    ),
    Case(
        "state-named-yes",
        rename("built", "yes"),
        "yes: {",
        ("state name 'yes'", "boolean", "YAML 1.1"),
    ),
    Case("state-named-any", rename("built", "any"), "any: {", ("state name 'any'", "reserved")),
    Case(
        "initial-is-final",
        edit(("{description: New}", "{description: New, final: true}")),
        "created",
        ("initial state 'created' is final",),
        nth=1,
    ),
    # --- phases
    Case(
        "via-state-shared",
        edit(
            ("via: destroying", "via: building"), ("  destroying: {description: Destroying}\n", "")
        ),
        "building",
        ("via state 'building' is shared by phases build, destroy",),
        nth=3,
    ),
    Case(
        "failed-state-entered-as-to",
        edit(
            ("to: destroyed", "to: build_failed"),
            ("  destroyed: {description: Gone, final: true}\n", ""),
        ),
        "to: »build_failed",
        (
            "'build_failed' is the failed state of phase 'build'",
            "cannot be entered by phase 'destroy'",
        ),
    ),
    Case(
        "two-advancing-phases",
        edit(("from: any", "from: created"), ("    advance: false\n", "")),
        "created",
        ("state 'created' has more than one advancing phase (build, destroy)", "advance: false"),
        nth=4,
    ),
    Case(
        "outgoing-phase-from-final",
        edit(("from: any", "from: [built, destroyed]")),
        "destroyed]",
        ("final state 'destroyed' cannot have an outgoing phase ('destroy')",),
    ),
    Case(
        "via-state-is-final",
        edit(("{description: Building}", "{description: Building, final: true}")),
        "via: »building",
        ("via state 'building' of phase 'build' is final",),
    ),
    Case(
        "any-inside-a-list",
        edit(("from: any", "from: [built, any]")),
        "any]",
        ("'any' must be the whole `from` value",),
    ),
    Case(
        "duplicate-phase-names",
        edit(("- name: destroy", "- name: build")),
        "- name: »build",
        ("phase name 'build' is used twice",),
        nth=2,
    ),
    Case(
        "duplicate-step-names",
        edit(("- name: compile", "- name: render")),
        "render",
        ("step name 'render' appears twice in phase 'build'",),
        nth=2,
    ),
    # --- steps
    Case(
        "bad-duration-timeout",
        edit(("timeout: 10m", "timeout: 10 minutes")),
        "10 minutes",
        ("'10 minutes' is not a duration for 'timeout'", "30s"),
    ),
    Case(
        "bad-duration-retry-delay",
        edit(("delay: 1s", "delay: -1s")),
        "-1s",
        ("'-1s' is not a duration for 'delay'",),
    ),
    Case(
        "negative-number-delay",
        edit(("delay: 1s", "delay: -1")),
        "-1",
        ("'delay'", "less than the minimum of 0"),
    ),
    Case(
        "nan-timeout",
        edit(("timeout: 10m", "timeout: .nan")),
        ".nan",
        ("`timeout` of step", "nan is not a duration"),
    ),
    Case(
        "infinite-retry-delay",
        edit(("delay: 1s", "delay: .inf")),
        ".inf",
        ("`delay` of step", "longer than the longest duration taken, 366 days"),
    ),
    Case(
        "timeout-of-a-million-years",
        edit(("timeout: 10m", "timeout: 9000000000h")),
        "9000000000h",
        ("`timeout` of step", "'9000000000h' is longer than the longest duration taken"),
    ),
    Case(
        "when-does-not-parse",
        edit(("!= 'none'", "!=")),
        "when: »",
        ("`when` of step 'compile'", "template syntax error"),
    ),
    Case(
        "with-template-does-not-parse",
        edit(('"{{ inputs.target }}"', '"{{ inputs.target "')),
        "{argv: [make",
        ("`with` of step 'compile'", "template syntax error"),
    ),
    Case(
        "recovery-does-not-parse",
        edit(("then runner resume {{ env.name }}", "then {% if %} runner resume")),
        '"Fix it',
        ("recovery text", "template syntax error"),
    ),
    Case(
        "unknown-uses",
        edit(("uses: shell\n        with: {argv: [rm", "uses: shel\n        with: {argv: [rm")),
        "shel",
        ("step 'clean' uses unknown plugin 'shel'", "installed plugins:", "shell", "template"),
        nth=2,
    ),
    Case(
        "with-argv-is-a-string",
        edit(("{argv: [rm, -rf, build]}", '{argv: "rm -rf build"}')),
        '"rm -rf build"',
        ("`with` of step 'clean' (shell)", "is not of type 'array'"),
    ),
    Case(
        "with-unknown-param",
        edit(("{argv: [rm, -rf, build]}", "{argv: [rm, -rf, build], shell: true}")),
        "{argv: [rm, -rf",
        ("`with` of step 'clean' (shell)", "'shell' was unexpected"),
    ),
    Case(
        "with-missing-required-param",
        edit(("{source: templates/app, target", "{target")),
        "{target",
        ("`with` of step 'render' (template)", "'source' is a required property"),
    ),
    Case(
        "inputs-not-a-json-schema",
        edit(("{type: string, default: all}", "{type: text, default: all}")),
        "text",
        ("'inputs' is not a valid JSON Schema",),
    ),
    Case(
        "trap-state",
        edit(("    from: any\n", "    from: [created, build_failed, destroy_failed]\n")),
        "»built: {description",
        ("state 'built' is a trap", "final state (destroyed)", "final: true"),
    ),
    Case(
        "retry-backoff-below-one",
        edit(("delay: 1s}", "delay: 1s, backoff: 0.5}")),
        "0.5",
        ("'backoff'", "0.5", "minimum of 1"),
    ),
    Case(
        "retry-jitter-above-one",
        edit(("delay: 1s}", "delay: 1s, jitter: 1.5}")),
        "1.5",
        ("'jitter'",),
    ),
    Case(
        "retry-max-delay-not-a-duration",
        edit(("delay: 1s}", "delay: 1s, max_delay: soon}")),
        "soon",
        ("'soon' is not a duration for 'max_delay'",),
    ),
    Case(
        "check-unknown-plugin",
        BASE + CHECKS.replace("uses: shell", "uses: sehll"),
        "sehll",
        ("check 'alive' uses unknown plugin 'sehll'", "did you mean 'shell'"),
    ),
    Case(
        "check-undeclared-state",
        BASE + CHECKS.replace("in: [built]", "in: [biult]"),
        "biult",
        ("state 'biult' is not declared", "did you mean 'built'"),
    ),
    Case(
        "check-bad-with",
        BASE + CHECKS.replace("argv: [test, -d, build]", "argv: test"),
        "argv: »test",
        ("`with` of check 'alive' (shell)", "not of type 'array'"),
    ),
    Case(
        "check-bad-template",
        BASE + CHECKS.replace("build]", '"{{ env.build_dir"]'),
        "»{argv: [test",
        ("`with` of check 'alive'", "build_dir"),
    ),
    Case(
        "check-without-in",
        BASE + CHECKS.replace("    in: [built]\n", ""),
        "- »name: alive",
        ("'in' is a required property",),
    ),
    Case(
        "check-with-outputs",
        BASE + CHECKS + "    outputs: {x: stdout}\n",
        "outputs: {x",
        ("unknown key 'outputs'",),
    ),
]

BY_ID = {case.id: case for case in CASES}
PARAMS = [pytest.param(case, id=case.id) for case in CASES]


@pytest.fixture(scope="module")
def registry() -> StepRegistry:
    """The two built-in plugins the cases use, registered the way entry points are."""
    from steps.shell import ShellStep
    from steps.template import TemplateStep

    registry = StepRegistry()
    registry.register(ShellStep, source="steps.shell:ShellStep")
    registry.register(TemplateStep, source="steps.template:TemplateStep")
    return registry


def write_machine(tmp_path: Path, text: str) -> Path:
    build_tree(tmp_path, {"machine.yaml": text}, dedent=False)
    return tmp_path / "machine.yaml"


def matching(problems: list[Problem], case: Case) -> list[Problem]:
    return [p for p in problems if all(word in str(p) for word in case.words)]


def test_cases_are_distinct_and_many() -> None:
    assert len(BY_ID) == len(CASES) >= 30
    assert len({case.text for case in CASES}) == len(CASES)


def test_base_machine_is_valid(tmp_path: Path, registry: StepRegistry) -> None:
    machine = load_machine(write_machine(tmp_path, BASE), registry)
    assert machine.name == "demo"
    assert machine.digest.startswith("sha256:")
    assert [p.name for p in machine.phases] == ["build", "destroy"]
    build, destroy = machine.phases
    assert build.sources == ("created",)
    assert not destroy.advance
    # `from: any`: every non-final state except the phase's own via state
    assert set(destroy.sources) == set(machine.states) - {"destroyed", "destroying"}
    compile_ = build.steps[1]
    assert compile_.timeout_s == 600
    assert (compile_.retry.attempts, compile_.retry.delay_s) == (2, 1.0)
    assert compile_.when == "inputs.target != 'none'"
    assert compile_.outputs == {"binary": "stdout"}
    assert compile_.with_ == {"argv": ["make", "{{ inputs.target }}"]}
    assert machine.happy_path() == ["created", "built"]
    assert machine.state_kind("build_failed") == "failed"


@pytest.mark.parametrize("case", PARAMS)
def test_broken_machine_in_process(case: Case, tmp_path: Path, registry: StepRegistry) -> None:
    path = write_machine(tmp_path, case.text)
    with pytest.raises(MachineError) as caught:
        load_machine(path, registry)
    error = caught.value
    assert error.exit_code == ExitCode.BAD_INPUT
    assert all(p.file == str(path) and p.line is not None for p in error.problems), error
    found = matching(error.problems, case)
    assert found, f"no problem mentions {case.words}:\n{error}"
    assert case.position() in [(p.line, p.column) for p in found], str(error)


@pytest.mark.parametrize("case", PARAMS)
def test_broken_machine_cli(case: Case, tmp_path: Path) -> None:
    write_machine(tmp_path, case.text)
    proc = run_cli("--machine", "machine.yaml", "validate", cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    line, column = case.position()
    where = f"machine.yaml:{line}:{column}: "
    assert any(
        where in text and all(w in text for w in case.words) for text in proc.stderr.splitlines()
    ), f"expected {where} {case.words}:\n{output}"


@pytest.mark.parametrize(
    "case_id",
    [
        "empty-file",
        "yaml-syntax-error",
        "undeclared-from",
        "bad-duration-timeout",
        "unknown-uses",
        "with-argv-is-a-string",
    ],
)
def test_broken_machine_cli_json(case_id: str, tmp_path: Path) -> None:
    case = BY_ID[case_id]
    path = write_machine(tmp_path, case.text)
    proc = run_cli("--output", "json", "--machine", "machine.yaml", "validate", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    data = json.loads(proc.stdout)  # one JSON document, nothing else on stdout
    assert data["error"] == "MachineError"
    assert data["exit_code"] == 2
    assert data["file"] == str(path)
    assert data["problems"], data
    for problem in data["problems"]:
        assert {"file", "line", "column", "path", "message", "hint"} <= set(problem)
        assert problem["file"] == str(path)
        assert isinstance(problem["line"], int) and isinstance(problem["column"], int)
    line, column = case.position()
    assert any(
        (p["line"], p["column"]) == (line, column)
        and all(w in f"{p['message']} ({p['hint']})" for w in case.words)
        for p in data["problems"]
    ), data


# --- several problems at once --------------------------------------------------------


def test_every_schema_error_in_a_file_is_reported(tmp_path: Path) -> None:
    text = edit(
        ("version: 1", 'version: "1"'),
        ("name: demo\n", "name: demo\ncolour: blue\n"),
        ("timeout: 10m", "timeout: 10 minutes"),
        ("advance: false", "advance: maybe"),
    )
    write_machine(tmp_path, text)
    proc = run_cli("--machine", "machine.yaml", "validate", cwd=tmp_path)
    assert proc.returncode == 2
    assert "4 errors in the machine definition" in proc.stderr
    lines = sorted(int(n) for n in re.findall(r"machine\.yaml:(\d+):\d+: ", proc.stderr))
    assert lines == [1, 3, 34, 42], proc.stderr
    for words in (
        "'version' must be 1",
        "unknown key 'colour'",
        "'10 minutes' is not a duration",
        "'advance' must be boolean",
    ):
        assert words in proc.stderr


def test_every_semantic_error_in_a_file_is_reported(tmp_path: Path, registry: StepRegistry) -> None:
    text = edit(
        (
            "  built: {description: Built}\n",
            "  built: {description: Built}\n  spare: {description: Spare}\n",
        ),
        ("from: created", "from: creatd"),
        ("- name: compile", "- name: render"),
        ("uses: shell\n        with: {argv: [rm", "uses: shel\n        with: {argv: [rm"),
    )
    with pytest.raises(MachineError) as caught:
        load_machine(write_machine(tmp_path, text), registry)
    problems = caught.value.problems  # sorted by line
    assert [(p.line, p.path) for p in problems] == [
        (13, ("states", "spare")),
        (22, ("phases", 0, "from")),
        (30, ("phases", 0, "steps", 1, "name")),
        (45, ("phases", 1, "steps", 0, "uses")),
    ]
    assert str(caught.value).startswith(f"{tmp_path / 'machine.yaml'}: 4 errors")


# --- the structured problems ---------------------------------------------------------


def test_problem_carries_path_value_and_hint(tmp_path: Path, registry: StepRegistry) -> None:
    path = write_machine(tmp_path, BY_ID["undeclared-from"].text)
    with pytest.raises(MachineError) as caught:
        load_machine(path, registry)
    (problem,) = caught.value.problems
    assert problem == Problem(
        file=str(path),
        message="state 'creatd' is not declared",
        line=21,
        column=11,
        path=("phases", 0, "from"),
        value="creatd",
        hint="did you mean 'created'?",
    )
    assert problem.location() == f"{path}:21:11"
    assert problem.to_json() == {
        "file": str(path),
        "line": 21,
        "column": 11,
        "path": "phases/0/from",
        "message": "state 'creatd' is not declared",
        "hint": "did you mean 'created'?",
    }
    assert isinstance(caught.value, InputError)
    assert caught.value.to_json()["problems"] == [problem.to_json()]


def test_yaml11_boolean_state_gets_a_rename_hint(tmp_path: Path, registry: StepRegistry) -> None:
    with pytest.raises(MachineError) as caught:
        load_machine(write_machine(tmp_path, rename("built", "off")), registry)
    (problem,) = caught.value.problems
    assert problem.path == ("states", "off")
    assert problem.hint == "rename it, e.g. 'off_state'"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MachineError) as caught:
        load_machine(tmp_path / "nope.yaml")
    (problem,) = caught.value.problems
    assert problem.message == "file not found" and problem.line is None
    proc = run_cli("--machine", "nope.yaml", "validate", cwd=tmp_path)
    assert proc.returncode == 2
    assert "file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "machine.yaml"
    path.write_bytes(BASE.encode() + b"# caf\xe9\n")
    with pytest.raises(MachineError) as caught:
        load_machine(path)
    assert "not UTF-8" in str(caught.value)


def test_plugin_checks_need_a_registry(tmp_path: Path) -> None:
    """Without a registry (as `runner graph` loads) `uses`/`with` are not checked."""
    machine = load_machine(write_machine(tmp_path, BY_ID["unknown-uses"].text))
    assert machine.phases[1].steps[0].uses == "shel"


def test_state_without_keys_is_allowed(tmp_path: Path, registry: StepRegistry) -> None:
    text = edit(("  built: {description: Built}", "  built:"))
    machine = load_machine(write_machine(tmp_path, text), registry)
    assert machine.states["built"].description == ""


# --- valid machines ------------------------------------------------------------------


def test_shipped_machine_validates(tmp_path: Path) -> None:
    proc = run_cli("--machine", ROOT / "machine.yaml", "validate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "valid machine 'tracker-deploy'" in proc.stdout
    assert "states (22)" in proc.stdout
    assert "phases (8)" in proc.stdout
    assert "happy path: created → provisioned → configured → released → running" in proc.stdout
    assert not (tmp_path / "data").exists()  # validate writes nothing


def test_shipped_machine_validates_json(tmp_path: Path) -> None:
    proc = run_cli("--output", "json", "--machine", ROOT / "machine.yaml", "validate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["valid"] is True and data["name"] == "tracker-deploy"
    assert len(data["states"]) == 22 and len(data["phases"]) == 8
    assert data["happy_path"] == ["created", "provisioned", "configured", "released", "running"]
    assert data["states"]["destroyed"] == "final"
    assert data["states"]["provisioning"] == "intermediate"
    assert data["states"]["run_failed"] == "failed"


def test_base_machine_validates_through_the_cli(tmp_path: Path) -> None:
    write_machine(tmp_path, BASE)
    proc = run_cli("--machine", "machine.yaml", "validate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "happy path: created → built" in proc.stdout


DURATIONS = {
    "30s": 30.0,
    "15m": 900.0,
    "1h": 3600.0,
    "1h30m": 5400.0,
    "500ms": 0.5,
    "90": 90.0,
    "2.5": 2.5,
    "0": 0.0,
}


def test_durations_are_accepted(tmp_path: Path, registry: StepRegistry) -> None:
    steps = "".join(
        f"      - name: wait_{n}\n        uses: shell\n        with: {{argv: [true]}}\n"
        f"        timeout: {text}\n        retry: {{attempts: 3, delay: {text}}}\n"
        for n, text in enumerate(DURATIONS)
    )
    text = edit(("      - name: clean\n", steps + "      - name: clean\n"))
    text = text.replace("argv: [true]", 'argv: ["true"]')
    machine = load_machine(write_machine(tmp_path, text), registry)
    waits = [s for s in machine.phases[1].steps if s.name.startswith("wait_")]
    assert [s.timeout_s for s in waits] == list(DURATIONS.values())
    assert [s.retry.delay_s for s in waits] == list(DURATIONS.values())
    proc = run_cli("--machine", "machine.yaml", "validate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("2h15m30s", 8130.0),
        (" 5m ", 300.0),
        (90, 90.0),
        (2.5, 2.5),
        (0, 0.0),
        ("8784h", 366 * 86400.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["10 minutes", "-1s", "", "5", "1d", "m5", "1h 30m", -1, True, float("nan"),
     float("inf"), 1e400, "8785h", 366 * 86400 + 1],
)  # fmt: skip
def test_parse_duration_refuses(text: str | float) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_templated_with_is_checked_only_when_the_step_runs(tmp_path: Path) -> None:
    """A literal `argv: "make"` breaks the shell schema; a template producing the list
    is rendered (with its native type) only when the step runs."""
    text = edit(("{argv: [rm, -rf, build]}", '{argv: "{{ inputs.cmd }}"}'))
    write_machine(tmp_path, text)
    proc = run_cli("--machine", "machine.yaml", "validate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


SMOKE_STATES = """\
  smoke_testing:    {description: "Checking the release before starting it"}
  smoke_tested:     {description: "Release checked, ready to run"}
  smoke_test_failed:
    description: The release check failed
    recovery: "Fix the tracker configuration, then `runner resume {{ env.name }}`."
"""

SMOKE_PHASE = """\
  - name: smoke_test
    from: released
    via: smoke_testing
    to: smoke_tested
    failed: smoke_test_failed
    steps:
      - name: tracker_config_parses
        uses: shell
        with:
          argv: [python3, -c, "import sys, tomllib; tomllib.load(open(sys.argv[1], 'rb'))",
                 "{{ env.build_dir }}/release/tracker/tracker.toml"]
        timeout: 30s

"""


def test_adding_a_phase_is_an_edit_of_machine_yaml(tmp_path: Path) -> None:
    """The docs' example: a smoke_test phase between release and run, no code."""
    shipped = (ROOT / "machine.yaml").read_text(encoding="utf-8")
    text = edit(
        ("  starting:         {", SMOKE_STATES + "  starting:         {"),
        (
            "  - name: run\n    from: released",
            SMOKE_PHASE + "  - name: run\n    from: smoke_tested",
        ),
        text=shipped,
    )
    write_machine(tmp_path, text)
    proc = run_cli("--machine", "machine.yaml", "validate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "phases (9)" in proc.stdout and "smoke_test [1 step]" in proc.stdout
    path = "created → provisioned → configured → released → smoke_tested → running"
    assert f"happy path: {path}" in proc.stdout
