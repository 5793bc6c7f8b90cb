"""Conformance: the ashmem state machine against the selected adapter."""

from __future__ import annotations

from ashcheck.adapters.base import Adapter
from ashcheck.conformance.machines import AshmemMachine, run


def test_ashmem(adapter: Adapter) -> None:
    run(AshmemMachine)
