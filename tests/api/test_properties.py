"""Properties checked with hypothesis.

(a) Whatever the bytes of machine.yaml (random documents, random mutations of a valid
    machine, random bytes and text), loading it either gives a machine that builds
    or raises MachineError, nothing else; a few hostile documents hypothesis would not
    find are checked by name.
(b) Random command sequences on random small machines (a chain of phases of `shell`
    steps whose failure a marker file controls, plus `destroy` from any state) keep
    the stored environment equal to a small model of the machine, and the event
    log's transitions equal the transitions that happened.
"""

from __future__ import annotations

import copy
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from ruamel.yaml import YAML

from runner import Runner
from runner.errors import MachineError, RunnerError
from runner.machine.loader import load_machine
from runner.machine.statemachine import build_machine
from runner.run.registry import default_registry
from runner.store.files import FileStore
from tests.helpers import build_tree, cli_env, run_cli

REGISTRY = default_registry()

# --- (a) loading never fails with anything but MachineError -------------------------

VALID: dict[str, Any] = {
    "version": 1,
    "name": "prop",
    "initial": "created",
    "inputs": {
        "type": "object",
        "properties": {"nap": {"type": "number", "default": 0}, "who": {"type": "string"}},
    },
    "states": {
        "created": {"description": "New"},
        "building": {},
        "built": {"description": "Built"},
        "build_failed": {"recovery": "runner resume {{ env.name }}"},
        "destroying": {},
        "destroyed": {"final": True},
        "destroy_failed": {},
    },
    "phases": [
        {
            "name": "build",
            "from": "created",
            "via": "building",
            "to": "built",
            "failed": "build_failed",
            "steps": [
                {
                    "name": "one",
                    "uses": "shell",
                    "with": {"argv": ["sh", "-c", "sleep {{ inputs.nap }}"]},
                    "timeout": "5s",
                    "retry": {"attempts": 2, "delay": "1s"},
                    "outputs": {"said": "stdout"},
                },
                {
                    "name": "two",
                    "uses": "template",
                    "when": "inputs.nap > 0",
                    "with": {"source": "tpl", "target": "{{ env.build_dir }}/tpl"},
                },
            ],
        },
        {
            "name": "destroy",
            "from": "any",
            "via": "destroying",
            "to": "destroyed",
            "failed": "destroy_failed",
            "advance": False,
            "steps": [{"name": "clean", "uses": "shell", "with": {"argv": ["true"]}}],
        },
    ],
}

WORDS = [
    "version", "name", "description", "initial", "inputs", "states", "phases", "from",
    "via", "to", "failed", "advance", "steps", "uses", "with", "when", "timeout", "retry",
    "attempts", "delay", "outputs", "final", "recovery", "any", "type", "properties",
    "argv", "source", "target", "shell", "template", "created", "built", "building",
]  # fmt: skip

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(WORDS)
    | st.text(max_size=12)
    | st.sampled_from(["{{ inputs.nap }}", "{{ nope", "{% if %}", "30s", "1h30m", "-1s"])
)
keys = st.sampled_from(WORDS) | st.text(max_size=10)
documents = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=30,
)


def _dump(doc: Any, style: str) -> str:
    if style == "json":
        return json.dumps(doc)
    import io

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = style == "flow"
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def _paths(node: Any, here: tuple = ()) -> list[tuple]:
    found = [here]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*here, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*here, index))
    return found


def _parent(doc: Any, path: tuple) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


