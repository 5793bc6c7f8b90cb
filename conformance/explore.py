"""Running the conformance tests against one adapter: the exploration shards, the exhaustive
small-domain tables, the callers' flows, and what a test reports afterwards.

Each function runs to the end whatever it finds (the harness records violations and sets aside
what they made uncertain), shrinks the program of each rule it newly found violated, and returns
those rules; the pytest tests (test_conformance.py) fail with a short summary of them.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import seed
from hypothesis.internal.conjecture import providers
from hypothesis.stateful import run_state_machine_as_test

from ashcheck.adapters.base import Adapter
from ashcheck.conformance import exhaustive, flows
from ashcheck.conformance.harness import Harness
from ashcheck.conformance.machines import Conformance
from ashcheck.conformance.replay import addressable
from ashcheck.conformance.results import RECORDER, FlowResult, Recorder
from ashcheck.conformance.settings import Profile
from ashcheck.conformance.shrink import shrink_evidence

SEED_BASE = 0x5eed  # ci shard k runs with seed SEED_BASE + k


def explore(adapter: Adapter, profile: Profile, shard: int = 0, *, scenarios: bool = True,
            shrink: bool = True) -> list[str]:
    """One shard of the exploration. Returns the rules it newly found violated."""
    before = _violated(RECORDER)
    base = (SEED_BASE + shard) * 100_003 if profile.seeded else random.getrandbits(32)
    count = itertools.count()

    def machine() -> Conformance:
        m = Conformance(adapter, swarm_seed=base + next(count))
        m.scenarios = scenarios
        return m

    factory = seed(SEED_BASE + shard)(machine) if profile.seeded else machine
    with _no_local_constants():
        run_state_machine_as_test(factory, settings=profile.hypothesis())  # type: ignore[arg-type,unused-ignore]
    return _finish(adapter, profile, before, shrink)


@contextmanager
def _no_local_constants() -> Iterator[None]:
    """Hypothesis mixes into its draws the literals it finds in the source of "local" modules (any
    not installed under site-packages: an editable install of ashcheck, the user's adapter), so a
    seeded ci run would take other programs depending on where the code lives (measured: an
    editable and a plain install of one commit differed in a rule's verdict). For the length of
    one shard, the pool of local constants is empty, so every install and every adapter gets the
    same programs. (An internal of Hypothesis: where it is gone, nothing is changed.)"""
    original = getattr(providers, "_get_local_constants", None)
    try:
        from hypothesis.internal.constants_ast import Constants  # Hypothesis 6.131 and later
    except ImportError:
        original = None
    if original is None:
        yield
        return
    empty = Constants()
    providers._get_local_constants = lambda: empty
    _forget_cached_constants()  # drawn before, outside: they may hold local constants
    try:
        yield
    finally:
        providers._get_local_constants = original
        _forget_cached_constants()  # so that other tests in this process see theirs again


def _forget_cached_constants() -> None:
    cache = getattr(getattr(providers, "CONSTANTS_CACHE", None), "cache", None)
    if isinstance(cache, dict):
        cache.clear()


def tables(adapter: Adapter, profile: Profile, *, shrink: bool = True) -> list[str]:
    """Every program of the exhaustive tables (exhaustive.py), each from a fresh start."""
    before = _violated(RECORDER)
    for program in exhaustive.programs(adapter):
        h = Harness(adapter)
        fd = -1
        for make in program:
            op = make(fd)
            op = None if op is None else addressable(h, op)  # a step whose mapping was never made
            if op is None:
                continue
            out = h.step(op)
            if fd < 0 and out is not None and out.succeeded and isinstance(out.value, int):
                fd = out.value
    return _finish(adapter, profile, before, shrink)


def flow(adapter: Adapter, profile: Profile, name: str, *, shrink: bool = True) -> tuple[FlowResult, list[str]]:
    """One named flow (flows.py): its result, kept by the recorder, and the rules it newly found violated."""
    before = _violated(RECORDER)
    result = RECORDER.flows[name] = flows.run(adapter, name)
    return result, _finish(adapter, profile, before, shrink)


def _violated(recorder: Recorder) -> set[str]:
    return {rule for rule, ev in recorder.rules.items() if ev.violated}


def _finish(adapter: Adapter, profile: Profile, before: set[str], shrink: bool) -> list[str]:
    new = sorted(_violated(RECORDER) - before)
    if shrink and new:
        shrink_evidence(adapter, RECORDER, profile.shrink_replays)
    RECORDER.maybe_dump(every=0)
    return new


def summary(rules: list[str]) -> str:
    """A few lines per violated rule: the step, what came back, what was allowed, the program."""
    lines = [f"{len(rules)} rule(s) violated:"]
    for rule in rules:
        ev = RECORDER.get(rule)
        lines.append(f"  {rule}: {ev.step}  →  {ev.observed}   (allowed: {'; '.join(ev.allowed)})")
        lines += [f"      {step}" for step in _program(ev.reproducer)]
    return "\n".join(lines)


def _program(reproducer: list[dict[str, object]]) -> list[str]:
    from ashcheck.spec.ops import Op
    from ashcheck.spec.outcome import Outcome

    return [f"{Op.from_json(s['op'])}  →  {Outcome.from_json(s['outcome'])}"  # type: ignore[arg-type]
            for s in reproducer]
