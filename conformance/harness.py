"""One test case's driver: every operation goes to the adapter, then to the spec.

The harness is the only place where the system under test and the model meet. It keeps the
trace of (operation, outcome) pairs so that a failure comes with the exact program that produced
it, records evidence per rule, and turns outcomes the spec cannot judge into rejected examples
rather than failures:

- an indeterminate outcome (transport lost): the rule is unknown, the example is abandoned;
- a violated rule the adapter declares as a deviation: expected failure, example abandoned
  (the state no longer follows the spec, so nothing after it could be judged);
- a state beyond what the spec tracks precisely (SpecLimit): example abandoned.
"""

from __future__ import annotations

from functools import cache
from typing import Any, NoReturn

from hypothesis import event, reject
from hypothesis.control import currently_in_test_context

from ashcheck.adapters.base import Adapter
from ashcheck.conformance.results import RECORDER, Recorder
from ashcheck.spec import RULES, Spec, SpecLimit
from ashcheck.spec.ops import Op
from ashcheck.spec.outcome import Kind, Outcome


class RuleViolation(AssertionError):
    """An implementation answered something its spec does not allow."""


@cache
def violation_type(rule: str) -> type[RuleViolation]:
    """One exception type per rule, so Hypothesis tells failures of different rules apart and
    shrinks each to its own minimal program."""
    return type(f"RuleViolation[{rule}]", (RuleViolation,), {"rule": rule})


class Harness:
    def __init__(self, adapter: Adapter, recorder: Recorder = RECORDER) -> None:
        self.adapter = adapter
        self.recorder = recorder
        adapter.reset()
        self.spec = Spec(adapter.profile, page_size=adapter.page_size, long_bits=adapter.long_bits,
                         spontaneous_purge=adapter.spontaneous_purge, memory=adapter.memory_bytes)
        self.trace: list[tuple[Op, Outcome]] = []

    @property
    def kernel(self) -> Any:
        return self.spec.kernel

    def step(self, op: Op) -> Outcome:
        observed = self.adapter.perform(op)
        self.trace.append((op, observed))
        if observed.kind is Kind.INDETERMINATE:
            for rule in self._rules_in_play(op):
                self.recorder.get(rule).indeterminate += 1
            _reject(f"indeterminate: {observed.value}")
        try:
            verdict = self.spec.observe(op, observed)
        except SpecLimit as exc:
            _reject(f"beyond the spec's tracking: {exc}")
        if verdict.ok:
            self.recorder.get(verdict.rule).confirmed += 1
            return observed
        deviated = [r for r in verdict.rules if r in self.adapter.deviations]
        if deviated:
            self.recorder.get(deviated[0]).deviated += 1
            _reject(f"declared deviation {deviated[0]}")
        message = self._explain(op, observed, verdict.rule, verdict.expected)
        evidence = self.recorder.get(verdict.rule)
        evidence.violated += 1
        evidence.message = message
        evidence.reproducer = [{"op": o.to_json(), "outcome": out.to_json()} for o, out in self.trace]
        raise violation_type(verdict.rule)(message)

    def _rules_in_play(self, op: Op) -> list[str]:
        try:
            return [b.rule for b in self.spec.allowed(op)]
        except SpecLimit:
            return []

    def _explain(self, op: Op, observed: Outcome, rule: str, expected: tuple[str, ...]) -> str:
        lines = [f"rule {rule} violated by adapter {self.adapter.name!r}",
                 f"  {RULES[rule].summary}", f"  source: {RULES[rule].source}",
                 f"  step {len(self.trace)}: {op}", f"  observed: {observed}", "  allowed:"]
        lines += [f"    {e}" for e in expected]
        lines.append("  trace:")
        lines += [f"    {o}  →  {out}" for o, out in self.trace]
        return "\n".join(lines)


def _reject(why: str) -> NoReturn:
    """Drop this example: the spec cannot judge it. The note shows in Hypothesis's statistics; the
    exhaustive tests, which are plain pytest tests, see only the UnsatisfiedAssumption."""
    if currently_in_test_context():
        event(why)
    reject()
