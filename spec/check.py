"""The spec as one object: the allowed outcomes of an operation, and advancing by an observation.

Data flow of one step (ARCHITECTURE): the machine asks `allowed(op)` → the adapter performs op →
`observe(op, outcome)` checks membership and advances the state by what was observed. A miss
changes nothing and returns a verdict naming the rules that were in play.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ashcheck.spec import binder, fds, fileio, memory, pinning, regions, resize
from ashcheck.spec import ops as o
from ashcheck.spec.branch import Branch
from ashcheck.spec.outcome import Kind, Outcome
from ashcheck.spec.profiles import PROFILES
from ashcheck.spec.state import Kernel, SpecLimit, expand_purges

AREAS = {m.__name__.rsplit(".", 1)[-1]: m for m in (binder, fds, fileio, memory, pinning, regions, resize)}


def _spec_function(op: type[o.Op]) -> Callable[[Kernel, Any], list[Branch]]:
    """The function an operation's declaration names (`spec`: "module.function")."""
    area, _, name = op.spec.partition(".")
    function = getattr(AREAS.get(area), name, None)
    if not callable(function):
        raise ImportError(f"{op.__name__}.spec = {op.spec!r} names no function of ashcheck.spec")
    return function  # type: ignore[no-any-return]


SPEC: dict[type[o.Op], Callable[[Kernel, Any], list[Branch]]] = {op: _spec_function(op) for op in o.OPS.values()}

MAX_WORLDS = 64

# How a concurrent history searches a call (linearize.py): as one step, or as steps that other
# calls may come between, BODY the one judged (Spec.steps).
WHOLE, BEGIN, BODY, END = "whole", "begin", "body", "end"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rule: str                 # the rule that allowed the outcome, or the one to blame for a miss
    expected: tuple[str, ...]  # every allowed outcome, as "outcome  [rule]"
    rules: tuple[str, ...]    # every rule that was in play
    variant: str = ""         # the allowing branch's variant (branch.Branch.variant), if any


class Spec:
    """The executable specification, holding the abstract state of one test case."""

    def __init__(self, profile: str, *, page_size: int = 4096, long_bits: int = 64,
                 spontaneous_purge: bool = False, memory: int | None = None,
                 max_offset: int | None = None) -> None:
        self.kernel = Kernel(PROFILES[profile], page_size, long_bits, spontaneous_purge, memory)
        if max_offset is not None:
            self.kernel.max_offset = max_offset

    def copy(self) -> Spec:
        """An independent spec in the same state (the profile, immutable, is shared): what a search
        over several orders of the same operations (linearize.py) advances one order at a time."""
        twin = Spec.__new__(Spec)
        twin.kernel = self.kernel.clone()
        return twin

    def allowed(self, op: o.Op) -> list[Branch]:
        """The allowed outcomes of `op` now. A region whose possible purge histories grow beyond
        tracking is marked `untracked` first (the caller must then not ask about it); SpecLimit
        may still come from a state the operation itself cannot follow."""
        self._purges_may_have_happened()
        return SPEC[type(op)](self.kernel, op)

    def steps(self, op: o.Op) -> tuple[str, ...]:
        """The steps a concurrent history searches `op` as: WHOLE; or for read() and write() (where
        it can store) BEGIN (the position taken), BODY (the bytes moved at it), END (the position
        stored): fileio.position; or for PURGE_ALL_CACHES where pinning is real, BODY (the count) and
        END (the return), any range purged at any moment between them (pinning.py)."""
        profile = self.kernel.profile
        if isinstance(op, o.Read) or (isinstance(op, o.Write) and profile.fd_write):
            return BEGIN, BODY, END
        if isinstance(op, o.PurgeAllCaches) and profile.pinning:
            return BODY, END
        return (WHOLE,)

    def begin(self, op: o.Op) -> int | None:
        """BEGIN: what the call takes as it starts (a read's or write's position)."""
        assert isinstance(op, o.Read | o.Write)
        return fileio.position(self.kernel, op)

    def allowed_body(self, op: o.Op, taken: int | None) -> list[Branch]:
        """BODY's allowed outcomes; `taken` is what BEGIN took."""
        self._purges_may_have_happened()
        if isinstance(op, o.Read):
            return fileio.read_body(self.kernel, op, taken)
        if isinstance(op, o.Write):
            return fileio.write_body(self.kernel, op, taken)
        assert isinstance(op, o.PurgeAllCaches)
        return pinning.purge_all_caches(self.kernel, op, in_steps=True)

    def end(self, op: o.Op, taken: int | None, observed: Outcome) -> None:
        """END: a read or write stores its position; a purge that began stops purging (after what it
        may have purged up to its return)."""
        if isinstance(op, o.Read | o.Write):
            fileio.store_position(self.kernel, op, taken, observed)
        elif observed.kind is Kind.VALUE:
            self._purges_may_have_happened()
            self.kernel.purges_in_flight -= 1

    def _purges_may_have_happened(self) -> None:
        k = self.kernel
        if k.spontaneous_purge or k.purges_in_flight:
            for region in k.regions.values():
                if not region.untracked and any(w.unpurged() for w in region.worlds):
                    try:
                        expand_purges(region, MAX_WORLDS)
                    except SpecLimit:
                        region.untracked = True

    def judge(self, branches: list[Branch], observed: Outcome) -> Verdict:
        """Is `observed` one of `branches` (from `allowed`)? The first match's effect advances the
        state (it may raise SpecLimit). A miss changes nothing and blames the rule whose branch
        comes closest: same kind of outcome (a value, an errno, a fault), then the same errno or
        signal; a load that returns wrong data is a data rule's failure, not the SIGSEGV rule's."""
        expected = tuple(str(b) for b in branches)
        rules = tuple(dict.fromkeys(b.rule for b in branches))
        for b in branches:
            if b.matches(observed):
                if b.effect is not None:
                    b.effect(observed)
                return Verdict(True, b.rule, expected, rules, b.variant)
        return Verdict(False, _blame(branches, observed), expected, rules)

    def observe(self, op: o.Op, observed: Outcome) -> Verdict:
        return self.judge(self.allowed(op), observed)


def _blame(branches: list[Branch], observed: Outcome) -> str:
    def closeness(b: Branch) -> int:
        if b.outcome is None:  # an `accepts` branch judges values
            return 1 if observed.kind is Kind.VALUE else 0
        if b.outcome.kind is not observed.kind:
            return 0
        return 2 if b.outcome.kind is not Kind.VALUE and b.outcome.value == observed.value else 1
    return max(branches, key=closeness).rule  # max keeps the first of equals: the spec's order
