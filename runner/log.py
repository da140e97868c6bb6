"""The ``runner`` logger, made when it is first used.

Importing :mod:`logging` (and what it imports: traceback, string, ...) is a noticeable
part of the start of the read-only commands, which log nothing when all goes well. So
the modules on their path (the API, the store's lock) ask :func:`logger` for the logger
at the moment they log, and the command line may leave its configuration with
:func:`when_used` instead of importing logging itself: a command that never logs never
imports it. Modules off that path call :func:`logger` when they are imported.

The first call gives the ``runner`` logger a :class:`logging.NullHandler` (a library's
records go where its user configures logging, and nowhere by default), then applies
what was left with :func:`when_used`.
"""

from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

__all__ = ["logger", "when_used"]

NAME = "runner"

_ready = False
_pending: list[Callable[[], None]] = []


def logger(name: str = NAME) -> logging.Logger:
    """The logger ``name`` (``runner`` or one below it), set up on the first call."""
    import logging

    global _ready
    if not _ready:
        _ready = True
        logging.getLogger(NAME).addHandler(logging.NullHandler())
        while _pending:
            _pending.pop(0)()
    return logging.getLogger(name)


def when_used(setup: Callable[[], None]) -> None:
    """Run ``setup`` (which configures logging) when the logger is first used, or now if
    it already was."""
    if _ready:
        setup()
    else:
        _pending.append(setup)
