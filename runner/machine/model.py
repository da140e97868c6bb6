"""The loaded machine: frozen data classes (:mod:`runner.struct`) built from a validated
machine.yaml."""

from __future__ import annotations

import os
import re
from functools import cached_property

from runner.struct import field, struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

ANY = "any"

_DURATION_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h)"
_DURATION_WHOLE = r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$"
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: The longest duration taken (366 days): longer ones are mistakes, and beyond some
#: length a deadline no longer fits the clocks' arithmetic.
MAX_DURATION_S = 366 * 86400.0


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration: a number of seconds, or text like ``30s``, ``15m``, ``1h30m``;
    at most :data:`MAX_DURATION_S`."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value != value:  # NaN
            raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 15m, 1h, 1h30m)")
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        seconds = float(value)
    else:
        text = value.strip()
        if not re.match(_DURATION_WHOLE, text):  # compiled on first use (re caches it)
            raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 15m, 1h, 1h30m)")
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in re.findall(_DURATION_PART, text))
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{value!r} is longer than the longest duration taken, 366 days")
    return seconds


@struct(frozen=True)
class Retry:
    """How a failed step is tried again: ``attempts`` in all; before attempt ``n + 1``
    a pause of ``min(max_delay_s, delay_s * backoff ** (n - 1))``, less a random part of
    it: up to ``jitter`` of it (a fraction of 0 to 1; 1.0 is ``full``: anywhere from 0
    to the whole pause)."""

    attempts: int = 1
    delay_s: float = 0.0
    backoff: float = 1.0
    max_delay_s: float | None = None
    jitter: float = 0.0

    def base_delay(self, attempt: int) -> float:
        """The pause after failed attempt ``attempt`` (1 = the first), before jitter."""
        delay = self.delay_s * self.backoff ** max(0, attempt - 1)
        return delay if self.max_delay_s is None else min(delay, self.max_delay_s)

    def delay(self, attempt: int, draw: Callable[[], float]) -> float:
        """The pause after failed attempt ``attempt``; ``draw()`` gives a uniform number
        in [0, 1) (``random.random``), called only when there is jitter."""
        base = self.base_delay(attempt)
        if self.jitter <= 0 or base <= 0:
            return base
        return base * (1.0 - self.jitter * draw())


@struct(frozen=True)
class StepDef:
    name: str
    uses: str
    with_: dict[str, Any] = field(default_factory=dict)
    when: str | bool | None = None
    timeout_s: float | None = None
    retry: Retry = Retry()
    outputs: dict[str, str] = field(default_factory=dict)


