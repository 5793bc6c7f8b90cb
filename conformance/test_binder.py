"""Conformance: the binder fd-transfer state machine against the selected adapter."""

from __future__ import annotations

import pytest

from ashcheck.adapters.base import Adapter, Capability
from ashcheck.conformance.machines import BinderMachine, run


def test_binder(adapter: Adapter) -> None:
    missing = {Capability.FD_TRANSFER, Capability.MULTI_PROCESS} - adapter.capabilities
    if missing:
        pytest.skip(f"adapter {adapter.name} lacks capability {', '.join(sorted(c.value for c in missing))}")
    run(BinderMachine)
