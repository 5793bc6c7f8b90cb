"""The suite proves it can fail: every mutant (one broken behaviour each) is caught under the
`ci` settings, and reported as a failure of the rule it breaks."""

from __future__ import annotations

import pytest

from ashcheck.conformance.selftest.catching import violated_rules
from ashcheck.conformance.selftest.mutants import MUTANTS, Mutant


def test_there_are_enough_mutants_in_enough_areas() -> None:
    assert len(MUTANTS) >= 12
    assert len({m.breaks.split(".")[0] + "." + m.breaks.split(".")[1] for m in MUTANTS}) >= 8


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_mutant_is_caught(mutant: type[Mutant]) -> None:
    violated = violated_rules(f"{mutant.__module__}:{mutant.__name__}", stop_at=mutant.breaks)
    assert mutant.breaks in violated, f"{mutant.name} broke {mutant.breaks}; the suite reported {violated or 'nothing'}"


def test_the_reference_itself_violates_nothing() -> None:
    assert violated_rules("sim") == set()
