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


@pytest.mark.parametrize("mutant", [m for m in MUTANTS if m not in STATE_MUTANTS], ids=lambda m: m.name)
def test_mutant_is_caught_as_the_rule_it_breaks(mutant: type[Mutant]) -> None:
    caught = violated_rules(f"{mutant.__module__}:{mutant.__name__}", stop_at=mutant.breaks)
    assert mutant.breaks in caught.rules, (
        f"{mutant.name} broke {mutant.breaks}; the suite reported {sorted(caught.rules) or 'nothing'}")


@pytest.mark.parametrize("mutant", STATE_MUTANTS, ids=lambda m: m.name)
def test_state_mutant_is_caught_by_the_exploration_alone(mutant: type[Mutant]) -> None:
    """A bug in what the implementation does shows under whichever rule first meets its effects
    (its `breaks` is the likeliest); the point is that the exploration meets them, without the
    scenario rules. The reference violates nothing, so any violation is this mutant's."""
    caught = violated_rules(f"{mutant.__module__}:{mutant.__name__}", stop_at="*", scenarios=False)
    assert caught.rules, f"{mutant.name} ({mutant.__doc__}) went unnoticed by the exploration alone"


def test_the_reference_itself_violates_nothing() -> None:
    assert violated_rules("sim").rules == set()