def step_digests(phase: PhaseDef) -> dict[str, str]:
    """Each step of ``phase``, in order: its name and a digest of its definition (what
    it uses, with what, when, its retries, timeout and outputs)."""
    import json

    from runner.files import sha256  # the interpreter's own: hashlib loads OpenSSL
    from runner.result import as_json

    return {
        step.name: sha256(
            json.dumps(as_json(step), sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        for step in phase.steps
    }


@struct(frozen=True)
class CheckDef(StepDef):
    """A check: a step run by `runner check` in the ``states`` (its `in`) it applies
    to; it never changes the state."""

    states: tuple[str, ...] = ()


@struct(frozen=True)
class StateDef:
    name: str
    description: str = ""
    recovery: str | None = None
    final: bool = False


@struct(frozen=True)
class PhaseDef:
    name: str
    sources: tuple[str, ...]
    via: str
    to: str
    failed: str
    advance: bool = True
    steps: tuple[StepDef, ...] = ()
    confirm: bool = False

    @property
    def start_trigger(self) -> str:
        return f"start_{self.name}"

    @property
    def finish_trigger(self) -> str:
        return f"finish_{self.name}"

    @property
    def fail_trigger(self) -> str:
        return f"fail_{self.name}"

    @property
    def resume_trigger(self) -> str:
        return f"resume_{self.name}"

    def step(self, name: str) -> StepDef | None:
        for step in self.steps:
            if step.name == name:
                return step
        return None


@struct(frozen=True)
class MachineDef:
    """A validated machine definition."""

    name: str
    description: str
    initial: str
    inputs_schema: dict[str, Any]
    states: dict[str, StateDef]
    phases: tuple[PhaseDef, ...]
    path: str
    """The machine file, absolute (:attr:`file` is it as a Path)."""
    digest: str
    checks: tuple[CheckDef, ...] = ()

    @property
    def file(self) -> Path:
        """The machine file (pathlib is imported here: reads never need it)."""
        from pathlib import Path

        return Path(self.path)

    @property
    def dir(self) -> Path:
        return self.file.parent

    def checks_in(self, state: str) -> list[CheckDef]:
        """The checks that apply in ``state``, in the file's order."""
        return [c for c in self.checks if state in c.states]

    def phase(self, name: str) -> PhaseDef | None:
        for phase in self.phases:
            if phase.name == name:
                return phase
        return None

    def phases_from(self, state: str) -> list[PhaseDef]:
        """Phases that may start from ``state`` (the ones `runner phase` allows)."""
        return [p for p in self.phases if state in p.sources]

    def advancing_phase(self, state: str) -> PhaseDef | None:
        """The first `advance: true` phase allowed from ``state``."""
        return self._advancing.get(state)

    @cached_property
    def _advancing(self) -> dict[str, PhaseDef]:
        index: dict[str, PhaseDef] = {}
        for phase in self.phases:
            if phase.advance:
                for source in phase.sources:
                    index.setdefault(source, phase)
        return index

    @cached_property
    def _by_role(self) -> dict[str, dict[str, PhaseDef]]:
        """{"via"|"failed": {state: first phase with that state in that role}}."""
        index: dict[str, dict[str, PhaseDef]] = {"via": {}, "failed": {}}
        for phase in self.phases:
            index["via"].setdefault(phase.via, phase)
            index["failed"].setdefault(phase.failed, phase)
        return index

    def phase_by_via(self, state: str) -> PhaseDef | None:
        return self._by_role["via"].get(state)

    def phase_by_failed(self, state: str) -> PhaseDef | None:
        return self._by_role["failed"].get(state)

    def happy_path(self) -> list[str]:
        """States visited by repeated `advance` from the initial state."""
        path = [self.initial]
        seen = {self.initial}
        state = self.initial
        while True:
            phase = self.advancing_phase(state)
            if phase is None or phase.to in seen:
                return path
            state = phase.to
            seen.add(state)
            path.append(state)

    def state_kind(self, state: str) -> str:
        """``initial``, ``intermediate``, ``failed``, ``final`` or ``stable``."""
        if self.states[state].final:
            return "final"
        if self.phase_by_via(state) is not None:
            return "intermediate"
        if self.phase_by_failed(state) is not None:
            return "failed"
        if state == self.initial:
            return "initial"
        return "stable"


def machine_to_document(machine: MachineDef) -> dict[str, Any]:
    """``machine`` as plain JSON data (for the machine cache); ``file`` is left out."""
    return {
        "name": machine.name,
        "description": machine.description,
        "initial": machine.initial,
        "inputs_schema": machine.inputs_schema,
        "digest": machine.digest,
        "states": {
            n: {"description": s.description, "recovery": s.recovery, "final": s.final}
            for n, s in machine.states.items()
        },
        "phases": [
            {
                "name": p.name,
                "sources": list(p.sources),
                "via": p.via,
                "to": p.to,
                "failed": p.failed,
                "advance": p.advance,
                "confirm": p.confirm,
                "steps": [_step_document(st) for st in p.steps],
            }
            for p in machine.phases
        ],
        "checks": [{**_step_document(c), "states": list(c.states)} for c in machine.checks],
    }


def _step_document(st: StepDef) -> dict[str, Any]:
    return {
        "name": st.name,
        "uses": st.uses,
        "with": st.with_,
        "when": st.when,
        "timeout_s": st.timeout_s,
        "retry": [
            st.retry.attempts,
            st.retry.delay_s,
            st.retry.backoff,
            st.retry.max_delay_s,
            st.retry.jitter,
        ],
        "outputs": st.outputs,
    }


def _step_fields(st: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": st["name"],
        "uses": st["uses"],
        "with_": st["with"],
        "when": st["when"],
        "timeout_s": st["timeout_s"],
        "retry": Retry(*st["retry"]),
        "outputs": st["outputs"],
    }


def machine_from_document(data: dict[str, Any], file: str | os.PathLike[str]) -> MachineDef:
    """The machine :func:`machine_to_document` wrote, read from ``file``."""
    return MachineDef(
        name=data["name"],
        description=data["description"],
        initial=data["initial"],
        inputs_schema=data["inputs_schema"],
        states={
            n: StateDef(n, s["description"], s["recovery"], s["final"])
            for n, s in data["states"].items()
        },
        phases=tuple(
            PhaseDef(
                name=p["name"],
                sources=tuple(p["sources"]),
                via=p["via"],
                to=p["to"],
                failed=p["failed"],
                advance=p["advance"],
                steps=tuple(StepDef(**_step_fields(st)) for st in p["steps"]),
                confirm=p["confirm"],
            )
            for p in data["phases"]
        ),
        path=os.fspath(file),
        digest=data["digest"],
        checks=tuple(
            CheckDef(**_step_fields(c), states=tuple(c["states"])) for c in data["checks"]
        ),
    )
