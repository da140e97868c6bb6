"""Ports on this machine that environments' inputs name (``free_port`` in the inputs
schema), so that two environments of one working directory never collide on them.

A property of the inputs schema marked ``free_port: {protocol: tcp|udp, when: EXPR}``
is a port this machine listens on when ``when`` (an expression over ``inputs``, like a
step's `when`; default true) holds. At `create`, a port the inputs do not give is the
schema's default when it is free, else one the system gives; a port they give must be
free. Before a phase that leaves the machine's initial state (the one that makes the
instance), the recorded ports are checked again. Free means: no other environment of
the working directory (in a state that is not final) has it, and nothing listens on it.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping

from runner.run.inputs import marked_properties
from runner.struct import copied, struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

__all__ = ["PortInput", "allocate", "bound", "port_inputs", "problems", "system_port", "taken"]


@struct(frozen=True)
class PortInput:
    """An input marked ``free_port``: its dotted path, protocol and condition."""

    path: tuple[str, ...]
    protocol: str  # "tcp" or "udp"
    when: str | bool | None
    default: int | None

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def active(self, inputs: Mapping[str, Any]) -> bool:
        """Whether the port is on this machine for an environment of ``inputs``."""
        from runner.machine.templating import TemplateFailure, evaluate_condition

        try:
            return evaluate_condition(self.when, {"inputs": copied(dict(inputs))})
        except TemplateFailure:
            return False

    def value(self, inputs: Mapping[str, Any]) -> int | None:
        node: Any = inputs
        for part in self.path:
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node if isinstance(node, int) and not isinstance(node, bool) else None

    def set(self, inputs: dict[str, Any], port: int) -> None:
        node = inputs
        for part in self.path[:-1]:
            node = node.setdefault(part, {})
        node[self.path[-1]] = port


def port_inputs(schema: Mapping[str, Any]) -> Iterator[PortInput]:
    """The inputs of ``schema`` marked ``free_port``."""
    for path, sub in marked_properties(schema, "free_port"):
        mark = sub["free_port"]
        if not isinstance(mark, Mapping):
            continue
        default = sub.get("default")
        yield PortInput(
            path,
            "udp" if mark.get("protocol") == "udp" else "tcp",
            mark.get("when"),
            default if isinstance(default, int) and not isinstance(default, bool) else None,
        )


def bound(port: int, protocol: str) -> str | None:
    """Why ``port`` cannot be listened on here (something listens on it), or None."""
    import socket  # only a machine with ports: a phase of others never imports it

    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        if protocol == "tcp":
            # a port left in TIME_WAIT by a stopped server is free; a listening one is not
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"{protocol.upper()} port {port} is in use on this machine"
            return f"{protocol.upper()} port {port} cannot be listened on: {exc.strerror}"
    return None


def system_port(protocol: str, avoid: Iterable[int]) -> int:
    """A port the system says is free for ``protocol``, not one of ``avoid``."""
    import socket

    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    avoided = set(avoid)
    for _ in range(64):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("0.0.0.0", 0))
            port = int(sock.getsockname()[1])
        if port not in avoided:
            return port
    raise OSError("no free port found")


def taken(store: Any, machine: Any, name: str) -> dict[tuple[str, int], str]:
    """The ports other environments of ``store`` (not in a final state) have, by
    (protocol, port): which environment and input has it."""
    ports = list(port_inputs(machine.inputs_schema))
    found: dict[tuple[str, int], str] = {}
    if not ports:
        return found
    for entry in store.list():
        record = entry.record
        if record is None or record.name == name:
            continue
        if record.state in machine.states and machine.state_kind(record.state) == "final":
            continue
        for port in ports:
            value = port.value(record.inputs)
            if value is not None and port.active(record.inputs):
                found.setdefault((port.protocol, value), f"environment '{record.name}'")
    return found


def problems(
    ports: Iterable[PortInput], inputs: Mapping[str, Any], others: Mapping[tuple[str, int], str]
) -> list[str]:
    """Why the ports ``inputs`` give cannot be used: another environment has one, or
    something listens on it."""
    found = []
    for port in ports:
        value = port.value(inputs)
        if value is None or not port.active(inputs):
            continue
        holder = others.get((port.protocol, value))
        if holder is not None:
            found.append(
                f"inputs.{port.dotted} = {value}: {holder} of this working directory has it"
            )
            continue
        busy = bound(value, port.protocol)
        if busy is not None:
            found.append(f"inputs.{port.dotted} = {value}: {busy}")
    return found


def allocate(
    ports: Iterable[PortInput],
    given: Mapping[str, Any],
    inputs: dict[str, Any],
    others: Mapping[tuple[str, int], str],
) -> list[tuple[str, int, int]]:
    """Give each active port ``given`` leaves out a free one in ``inputs``: its default
    when free, else one the system gives. Returns what was moved off its default:
    (input, default, port)."""
    moved = []
    ports = list(ports)
    keep = [p for p in ports if p.value(given) is not None or not p.active(inputs)]
    mine = {(p.protocol, v) for p in keep if (v := p.value(given)) is not None}
    for port in ports:
        if port in keep:
            continue
        wanted = port.value(inputs)
        usable = (
            wanted is not None
            and (port.protocol, wanted) not in others
            and (port.protocol, wanted) not in mine
            and bound(wanted, port.protocol) is None
        )
        if wanted is not None and usable:
            chosen = wanted
        else:
            avoid = [p for proto, p in (*others, *mine) if proto == port.protocol]
            chosen = system_port(port.protocol, avoid)
            if wanted is not None:
                moved.append((port.dotted, wanted, chosen))
        port.set(inputs, chosen)
        mine.add((port.protocol, chosen))
    return moved
