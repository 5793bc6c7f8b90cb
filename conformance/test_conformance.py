"""Conformance of the selected adapter: the exhaustive tables, the callers' flows and the
exploration shards.

Every test runs to the end whatever it finds; a failure lists each newly violated rule with its
shrunk program. The complete picture (every rule's status) is the run's report: `ashcheck run`.
"""

from __future__ import annotations

import pytest

from ashcheck.adapters.base import Adapter
from ashcheck.conformance.explore import explore, flow, summary, tables
from ashcheck.conformance.settings import Profile


def test_tables(adapter: Adapter, ashcheck_profile: Profile) -> None:
    violated = tables(adapter, ashcheck_profile)
    if violated:
        pytest.fail(summary(violated), pytrace=False)


def test_flow(adapter: Adapter, ashcheck_profile: Profile, flow_name: str) -> None:
    """`flow_name` runs over the callers' flows (flows.py; the plugin parametrizes it)."""
    result, _ = flow(adapter, ashcheck_profile, flow_name)
    if result.status == "skip":
        pytest.skip(result.reason)
    if result.violated:
        pytest.fail(f"flow {flow_name}: " + summary(result.violated), pytrace=False)


def test_explore(adapter: Adapter, ashcheck_profile: Profile, shard: int) -> None:
    """`shard` runs over the profile's shards (the plugin parametrizes it)."""
    violated = explore(adapter, ashcheck_profile, shard)
    if violated:
        pytest.fail(summary(violated), pytrace=False)
