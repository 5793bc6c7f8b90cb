"""Branches: one allowed outcome of an operation, with the rule that allows it and what it does.

A spec function maps (state, operation) to a list of branches. The observed outcome must match
one of them; the first match is applied (its effect advances the state by what was observed).
An effect may narrow the possible worlds of a region to the ones that explain the observation.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from ashcheck.spec.outcome import Outcome, err

Effect = Callable[[Outcome], None]


@dataclass
class Branch:
    rule: str
    outcome: Outcome | None = None           # the exact outcome, or None: `accepts` decides
    effect: Effect | None = None
    accepts: Callable[[Outcome], bool] | None = None
    expect: str = ""                          # what `accepts` allows, in words
    # One of the behaviours real kernels differ in, within what the spec allows, by name ("a write
    # crossing the end: EPERM whole"): the report and the difference table say which each
    # implementation showed. Empty for the rest.
    variant: str = ""

    def matches(self, observed: Outcome) -> bool:
        if self.outcome is not None:
            return observed == self.outcome
        return self.accepts is not None and self.accepts(observed)

    def __str__(self) -> str:
        shown = str(self.outcome) if self.outcome is not None else self.expect
        return f"{shown}  [{self.rule}]"


def fails(rule: str, code: int) -> list[Branch]:
    """The operation must fail with `code` and change nothing."""
    return [Branch(rule, err(code))]


EBADF_RULE = "fd.ebadf"


def ebadf() -> list[Branch]:
    return fails(EBADF_RULE, errno.EBADF)
