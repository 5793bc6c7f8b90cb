"""Adapters: one module per backend, found by name through the `ashcheck.adapters` entry points
or given as `package.module:Class`."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from ashcheck.adapters.base import Adapter, AdapterUnavailable, Capability, UnsupportedOperation

__all__ = ["Adapter", "AdapterUnavailable", "Capability", "UnsupportedOperation", "adapter_names", "load_adapter"]

GROUP = "ashcheck.adapters"


def adapter_names() -> list[str]:
    """Names registered in the entry-point group, sorted."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load_adapter(spec: str) -> type[Adapter]:
    """Resolve `spec`: a registered name, or `package.module:Class`.

    Raises LookupError with the known names when nothing matches."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise LookupError(f"cannot load adapter {spec!r}: {exc}") from exc
    else:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == spec]
        if not found:
            raise LookupError(f"no adapter named {spec!r}; known: {', '.join(adapter_names())} "
                              "(or give package.module:Class)")
        cls = found[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise LookupError(f"{spec!r} is not an ashcheck.adapters.Adapter subclass")
    return cls
