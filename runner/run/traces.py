"""Trace files: what an operator reads first after a failed or interrupted run.

A trace names the environment, phase, step and time, then holds the error chain, the
step's rendered parameters and the last lines of its output, every line masked for
secrets. It is written as an artifact of the store (``data/<env>/traces/`` for files);
a trace that cannot be written is logged and never hides the failure itself.
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Iterable

from runner.errors import LockLostError, RunnerError, StepError
from runner.log import logger
from runner.machine.model import PhaseDef, StepDef
from runner.run.inputs import SecretResolver, mask_params
from runner.run.session import Session
from runner.store.record import now_iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["TAIL_LINES", "trace_text", "write_trace"]

log = logger()

#: How many lines of a step's output a trace keeps.
TAIL_LINES = 200


def trace_text(
    session: Session,
    phase: PhaseDef,
    step: StepDef | None,
    headline: str,
    exc: BaseException | None,
    params: Any,
    secrets: SecretResolver,
    tail: Iterable[str],
) -> str:
    """The trace of a run that ended with ``headline``."""
    lines = [
        f"environment: {session.name}",
        f"phase: {phase.name}",
        f"step: {step.name if step else '-'}" + (f" (uses: {step.uses})" if step else ""),
        f"state: {session.state}",
        f"time: {now_iso()}",
        f"pid: {os.getpid()} host: {session.host}",
        "",
        headline,
        "",
        "== error chain ==",
    ]
    if exc is not None:
        lines.extend(
            secrets.mask(line.rstrip("\n")) for line in traceback.format_exception(exc) if line
        )
    else:
        lines.append("(none)")
    lines += ["", "== rendered parameters (secrets masked) =="]
    lines.append(
        _dump(mask_params(params, secrets.mask)) if params is not None else "(not rendered)"
    )
    lines += ["", f"== last {TAIL_LINES} lines of output =="]
    kept = list(tail)
    if not kept and isinstance(exc, StepError):
        kept = exc.output_tail
    lines.extend(secrets.mask(line) for line in kept[-TAIL_LINES:])
    return "\n".join(lines) + "\n"


def write_trace(session: Session, phase: PhaseDef, text: str) -> str | None:
    """Store ``text`` as a trace of ``phase``; its reference, or None when it could not
    be written (logged: the failure it describes is recorded all the same)."""
    try:
        return session.store.write_artifact(session.name, "trace", phase.name, text)
    except LockLostError:
        raise  # nothing more of this command can be written: the caller says so, once
    except (RunnerError, OSError) as err:
        log.error("environment=%s could not write the trace file: %s", session.name, err)
        return None


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, default=str)
    except (TypeError, ValueError):
        return repr(value)
