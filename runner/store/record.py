"""The state record: everything the store keeps about one environment, typed.

A :class:`Record` is built in one place (:meth:`Record.new` for a new environment,
:meth:`Record.from_json` for a stored one) and has one JSON form (:meth:`to_json`,
derived from the fields), which is what every backend stores and what
``schemas/state.schema.json`` describes. The records are mutable: a session changes
its record as a phase runs, and a store's ``save`` sets the new ``serial`` and
``updated_at`` on the record it was given once the write has landed.

Formats: the JSON form carries ``format``. Format 2 added ``failure.attempts``,
``failure.hint`` and ``machine.file``; format 3 added ``lineage`` (the environment's
identity, given by ``create``) and ``change`` (what made this version), ``forced`` (the
last ``force-state``, until a phase runs) and, in ``run``, the digests of the machine
and of each step of the phase when the run started (``machine_digest``,
``step_digests``), and the optional ``last_check`` (the latest `runner check`). Older
files are read (those fields absent) and written back in the current format on their
next save, with a new lineage.
A newer format is refused by the store, never rewritten.
"""

from __future__ import annotations

import json
import re
from functools import cache

from runner.errors import InvalidNameError
from runner.result import as_json, key
from runner.struct import copied, field, struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

__all__ = [
    "NAME_RULE",
    "READABLE_FORMATS",
    "STATE_FORMAT",
    "TOO_DEEP",
    "CheckEntry",
    "Failure",
    "Forced",
    "LastCheck",
    "MachineRef",
    "Paths",
    "Record",
    "Run",
    "check_name",
    "checked_problem",
    "light_problem",
    "next_serial",
    "now_iso",
    "record_problem",
]

#: The format this runner writes.
STATE_FORMAT = 3
#: The formats this runner reads.
READABLE_FORMATS = (1, 2, 3)

NAME_RULE = "^[a-z][a-z0-9-]{0,62}$"
_NAME = re.compile(NAME_RULE)


def check_name(name: str) -> str:
    """``name`` if it is a valid environment name, else InvalidNameError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"invalid environment name {name!r}",
            hint=f"a name must match {NAME_RULE}: a lowercase letter, then up to 62 lowercase "
            "letters, digits or '-' (e.g. 'demo', 'staging-2')",
        )
    return name


def now_iso() -> str:
    """UTC now as ``2026-11-22T10:30:15.123Z``."""
    return _utc_now("%Y-%m-%dT%H:%M:%S", ".") + "Z"


def now_stamp() -> str:
    """UTC now as artifact names give it: ``20261122-103015-123``."""
    return _utc_now("%Y%m%d-%H%M%S", "-")


def _utc_now(seconds_format: str, before_milliseconds: str) -> str:
    # the time module's clock and formatting (datetime costs a command that writes
    # a record, and so every phase run, its import)
    import time

    ns = time.time_ns()
    seconds = time.strftime(seconds_format, time.gmtime(ns // 1_000_000_000))
    return f"{seconds}{before_milliseconds}{ns // 1_000_000 % 1000:03d}"


# --- the stored form's checks -----------------------------------------------------------


@cache
def _schema() -> dict[str, Any]:
    from runner.resources import schema_file

    with open(schema_file("state"), encoding="utf-8") as file:
        schema: dict[str, Any] = json.load(file)
    return schema


@cache
def _schema_check() -> Any:
    # runner.minischema checks the same schema file as jsonschema would, without its
    # ~80 ms import: status, list and history must start fast
    from runner.minischema import compile_schema

    return compile_schema(_schema(), lazy=True)


def _format_problem(data: object) -> str | None:
    """What is wrong with the record's ``format``, if anything (checked before the schema,
    so that a newer file is reported as newer, not as a pile of schema errors)."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not an object"
    if "format" not in data:
        return "has no 'format' field"
    fmt = data["format"]
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > STATE_FORMAT:
        return f"has format {fmt}: it was written by a newer runner; upgrade runner"
    if fmt not in READABLE_FORMATS or isinstance(fmt, bool):
        *first, last = (str(f) for f in READABLE_FORMATS)
        readable = f"{', '.join(first)} and {last}" if first else last
        return f"has an unknown format {json.dumps(fmt)} (this runner reads formats {readable})"
    return None


def next_serial(expected: int, serial: int | None = None) -> int:
    """The serial a save of a record stored as ``expected`` writes: ``expected + 1``, or
    ``serial`` when that is higher (a restore after an old copy was put back)."""
    return expected + 1 if serial is None else max(expected + 1, serial)


#: What a record nested deeper than Python's parser or checks can follow is said to be.
TOO_DEEP = "is nested too deeply to be a state file"


