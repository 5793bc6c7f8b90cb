"""Running the whole suite in-process against one adapter and collecting the violated rules:
what the mutant tests, the survey tests and the bench need, without a nested pytest."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ashcheck.adapters import load_adapter
from ashcheck.adapters.base import Adapter
from ashcheck.conformance.explore import explore, tables
from ashcheck.conformance.results import RECORDER
from ashcheck.conformance.settings import PROFILES


@dataclass
class Caught:
    rules: set[str]         # every rule reported violated
    seconds: float | None   # CPU seconds until `stop_at` was first reported (None: it never was)


def violated_rules(adapter_spec: str, stop_at: str | None = None, *, scenarios: bool = True,
                   profile: str = "ci") -> Caught:
    """Every rule the suite reports as violated by the adapter under `profile` (without shrinking),
    stopping early once `stop_at` is ("*": once any rule is). `scenarios` False leaves the
    exploration alone to find it."""
    adapter = load_adapter(adapter_spec)()
    adapter.start()
    RECORDER.clear()
    start = time.process_time()
    try:
        for part in _parts(adapter, profile, scenarios):
            part()
            if _found(stop_at):
                return Caught(_violated(), time.process_time() - start)
        return Caught(_violated(), time.process_time() - start if _found(stop_at) else None)
    finally:
        adapter.close()
        RECORDER.clear()


def _parts(adapter: Adapter, profile: str, scenarios: bool) -> list[Callable[[], object]]:
    p = PROFILES[profile]

    def shard(k: int) -> Callable[[], object]:
        return lambda: explore(adapter, p, k, scenarios=scenarios, shrink=False)

    return [lambda: tables(adapter, p, shrink=False), *map(shard, range(p.shards))]


def _found(stop_at: str | None) -> bool:
    """`stop_at` was reported ("*": any rule was)."""
    if stop_at == "*":
        return bool(_violated())
    return stop_at is not None and RECORDER.get(stop_at).violated > 0


def _violated() -> set[str]:
    return {rule for rule, ev in RECORDER.rules.items() if ev.violated}
