"""The adapter of this test process: configured by the pytest plugin, started on first use,
closed at the end of the session (and at interpreter exit, whatever happens)."""

from __future__ import annotations

import atexit
from dataclasses import dataclass, field

from ashcheck.adapters import load_adapter
from ashcheck.adapters.base import Adapter, Capability


@dataclass
class Selection:
    spec: str = "sim"
    options: dict[str, str] = field(default_factory=dict)


SELECTION = Selection()
_started: Adapter | None = None


def configure(spec: str, options: dict[str, str]) -> None:
    SELECTION.spec, SELECTION.options = spec, dict(options)


def adapter() -> Adapter:
    """The running adapter (started now if it is not yet). AdapterUnavailable propagates."""
    global _started
    if _started is None:
        instance = load_adapter(SELECTION.spec)(**SELECTION.options)
        instance.start()
        _started = instance
    return _started


def started() -> Adapter | None:
    return _started


def has(capability: Capability) -> bool:
    return capability in adapter().capabilities


def shutdown() -> None:
    global _started
    if _started is not None:
        started, _started = _started, None
        started.close()


atexit.register(shutdown)