@st.composite
def mutated_machines(draw: st.DrawFn) -> Any:
    """The valid machine with 1-4 random edits: keys deleted, values of another type,
    states renamed (in one place or everywhere), phases and steps added or copied."""
    doc: Any = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        kind = draw(
            st.sampled_from(["delete", "retype", "rename", "rename-all", "add-phase", "copy"])
        )
        if kind in ("delete", "retype") and paths:
            path = draw(st.sampled_from(paths))
            parent = _parent(doc, path)
            if kind == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(documents)
        elif kind in ("rename", "rename-all") and isinstance(doc, dict):
            states = doc.get("states")
            if isinstance(states, dict) and states:
                old = draw(st.sampled_from(sorted(states, key=str)))
                new = draw(st.sampled_from(["on", "any", "Bad-Name", "fresh", "built", ""]))
                text = json.dumps(doc)
                if kind == "rename-all":
                    text = text.replace(json.dumps(old), json.dumps(new))
                    doc = json.loads(text)
                else:
                    states[new] = states.pop(old)
        elif kind == "add-phase" and isinstance(doc, dict) and isinstance(doc.get("phases"), list):
            names = [*VALID["states"], "elsewhere"]
            phase = {
                "name": draw(st.sampled_from(["build", "extra", "destroy", "x y"])),
                "from": draw(st.sampled_from([*names, "any", ["created", "built"], []])),
                "via": draw(st.sampled_from(names)),
                "to": draw(st.sampled_from(names)),
                "failed": draw(st.sampled_from(names)),
                "steps": draw(
                    st.lists(
                        st.fixed_dictionaries(
                            {
                                "name": st.sampled_from(["a", "a", "b"]),
                                "uses": st.sampled_from(["shell", "template", "nope"]),
                                "with": documents,
                            }
                        ),
                        max_size=3,
                    )
                ),
            }
            if draw(st.booleans()):
                phase["advance"] = draw(documents)
            doc["phases"].append(phase)
        elif kind == "copy" and paths:
            path = draw(st.sampled_from(paths))
            parent = _parent(doc, path)
            if isinstance(parent, list):
                parent.append(copy.deepcopy(parent[path[-1]]))
    return doc


def _loads_or_machine_error(path: Path, text: str | bytes) -> None:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    for registry in (None, REGISTRY):
        try:
            machine = load_machine(path, registry)
        except MachineError as exc:
            assert exc.problems, "a MachineError lists its problems"
            assert all(p.message for p in exc.problems)
            continue
        build_machine(machine, type("Probe", (), {"state": machine.initial})())


PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(
    doc=documents | st.dictionaries(keys, documents, max_size=8),
    style=st.sampled_from(["json", "block", "flow"]),
)
def test_random_documents_load_or_raise_machine_error(tmp_path: Path, doc: Any, style: str) -> None:
    _loads_or_machine_error(tmp_path / "machine.yaml", _dump(doc, style))


@PROPERTY_SETTINGS
@given(doc=mutated_machines(), style=st.sampled_from(["json", "block"]))
def test_mutated_machines_load_or_raise_machine_error(tmp_path: Path, doc: Any, style: str) -> None:
    build_tree(tmp_path, {"tpl/a.j2": "x"})
    _loads_or_machine_error(tmp_path / "machine.yaml", _dump(doc, style))


def test_the_unmutated_machine_loads(tmp_path: Path) -> None:
    build_tree(tmp_path, {"tpl/a.j2": "x"})
    (tmp_path / "machine.yaml").write_text(_dump(VALID, "block"))
    assert load_machine(tmp_path / "machine.yaml", REGISTRY).name == "prop"


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=400) | st.text(max_size=400))
@example(data=b"=")  # a lone `=`: text now (no YAML "value" tag), placed at 1:1
def test_random_bytes_and_text_raise_machine_error(tmp_path: Path, data: bytes | str) -> None:
    path = tmp_path / "machine.yaml"
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogatepass")
    path.write_bytes(data)
    for registry in (None, REGISTRY):
        with pytest.raises(MachineError):
            load_machine(path, registry)


MINI = """\
version: 1
name: mini
initial: created
inputs:
  type: object
  properties:
    who: {type: string}
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
      - name: one
        uses: shell
        with:
          argv: [sh, -c, "echo hi"]
"""

HOSTILE = {
    # a YAML alias that contains itself: a cyclic document
    "alias-cycle-in-with": MINI.replace("with:\n", "with: &w\n          again: *w\n"),
    "alias-cycle-in-inputs": MINI.replace("inputs:\n", "inputs: &i\n  not: *i\n"),
    "alias-cycle-in-states": MINI.replace("  built: {}", "  built: &b {description: *b}"),
    "alias-cycle-in-phases": MINI.replace("phases:\n", "phases: &p\n  - *p\n"),
}


def test_the_mini_machine_loads(tmp_path: Path) -> None:
    (tmp_path / "machine.yaml").write_text(MINI)
    assert load_machine(tmp_path / "machine.yaml", REGISTRY).name == "mini"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_documents_raise_machine_error(tmp_path: Path, name: str) -> None:
    assert HOSTILE[name] != MINI
    path = tmp_path / "machine.yaml"
    path.write_text(HOSTILE[name])
    for registry in (None, REGISTRY):
        with pytest.raises(MachineError):
            load_machine(path, registry)


def _nested_lists(depth: int) -> str:
    return "version: " + "[" * depth + "]" * depth + "\n"


