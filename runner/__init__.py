"""runner: move deployment environments through a lifecycle declared in machine.yaml.

``from runner import Runner`` gives the Python API (:class:`runner.api.runner.Runner`).
It is imported on first use, so ``import runner`` stays cheap for the command line.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runner.api.runner import Runner

__all__ = ["Runner", "__version__"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Runner":
        from runner.api.runner import Runner

        return Runner
    raise AttributeError(f"module 'runner' has no attribute {name!r}")
