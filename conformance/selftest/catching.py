"""Running the whole suite in-process against one adapter and collecting the violated rules:
what the mutant tests and the CLI tests need, without a nested pytest."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import UnsatisfiedAssumption
from hypothesis.stateful import run_state_machine_as_test

from ashcheck.conformance import session
from ashcheck.conformance.exhaustive import STATES, make_op, pairs
from ashcheck.conformance.harness import Harness, RuleViolation
from ashcheck.conformance.machines import AshmemMachine, BinderMachine, MemoryMachine
from ashcheck.conformance.results import RECORDER
from ashcheck.spec import ops as o

# The `ci` profile's search, without shrinking: a violation is recorded when it happens, and a
# mutant only has to be caught here (the CLI tests shrink a real failure into a reproducer).
# The parent is Hypothesis's default, whatever profile the surrounding pytest run has loaded.
CI = settings(settings.get_profile("default"), max_examples=150, stateful_step_count=40, derandomize=True,
              database=None, deadline=None, suppress_health_check=list(HealthCheck), print_blob=False,
              report_multiple_bugs=False, phases=[Phase.explicit, Phase.generate])


def violated_rules(adapter_spec: str, stop_at: str | None = None) -> set[str]:
    """Every rule the suite reports as violated by the adapter (stopping early once `stop_at` is)."""
    session.shutdown()
    session.configure(adapter_spec, {})
    RECORDER.rules.clear()
    try:
        adapter = session.adapter()
        for state, op in pairs():
            if any(c not in adapter.capabilities for c in STATES[state].needs):
                continue
            h = Harness(adapter)
            try:
                h.step(o.Spawn(0, True, True))
                fd = -1
                for make in STATES[state].setup:
                    out = h.step(make(fd))
                    fd = out.value if fd < 0 else fd
                h.step(make_op(op)(fd))
                h.step(o.ListFds(0))
            except (RuleViolation, UnsatisfiedAssumption):
                pass
        for machine in (AshmemMachine, MemoryMachine, BinderMachine):
            if stop_at is not None and RECORDER.get(stop_at).violated:
                break
            with contextlib.suppress(RuleViolation, BaseExceptionGroup):  # recorded already
                run_state_machine_as_test(machine, settings=CI)  # type: ignore[no-untyped-call,unused-ignore]
        return {rule for rule, ev in RECORDER.rules.items() if ev.violated}
    finally:
        session.shutdown()
