"""What `validate` returns: the machine is valid, and what it declares (also
importable from :mod:`runner.api.outcomes` and :mod:`runner.api.results`).

Apart from the other outcomes so that `validate`, which an editor of machine.yaml runs
after every change, builds only these two classes.
"""

from __future__ import annotations

from runner.result import INTERNAL, Result, key
from runner.struct import field, struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from runner.machine.model import MachineDef

__all__ = ["PhaseSummary", "ValidateResult"]


@struct(frozen=True)
class PhaseSummary(Result):
    """A phase of a validated machine."""

    name: str
    sources: tuple[str, ...] = field(metadata=key("from"))
    via: str
    to: str
    failed: str
    advance: bool
    steps: tuple[str, ...]


@struct(frozen=True)
class ValidateResult(Result):
    """`validate`: the machine is valid; what it declares."""

    valid: bool
    file: str
    name: str
    digest: str
    initial: str
    states: Mapping[str, str]  # state -> kind
    phases: tuple[PhaseSummary, ...]
    happy_path: tuple[str, ...]
    machine: MachineDef = field(metadata=INTERNAL, repr=False, compare=False)

    @classmethod
    def from_machine(cls, machine: MachineDef) -> ValidateResult:
        return cls(
            valid=True,
            file=machine.path,
            name=machine.name,
            digest=machine.digest,
            initial=machine.initial,
            states={name: machine.state_kind(name) for name in machine.states},
            phases=tuple(
                PhaseSummary(
                    name=p.name,
                    sources=p.sources,
                    via=p.via,
                    to=p.to,
                    failed=p.failed,
                    advance=p.advance,
                    steps=tuple(s.name for s in p.steps),
                )
                for p in machine.phases
            ),
            happy_path=tuple(machine.happy_path()),
            machine=machine,
        )
