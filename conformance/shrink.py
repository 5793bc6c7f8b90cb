"""Minimizing a failing program by replaying it: the shortest program that still breaks the rule.

Hypothesis never sees a failure (the harness records it and the test case goes on), so its own
shrinker does not run. Instead each violated rule's recorded program is shrunk here, against the
same adapter, by deleting steps (delta debugging, Zeller & Hildebrandt 2002): cut after the step
that breaks the rule, then try removing chunks of halving size, keeping any candidate that still
breaks it. The result is 1-minimal within the replay budget: removing any single step loses the
failure. A program that does not break the rule again on replay (an implementation that is not
deterministic) is kept as recorded, marked not shrunk.
"""

from __future__ import annotations

from collections.abc import Callable

from ashcheck.adapters.base import Adapter
from ashcheck.conformance.harness import Harness
from ashcheck.conformance.replay import replay
from ashcheck.conformance.results import Evidence, Recorder
from ashcheck.spec import ops as o


def breaks(rule: str) -> Callable[[Harness], bool]:
    return lambda h: rule in h.violated


def first_break(adapter: Adapter, program: list[o.Op], rule: str) -> int | None:
    """The index of the step at which `program` breaks `rule`, replayed from scratch; None if it does not."""
    return replay(adapter, program, until=breaks(rule))[1]


def minimize(adapter: Adapter, program: list[o.Op], rule: str, budget: int) -> list[o.Op] | None:
    """A shorter program that still breaks `rule` (None if `program` itself does not, on replay)."""
    at = first_break(adapter, program, rule)
    if at is None:
        return None
    program = program[:at + 1]
    budget -= 1
    chunks = 2
    while budget > 0 and len(program) > 1:
        size = max(1, len(program) // chunks)
        for start in range(len(program) - size, -1, -size):
            if budget <= 0:
                break
            candidate = program[:start] + program[start + size:]
            budget -= 1
            at = first_break(adapter, candidate, rule)
            if at is not None:
                program = candidate[:at + 1]
                chunks = max(chunks - 1, 2)
                break
        else:
            if size == 1:
                break
            chunks = min(chunks * 2, len(program))
    return program


def shrink_evidence(adapter: Adapter, recorder: Recorder, budget: int) -> list[str]:
    """Shrink the program of every violated rule not shrunk yet; the rules shrunk."""
    done = []
    for rule, ev in sorted(recorder.rules.items()):
        if not ev.violated or ev.shrunk or not ev.reproducer or any("branch" in s for s in ev.reproducer):
            continue  # (a concurrent history is shrunk by concurrent.py)
        program = [o.Op.from_json(step["op"]) for step in ev.reproducer]
        smaller = minimize(adapter, program, rule, budget)
        if smaller is None:
            ev.message += "\n  (this program did not break the rule again when replayed: not shrunk)"
            ev.shrunk = True  # nothing more to try
            continue
        h, _ = replay(adapter, smaller, until=breaks(rule))  # once more, to describe the shrunk failure
        got = h.recorder.rules.get(rule, Evidence())
        if got.reproducer:
            for name in ("message", "step", "observed", "allowed", "reproducer"):
                setattr(ev, name, getattr(got, name))
        ev.shrunk = True
        done.append(rule)
    return done
