"""Conformance: the memory state machine (mappings, pins, purges) against the selected adapter."""

from __future__ import annotations

from ashcheck.adapters.base import Adapter
from ashcheck.conformance.machines import MemoryMachine, run


def test_memory(adapter: Adapter) -> None:
    run(MemoryMachine)
