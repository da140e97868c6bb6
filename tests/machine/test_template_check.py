"""The syntax check of `with`, `when` and recovery templates: a plain template is only
parsed, any other compiled, and the verdict and message are always the compiler's."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.machine import templating
from runner.machine.loader import _parse
from runner.resources import shipped_machine

TEMPLATES = [
    "plain text {{ env.name }}",
    "{{ inputs.port + 1 }}:{{ outputs['ip'] }}",
    "{{ inputs.list[1:3] | join(',') }}",
    "{{ inputs.x | default('y') | upper }}",
    "{% if inputs.x is defined %}{{ inputs.x }}{% else %}none{% endif %}",
    "{{ 'a' if inputs.b else 'c' }}",
    "{{ [1, 2] + [3] }} {{ {'a': 1}['a'] }} {{ (1, 2) }} {{ not x and y or z }}",
    "{{ f(a, b=1) ~ -x ~ +y }} {{ 2 ** 3 * 4 / 2 // 1 % 5 }}",
    "{# a comment #}{{ x }}",
    # what compiling finds and parsing does not
    "{{ x | no_such_filter }}",
    "{{ x is no_such_test }}",
    "{% if a %}{{ x | no_such_filter }}{% endif %}",  # allowed: checked when it runs
    "{{ x | no_such_filter if a else b }}",
    "{% block a %}{% endblock %}{% block a %}{% endblock %}",
    "{% for loop in items %}{{ loop }}{% endfor %}",
    "{% macro m(caller) %}{% endmacro %}",
    "{% if a %}{% extends 'base' %}{% endif %}",
    "{% set x = 1 %}{{ x }}",
    "{% for i in items %}{{ i | no_such_filter }}{% endfor %}",
    # syntax errors
    "{{ x",
    "{{ x }",
    "{% if %}",
    "{% endif %}",
    "{{ x | }}",
    "{{ 1 +* 2 }}",
    "{{ x.__class__ }}",
]

EXPRESSIONS = [
    "inputs.target != 'none'",
    "{{ inputs.x | length > 2 }}",
    "inputs.x is defined and inputs.x | no_such_filter",
    "inputs.x is no_such_test",
    "x y",
    "x |",
    "(",
    "a if b else c",
    "{{ x }} {{ y }}",
]


def _texts_of_the_shipped_machine() -> list[tuple[str, bool]]:
    doc = _parse("machine.yaml", shipped_machine().read_text())
    found = []
    for phase in doc["phases"]:
        for step in phase["steps"]:
            if isinstance(step.get("when"), str):
                found.append((step["when"], True))
            found += [(text, False) for text in templating.template_strings(step.get("with"))]
    for state in doc["states"].values():
        if isinstance((state or {}).get("recovery"), str):
            found.append((state["recovery"], False))
    return found


@pytest.mark.parametrize(
    ("source", "expression"),
    [(t, False) for t in TEMPLATES] + [(e, True) for e in EXPRESSIONS],
)
def test_the_check_gives_the_compiler_s_verdict(source: str, expression: bool) -> None:
    assert templating.check_syntax(source, expression=expression) == (
        templating.check_by_compiling(source, expression=expression)
    )


def test_the_check_finds_what_only_compiling_finds() -> None:
    assert "No filter named 'no_such_filter'" in str(
        templating.check_syntax("{{ x | no_such_filter }}")
    )
    assert "No test named 'no_such_test'" in str(
        templating.check_syntax("inputs.x is no_such_test", expression=True)
    )
    assert "defined twice" in str(
        templating.check_syntax("{% block a %}{% endblock %}{% block a %}{% endblock %}")
    )


def test_the_shipped_machine_s_templates_are_plain_and_valid() -> None:
    texts = _texts_of_the_shipped_machine()
    assert len(texts) > 20
    for text, expression in texts:
        assert templating.check_syntax(text, expression=expression) is None


PIECES = st.sampled_from(
    ["{{", "}}", "{%", "%}", "{#", "#}", " ", "x", "a.b", "|", "upper", "nofilter", "is",
     "defined", "if", "else", "endif", "for", "in", "endfor", "block", "endblock", "(",
     ")", "[", "]", "1", "'s'", "+", "~", "not", "and", "set", "=", ","]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(PIECES, max_size=14), expression=st.booleans())
def test_random_templates_get_the_compiler_s_verdict(pieces: list[str], expression: bool) -> None:
    source = "".join(pieces)
    templating._checked.cache_clear()
    templating._checked_expression.cache_clear()
    assert templating.check_syntax(source, expression=expression) == (
        templating.check_by_compiling(source, expression=expression)
    )
