"""The repository interface: where environments live.

The engine and the CLI only use :class:`Repository`; :mod:`runner.store.files` is the
first backend (JSON files under ``data/<env>/``). A state record is a plain dict in
``state.json`` format 1 (``schemas/state.schema.json``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

from runner.errors import InvalidNameError

STATE_FORMAT = 1

#: Events, oldest first (an alias: inside Repository, ``list`` names the method).
Events: TypeAlias = list[dict[str, Any]]
NAME_RULE = "^[a-z][a-z0-9-]{0,62}$"
_NAME = re.compile(NAME_RULE)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"invalid environment name {name!r}",
            hint=f"a name must match {NAME_RULE}: a lowercase letter, then up to 62 lowercase "
            "letters, digits or '-' (e.g. 'demo', 'staging-2')",
        )
    return name


def now_iso() -> str:
    """UTC now as ``2026-11-22T10:30:15.123Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or held) an environment's lock."""

    pid: int
    host: str
    command: str
    started_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "host": self.host,
            "command": self.command,
            "started_at": self.started_at,
        }


@dataclass(frozen=True)
class ListEntry:
    """One environment in a listing: its record, or why it could not be read."""

    name: str
    record: dict[str, Any] | None = None
    error: str | None = None


class Repository(ABC):
    """Storage of environments. Paths in records are relative to ``workdir``."""

    workdir: Path

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def create(self, record: dict[str, Any]) -> dict[str, Any]:
        """Store a new environment atomically (create-if-absent). Raises
        EnvironmentExistsError when the name is taken. Returns the stored record."""

    @abstractmethod
    def load(self, name: str) -> dict[str, Any]:
        """The validated record. Raises EnvironmentNotFoundError or StateFileError."""

    @abstractmethod
    def save(self, record: dict[str, Any], expected_serial: int) -> dict[str, Any]:
        """Validate and durably write ``record`` with ``serial = expected_serial + 1`` and a
        fresh ``updated_at``; raises ConflictError when the stored serial is not
        ``expected_serial``. Returns the written record."""

    @abstractmethod
    def lock(self, name: str, command: str, timeout_s: float) -> AbstractContextManager[LockInfo]:
        """Hold the environment's exclusive lock for the ``with`` block. Waits up to
        ``timeout_s`` (0 = fail at once), then raises LockedError naming the holder."""

    @abstractmethod
    def lock_holder(self, name: str) -> LockInfo | None:
        """Who holds the lock now, without taking it or waiting; None if nobody."""

    @abstractmethod
    def list(self) -> list[ListEntry]:
        """Every environment, sorted by name; unreadable ones carry their error."""

    @abstractmethod
    def append_event(self, name: str, event: dict[str, Any]) -> None:
        """Append one event (a JSON line) to the environment's event log."""

    @abstractmethod
    def read_events(self, name: str, limit: int | None = None) -> Events:
        """The event log, oldest first; with ``limit``, only the last ``limit`` events.
        A torn last line is ignored."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove the environment's record and files."""

    @abstractmethod
    def artifacts_dir(self, name: str) -> Path:
        """Absolute folder for the environment's traces/ and runs/ (``data/<env>``)."""

    @abstractmethod
    def relative(self, path: Path) -> str:
        """``path`` relative to the working directory, as stored in records."""