def _alias_bomb(levels: int) -> str:
    """Ten aliases per level: 10**levels strings once expanded (a 'billion laughs')."""
    lines = ["version: 1", "name: bomb", "initial: a", "states:"]
    previous = "x"
    for level in range(levels):
        items = ", ".join([f"*l{level - 1}" if level else "x"] * 10)
        lines.append(f"  s{level}: {{description: &l{level} [{items}]}}")
        previous = f"l{level}"
    lines.append(f"phases: *{previous}")
    return "\n".join(lines) + "\n"


def _indented_blocks(depth: int, per_line: int = 999) -> str:
    """Block sequences nested ``depth`` deep, ``per_line`` levels per line, each line
    indented past the last: no line has a thousand indicators in a row."""
    lines, indent, done = ["version:"], 2, 0
    while done < depth:
        step = min(per_line, depth - done)
        done += step
        lines.append(" " * indent + "- " * step + ("x" if done == depth else ""))
        indent += 2 * step
    return "\n".join(lines) + "\n"


def _merge_bomb(levels: int, fan: int) -> str:
    """Merge keys of merged mappings: ``fan ** levels`` keys once merged."""
    lines = ["version: 1", "name: bomb", "a0: &a0 {x: 1, y: 2}"]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * fan)
        lines.append(f"a{level}: &a{level} {{<<: [{refs}], k{level}: 1}}")
    return "\n".join(lines) + "\n"


PATHOLOGICAL = {
    "nesting-200000-deep": _nested_lists(200_000),
    "alias-bomb": _alias_bomb(9),
    "blocks-30000-deep-999-per-line": _indented_blocks(30_000),
    "merge-key-bomb": _merge_bomb(7, 10),
    "complex-keys-300-deep": "x:\n  " + "? " * 300 + "x\n",
    "flow-700-deep-in-a-step": MINI.replace(
        "with:\n", "with:\n          deep: " + "[" * 700 + "]" * 700 + "\n"
    ),
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_documents_are_refused_quickly(tmp_path: Path, name: str) -> None:
    """A document nested 200,000 deep (the C parser would crash), a few hundred deep
    (Python would run out of recursion), or one whose aliases or merge keys expand to
    millions of values, is a bad machine.yaml like any other: exit 2 within seconds,
    with the message naming the file, never a crash, a traceback or a hang."""
    (tmp_path / "machine.yaml").write_text(PATHOLOGICAL[name])
    try:
        proc = run_cli("validate", cwd=tmp_path, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`runner validate` of the {name} document ran for more than 10 s")
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "machine.yaml" in proc.stderr and "Traceback" not in proc.stderr
    assert "internal error" not in proc.stderr
    assert any(w in proc.stderr for w in ("nested more than", "expand to more than", "keys must be text"))


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_config_files_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "hostile.yaml").write_text(PATHOLOGICAL[name])
    proc = run_cli("create", "demo", "--config", "hostile.yaml", cwd=tmp_path, timeout=10)
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "hostile.yaml" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "data/demo").exists()


def _flow_merge_bomb(levels: int, fan: int) -> str:
    parts = ["a0: &a0 {x: 1}"]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * fan)
        parts.append(f"a{level}: &a{level} {{<<: [{refs}]}}")
    return "{" + ", ".join(parts) + "}"


@pytest.mark.parametrize(
    "value",
    ["[" * 5000 + "]" * 5000, "? " * 300 + "x", _flow_merge_bomb(7, 10)],
    ids=["flow-5000-deep", "complex-keys-300-deep", "merge-key-bomb"],
)
def test_pathological_set_values_are_refused(tmp_path: Path, value: str) -> None:
    proc = run_cli("create", "demo", "--set", f"nap={value}", cwd=tmp_path, timeout=10)
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "--set value" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "data/demo").exists()


# --- (b) command sequences against a model ------------------------------------------

INITIAL = "created"


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    sources: tuple[str, ...]
    via: str
    to: str
    failed: str
    steps: tuple[str, ...]
    advance: bool = True


