"""Where the files shipped with the runner live (schemas, the default machine).

In a source checkout or an editable install they sit beside the packages; in a wheel
they are installed under ``runner/_data``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _root() -> Path:
    data = _PACKAGE / "_data"
    return data if data.is_dir() else _PACKAGE.parent


def schema_path(name: str) -> Path:
    return _root() / "schemas" / f"{name}.schema.json"


def shipped_machine() -> Path:
    return _root() / "machine.yaml"
