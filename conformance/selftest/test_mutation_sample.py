"""A fixed sample of the reference's mutants (mutation.py) must be killed by the suite: at least
0.9 of them, under the `ci` profile against the sim adapter, each within its timeout.

The whole run (`tox -e mutation`) takes long; this sample of at least 30 mutants, spread over every
file of reference/ and chosen by hash (so the same ones each time while their lines stay as they
are), is what CI runs. Mutants the survivors file marks equivalent or unjudged (no rule can see
them) are not drawn. A mutant
that runs past its timeout counts as killed (a hang), so the time bound is per mutant, never a
timed assertion. The mutants run two at a time, each in its own copy of the reference.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ashcheck.conformance.selftest.mutation import (
    INCOMPETENT,
    MIN_TIMEOUT,
    TIMEOUT_FACTOR,
    Mutant,
    baseline,
    copy_reference,
    enumerate_mutants,
    load_survivors,
    run_mutants,
    sample,
)

WORKERS = 2
THRESHOLD = 0.9


def _sample() -> tuple[list[Mutant], list[Mutant], list[tuple[Mutant, object]]]:
    with tempfile.TemporaryDirectory() as tmp:
        items = enumerate_mutants(copy_reference(Path(tmp)))
    everything = [m for m, _ in items]
    return everything, sample(everything, load_survivors().equivalent()), items


def test_the_sample_is_fixed_and_spread_over_every_file() -> None:
    everything, chosen, _ = _sample()
    assert len(chosen) >= 30
    assert {m.file for m in chosen} == {m.file for m in everything}
    assert sample(list(reversed(everything)), load_survivors().equivalent()) == chosen
    assert not {m.key for m in chosen} & load_survivors().equivalent()


def test_a_fixed_sample_of_mutants_of_the_reference_is_killed() -> None:
    _, chosen, items = _sample()
    with tempfile.TemporaryDirectory() as tmp:
        ignore, seconds = baseline(copy_reference(Path(tmp)))
    keys = {m.key for m in chosen}
    verdicts = run_mutants([(m, spec) for m, spec in items if m.key in keys],
                           timeout=max(MIN_TIMEOUT, TIMEOUT_FACTOR * seconds), ignore=ignore, workers=WORKERS)
    assert len(verdicts) == len(chosen)
    verdicts = [v for v in verdicts if v.verdict != INCOMPETENT]  # code that does not parse is no mutant
    survived = [v for v in verdicts if not v.killed]
    killed = len(verdicts) - len(survived)
    assert killed >= THRESHOLD * len(verdicts), (
        f"{killed}/{len(verdicts)} sampled mutants killed (below {THRESHOLD}); survived:\n"
        + "\n".join(f"  {v.mutant.file}:{v.mutant.line} {v.mutant.operator}: {v.mutant.code}  →  {v.mutated}"
                    for v in survived))
