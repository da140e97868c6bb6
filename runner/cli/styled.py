"""Results drawn by rich on a terminal with colour (imported only then: `runner status`
without a terminal never loads rich).

The words are those of :func:`runner.cli.render.text`; this adds colour (states by
their kind, failures red) and draws `list` and `history` as rich tables whose columns
never break a name: a table wider than the terminal is drawn at its full width and
the terminal wraps its lines, as it would plain text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from runner.api.results import HistoryResult, ListResult, RunResult, StatusResult
from runner.cli.render import (
    HISTORY_COLUMNS,
    check_column,
    history_rows,
    printable,
    state_style,
    text,
)
from runner.result import Result

__all__ = ["show"]

KindOf = Callable[[str], str | None]

_FAILED = "bold red"
_HINT = "cyan"


def show(result: Result, kind_of: KindOf) -> None:
    """Print ``result`` on standard output (a terminal), in colour."""
    console = Console(highlight=False)
    renderable = _renderable(result, kind_of)
    if renderable is None:
        return
    wide = console.options.update(width=100_000, max_width=100_000)
    needed = Measurement.get(console, wide, renderable).maximum
    if needed > console.width:
        console.width = needed
    console.print(renderable, crop=False)


def _renderable(result: Result, kind_of: KindOf) -> RenderableType | None:
    if isinstance(result, ListResult):
        return _list(result, kind_of)
    if isinstance(result, HistoryResult):
        return _history(result)
    body = printable(text(result))
    if not body:
        return None
    if isinstance(result, StatusResult):
        return _status(body, result)
    if isinstance(result, RunResult):
        return _run(body, kind_of)
    return Text(body)


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in columns:
        table.add_column(name, no_wrap=True, overflow="ignore")
    return table


def _list(result: ListResult, kind_of: KindOf) -> RenderableType:
    if not result.environments and not result.unreadable:
        return Text(printable(text(result)))
    parts: list[RenderableType] = []
    if result.environments:
        table = _table("NAME", "STATE", "UPDATED", "CHECK")
        for env in result.environments:
            check = env.last_check
            table.add_row(
                env.environment,
                Text(env.state, style=state_style(kind_of(env.state)) or ""),
                env.updated_at,
                Text(check_column(env), style=_FAILED if check and check.failed else ""),
            )
        parts.append(table)
    if result.unreadable:
        parts.append(Text("\nunreadable:", style=_FAILED))
        parts.extend(Text(printable(f"  {e.environment}: {e.error}")) for e in result.unreadable)
    return Group(*parts)


def _history(result: HistoryResult) -> RenderableType:
    table = _table(*HISTORY_COLUMNS)
    for row in history_rows(result):
        time, kind, phase, step, detail = (printable(cell) for cell in row)
        style = ""
        if detail.startswith("failed") or kind == "interrupted":
            style = _FAILED if kind != "interrupted" else "yellow"
        table.add_row(time, kind, phase, step, Text(detail, style=style))
    return table


def _styled_lines(
    body: str, rules: list[tuple[re.Pattern[str], Callable[[str], str | None]]]
) -> Text:
    """``body`` with each match of a rule's pattern (its first group) styled."""
    out = Text(body)
    for pattern, style_of in rules:
        for found in pattern.finditer(body):
            style = style_of(found.group(1))
            if style:
                out.stylize(style, found.start(1), found.end(1))
    return out


def _status(body: str, result: StatusResult) -> Text:
    kind_style = state_style(result.kind)
    return _styled_lines(
        body,
        [
            (re.compile(r"^state:\s+(\S+)", re.M), lambda _: kind_style),
            (re.compile(r"^state:\s+\S+( \(interrupted\))", re.M), lambda _: "yellow"),
            (re.compile(r"^(failed:.*)$", re.M), lambda _: _FAILED),
            (re.compile(r"^(locked by:.*)$", re.M), lambda _: "yellow"),
            (re.compile(r"^last check:\s+(failed)", re.M), lambda _: _FAILED),
            (re.compile(r"^last check:\s+(passed)", re.M), lambda _: "green"),
            (re.compile(r"^(hint:.*)$", re.M), lambda _: _HINT),
            (re.compile(r"^(next:)$", re.M), lambda _: "bold"),
        ],
    )


def _run(body: str, kind_of: KindOf) -> Text:
    def state(name: str) -> str | None:
        return state_style(kind_of(name))

    return _styled_lines(
        body,
        [
            (re.compile(r"^(phase '[^']*' failed at step .*)$", re.M), lambda _: _FAILED),
            (re.compile(r"^(hint: .*)$", re.M), lambda _: _HINT),
            (re.compile(r"^state: (\S+); see", re.M), state),
            (re.compile(r"is now in '([^']+)'$", re.M), state),
        ],
    )
