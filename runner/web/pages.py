"""What the pages show, read through a :class:`~runner.api.runner.Runner` (blocking:
the application calls these in a worker thread).

Each function returns plain data for a template; values that come from an environment
(names, outputs, step output in traces and logs) stay text: the templates escape them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.errors import RunnerError, ToolMissingError
from runner.result import as_json
from runner.web.svg import clean_svg

if TYPE_CHECKING:
    from runner.api.results import StatusResult
    from runner.api.runner import Runner

__all__ = ["EnvironmentPage", "TimelineItem", "environment_page", "timeline"]

#: How many of the last events the environment page shows.
HISTORY_LIMIT = 300
#: How much of a run log the environment page shows (its end), in characters.
LOG_TAIL = 64 * 1024

_SHOWN = {"timestamp", "type", "serial", "pid", "host", "command"}


@dataclass(frozen=True)
class TimelineItem:
    """One event of the history, as the timeline shows it."""

    timestamp: str
    type: str
    title: str
    details: tuple[tuple[str, str], ...]
    css: str
    duration_s: float | None = None
    command: str | None = None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def timeline_item(event: dict[str, Any]) -> TimelineItem:
    """``event`` rendered by its type (unknown types by their fields)."""
    kind = str(event.get("type", "event"))
    get = event.get
    css = kind
    if kind in ("created", "transition"):
        title = f"{get('from') or '∅'} → {get('to')}"
        if get("trigger"):
            title += f"  ({get('trigger')})"
        if str(get("trigger", "")).startswith("fail_"):
            css = "transition failed"
    elif kind == "step":
        title = f"{get('phase')} / {get('step')}: {get('status')}"
        if get("status") == "failed":
            css = "step failed"
    elif kind == "interrupted":
        title = f"{get('phase')} interrupted by {get('signal', 'a signal')} in {get('state')}"
    elif kind == "resume":
        title = f"resume {get('phase')} in {get('state')}"
    elif kind == "state_forced":
        title = f"state forced {get('from')} → {get('to')} by {get('user', '?')}"
    elif kind == "inputs_changed":
        title = f"inputs changed: {', '.join(get('keys') or ())}"
    elif kind == "restored":
        title = f"restored serial {get('restored')}: {get('from')} → {get('to')}"
    elif kind == "check":
        checks = get("checks") or ()
        failed = [c.get("name") for c in checks if c.get("status") == "failed"]
        title = f"check in {get('state')}: {get('status')}"
        if failed:
            title += f" ({', '.join(str(n) for n in failed)} failed)"
            css = "check failed"
    elif kind == "recovered":
        title = f"event log recovered: state {get('state')}"
    else:
        title = kind
    skip = _SHOWN | {"from", "to", "trigger", "phase", "step", "status", "duration_s"}
    if kind not in ("created", "transition", "step"):
        skip -= {"from", "to", "phase", "step", "status"}
    details = tuple((k, _text(v)) for k, v in event.items() if k not in skip and v is not None)
    duration = get("duration_s")
    return TimelineItem(
        timestamp=str(get("timestamp", "")),
        type=kind,
        title=title,
        details=details,
        css=css,
        duration_s=float(duration) if isinstance(duration, int | float) else None,
        command=str(get("command")) if get("command") else None,
    )


def timeline(events: Any) -> list[TimelineItem]:
    """The history, newest first."""
    return [timeline_item(e) for e in reversed(list(events)) if isinstance(e, dict)]


@dataclass(frozen=True)
class EnvironmentPage:
    """Everything the environment page shows."""

    status: StatusResult
    inputs: Any
    timeline: list[TimelineItem]
    trace_ref: str | None
    trace: str | None
    svg: str | None
    mermaid: str | None
    graph_note: str | None
    logs: tuple[str, ...]
    log_ref: str | None
    log_text: str
    log_offset: int
    log_cut: bool
    following: bool
    last_check: Any = None

    @property
    def outputs_json(self) -> str:
        return json.dumps(self.status.outputs, indent=2, default=str)

    @property
    def inputs_json(self) -> str:
        return json.dumps(self.inputs, indent=2, default=str)


def environment_page(runner: Runner, name: str, log: str | None = None) -> EnvironmentPage:
    """The environment page of ``name`` (``log``: the run log to show, default the
    current or the last one)."""
    status = runner.status(name)
    inputs = runner.store.load(name).inputs  # secrets are stored as references only
    events = runner.history(name, HISTORY_LIMIT).events
    trace_ref, trace = _trace(runner, name, status)
    svg = mermaid = note = None
    try:
        svg = clean_svg(runner.graph("svg", env=name).data)
    except (ToolMissingError, ValueError) as exc:
        mermaid = runner.graph("mermaid", env=name).graph
        note = f"the drawing needs Graphviz (`dot`): {exc}; the Mermaid text instead"
    logs = runner.artifacts(name, "run").artifacts
    run = status.run
    running = run is not None and not run.finished_at and status.locked_by is not None
    log_ref = log if log is not None else (run.log if run and run.log else None)
    if log_ref is None and logs:
        log_ref = logs[-1]
    text, offset, cut = "", 0, False
    if log_ref is not None:
        try:
            whole = runner.artifact(name, log_ref).text
        except RunnerError as exc:
            whole = f"(cannot read {log_ref}: {exc.message})"
        offset = len(whole)
        cut = len(whole) > LOG_TAIL
        text = whole[-LOG_TAIL:]
    following = running and run is not None and log_ref == run.log
    return EnvironmentPage(
        status=status,
        inputs=inputs,
        timeline=timeline(events),
        trace_ref=trace_ref,
        trace=trace,
        svg=svg,
        mermaid=mermaid,
        graph_note=note,
        logs=logs,
        log_ref=log_ref,
        log_text=text,
        log_offset=offset,
        log_cut=cut,
        following=following,
        last_check=_last_check(status),
    )


def _last_check(status: StatusResult) -> Any:
    """The last check `status` reports, as JSON data, when the runner has checks."""
    value = status.last_check
    return None if value is None else as_json(value)


def _trace(runner: Runner, name: str, status: StatusResult) -> tuple[str | None, str | None]:
    """The trace of the failure (or of the interrupted run) and its text."""
    ref = None
    if status.failure is not None and status.kind == "failed":
        ref = status.failure.trace
    elif status.interrupted and status.run is not None:
        ref = status.run.trace
    if not ref:
        return None, None
    try:
        return ref, runner.artifact(name, ref).text
    except RunnerError as exc:
        return ref, f"(cannot read the trace: {exc.message})"
