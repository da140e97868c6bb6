"""runner.machine.yamlguard: documents are built exactly as ruamel.yaml builds them, and what
must not be built (too deep, too big once expanded, cyclic, not JSON) is refused."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from runner.machine import yamlguard
from runner.resources import shipped_machine
from tests.helpers import ROOT, build_tree, run_cli


def ruamel_load(text: str) -> Any:
    yaml = YAML(typ="safe")
    yaml.Resolver = yamlguard.resolver()
    return yaml.load(text)


def event_load(text: str) -> Any:
    """The guarded event loader, which large or anchored documents go through."""
    yaml = YAML(typ="safe")
    yaml.Resolver = yamlguard.resolver()
    return yamlguard._EventLoader(yaml).load(text)


FEATURES = [
    "a: 1\nb: true\nc: null\nd: 1.5\ne: '1'\nf: [x, 2]\ng: ~\nh: 0x1F\nj: 0o17\nk: 1_000\n",
    "l: .inf\nm: -.5e3\nn: !!str 12\no: !!int '42'\np: !!float '1'\nq: !!bool 'true'\n",
    "base: &b {x: 1, y: 2}\nd: {<<: *b, y: 3}\ne: {<<: [*b, {x: 9, z: 1}], w: 0}\n",
    "base: &b {x: 1, y: 2}\nf: {y: 7, <<: *b}\ng:\n  <<: *b\n  x: 5\n",
    "- a\n- &s text\n- *s\n- &l [1, 2]\n- *l\n",
    "text: |\n  line one\n    indented\n  [not] {flow}\nfolded: >-\n  a\n  b\n",
    '? a\n: b\n\'quoted key\': "double \\"quoted\\" \\u00e9"\n',
    "empty_map: {}\nempty_list: []\nnested: {a: {b: {c: [[], [{}]]}}}\n",
    "",
    "# only a comment\n",
    "just a string\n",
    "date_like: 2024-01-01\nwhen: 2001-12-14t21:59:43.10-05:00\n",
    # the same words again and again (each plain word's tag is resolved once)
    "a: 1\nb: '1'\nc: [1, '1', 1, on, 'on', on]\nd: {1: on, x: 1}\ne: [null, 'null', null]\n",
]


@pytest.mark.parametrize("text", FEATURES)
def test_the_event_loader_builds_what_ruamel_builds(text: str) -> None:
    assert event_load(text) == ruamel_load(text)
    assert yamlguard.load(text) == ruamel_load(text)


def test_shared_values_stay_shared_as_in_ruamel() -> None:
    doc = event_load("a: &x [1]\nb: *x\n")
    assert doc["a"] is doc["b"]


@pytest.mark.parametrize("text", ["a: *x\n", "a: *x\nb: 'x != y'\n", "- &y 1\n- *x\n"])
def test_an_undefined_alias_is_ruamel_s_error_on_every_path(text: str) -> None:
    """Whichever loader a document takes (a `!` or `&` anywhere sends it through the
    event loader), an alias of no anchor is an error, never a null."""
    with pytest.raises(Exception, match="found undefined alias"):
        ruamel_load(text)
    with pytest.raises(Exception, match="found undefined alias"):
        yamlguard.load(text)


@pytest.mark.parametrize("text", ["a: <<\n", "- <<\n", "a: &m <<\nb: *m\n"])
def test_a_merge_key_as_a_value_is_ruamel_s_error(text: str) -> None:
    """`<<` means "merge" only as a key; as a value ruamel refuses it, and so does the
    guarded loader (it never hands back its own marker as a value)."""
    with pytest.raises(Exception, match="could not determine a constructor"):
        ruamel_load(text)
    with pytest.raises(Exception, match="could not determine a constructor"):
        yamlguard.load(text)
    assert event_load(text) is yamlguard._UNBUILT  # left to ruamel, which reports it


def test_dates_stay_text() -> None:
    assert yamlguard.load("d: 2024-01-01\n") == {"d": "2024-01-01"}


@pytest.mark.parametrize(
    "path",
    [shipped_machine(), *sorted((ROOT / "templates").rglob("*.yml"))],
    ids=lambda p: Path(p).name,
)
def test_shipped_files_load_alike(path: Path) -> None:
    text = Path(path).read_text()
    if "!unsafe" in text:  # Ansible's own tag: neither loader builds it
        with pytest.raises(yamlguard.YamlShapeError, match="tag !unsafe"):
            yamlguard.load(text)
        return
    assert event_load(text) == ruamel_load(text)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12)
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=25,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(value=JSONISH, shared=JSONISH)
def test_random_documents_with_aliases_load_alike(value: Any, shared: Any) -> None:
    """Documents dumped by ruamel from random values, one value used three times (so
    dumped once with an anchor and twice as an alias), in block and flow style."""
    doc = {"one": shared, "two": [shared, value], "three": {"again": shared}}
    for flow in (False, True):
        out = io.StringIO()
        yaml = YAML(typ="safe")
        yaml.default_flow_style = flow
        yaml.dump(doc, out)
        text = out.getvalue()
        assert event_load(text) == ruamel_load(text), text


@pytest.mark.parametrize(
    "text,words",
    [
        ("a: !!set {x}\n", "tag"),
        ("a: !!binary aGVsbG8=\n", "tag"),
        ("a: !!timestamp 2024-01-01\n", "tag"),
        ("a: !custom x\n", "tag"),
        ("{[1]: 2}\n", "keys must be text"),
        ("? [a]\n: b\n", "keys must be text"),
        ("a: &x [1]\n*x : 2\n", "keys must be text"),
        ("a: !!int abc\n", "cannot be read"),
        ("a: " + "1" * 5000 + "\n", "cannot be read"),
        ("a: &a [b, *a]\n", "cycle"),
        ("a: &s '" + "x" * 100_000 + "'\nb: [" + ", ".join(["*s"] * 300) + "]\n", "characters"),
        ("a: " + '["]",' * 30_000 + "1" + "]" * 30_000 + "\n", "nested more than"),
    ],
    ids=[
        "set",
        "binary",
        "timestamp",
        "local-tag",
        "flow-list-key",
        "complex-key",
        "alias-key",
        "bad-int",
        "5000-digits",
        "cycle",
        "long-string-aliases",
        "brackets-in-quotes",
    ],
)
def test_what_json_cannot_hold_or_a_process_cannot_build_is_refused(text: str, words: str) -> None:
    with pytest.raises(yamlguard.YamlShapeError, match=words):
        yamlguard.load(text)


@pytest.mark.parametrize(
    "args",
    [
        ("--set", "k=2024-13-45"),
        ("--set", "k=" + "1" * 5000),
        ("--set", "k=!!int abc"),
        ("--set", "k={[1]: 2}"),
        ("--set", "k=" + '[{"]}": ' * 12_000 + "1" + "}]" * 12_000),
    ],
    ids=["bad-date", "5000-digits", "bad-int", "list-key", "brackets-in-quotes"],
)
def test_set_values_never_crash_create(tmp_path: Path, args: tuple[str, ...]) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    proc = run_cli("create", "demo", *args, cwd=tmp_path, timeout=20)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert proc.returncode in (0, 2), proc.stderr
    if proc.returncode == 0:  # taken as text, and stored as JSON
        assert run_cli("status", "demo", cwd=tmp_path).returncode == 0


MACHINE = """\
    version: 1
    name: free
    initial: created
    inputs: {type: object}
    states: {created: {}, building: {}, built: {}, build_failed: {}}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps: [{name: one, uses: shell, with: {argv: ["true"]}}]
"""


def test_a_config_file_with_a_date_that_does_not_exist_is_text(tmp_path: Path) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE, "cfg.yaml": "image: 2024-02-30\n"})
    proc = run_cli("--output", "json", "create", "demo", "--config", "cfg.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"image": "2024-02-30"' in proc.stdout


def test_a_generated_machine_loads_alike() -> None:
    """The event loader is what `validate` uses for a big machine (many brackets)."""
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_machine import generate

    text = generate(50)
    assert event_load(text) == ruamel_load(text)
