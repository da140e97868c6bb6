"""The `transitions` machine built from a loaded machine definition.

No auto transitions: every state change is one of four triggers per phase,
``start_<phase>`` (from → via), ``finish_<phase>`` (via → to), ``fail_<phase>``
(via → failed) and ``resume_<phase>`` (failed → via).
"""

from __future__ import annotations

from collections.abc import Callable

from runner.machine.model import MachineDef

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def transitions_of(machine: MachineDef) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for phase in machine.phases:
        result.append(
            {"trigger": phase.start_trigger, "source": list(phase.sources), "dest": phase.via}
        )
        result.append({"trigger": phase.finish_trigger, "source": phase.via, "dest": phase.to})
        result.append({"trigger": phase.fail_trigger, "source": phase.via, "dest": phase.failed})
        result.append({"trigger": phase.resume_trigger, "source": phase.failed, "dest": phase.via})
    return result


def build_machine(
    machine: MachineDef,
    model: Any,
    *,
    initial: str | None = None,
    after_state_change: Callable[..., None] | None = None,
) -> Any:
    """A :class:`transitions.Machine` driving ``model`` (its ``state`` attribute)."""
    from transitions import Machine

    return Machine(
        model=model,
        states=list(machine.states),
        transitions=transitions_of(machine),
        initial=initial or machine.initial,
        auto_transitions=False,
        send_event=True,
        after_state_change=after_state_change,
        model_attribute="state",
    )