class Spec:
    """A chain of phases p0 → p1 → ... plus `destroy` from any non-final state."""

    def __init__(self, chain: list[int], destroy_steps: int) -> None:
        stable = [INITIAL] + [f"stage{i + 1}" for i in range(len(chain))]
        self.phases: dict[str, PhaseSpec] = {}
        for i, count in enumerate(chain):
            self.phases[f"p{i}"] = PhaseSpec(
                name=f"p{i}",
                sources=(stable[i],),
                via=f"p{i}_running",
                to=stable[i + 1],
                failed=f"p{i}_failed",
                steps=tuple(f"s{j}" for j in range(count)),
            )
        states = stable + [s for p in self.phases.values() for s in (p.via, p.failed)]
        states += ["destroy_failed"]
        self.final = "destroyed"
        self.phases["destroy"] = PhaseSpec(
            name="destroy",
            sources=tuple(states),  # every non-final state but its own via
            via="destroying",
            to="destroyed",
            failed="destroy_failed",
            steps=tuple(f"d{j}" for j in range(destroy_steps)),
            advance=False,
        )
        self.states = [*states, "destroying", "destroyed"]

    def yaml(self) -> str:
        lines = ["version: 1", "name: prop-chain", f"initial: {INITIAL}", "states:"]
        lines += [
            f"  {s}: {{final: true}}" if s == self.final else f"  {s}: {{}}" for s in self.states
        ]
        lines.append("phases:")
        for p in self.phases.values():
            source = "any" if p.name == "destroy" else p.sources[0]
            lines += [
                f"  - name: {p.name}",
                f"    from: {source}",
                f"    via: {p.via}",
                f"    to: {p.to}",
                f"    failed: {p.failed}",
                f"    advance: {'true' if p.advance else 'false'}",
                "    steps:",
            ]
            for step in p.steps:
                mark = f"{p.name}-{step}"
                script = (
                    f"if test -e sleep-{mark}; then echo $$ > sleeping; sleep 30; fi; "
                    f"test ! -e fail-{mark} && echo {mark} >> ran.log"
                )
                lines += [
                    f"      - name: {step}",
                    "        uses: shell",
                    f'        with: {{argv: [sh, -c, "{script}"]}}',
                ]
        return "\n".join(lines) + "\n"

    def kind(self, state: str) -> str:
        if state == self.final:
            return "final"
        if any(p.via == state for p in self.phases.values()):
            return "intermediate"
        if any(p.failed == state for p in self.phases.values()):
            return "failed"
        return "stable"

    def advancing(self, state: str) -> PhaseSpec | None:
        return next((p for p in self.phases.values() if p.advance and state in p.sources), None)

    def interrupted_phase(self, state: str) -> PhaseSpec | None:
        return next((p for p in self.phases.values() if state in (p.via, p.failed)), None)


