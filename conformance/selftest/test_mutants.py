"""The suite proves it can fail: every mutant (one broken behaviour each) is caught under the
`ci` profile and reported as a failure of the rule it breaks; the mutants that break what the
implementation does (STATE_MUTANTS) are caught by the exploration alone, scenarios switched off."""

from __future__ import annotations

import pytest

from ashcheck.conformance.selftest.catching import violated_rules
from ashcheck.conformance.selftest.mutants import MUTANTS, STATE_MUTANTS, Mutant


def test_there_are_enough_mutants_in_enough_areas() -> None:
    assert len(MUTANTS) >= 25 and len(STATE_MUTANTS) >= 10
    assert len({".".join(m.breaks.split(".")[:2]) for m in MUTANTS}) >= 10


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_mutant_is_caught(mutant: type[Mutant]) -> None:
    alone = mutant in STATE_MUTANTS
    caught = violated_rules(f"{mutant.__module__}:{mutant.__name__}", stop_at=mutant.breaks, scenarios=not alone)
    assert mutant.breaks in caught.rules, (
        f"{mutant.name} broke {mutant.breaks}; the suite reported {sorted(caught.rules) or 'nothing'}"
        + (" (exploration alone, scenarios off)" if alone else ""))


def test_the_reference_itself_violates_nothing() -> None:
    assert violated_rules("sim").rules == set()
