"""Conformance of the selected adapter: the exhaustive tables, the callers' flows, the
exploration shards and the concurrent histories.

Every test runs to the end whatever it finds; a failure lists each newly violated rule with its
shrunk program. The complete picture (every rule's status) is the run's report: `ashcheck run`.
"""

from __future__ import annotations

import pytest

from ashcheck.adapters.base import Adapter
from ashcheck.conformance.concurrent import able, concurrent
from ashcheck.conformance.explore import explore, flow, summary, tables
from ashcheck.conformance.settings import Profile


def _sequential(profile: Profile) -> None:
    if not profile.sequential:
        pytest.skip(f"the {profile.name} profile runs concurrent histories only")


def test_tables(adapter: Adapter, ashcheck_profile: Profile) -> None:
    _sequential(ashcheck_profile)
    violated = tables(adapter, ashcheck_profile)
    if violated:
        pytest.fail(summary(violated), pytrace=False)


def test_flow(adapter: Adapter, ashcheck_profile: Profile, flow_name: str) -> None:
    """`flow_name` runs over the callers' flows (flows.py; the plugin parametrizes it)."""
    _sequential(ashcheck_profile)
    result, _ = flow(adapter, ashcheck_profile, flow_name)
    if result.status == "skip":
        pytest.skip(result.reason)
    if result.violated:
        pytest.fail(f"flow {flow_name}: " + summary(result.violated), pytrace=False)


def test_explore(adapter: Adapter, ashcheck_profile: Profile, shard: int) -> None:
    """`shard` runs over the profile's shards (the plugin parametrizes it)."""
    _sequential(ashcheck_profile)
    violated = explore(adapter, ashcheck_profile, shard)
    if violated:
        pytest.fail(summary(violated), pytrace=False)


def test_concurrent(adapter: Adapter, ashcheck_profile: Profile, shard: int) -> None:
    """Concurrent histories (concurrent.py), checked for a linearization the spec allows."""
    reason = able(adapter)
    if reason is not None:
        pytest.skip(f"concurrent histories: {reason}")
    violated = concurrent(adapter, ashcheck_profile, shard)
    if violated:
        pytest.fail(summary(violated), pytrace=False)
