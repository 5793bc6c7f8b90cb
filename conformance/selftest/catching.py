"""Running the whole suite in-process against one adapter and collecting the violated rules:
what the mutant tests, the survey tests, the mutation run and the bench need, without a nested
pytest.

The run stops as soon as the rule asked for (`stop_at`) is reported, not at the end of the part
(the tables, or one exploration shard) in which it was: the adapter is wrapped so that the
operation after the one that violated it does not happen (_Found is raised instead, through the
harness and Hypothesis, and caught here). So `seconds` is the CPU time to the first report of the
rule, which is what a time-to-kill figure measures, and a mutant caught early costs little.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from ashcheck.adapters import load_adapter
from ashcheck.adapters.base import Adapter
from ashcheck.conformance.explore import explore, flow, tables
from ashcheck.conformance.flows import FLOWS
from ashcheck.conformance.results import RECORDER
from ashcheck.conformance.settings import PROFILES
from ashcheck.spec.ops import Op
from ashcheck.spec.outcome import Outcome


@dataclass
class Caught:
    rules: set[str]         # every rule reported violated (up to the stop), `ignore` left out
    seconds: float | None   # CPU seconds until `stop_at` was first reported (None: it never was)


class _Found(BaseException):  # not an error: the run has what it was asked to find
    """Raised from the adapter's next operation once `stop_at` has been reported. A BaseException,
    so that Hypothesis neither records it as a failing test case nor replays it: it ends the run."""


def violated_rules(adapter_spec: str, stop_at: str | None = None, *, scenarios: bool = True,
                   profile: str = "ci", ignore: Collection[str] = ()) -> Caught:
    """Every rule the suite reports as violated by the adapter under `profile` (without shrinking),
    stopping as soon as `stop_at` is reported ("*": any rule; None: run to the end). `scenarios`
    False leaves the exploration alone to find it. Rules in `ignore` (those the unmutated
    reference is known to violate, for the mutation run) neither count nor stop the run.

    Raises whatever the adapter or the suite raises (an exception out of `perform` is an adapter
    bug, or for a mutated simulator the mutant showing itself); LookupError for an unknown adapter."""
    start = time.process_time()
    found_at: list[float] = []

    def found() -> bool:
        if stop_at == "*":
            hit = bool(_violated(ignore))
        else:
            hit = stop_at is not None and stop_at not in ignore and RECORDER.get(stop_at).violated > 0
        if hit and not found_at:
            found_at.append(time.process_time() - start)
        return hit

    adapter = _stopping(load_adapter(adapter_spec), found)()
    adapter.start()
    RECORDER.clear()
    try:
        for part in _parts(adapter, profile, scenarios):
            part()
            if found():
                break
    except BaseException as e:
        if not _found_in(e):
            raise
    finally:
        adapter.close()
        rules = _violated(ignore)
        RECORDER.clear()
    return Caught(rules, found_at[0] if found_at else None)


def _found_in(e: BaseException | None) -> bool:
    """Whether `e` is _Found, or Hypothesis's reaction to it (it may raise its own error while it
    closes the interrupted test case, with _Found as the context)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, _Found):
            return True
        seen.add(id(e))
        if isinstance(e, BaseExceptionGroup) and any(_found_in(x) for x in e.exceptions):
            return True
        e = e.__cause__ or e.__context__
    return False


def _stopping(cls: type[Adapter], found: Callable[[], bool]) -> type[Adapter]:
    """`cls` with a perform that first checks whether the run already has what it looks for."""
    def perform(self: Adapter, op: Op) -> Outcome:
        if found():
            raise _Found
        return cls.perform(self, op)

    stopping: type[Adapter] = type(cls.__name__, (cls,), {"perform": perform, "__module__": cls.__module__})
    return stopping


def _parts(adapter: Adapter, profile: str, scenarios: bool) -> list[Callable[[], object]]:
    p = PROFILES[profile]

    def shard(k: int) -> Callable[[], object]:
        return lambda: explore(adapter, p, k, scenarios=scenarios, shrink=False)

    def named(name: str) -> Callable[[], object]:
        return lambda: flow(adapter, p, name, shrink=False)

    flows = list(map(named, FLOWS)) if scenarios else []  # explicit examples, like the scenarios
    return [lambda: tables(adapter, p, shrink=False), *flows, *map(shard, range(p.shards))]


def _violated(ignore: Collection[str] = ()) -> set[str]:
    return {rule for rule, ev in RECORDER.rules.items() if ev.violated and rule not in ignore}