def checked_problem(check: Callable[[Any], str | None], document: Any) -> str | None:
    """``check(document)``, where a document too deep to walk is a problem, not a crash."""
    try:
        return check(document)
    except RecursionError:
        return TOO_DEEP


def record_problem(data: object) -> str | None:
    """What makes ``data`` an invalid ``state.json`` record, or None if it is valid.

    The answer is one line that reads after "the file" (``"has format 2: ..."``).

    The single place records are validated, on read and before every write; today it
    is ``schemas/state.schema.json`` through :mod:`runner.minischema` (tests check it
    agrees with jsonschema).
    """
    problem = _format_problem(data)
    if problem:
        return problem
    error = _schema_check()(data, "")
    if error is not None:
        return f"does not match the state file format: {error}"
    return _path_problem(data)


#: Where a record keeps paths: each must stay inside the working directory.
_PATH_FIELDS = (
    ("paths", "data_dir"),
    ("paths", "build_dir"),
    ("run", "log"),
    ("run", "trace"),
    ("failure", "trace"),
)


def _path_problem(data: Any) -> str | None:
    """A path of the record that leads out of the working directory (absolute, or
    through ``..``): the runner would write or delete there, so the record is refused."""
    for part, field_name in _PATH_FIELDS:
        section = data.get(part)
        value = section.get(field_name) if isinstance(section, dict) else None
        if value is None:
            continue
        if not value or value.startswith("/") or ".." in value.split("/") or "\\" in value:
            return (
                f"has {part}.{field_name} = {json.dumps(value)}, which leads outside the "
                "working directory (paths in a state file are relative and stay inside it)"
            )
    return None


def light_problem(data: object) -> str | None:
    """A cheap check for listings: format and required keys, not the whole schema.

    ``list()`` reads every environment; running jsonschema on 10,000 records would cost
    seconds. ``load()`` still validates fully before an environment is used.
    """
    problem = _format_problem(data)
    if problem:
        return problem
    assert isinstance(data, dict)
    missing = [key for key in _schema()["required"] if key not in data]
    if missing:
        return f"misses {', '.join(repr(k) for k in missing)}"
    if not isinstance(data["state"], str) or not isinstance(data["serial"], int):
        return "has a 'state' or 'serial' of the wrong type"
    return None


# --- the record --------------------------------------------------------------------------

#: The keys of the stored form, in the order they are written.
_ORDER = (
    "format",
    "serial",
    "name",
    "state",
    "machine",
    "inputs",
    "outputs",
    "paths",
    "created_at",
    "updated_at",
    "run",
    "failure",
    "lineage",
    "change",
    "last_check",
    "forced",
)


@struct
class MachineRef:
    """The machine an environment was created with (or last moved by): its name, the
    digest of its file, and the file (relative to the working directory when inside
    it; None in records written before it was kept)."""

    name: str
    digest: str
    file: str | None = None

    @classmethod
    def at(cls, name: str, digest: str, file: Path, workdir: Path) -> MachineRef:
        """The reference to machine ``name`` read from ``file``."""
        try:
            shown = str(file.relative_to(workdir))
        except ValueError:
            shown = str(file)
        return cls(name, digest, shown)


@struct
class Paths:
    """The environment's folders, relative to the working directory."""

    data_dir: str
    build_dir: str


