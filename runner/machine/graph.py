"""Drawing the machine: Mermaid and Graphviz DOT text, SVG/PNG through Graphviz.

Built from the loaded definition (the same transitions the engine fires). Intermediate,
failed and final states look different; edges carry the phase name; an environment's
current state can be marked.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Literal

from runner.errors import InputError, ToolMissingError
from runner.machine.model import MachineDef

GraphFormat = Literal["mermaid", "dot", "svg", "png"]

_DOT_STYLE = {
    "initial": 'shape=box, style="rounded,bold"',
    "stable": 'shape=box, style="rounded"',
    "intermediate": 'shape=box, style="rounded,dashed,filled", fillcolor="#e3f2fd"',
    "failed": 'shape=box, style="rounded,filled", fillcolor="#ffcdd2", color="#c62828"',
    "final": 'shape=doubleoctagon, style="filled", fillcolor="#eeeeee"',
}
_MERMAID_CLASS = {
    "intermediate": "fill:#e3f2fd,stroke-dasharray:5 5",
    "failed": "fill:#ffcdd2,stroke:#c62828",
    "final": "fill:#eeeeee,stroke-width:3px",
    "current": "fill:#fff59d,stroke:#f57f17,stroke-width:4px",
}


def _edges(machine: MachineDef) -> list[tuple[str, str, str, str]]:
    """(source, dest, label, kind) with kind in start/finish/fail/resume."""
    edges = []
    for phase in machine.phases:
        for src in phase.sources:
            edges.append((src, phase.via, phase.name, "start" if phase.advance else "manual"))
        edges.append((phase.via, phase.to, phase.name, "finish"))
        edges.append((phase.via, phase.failed, f"{phase.name} failed", "fail"))
        edges.append((phase.failed, phase.via, f"resume {phase.name}", "resume"))
    return edges


def _from_any(non_final: frozenset[str], sources: tuple[str, ...], via: str) -> bool:
    """Whether ``sources`` are every non-final state but ``via`` (`from: any`)."""
    if len(sources) != len(non_final) - (via in non_final) or len(sources) <= 2:
        return False  # the common case, decided without building a set
    return set(sources) == non_final - {via}


def _non_final(machine: MachineDef) -> frozenset[str]:
    return frozenset(n for n, s in machine.states.items() if not s.final)


def to_mermaid(machine: MachineDef, current: str | None = None) -> str:
    lines = ["stateDiagram-v2", f"    [*] --> {machine.initial}"]
    for src, dst, label, _kind in _edges(machine):
        lines.append(f"    {src} --> {dst}: {label}")
    for name, state in machine.states.items():
        if state.final:
            lines.append(f"    {name} --> [*]")
    for cls, style in _MERMAID_CLASS.items():
        lines.append(f"    classDef {cls} {style}")
    by_kind: dict[str, list[str]] = {}
    for name in machine.states:
        by_kind.setdefault(machine.state_kind(name), []).append(name)
    for kind in ("intermediate", "failed", "final"):
        if by_kind.get(kind):
            lines.append(f"    class {','.join(by_kind[kind])} {kind}")
    if current:
        lines.append(f"    class {current} current")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(machine: MachineDef, current: str | None = None) -> str:
    lines = [
        f"digraph {_quote(machine.name)} {{",
        '    rankdir=LR; fontname="Helvetica";',
        '    node [fontname="Helvetica", fontsize=11]; edge [fontname="Helvetica", fontsize=9];',
        '    __start [shape=point, width=0.15, label=""];',
        f"    __start -> {_quote(machine.initial)};",
    ]
    for name, state in machine.states.items():
        style = _DOT_STYLE[machine.state_kind(name)]
        tooltip = _quote(state.description)
        if name == current:
            style += (
                ', penwidth=4, color="#f57f17", fillcolor="#fff59d", style="rounded,filled,bold"'
            )
            label = _quote(f"{name}\n(current)")
        else:
            label = _quote(name)
        lines.append(f"    {_quote(name)} [label={label}, tooltip={tooltip}, {style}];")
    # a phase allowed from every non-final state (`from: any`) starts from one "any
    # state" node, not from each state: the drawing stays readable
    non_final = _non_final(machine)
    collapsed = {p.name for p in machine.phases if _from_any(non_final, p.sources, p.via)}
    for name in sorted(collapsed):
        lines.append(
            f"    {_quote('__any_' + name)} [label={_quote('any non-final state')}, "
            'shape=plaintext, fontcolor="#616161"];'
        )
    drawn: set[str] = set()
    for src, dst, label, kind in _edges(machine):
        if kind in ("start", "manual") and label in collapsed:
            if label in drawn:
                continue
            drawn.add(label)
            src = "__any_" + label
        attrs = f"label={_quote(label)}"
        if kind == "fail":
            attrs += ', color="#c62828", fontcolor="#c62828"'
        elif kind == "resume":
            attrs += ', style=dotted, color="#757575", fontcolor="#757575"'
        elif kind == "manual":
            attrs += ", style=dashed"
        lines.append(f"    {_quote(src)} -> {_quote(dst)} [{attrs}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(machine: MachineDef, fmt: GraphFormat, current: str | None = None) -> bytes:
    if fmt == "mermaid":
        return to_mermaid(machine, current).encode()
    dot_text = to_dot(machine, current)
    if fmt == "dot":
        return dot_text.encode()
    dot = shutil.which("dot")
    if dot is None:
        raise ToolMissingError(
            f"Graphviz is needed for --format {fmt} but the `dot` program is not installed",
            hint="install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install "
            "graphviz), or use --format mermaid or --format dot",
        )
    try:
        proc = subprocess.run(
            [dot, f"-T{fmt}"],
            input=dot_text.encode(),
            capture_output=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise InputError("Graphviz took longer than 120 s to draw the machine") from exc
    if proc.returncode != 0:
        raise InputError(f"Graphviz failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def write(data: bytes, output: Path | None) -> None:
    if output is None:
        import sys

        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(data)
    except OSError as exc:
        from runner.errors import InputError

        raise InputError(
            f"cannot write the graph to {output}: {exc.strerror or exc}",
            hint="choose a file in a folder you can write (-o FILE), or leave -o out to print it",
        ) from exc