class Model:
    """What the stored environment must look like after each command."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.state: str | None = None
        self.run_of: str | None = None
        self.completed: list[str] = []
        self.interrupted = False
        self.failed_step: str | None = None
        self.transitions: list[tuple[str, str, str]] = []
        self.fails: set[tuple[str, str]] = set()
        self.ran: list[str] = []  # the steps that ran to success, in order

    def _move(self, to: str, trigger: str) -> None:
        assert self.state is not None
        self.transitions.append((self.state, to, trigger))
        self.state = to

    def _start(self, phase: PhaseSpec) -> None:
        self._move(phase.via, f"start_{phase.name}")
        self.run_of, self.completed, self.interrupted = phase.name, [], False
        self.failed_step = None

    def _steps(self, phase: PhaseSpec) -> str:
        for step in phase.steps:
            if step in self.completed:
                continue
            if (phase.name, step) in self.fails:
                self.failed_step = step
                self._move(phase.failed, f"fail_{phase.name}")
                return "failed"
            self.completed.append(step)
            self.ran.append(f"{phase.name}-{step}")
        self._move(phase.to, f"finish_{phase.name}")
        return "succeeded"

    def create(self) -> str | None:
        if self.state is not None:
            return "EnvironmentExistsError"
        self.state = INITIAL
        return None

    def _refused(self) -> str | None:
        if self.state is None:
            return "EnvironmentNotFoundError"
        if self.spec.kind(self.state) in ("intermediate", "failed"):
            return "PhaseNotAllowedError"
        return None

    def advance(self) -> str | None:
        if refused := self._refused():
            return refused
        assert self.state is not None
        phase = self.spec.advancing(self.state)
        if phase is not None:
            self._start(phase)
            self._steps(phase)
        return None

    def up(self) -> str | None:
        if refused := self._refused():
            return refused
        assert self.state is not None
        while (phase := self.spec.advancing(self.state)) is not None:
            self._start(phase)
            if self._steps(phase) != "succeeded":
                break
        return None

    def run_phase(self, name: str) -> str | None:
        if self.state is None:
            return "EnvironmentNotFoundError"
        phase = self.spec.phases[name]
        if self.state not in phase.sources:
            return "PhaseNotAllowedError"
        self._start(phase)
        self._steps(phase)
        return None

    def _resume_target(self) -> PhaseSpec | str:
        if self.state is None:
            return "EnvironmentNotFoundError"
        phase = self.spec.interrupted_phase(self.state)
        return "PhaseNotAllowedError" if phase is None else phase

    def _enter_resume(self, phase: PhaseSpec, from_step: str | None) -> None:
        if self.run_of != phase.name:
            self.run_of, self.completed = phase.name, []
        if from_step is not None:
            before = phase.steps[: phase.steps.index(from_step)]
            self.completed = [s for s in self.completed if s in before]
        self.interrupted = False
        if self.state == phase.failed:
            self.failed_step = None
            self._move(phase.via, f"resume_{phase.name}")

    def resume(self, from_step: str | None = None) -> str | None:
        phase = self._resume_target()
        if isinstance(phase, str):
            return phase
        if from_step is not None and from_step not in phase.steps:
            return "InputError"
        if from_step is not None and self.run_of == phase.name:
            pending = [s for s in phase.steps if s not in self.completed]
            if pending and phase.steps.index(from_step) > phase.steps.index(pending[0]):
                return "InputError"  # after the first step not done: resume starts there
        self._enter_resume(phase, from_step)
        self._steps(phase)
        return None

    def interrupt_plan(self) -> tuple[str, PhaseSpec, str] | None:
        """The command an interrupt test runs now, its phase, and the step it stops in."""
        if self.state is None or self.spec.kind(self.state) == "final":
            return None
        if self.spec.kind(self.state) in ("intermediate", "failed"):
            phase = self.spec.interrupted_phase(self.state)
            assert phase is not None
            done = self.completed if self.run_of == phase.name else []
            step = next(s for s in phase.steps if s not in done)
            return "resume", phase, step
        phase = self.spec.advancing(self.state)
        command = "advance"
        if phase is None:
            phase, command = self.spec.phases["destroy"], "destroy"
        return command, phase, phase.steps[0]

    def interrupted_in(self, command: str, phase: PhaseSpec) -> None:
        if command == "resume":
            self._enter_resume(phase, None)
        else:
            self._start(phase)
        self.interrupted = True


class World:
    """A working directory with one environment `demo`, driven in-process (and through
    the CLI for interrupts), checked against the model after every command."""

    def __init__(self, chain: list[int], destroy_steps: int) -> None:
        self.spec = Spec(chain, destroy_steps)
        self.model = Model(self.spec)
        self.dir = Path(tempfile.mkdtemp(prefix="runner-prop-"))
        build_tree(self.dir, {"machine.yaml": self.spec.yaml()})
        self.ws = Runner(
            self.dir, self.dir / "machine.yaml", lock_timeout=10, command="runner property-test"
        )

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def call(self, expected: str | None, action: str, *args: Any) -> None:
        operation = {
            "create": lambda: self.ws.create("demo"),
            "advance": lambda: self.ws.advance("demo"),
            "up": lambda: self.ws.up("demo"),
            "resume": lambda: self.ws.resume("demo", *args),
            "phase": lambda: self.ws.run_phase("demo", *args),
        }[action]
        try:
            operation()
        except RunnerError as exc:
            assert expected is not None, f"{action}{args} raised {exc!r}"
            assert expected in [c.__name__ for c in type(exc).__mro__], (expected, repr(exc))
        else:
            assert expected is None, f"{action}{args} should have raised {expected}"
        self.check()

    def set_fail(self, phase: str, step: str, on: bool) -> None:
        marker = self.dir / f"fail-{phase}-{step}"
        if on:
            marker.write_text("")
            self.model.fails.add((phase, step))
        else:
            marker.unlink(missing_ok=True)
            self.model.fails.discard((phase, step))

    def interrupt(self) -> None:
        plan = self.model.interrupt_plan()
        if plan is None:
            return
        command, phase, step = plan
        marker = self.dir / f"sleep-{phase.name}-{step}"
        sleeping = self.dir / "sleeping"
        marker.write_text("")
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", command, "demo"],
            cwd=self.dir,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while not (sleeping.exists() and sleeping.read_text().strip()):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the step never started"
                time.sleep(0.01)
            time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            marker.unlink()
        sleeper = int(sleeping.read_text())
        sleeping.unlink()
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        assert not _alive(sleeper), "the interrupted step's program still runs"
        self.model.interrupted_in(command, phase)
        self.check()

    def check(self) -> None:
        model = self.model
        store = FileStore(self.dir)
        if model.state is None:
            assert not store.exists("demo")
            return
        record = store.load("demo")
        assert record.state == model.state
        run = record.run
        if model.run_of is None:
            assert run is None
        else:
            assert run is not None
            assert run.phase == model.run_of
            assert run.completed_steps == model.completed
            assert run.interrupted is model.interrupted
        if self.spec.kind(model.state) == "failed":
            assert record.failure is not None
            assert record.failure.step == model.failed_step
            assert record.failure.phase == model.run_of
        else:
            assert record.failure is None
        events = store.read_events("demo")
        assert events[0]["type"] == "created" and events[0]["to"] == INITIAL
        moves = [(e["from"], e["to"], e["trigger"]) for e in events if e["type"] == "transition"]
        assert moves == model.transitions
        assert store.lock_holder("demo") is None
        ran = self.dir / "ran.log"
        assert (ran.read_text().split() if ran.exists() else []) == model.ran


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


chains = st.lists(st.integers(1, 3), min_size=2, max_size=4)


class EnvironmentMachine(RuleBasedStateMachine):
    """Random commands in-process: create, advance, up, phase, destroy, resume (from a
    step or not), and markers that make a step fail or succeed again."""

    world: World

    @initialize(chain=chains, destroy_steps=st.integers(1, 2))
    def start(self, chain: list[int], destroy_steps: int) -> None:
        self.world = World(chain, destroy_steps)
        self.world.call(self.world.model.create(), "create")

    def teardown(self) -> None:
        if hasattr(self, "world"):
            self.world.close()

    @rule()
    def create_again(self) -> None:
        self.world.call(self.world.model.create(), "create")

    @rule()
    def advance(self) -> None:
        self.world.call(self.world.model.advance(), "advance")

    @rule()
    def up(self) -> None:
        self.world.call(self.world.model.up(), "up")

    @rule(index=st.integers(0, 4))
    def phase(self, index: int) -> None:
        names = list(self.world.spec.phases)
        name = names[index % len(names)]
        self.world.call(self.world.model.run_phase(name), "phase", name)

    @rule()
    def destroy(self) -> None:
        self.world.call(self.world.model.run_phase("destroy"), "phase", "destroy")

    @rule(from_step=st.sampled_from([None, None, "s0", "s1", "s2", "d0", "nosuch"]))
    def resume(self, from_step: str | None) -> None:
        self.world.call(self.world.model.resume(from_step), "resume", from_step)

    @rule(phase=st.integers(0, 4), step=st.integers(0, 2), on=st.booleans())
    def mark(self, phase: int, step: int, on: bool) -> None:
        spec = self.world.spec.phases[
            list(self.world.spec.phases)[phase % len(self.world.spec.phases)]
        ]
        self.world.set_fail(spec.name, spec.steps[step % len(spec.steps)], on)

    @invariant()
    def no_lock_left(self) -> None:
        if hasattr(self, "world") and self.world.model.state is not None:
            assert FileStore(self.world.dir).lock_holder("demo") is None


def test_random_command_sequences_match_the_model() -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        EnvironmentMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


commands = st.lists(
    st.sampled_from(["advance", "advance", "resume", "fail", "heal", "interrupt"]),
    min_size=3,
    max_size=7,
).filter(lambda cs: 1 <= cs.count("interrupt") <= 2)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain=chains, sequence=commands, seed=st.integers(0, 1000), destroy=st.booleans())
def test_interrupted_runs_match_the_model(
    chain: list[int], sequence: list[str], seed: int, destroy: bool
) -> None:
    """Interrupts (SIGINT to a `runner` process while a step sleeps) mixed with in-process
    commands: the environment stays in the via state with its completed steps, and
    resume (or a final destroy) goes on from there."""
    world = World(chain, 1)
    try:
        model = world.model
        world.call(model.create(), "create")
        for number, command in enumerate(sequence):
            if command == "interrupt":
                world.interrupt()
            elif command == "advance":
                world.call(model.advance(), "advance")
            elif command == "resume":
                world.call(model.resume(), "resume")
            else:
                phase = list(world.spec.phases)[(seed + number) % len(chain)]
                steps = world.spec.phases[phase].steps
                world.set_fail(phase, steps[(seed + number) % len(steps)], command == "fail")
        if destroy:
            world.call(model.run_phase("destroy"), "phase", "destroy")
    finally:
        world.close()
