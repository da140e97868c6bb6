"""How results look: text for people, one JSON document for scripts.

Every command's result (a :class:`~runner.result.Result` of :mod:`runner.api.results`)
and every error is shown here, by the typer commands and by the fast path alike. A
JSON document is the result's ``to_json()`` under ``"api_version"``
(``schemas/output.schema.json`` describes them all); a run that ended in a failed
step also carries the error keys (``error``, ``message``, ``exit_code``) of an error
document, besides its ``failure``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from runner.api.results import (
    EnvironmentSummary,
    ExistsResult,
    HistoryResult,
    ListResult,
    StatusResult,
    _outcome,
    document,
)
from runner.errors import RunnerError
from runner.result import Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    R = TypeVar("R", bound=Result)

    from runner.api.outcomes import (
        ArtifactResult,
        ArtifactsResult,
        CheckResult,
        CreateResult,
        ForceStateResult,
        GraphFileResult,
        GraphResult,
        InputsResult,
        MigrateResult,
        PurgeResult,
        RestoreResult,
        RunResult,
        SnapshotsResult,
        StateInitResult,
        ValidateResult,
    )

__all__ = ["document", "emit_json", "error_document", "show", "text"]


# --- JSON --------------------------------------------------------------------------------


def error_document(exc: RunnerError) -> dict[str, Any]:
    """The ``--output json`` document of an error."""
    return exc.to_json()


_INFINITY = float("inf")


def _finite(value: Any) -> Any:
    """``value`` with NaN and the infinities (which strict JSON has not) as strings: a
    document on stdout is always strict JSON, whatever a step produced."""
    if isinstance(value, float) and (value != value or value in (_INFINITY, -_INFINITY)):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


#: Control characters but newline and tab, shown as ``\xNN``: text from a state file, an
#: event log or a step (a `--reason`, an error, a tool's output) must not drive the
#: terminal of whoever reads it (move the cursor, set the title, clear the screen).
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c not in (9, 10)}


def printable(value: str) -> str:
    """``value`` with its control characters (but newline and tab) made visible."""
    return value.translate(_CONTROLS)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(_finite(data), indent=2, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def show(
    result: Result,
    *,
    as_json: bool,
    color: bool = False,
    kind_of: Callable[[str], str | None] | None = None,
) -> int:
    """Print ``result`` (text, or its JSON document) and return the exit code. With
    ``color`` (standard output is a terminal that may have colour) the text is drawn
    by rich: tables for `list` and `history`, states coloured by their kind
    (``kind_of(state)``, when the result does not say it)."""
    graph: GraphResult | None = _outcome(result, "GraphResult")
    run: RunResult | None = _outcome(result, "RunResult")
    if as_json:
        emit_json(document(result))
    elif graph is not None:
        sys.stdout.buffer.write(graph.data)  # as drawn: png is binary
        sys.stdout.flush()
    elif color:
        from runner.cli import styled

        styled.show(result, kind_of or (lambda state: None))
    else:
        body = text(result)
        if body:
            print(printable(body))
    if run is not None:
        return run.exit_code
    check: CheckResult | None = _outcome(result, "CheckResult")
    return check.exit_code if check is not None else 0


#: A state's colour on a terminal, by its kind.
KIND_STYLES = {
    "initial": "green",
    "stable": "green",
    "intermediate": "yellow",
    "failed": "bold red",
    "final": "dim",
}


def state_style(kind: str | None) -> str | None:
    """The rich style of a state of ``kind`` (None: not known, no colour)."""
    return KIND_STYLES.get(kind) if kind else None


# --- text --------------------------------------------------------------------------------

#: The text of each kind of result, by the name of its class (the classes of
#: runner.api.outcomes are not imported here).
_TEXT: dict[str, Callable[[Any], str]] = {}


def _renders(kind: str) -> Callable[[Callable[[R], str]], Callable[[R], str]]:
    def register(function: Callable[[R], str]) -> Callable[[R], str]:
        _TEXT[kind] = function
        return function

    return register


def text(result: Result) -> str:
    """``result`` as text for people (no final newline; empty: nothing to print)."""
    return _TEXT[type(result).__name__](result)


@_renders("ValidateResult")
def _validate(result: ValidateResult) -> str:
    states = ", ".join(
        f"{name}{'' if kind in ('stable', 'initial') else f' ({kind})'}"
        for name, kind in result.states.items()
    )
    phases = ", ".join(
        f"{p.name}{'' if p.advance else ' (manual)'} "
        f"[{len(p.steps)} step{'' if len(p.steps) == 1 else 's'}]"
        for p in result.phases
    )
    return "\n".join(
        [
            f"{result.file}: valid machine '{result.name}'",
            f"  states ({len(result.states)}): {states}",
            f"  phases ({len(result.phases)}): {phases}",
            "  happy path: " + " → ".join(result.happy_path),
        ]
    )


@_renders("GraphResult")
def _graph(result: GraphResult) -> str:
    return result.graph  # `show` writes its bytes as they are


@_renders("GraphFileResult")
def _graph_file(result: GraphFileResult) -> str:
    return f"wrote {result.file} ({result.format}, {result.bytes} bytes)"


@_renders("CreateResult")
def _create(result: CreateResult) -> str:
    name = result.environment
    return (
        f"created environment '{name}' in state '{result.state}'\n"
        f"next: runner advance {name}   (or runner up {name})"
    )


@_renders("StatusResult")
def _status(result: StatusResult) -> str:
    lines = [f"environment: {result.environment}"]
    flag = " (interrupted)" if result.interrupted else ""
    lines.append(f"state:       {result.state}{flag} - {result.description}")
    lines.append(f"updated:     {result.updated_at}")
    lines.extend(last_check_lines(result))
    if result.locked_by:
        h = result.locked_by
        if h.known:
            lines.append(
                f"locked by:   pid {h.pid} on {h.host} ({h.command}, since {h.started_at})"
            )
        else:
            lines.append("locked by:   another process (its lock does not say which yet)")
    run = result.run
    if result.interrupted and run is not None:
        lines.append(
            f"interrupted: phase '{run.phase}' at step '{run.current_step}'"
            f" (completed: {', '.join(run.completed_steps) or 'none'})"
        )
        if run.trace:
            lines.append(f"trace:       {run.trace}")
    failure = result.failure
    if failure is not None and result.kind == "failed":
        lines.append(
            f"failed:      phase '{failure.phase}', step '{failure.step}' "
            f"({failure.kind}) at {failure.failed_at}"
        )
        lines.append(f"             {failure.summary}")
        if failure.hint:
            lines.append(f"hint:        {failure.hint}")
        if failure.trace:
            lines.append(f"trace:       {failure.trace}")
    if result.outputs:
        lines.append(
            "outputs:     " + ", ".join(f"{k}={v}" for k, v in sorted(result.outputs.items()))
        )
    if result.forced is not None:
        forced = result.forced
        lines.append(
            f"forced:      from '{forced.from_state}' to '{forced.to}' by {forced.user} on "
            f"{forced.host} at {forced.at}: {forced.reason}"
        )
    if result.machine_changed:
        lines.append(
            "machine:     changed since the environment was last moved; a resume of a phase "
            "whose steps changed needs --accept-machine-change"
        )
    lines.append("next:")
    lines.extend(f"  {action}" for action in result.next)
    return "\n".join(lines)


def last_check_lines(result: StatusResult) -> list[str]:
    """`status`'s lines about the latest `runner check`: when, the result, and each
    failed check with why."""
    check = result.last_check
    if check is None:
        return []
    where = "" if check.state == result.state else f", in state '{check.state}'"
    lines = [f"last check:  {check.status} at {check.checked_at}{where}"]
    lines.extend(f"             {c.name} failed: {c.summary}" for c in check.failed)
    return lines


def check_column(entry: EnvironmentSummary) -> str:
    """`list`'s CHECK column: the latest check's result (and when), or '-'."""
    check = entry.last_check
    return "-" if check is None else f"{check.status} {check.checked_at}"


@_renders("ListResult")
def _list(result: ListResult) -> str:
    good, bad = result.environments, result.unreadable
    if not good and not bad and result.filtered:
        return f"no environment matches {result.filtered}"
    if not good and not bad:
        return "no environments (create one with `runner create NAME`)"
    lines = []
    if good:
        width = max(len("NAME"), *(len(e.environment) for e in good))
        swidth = max(len("STATE"), *(len(e.state) for e in good))
        twidth = max(len(e.updated_at) for e in good)
        lines.append(f"{'NAME':<{width}}  {'STATE':<{swidth}}  {'UPDATED':<{twidth}}  CHECK")
        lines.extend(
            f"{e.environment:<{width}}  {e.state:<{swidth}}  {e.updated_at:<{twidth}}  "
            + check_column(e)
            for e in good
        )
    if bad:
        lines.append("\nunreadable:")
        lines.extend(f"  {e.environment}: {e.error}" for e in bad)
    return "\n".join(lines)


HISTORY_COLUMNS = ("TIME", "TYPE", "PHASE", "STEP", "DETAIL")

#: The detail column of the operator commands' events.
_OPERATOR_DETAILS: dict[str, Callable[[Any], str]] = {
    "inputs_changed": lambda ev: "changed " + ", ".join(str(k) for k in ev.get("keys") or []),
    "state_forced": lambda ev: (
        f"{ev.get('from')} → {ev.get('to')} by {ev.get('user')}: {ev.get('reason')}"
    ),
    "restored": lambda ev: (
        f"serial {ev.get('restored')} restored: {ev.get('from')} → {ev.get('to')}"
    ),
}


def history_rows(result: HistoryResult) -> list[tuple[str, str, str, str, str]]:
    """The rows of a history: time, type, phase, step, detail."""
    rows = []
    for ev in result.events:
        kind = str(ev.get("type", "transition"))
        if kind in ("transition", "created"):
            detail = f"{ev.get('from') or '-'} → {ev.get('to')} ({ev.get('trigger')})"
        elif kind == "step":
            detail = str(ev.get("status", ""))
            if ev.get("duration_s") is not None:
                detail += f" {ev['duration_s']}s"
            if ev.get("summary"):
                detail += f": {ev['summary']}"
        elif kind == "check":
            failed = [c for c in ev.get("checks") or () if c.get("status") == "failed"]
            detail = f"{ev.get('status')} in {ev.get('state')}" + "".join(
                f"; {c.get('name')}: {c.get('summary')}" for c in failed
            )
        elif kind in _OPERATOR_DETAILS:
            detail = _OPERATOR_DETAILS[kind](ev)
        else:
            detail = " ".join(f"{k}={ev[k]}" for k in ("signal", "state") if ev.get(k))
        rows.append(
            (
                str(ev.get("timestamp", "")),
                kind,
                str(ev.get("phase") or "-"),
                str(ev.get("step") or "-"),
                detail,
            )
        )
    return rows


@_renders("HistoryResult")
def _history(result: HistoryResult) -> str:
    rows = history_rows(result)
    # at least the usual widths; wider for a long phase or step name, never broken
    widths = [
        max(least, *(len(row[i]) for row in rows)) if rows else least
        for i, least in enumerate((24, 12, 12, 28))
    ]
    return "\n".join(
        "  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False))
        + f"  {row[4]}"
        for row in [HISTORY_COLUMNS, *rows]
    )


@_renders("RunResult")
def _run(result: RunResult) -> str:
    lines: list[str] = []
    if result.dry_run:
        for plan in result.dry_run:
            lines.append(f"phase {plan.phase}: {plan.from_state} → {plan.via} → {plan.to}")
            for i, step in enumerate(plan.steps, start=1):
                head = f"  [{i}] {step.name} ({step.uses}): "
                if step.error is not None:
                    lines.append(f"{head}cannot render: {step.error}")
                elif not step.when:
                    lines.append(f"{head}skipped (when is false)")
                else:
                    lines.append(head + json.dumps(step.params, default=str))
                if step.preview:
                    lines.append(f"      {step.preview}")
        lines.append("dry run: nothing was run")
    elif result.message:
        lines.append(result.message)
    for phase in result.phases:
        if phase.status == "failed" and phase.failure:
            lines.append(phase.failure.headline)
            if phase.failure.hint:
                lines.append(f"hint: {phase.failure.hint}")
            if phase.failure.trace:
                lines.append(f"trace: {phase.failure.trace}")
            lines.append(f"state: {phase.state}; see `runner status {phase.environment}`")
    if result.phases and not result.failed:
        lines.append(f"environment '{result.environment}' is now in '{result.state}'")
    return "\n".join(lines)


# The dashboard's results (no command shows them; a library user's `show` can).


@_renders("ArtifactsResult")
def _artifacts(result: ArtifactsResult) -> str:
    logs = "run logs" if result.kind == "run" else "traces"
    if not result.artifacts:
        return f"no {logs} of '{result.environment}'"
    return "\n".join(result.artifacts)


@_renders("ArtifactResult")
def _artifact(result: ArtifactResult) -> str:
    return result.text.rstrip("\n")


@_renders("CheckResult")
def _check(result: CheckResult) -> str:
    if result.status == "none":
        return result.message or ""
    lines = [f"checks of '{result.environment}' in state '{result.state}':"]
    width = max(len(c.name) for c in result.checks)
    for c in result.checks:
        why = f": {c.summary}" if c.summary else ""
        lines.append(f"  {c.name:<{width}}  {c.status}{why}")
    failed = result.failed
    if failed:
        names = ", ".join(c.name for c in failed)
        lines.append(
            f"{len(failed)} of {len(result.checks)} checks failed ({names}); "
            f"the state stays '{result.state}'"
        )
    else:
        lines.append("all checks passed")
    return "\n".join(lines)


# --- the operator commands ---------------------------------------------------------------


@_renders("ExistsResult")
def _exists(result: ExistsResult) -> str:
    return "true" if result.exists else "false"


@_renders("PurgeResult")
def _purge(result: PurgeResult) -> str:
    lines = [f"warning: {w}" for w in result.warnings]
    lines.append(
        f"purged environment '{result.environment}' (was in '{result.state or 'unreadable'}'): "
        "its record, events, traces, run logs and snapshots are gone; the name is free"
    )
    if result.build_removed:
        lines.append(f"removed {result.build_dir}")
    elif result.build_kept:
        lines.append(
            f"kept {result.build_dir} (see what it holds, and remove it by hand once nothing "
            "in it is needed)"
        )
    return "\n".join(lines)


def _input_lines(inputs: Any, prefix: str = "") -> list[str]:
    if isinstance(inputs, dict) and inputs:
        lines: list[str] = []
        for name in sorted(inputs):
            lines.extend(_input_lines(inputs[name], f"{prefix}{name}."))
        return lines
    return [f"  {prefix.rstrip('.')} = {json.dumps(inputs, default=str)}"]


@_renders("InputsResult")
def _inputs(result: InputsResult) -> str:
    head = f"inputs of '{result.environment}' (state '{result.state}'):"
    if result.changed:
        head = (
            f"changed {', '.join(result.changed)} of '{result.environment}' "
            f"(serial {result.serial}); its inputs now:"
        )
    lines = [head, *(_input_lines(result.inputs) if result.inputs else ["  (none)"])]
    if result.restarts_phase:
        lines.append(
            f"next: runner resume {result.environment}   (runs phase '{result.restarts_phase}' "
            "again from its first step: the steps done used the old inputs)"
        )
    return "\n".join(lines)


@_renders("ForceStateResult")
def _force_state(result: ForceStateResult) -> str:
    forced = result.forced
    return (
        f"forced environment '{result.environment}' from '{forced.from_state}' to "
        f"'{forced.to}' (serial {result.serial}); nothing was run\n"
        f"reason: {forced.reason}"
    )


@_renders("SnapshotsResult")
def _snapshots(result: SnapshotsResult) -> str:
    rows = [(str(i.serial), i.saved_at, i.state, i.change or "-") for i in result.snapshots]
    header = ("SERIAL", "SAVED", "STATE", "CHANGE")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(3)]
    lines = [
        "  ".join(f"{cell:<{w}}" for cell, w in zip(row[:3], widths, strict=True))
        + f"  {row[3]}"
        + ("   (current)" if row[0] == str(result.current) else "")
        for row in [header, *rows]
    ]
    return "\n".join(lines)


@_renders("RestoreResult")
def _restore(result: RestoreResult) -> str:
    return (
        f"restored serial {result.restored} of '{result.environment}' as serial {result.serial}: "
        f"'{result.from_state}' → '{result.state}'\n"
        f"next: runner status {result.environment}"
    )


@_renders("StateInitResult")
def _state_init(result: StateInitResult) -> str:
    if result.backend == "file":
        return f"{result.url}: files need no set-up (made on first use)"
    if result.schema_before == result.schema_after:
        return f"{result.url}: schema version {result.schema_after}, up to date"
    return f"{result.url}: schema version {result.schema_before} → {result.schema_after}" + (
        " (made)" if result.schema_before == 0 else " (upgraded)"
    )


@_renders("MigrateResult")
def _migrate(result: MigrateResult) -> str:
    count = len(result.environments)
    lines = [
        f"copied {count} environment{'' if count == 1 else 's'} from {result.source} to "
        f"{result.target} (verified; the source is unchanged)"
    ]
    lines += [f"  {name}" for name in result.environments]
    return "\n".join(lines)
