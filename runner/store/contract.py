"""The storage contract: the small protocols every backend implements.

The engine and the commands see a backend only through these protocols, composed into
:class:`Store`. Each one is small enough to implement, and to test, on its own:

- :class:`Records`: the environment records, with an atomic create-if-absent and a
  compare-and-swap save (the stored serial must be the record's);
- :class:`Locks`: the environment lock, as *one attempt* (:meth:`Locks.try_lock`) and
  *one bounded wait* (:meth:`Locks.wait_lock`); how long to wait, what to say while
  waiting and the error at the end are the policy of :mod:`runner.store.locking`,
  not of a backend;
- :class:`EventLog`: the append-only history of each environment;
- :class:`Artifacts`: traces and run logs, written, appended, read and listed by
  reference, never through paths the engine builds;
- :class:`Snapshots`: the versions of each record a save keeps (the current one and
  the ones before it, up to the backend's ``keep_snapshots``), listed and read back by
  serial;
- listing every environment (:meth:`Records.list`), which survives a broken entry;
- optionally, :class:`Versions`: a cheap token per record that changes with every
  save, so that a watcher (the dashboard) reads again only what changed.
- :class:`Imports`: storing a whole :class:`EnvironmentCopy` from another backend, for
  ``runner state migrate``.

``tests/store/test_contract.py`` runs one suite of tests against every backend.
"""

from __future__ import annotations

from runner.store.record import Record, check_name, now_iso
from runner.struct import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runner.store.protocols import (
        ArtifactKind,
        Artifacts,
        ArtifactWriter,
        EventLog,
        Events,
        Imports,
        Lease,
        Locks,
        Records,
        Snapshots,
        Store,
        Versions,
    )

__all__ = [
    "ArtifactKind",
    "ArtifactWriter",
    "Artifacts",
    "EnvironmentCopy",
    "EventLog",
    "Events",
    "Imports",
    "Lease",
    "ListEntry",
    "LockInfo",
    "Locks",
    "ProcessGroup",
    "Records",
    "SnapshotInfo",
    "Snapshots",
    "Store",
    "Versions",
    "check_name",
    "now_iso",
]

#: The protocols (they need :mod:`typing`, which the read-only commands never import)
#: live in :mod:`runner.store.protocols`; they are found here on first use.
_PROTOCOLS = frozenset(
    (
        "ArtifactKind",
        "ArtifactWriter",
        "Artifacts",
        "EventLog",
        "Events",
        "Imports",
        "Lease",
        "Locks",
        "Records",
        "Snapshots",
        "Store",
        "Versions",
    )
)


def __getattr__(name: str) -> object:
    if name in _PROTOCOLS:
        from runner.store import protocols

        return getattr(protocols, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ProcessGroup(int):
    """A process group a holder's step runs: its number (which it is, and compares as),
    with what tells it apart from a later group of that number, since the system reuses
    the numbers and a reboot starts them again: the ``boot_id`` of the system it runs on
    and its leader's ``leader_start`` (clock ticks after that boot). A plain number
    among :attr:`LockInfo.processes` is a group nothing identifies (an older runner's
    record): whoever finds it can only say it may still run, never stop it."""

    boot_id: str | None
    leader_start: int | None

    def __new__(
        cls, group: int, boot_id: str | None = None, leader_start: int | None = None
    ) -> ProcessGroup:
        self = super().__new__(cls, group)
        self.boot_id = boot_id
        self.leader_start = leader_start
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (ProcessGroup, (int(self), self.boot_id, self.leader_start))

    def __repr__(self) -> str:
        return f"ProcessGroup({int(self)}, {self.boot_id!r}, {self.leader_start!r})"

    def __str__(self) -> str:  # the number, in messages and f-strings, as any int
        return int.__repr__(self)

    @property
    def identified(self) -> bool:
        """Whether the boot and the leader's start time are known."""
        return self.boot_id is not None and self.leader_start is not None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"group": int(self)}
        if self.identified:
            data["boot_id"] = self.boot_id
            data["leader_start"] = self.leader_start
        return data

    @classmethod
    def from_json(cls, data: object) -> int | None:
        """One entry of a holder record's ``processes``: a :class:`ProcessGroup` (an
        object), a plain number (an older runner's record), or None when it is neither
        (or names no group a runner would have started: 0, 1, negative)."""
        if isinstance(data, int) and not isinstance(data, bool):
            return data if data > 1 else None
        if not isinstance(data, dict):
            return None
        group, boot_id, start = data.get("group"), data.get("boot_id"), data.get("leader_start")
        if not isinstance(group, int) or isinstance(group, bool) or group <= 1:
            return None
        if isinstance(boot_id, str) and isinstance(start, int) and not isinstance(start, bool):
            return cls(group, boot_id, start)
        return cls(group)

    def to_text(self) -> str:
        """``GROUP:BOOT_ID:LEADER_START`` (``GROUP`` alone when not identified): the
        form of the PostgreSQL backend's ``lock_holders.process_ids``."""
        if not self.identified:
            return str(int(self))
        return f"{int(self)}:{self.boot_id}:{self.leader_start}"

    @classmethod
    def from_text(cls, text: str) -> ProcessGroup | None:
        """The inverse of :meth:`to_text`; None when ``text`` is not of that form."""
        group, _, rest = text.partition(":")
        boot_id, _, start = rest.rpartition(":")
        if not group.isdigit() or int(group) <= 1:
            return None
        if boot_id and start.isdigit():
            return cls(int(group), boot_id, int(start))
        return cls(int(group))


@struct(frozen=True)
class LockInfo:
    """Who holds (or held) an environment's lock."""

    pid: int
    host: str
    command: str
    started_at: str
    processes: tuple[int, ...] = ()
    """The process groups of the programs the holder's steps were running: each a
    :class:`ProcessGroup` where the holder could tell what identifies it, a plain number
    in the record of an older runner."""

    @classmethod
    def unknown(cls) -> LockInfo:
        """A held lock whose holder has not (yet) said who it is."""
        return cls(0, "?", "?", "?")

    @property
    def known(self) -> bool:
        """Whether this names a holder (not :meth:`unknown`)."""
        return self.pid > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "host": self.host,
            "command": self.command,
            "started_at": self.started_at,
            "processes": [
                g.to_json() if isinstance(g, ProcessGroup) else {"group": g} for g in self.processes
            ],
        }


@struct(frozen=True)
class ListEntry:
    """One environment in a listing: its record, or why it could not be read."""

    name: str
    record: Record | None = None
    error: str | None = None


@struct(frozen=True)
class SnapshotInfo:
    """One kept version of an environment's record."""

    serial: int
    saved_at: str
    """The version's ``updated_at``."""
    state: str
    change: str | None
    """What made this version (the record's ``change``)."""
    lineage: str | None

    @classmethod
    def of(cls, record: Record) -> SnapshotInfo:
        return cls(record.serial, record.updated_at, record.state, record.change, record.lineage)

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "saved_at": self.saved_at,
            "state": self.state,
            "change": self.change,
            "lineage": self.lineage,
        }


# --- moving environments between backends -------------------------------------------------


@struct
class EnvironmentCopy:
    """Everything a backend keeps of one environment, as ``runner state migrate`` moves
    it: the record (its serial and lineage as they are), the events, the kept snapshots
    and the artifacts. Artifact references inside the records are the source's; an
    importing backend names them its own way (:func:`runner.store.transfer.rebased`)."""

    record: Record
    events: Events
    snapshots: list[Record]
    """Kept versions, oldest first (the current one included)."""
    artifacts: list[tuple[ArtifactKind, str, str]]
    """(kind, reference, text), oldest first."""
