"""Durations in `with:` parameters: their JSON Schema and their value in seconds."""

from __future__ import annotations

from typing import Any

from runner.errors import StepError
from runner.machine.model import parse_duration


def duration_schema(description: str, default: str | int) -> dict[str, Any]:
    """Schema of a duration: seconds as a number, or text such as ``30s``, ``5m``, ``1h30m``."""
    return {
        "description": f"{description} Seconds as a number, or text such as `30s`, `5m`, `1h30m`.",
        "oneOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"},
        ],
        "default": default,
    }


def seconds(value: Any, name: str) -> float:
    """``value`` in seconds; a bad value is a ``configuration`` failure naming ``name``."""
    try:
        return parse_duration(value)
    except (AttributeError, TypeError, ValueError) as exc:
        raise StepError("configuration", f"`{name}` is not a duration: {exc}") from exc