@struct
class Run:
    """The latest phase run."""

    phase: str
    started_at: str
    pid: int
    host: str
    completed_steps: list[str] = field(default_factory=list)
    skipped_steps: list[str] = field(default_factory=list)
    current_step: str | None = None
    interrupted: bool = False
    finished_at: str | None = None
    trace: str | None = None
    log: str | None = None
    machine_digest: str | None = None
    """The digest of the machine file when the run started (None before format 3)."""
    step_digests: dict[str, str] | None = None
    """Each step of the phase when the run started: its name and the digest of its
    definition, in order (so that a resume can name the steps changed since)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        return cls(
            phase=data["phase"],
            started_at=data["started_at"],
            pid=data["pid"],
            host=data["host"],
            completed_steps=list(data.get("completed_steps", ())),
            skipped_steps=list(data.get("skipped_steps", ())),
            current_step=data.get("current_step"),
            interrupted=bool(data.get("interrupted", False)),
            finished_at=data.get("finished_at"),
            trace=data.get("trace"),
            log=data.get("log"),
            machine_digest=data.get("machine_digest"),
            step_digests=data.get("step_digests"),
        )


@struct
class Failure:
    """What made the latest run fail: the one shape of a failure everywhere."""

    phase: str
    step: str | None
    kind: str
    summary: str
    failed_at: str
    exit_code: int | None = None
    attempts: int | None = None
    trace: str | None = None
    hint: str | None = None
    started_at: str | None = None
    duration_s: float | None = None

    @property
    def headline(self) -> str:
        """One line: where it failed, how, and why."""
        return f"phase '{self.phase}' failed at step '{self.step}' ({self.kind}): {self.summary}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Failure:
        return cls(
            phase=data["phase"],
            step=data.get("step"),
            kind=data["kind"],
            summary=data["summary"],
            failed_at=data["failed_at"],
            exit_code=data.get("exit_code"),
            attempts=data.get("attempts"),
            trace=data.get("trace"),
            hint=data.get("hint"),
            started_at=data.get("started_at"),
            duration_s=data.get("duration_s"),
        )


@struct
class CheckEntry:
    """One check of a `runner check`: passed, failed (with why) or skipped."""

    name: str
    status: str  # passed | failed | skipped
    summary: str | None = None


@struct
class LastCheck:
    """The latest `runner check` of an environment: when, in which state, its result
    (``passed`` when no check failed, else ``failed``) and each check's."""

    checked_at: str
    state: str
    status: str  # passed | failed
    checks: list[CheckEntry] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckEntry]:
        return [c for c in self.checks if c.status == "failed"]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LastCheck:
        return cls(
            checked_at=data["checked_at"],
            state=data["state"],
            status=data["status"],
            checks=[CheckEntry(**c) for c in data.get("checks", ())],
        )


@struct
class Forced:
    """The last ``force-state``: who moved the environment from which state to which,
    when and why, without running anything."""

    from_state: str = field(metadata=key("from"))
    to: str = ""
    reason: str = ""
    user: str = ""
    host: str = ""
    pid: int = 0
    at: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Forced:
        return cls(
            from_state=data["from"],
            to=data["to"],
            reason=data["reason"],
            user=data["user"],
            host=data["host"],
            pid=data["pid"],
            at=data["at"],
        )


@struct
class Record:
    """One environment's whole state."""

    name: str
    state: str
    machine: MachineRef
    paths: Paths
    created_at: str
    updated_at: str
    serial: int = 1
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    run: Run | None = None
    failure: Failure | None = None
    lineage: str | None = None
    """The environment's identity, random, given by ``create`` and carried by its
    events and snapshots (None only in a record of format 1 or 2 not yet saved again)."""
    change: str | None = None
    """What made this version of the record (``created``, ``phase provision``, ...)."""
    last_check: LastCheck | None = None
    """The latest `runner check` (None: never checked)."""
    forced: Forced | None = None
    """The last ``force-state``, kept until the next phase starts."""
    format: int = STATE_FORMAT

    @classmethod
    def new(
        cls,
        name: str,
        state: str,
        machine: MachineRef,
        inputs: dict[str, Any],
        *,
        data_dir: str,
        build_dir: str | None = None,
    ) -> Record:
        """A new environment's first record (serial 1), in ``state``, with a new lineage."""
        import uuid

        stamp = now_iso()
        return cls(
            name=check_name(name),
            state=state,
            machine=machine,
            paths=Paths(data_dir=data_dir, build_dir=build_dir or f"build/{name}"),
            created_at=stamp,
            updated_at=stamp,
            inputs=inputs,
            lineage=uuid.uuid4().hex,
            change="created",
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        """The record in ``data``, a document the store has already checked against the
        state schema (any readable format) and hands over (its inputs and outputs are
        taken, not copied)."""
        run, failure, forced = data.get("run"), data.get("failure"), data.get("forced")
        return cls(
            name=data["name"],
            state=data["state"],
            machine=MachineRef(**data["machine"]),
            paths=Paths(**data["paths"]),
            created_at=data["created_at"],
            updated_at=data["updated_at"],
            serial=data["serial"],
            inputs=data["inputs"],  # the document is the caller's, freshly parsed
            outputs=data["outputs"],
            run=None if run is None else Run.from_json(run),
            failure=None if failure is None else Failure.from_json(failure),
            lineage=data.get("lineage"),
            change=data.get("change"),
            last_check=LastCheck.from_json(check) if (check := data.get("last_check")) else None,
            forced=None if forced is None else Forced.from_json(forced),
            format=STATE_FORMAT,
        )

    def to_json(self) -> dict[str, Any]:
        """The stored form (``format`` first), always the current format."""
        body = as_json(self)
        body["format"] = STATE_FORMAT
        # an optional key is written only when it holds something
        return {key: body[key] for key in _ORDER if key != "last_check" or body[key] is not None}

    def copy(self) -> Record:
        """A deep copy: changing it never changes this record."""
        return copied(self)
