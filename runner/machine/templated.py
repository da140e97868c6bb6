"""What is a template, and the failure of one, without Jinja2 (slow to import): the
engine asks these before it renders, so a phase whose steps hold no template never
imports the sandbox of :mod:`runner.machine.templating`, which re-exports them."""

from __future__ import annotations

from collections.abc import Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["TemplateFailure", "has_template", "is_template", "template_strings"]


class TemplateFailure(Exception):
    """A template could not be parsed or rendered; the message says why."""


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


def template_strings(value: Any) -> list[str]:
    """Every templated string inside ``value``."""
    if isinstance(value, str):
        return [value] if is_template(value) else []
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in template_strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in template_strings(v)]
    return []


def has_template(value: Any) -> bool:
    """Whether some string inside ``value`` is templated (the first one found says so)."""
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, Mapping):
        return any(has_template(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_template(v) for v in value)
    return False
