"""Where the files shipped with the runner live (schemas, the default machine).

In a source checkout or an editable install they sit beside the packages; in a wheel
they are installed under ``runner/_data``. The ``*_file`` functions give plain paths
(the read-only commands never import pathlib); the ``*_path`` ones give Paths.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

_PACKAGE = os.path.dirname(os.path.realpath(__file__))


def _root() -> str:
    data = os.path.join(_PACKAGE, "_data")
    return data if os.path.isdir(data) else os.path.dirname(_PACKAGE)


def schema_file(name: str) -> str:
    return os.path.join(_root(), "schemas", f"{name}.schema.json")


def schema_path(name: str) -> Path:
    from pathlib import Path

    return Path(schema_file(name))


def shipped_machine_file() -> str:
    return os.path.join(_root(), "machine.yaml")


def shipped_machine() -> Path:
    from pathlib import Path

    return Path(shipped_machine_file())
