"""The working directory's own settings: ``runner.toml``.

A team commits ``runner.toml`` beside ``machine.yaml`` so that everyone who runs the
runner in that folder gets the same choices::

    [state]
    url = "postgresql://db.example.org/runner"   # where environments are kept
    snapshots = 20                               # versions of each record kept

Every key is optional; a missing file means the defaults. The file is read only when
it exists (a ``stat`` otherwise), so commands that start fast stay fast. Errors name
the file, the key and what to change (exit 2).
"""

from __future__ import annotations

import os

from runner.errors import InputError
from runner.struct import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

__all__ = ["DEFAULT_SNAPSHOTS", "SETTINGS_FILE", "Settings", "load_settings"]

SETTINGS_FILE = "runner.toml"
#: How many versions of each record a backend keeps by default (besides the current).
DEFAULT_SNAPSHOTS = 20

_KNOWN = {"state": {"url": str, "snapshots": int}}


@struct(frozen=True)
class Settings:
    """What ``runner.toml`` says (the defaults where it is silent)."""

    state_url: str | None = None
    """``state.url``: the backend, as a ``file:PATH`` or ``postgresql://`` URL."""
    snapshots: int = DEFAULT_SNAPSHOTS
    """``state.snapshots``: versions of each record kept besides the current one."""
    file: Path | None = None
    """The file these came from, if any."""


def load_settings(workdir: str | os.PathLike[str]) -> Settings:
    """The settings of ``workdir``'s ``runner.toml`` (defaults when there is none)."""
    name = os.path.join(workdir, SETTINGS_FILE)
    try:
        with open(name, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return Settings()
    except OSError as exc:
        raise InputError(
            f"cannot read {name}: {exc.strerror}",
            hint="make the file readable, or remove it to use the defaults",
        ) from exc
    import tomllib
    from pathlib import Path

    path = Path(name)
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(
            f"{path}: not valid TOML: {exc}",
            hint="fix the file (see docs/configuration.md), or remove it to use the defaults",
        ) from exc
    values = _checked(path, document)
    return Settings(
        state_url=values.get(("state", "url")),
        snapshots=values.get(("state", "snapshots"), DEFAULT_SNAPSHOTS),
        file=path,
    )


def _checked(path: Path, document: dict[str, Any]) -> dict[tuple[str, str], Any]:
    values: dict[tuple[str, str], Any] = {}
    for table, content in document.items():
        known = _KNOWN.get(table)
        if known is None or not isinstance(content, dict):
            raise InputError(
                f"{path}: unknown setting {table!r}",
                hint=f"the settings are {_listed()}",
            )
        for key, value in content.items():
            kind = known.get(key)
            if kind is None:
                raise InputError(
                    f"{path}: unknown setting '{table}.{key}'", hint=f"the settings are {_listed()}"
                )
            if not isinstance(value, kind) or isinstance(value, bool):
                wanted = "text" if kind is str else "a whole number"
                raise InputError(
                    f"{path}: '{table}.{key}' must be {wanted}, not {value!r}",
                    hint="fix the value in the file",
                )
            if isinstance(value, int) and value < 0:
                raise InputError(
                    f"{path}: '{table}.{key}' must be 0 or more, not {value}",
                    hint="fix the value in the file",
                )
            values[(table, key)] = value
    return values


def _listed() -> str:
    return ", ".join(f"{t}.{k}" for t, keys in _KNOWN.items() for k in keys)
