"""One test case's judge: every operation goes to the adapter, then to the spec.

The harness is the only place where the system under test and the model meet. For each
operation it asks the spec what is allowed, has the adapter perform it, and checks the outcome:

- allowed: the state advances by what was observed, and the rule is confirmed (or counted as
  emulated when the adapter computed the answer itself);
- not allowed: a violation of the rule to blame (or the expected failure of a declared deviation),
  recorded with the program that led to it;
- indeterminate (the transport was lost): lost for every rule that was in play.

None of these ends the test case. Each surprise sets aside what it put in doubt (quarantine.py),
and the rest goes on being judged, so that one run finds every difference. Nothing is raised to
Hypothesis: the test case always completes; the recorder holds what was found, and the test
function reports it afterwards. An operation on something set aside, or one the adapter does not
provide, is not performed: `step` returns None.
"""

from __future__ import annotations

from typing import Any

from ashcheck.adapters.base import Adapter, UnsupportedOperation
from ashcheck.conformance.quarantine import Quarantine, fd_surprise
from ashcheck.conformance.results import RECORDER, Recorder
from ashcheck.spec import RULES, Spec, SpecLimit
from ashcheck.spec.branch import Branch
from ashcheck.spec.ops import Op
from ashcheck.spec.outcome import Kind, Outcome
from ashcheck.spec.state import Kernel

REASON_CHARS, REASONS_KEPT = 200, 50  # a lost outcome's reason as kept, and how many different ones


class Harness:
    def __init__(self, adapter: Adapter, recorder: Recorder = RECORDER) -> None:
        self.adapter = adapter
        self.recorder = recorder
        restarts = adapter.restarts
        adapter.reset()
        recorder.totals.restarts += adapter.restarts - restarts
        self.spec = Spec(adapter.profile, page_size=adapter.page_size, long_bits=adapter.long_bits,
                         spontaneous_purge=adapter.spontaneous_purge, memory=adapter.memory_bytes,
                         max_offset=adapter.max_file_offset)
        self.trace: list[tuple[Op, Outcome]] = []
        self.quarantine = Quarantine()
        self.violated: list[str] = []  # rules violated in this test case, in order (deviations not included)
        self.deviated: list[str] = []  # declared deviations seen in this test case
        self.judged: dict[str, int] = {}  # rule → steps it allowed in this test case, first judged first
        self.not_performed = 0  # steps not performed: unsupported, set aside, or past what the spec follows
        self.lost = 0  # steps whose transport was lost
        recorder.totals.examples += 1

    @property
    def model(self) -> Kernel:
        """The spec's abstract state: what the machines look at to choose operations."""
        return self.spec.kernel

    def usable(self, proc: int) -> bool:
        """Whether `proc` exists in the model and has not been set aside."""
        return proc in self.model.procs and proc not in self.quarantine.procs

    def step(self, op: Op) -> Outcome | None:
        """Perform and judge `op`; its outcome, or None when it was not performed."""
        if type(op) in self.adapter.unsupported:
            self.not_performed += 1
            return None
        if self.quarantine.blocks(self.model, op):
            self.recorder.totals.set_aside += 1
            self.not_performed += 1
            return None
        try:
            branches = self.spec.allowed(op)
        except SpecLimit:
            self.quarantine.set_aside(self.model, op)
            self.not_performed += 1
            return None
        if self.quarantine.blocks(self.model, op):  # allowed() may have set a region aside
            self.recorder.totals.set_aside += 1
            self.not_performed += 1
            return None
        observed = self.perform(op)
        if observed is None:
            self.not_performed += 1
            return None
        self.model.spontaneous_purge = self.adapter.spontaneous_purge  # it may change between calls (sim)
        self.trace.append((op, observed))
        self.recorder.totals.steps += 1
        if observed.kind is Kind.INDETERMINATE:
            self.count_lost(str(observed.value))
            for rule in dict.fromkeys(b.rule for b in branches):
                self.recorder.get(rule).lost += 1
            self.quarantine.set_aside(self.model, op, lost=True)
            return observed
        self._judge(op, branches, observed)
        self.recorder.maybe_dump()  # a long run's progress can be read from the evidence files
        return observed

    def count_lost(self, reason: str) -> None:
        """One more operation whose outcome was lost; the first one also counts this test case
        among those that lost something (a backend lost for good loses one or two calls per test
        case, and then nothing is left to ask: the share of test cases says so where the share of
        calls does not)."""
        if not self.lost:
            self.recorder.totals.lossy += 1
        self.lost += 1
        self.recorder.totals.lost += 1
        why = self.recorder.lost_reasons
        reason = reason[:REASON_CHARS]
        if reason in why or len(why) < REASONS_KEPT:
            why[reason] = why.get(reason, 0) + 1

    def perform(self, op: Op) -> Outcome | None:
        """The adapter's outcome of `op`; None if the adapter does not know the operation (one newer
        than the adapter): from then on it is unsupported, and the report says so."""
        try:
            return self.adapter.perform(op)
        except UnsupportedOperation as exc:
            self.adapter.unsupported = {**self.adapter.unsupported, exc.op_type: str(exc)}
            self.recorder.unsupported[exc.op_type.__name__] = str(exc)
            return None

    def _judge(self, op: Op, branches: list[Branch], observed: Outcome) -> None:
        try:
            verdict = self.spec.judge(branches, observed)
        except SpecLimit:  # the matching effect could not follow the state
            self.quarantine.set_aside(self.model, op)
            return
        evidence = self.recorder.get(verdict.rule)
        if verdict.ok:
            self.judged[verdict.rule] = self.judged.get(verdict.rule, 0) + 1
            if observed.emulated:
                evidence.emulated += 1
            else:
                evidence.confirmed += 1
            evidence.saw(verdict.variant)
            self.quarantine.forget(op)
            return
        self.quarantine.set_aside(self.model, op, fds_in_doubt=fd_surprise(branches, observed))
        if verdict.rule in self.adapter.deviations:
            evidence.deviated += 1
            if verdict.rule not in self.deviated:
                self.deviated.append(verdict.rule)
            return
        evidence.violated += 1
        if verdict.rule not in self.violated:
            self.violated.append(verdict.rule)
        if not evidence.reproducer or len(self.trace) < len(evidence.reproducer):
            evidence.message = self.explain(op, observed, verdict.rule, verdict.expected)
            evidence.step, evidence.observed = str(op), str(observed)
            evidence.allowed = list(verdict.expected)
            evidence.reproducer = self.program()
            evidence.shrunk = False
        self.recorder.maybe_dump()

    def program(self) -> list[dict[str, Any]]:
        """The steps performed so far, as reports and reproducers keep them: [{"op": …, "outcome": …}]."""
        return [{"op": o.to_json(), "outcome": out.to_json()} for o, out in self.trace]

    def explain(self, op: Op, observed: Outcome, rule: str, expected: tuple[str, ...]) -> str:
        lines = [f"rule {rule} violated by adapter {self.adapter.name!r}",
                 f"  {RULES[rule].summary}", f"  source: {RULES[rule].source}",
                 f"  step {len(self.trace)}: {op}", f"  observed: {observed}", "  allowed:"]
        lines += [f"    {e}" for e in expected]
        lines.append("  trace:")
        lines += [f"    {o}  →  {out}" for o, out in self.trace]
        return "\n".join(lines)

