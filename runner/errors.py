"""Errors the runner raises, grouped by cause, and the exit code each one ends with.

Every error a user can meet is a :class:`RunnerError`; the CLI is the only place that
catches it and turns it into a message and an exit code (``exit_code``, an attribute of
each class; the codes are defined once in :class:`ExitCode`). The tree::

    RunnerError
    ├── InputError                      exit 2: bad input; nothing was changed
    │   ├── MachineError                machine.yaml is invalid (carries every Problem)
    │   ├── MachineMismatchError        the machine's name is not the environment's
    │   ├── InvalidInputsError          environment inputs break the machine's schema
    │   ├── InvalidNameError            an environment name breaks the naming rule
    │   ├── ToolMissingError            a program a command needs is not installed
    │   ├── UsageError                  the command line is wrong (with --output json)
    │   └── ConfirmationError           a `confirm: true` phase was not confirmed
    ├── StateError                      the environment's state, or where it is stored
    │   ├── EnvironmentNotFoundError    exit 2: no such environment
    │   ├── EnvironmentExistsError      exit 2: `create` of a name that exists
    │   ├── StateFileError              exit 2: a stored record is unreadable, corrupt or too new
    │   │   └── LineageError            the record is not the one its event log belongs to
    │   ├── PhaseNotAllowedError        exit 4: phase not allowed from the current state
    │   └── StorageError                exit 2: the store cannot be written (disk full, ...)
    │       ├── ConflictError           the record changed under us (serial mismatch)
    │       └── LockLostError           the lock's database connection ended mid-command
    ├── LockedError (+TimeoutError)     exit 3: another process holds the environment
    ├── StepError                       exit 1: a step failed (kind, summary, exit code)
    └── InterruptedRunError             exit 128+signal: a signal stopped a phase
"""

from __future__ import annotations

from runner.struct import field, struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any


class ExitCode:
    """Exit codes, defined once (the README lists them)."""

    OK = 0
    STEP_FAILED = 1
    BAD_INPUT = 2
    LOCKED = 3
    NOT_ALLOWED = 4
    SIGHUP = 129
    SIGINT = 130
    SIGTERM = 143
    BROKEN_PIPE = 141  # stdout closed by its reader (as if killed by SIGPIPE)


class RunnerError(Exception):
    """Root of every error the runner reports to a user."""

    exit_code: int = ExitCode.STEP_FAILED

    def __init__(self, message: str, *, hint: str | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.fields: dict[str, Any] = fields

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message

    @property
    def environment(self) -> str | None:
        """The environment the error concerns, when it concerns one."""
        value = self.fields.get("environment")
        return None if value is None else str(value)

    def about(self, environment: str) -> RunnerError:
        """Name the environment this error concerns, unless it names one already."""
        self.fields.setdefault("environment", environment)
        return self

    def to_json(self) -> dict[str, Any]:
        """The error document of ``--output json`` (``schemas/output.schema.json``)."""
        from runner.result import API_VERSION

        data: dict[str, Any] = {
            "api_version": API_VERSION,
            "error": type(self).__name__,
            "message": self.message,
            "exit_code": self.exit_code,
        }
        if self.environment is not None:
            data["environment"] = self.environment
        if self.hint:
            data["hint"] = self.hint
        for key, value in self.fields.items():
            if value is not None and key not in data:
                data[key] = value
        return data


class InputError(RunnerError):
    exit_code = ExitCode.BAD_INPUT


class UsageError(InputError):
    """The command line itself is wrong: an unknown command or option, a missing or bad
    value (the document ``--output json`` prints instead of the usage text)."""


class ConfirmationError(InputError):
    """A phase marked `confirm: true` was not confirmed: no terminal to ask on and no
    `--yes`, or the operator said no. Nothing was run."""


class MachineMismatchError(InputError):
    """The machine of a command is not the one the environment was created with (its
    name differs): fields ``machine`` and ``recorded_machine``."""


@struct(frozen=True)
class Problem:
    """One thing wrong with a file: where, what, and what to change."""

    file: str
    message: str
    line: int | None = None
    column: int | None = None
    path: tuple[str | int, ...] = field(default=())
    value: Any = None
    hint: str | None = None

    def location(self) -> str:
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"

    def __str__(self) -> str:
        text = f"{self.location()}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": "/".join(str(p) for p in self.path),
            "message": self.message,
            "hint": self.hint,
        }


class MachineError(InputError):
    """machine.yaml failed to load; ``problems`` lists every error found."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        count = len(problems)
        head = f"{file}: {count} error{'s' if count != 1 else ''} in the machine definition"
        super().__init__(head + "".join(f"\n  {p}" for p in problems), file=file)
        self.file = file
        self.problems = problems

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["problems"] = [p.to_json() for p in self.problems]
        return data


class InvalidInputsError(InputError):
    pass


class InvalidNameError(InputError):
    pass


class ToolMissingError(InputError):
    pass


class StateError(RunnerError):
    """The environment's state or its storage; exit 2 unless a subclass says otherwise."""

    exit_code = ExitCode.BAD_INPUT


class EnvironmentNotFoundError(StateError):
    pass


class EnvironmentExistsError(StateError):
    pass


class StateFileError(StateError):
    pass


class LineageError(StateFileError):
    """The record's lineage (or serial) does not match its event log: a state file
    copied from another environment, or an old copy put back by hand."""


class PhaseNotAllowedError(StateError):
    exit_code = ExitCode.NOT_ALLOWED


class StorageError(StateError):
    """``remedy``: what fixes the cause ("free some disk space"), without what to run
    next, for a hint that depends on where the error struck (see the phase runner)."""

    def __init__(
        self, message: str, *, hint: str | None = None, remedy: str | None = None, **fields: Any
    ) -> None:
        super().__init__(message, hint=hint, **fields)
        self.remedy = remedy


class ConflictError(StorageError):
    pass


class LockLostError(StorageError):
    """The environment's lock was lost (its database session ended) while the command
    held it: nothing more of this command is written, and its steps were stopped."""


class LockedError(RunnerError, TimeoutError):
    exit_code = ExitCode.LOCKED


class StepError(RunnerError):
    """A step failed. ``kind`` names the failure class, ``summary`` is one line."""

    def __init__(
        self,
        kind: str,
        summary: str,
        *,
        exit_code: int | None = None,
        output_tail: list[str] | None = None,
        hint: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(summary, hint=hint, kind=kind)
        self.kind = kind
        self.summary = summary
        self.process_exit_code = exit_code
        self.output_tail = output_tail or []
        self.retryable = kind not in PERMANENT_KINDS if retryable is None else retryable
        """Whether a step's `retry` may try again; a failure that the same attempt
        would repeat (a rejected key, a bad parameter, a missing program) is final."""


PERMANENT_KINDS = frozenset({"key_rejected", "configuration", "template", "tool_missing"})
"""Failure kinds that another attempt cannot fix: `retry` does not repeat them."""


class InterruptedRunError(RunnerError):
    def __init__(self, message: str, *, signum: int, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.signum = signum
        self.exit_code = 128 + signum


class InterruptSignal(BaseException):
    """Raised in the main thread by the runner's SIGINT/SIGTERM handler during a phase.

    A BaseException so that no ``except Exception`` swallows it; the process helper
    stops the running child's process group and re-raises it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'destroy'?"`` when one of ``choices`` is close to ``word`` (a
    typo), else ``""``: to end the message that names ``word`` as unknown."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
