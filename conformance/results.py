"""Per-rule evidence gathered during a run, and the status each rule ends with.

A performed step confirms the rule that allowed its outcome (or, when the adapter computed the
answer itself, counts as emulated). A step whose outcome no rule allows is a violation of the rule
whose branch came closest; when that rule is a declared deviation of the adapter it is counted as
deviated instead. A lost transport counts as lost for every rule that was in play. At the end each
rule of the profile gets one status:

  fail     a violation was seen; or a declared deviation was exercised and always held (stale)
  xfail    a declared deviation was seen (a known deviation)
  skip     the rule needs a capability, or operations, the adapter does not have (with the reason)
  pass     observed at least once, never violated (`emulated_only` when every confirmation was an
           answer the adapter computed rather than observed)
  unknown  not exercised: never reached, only lost outcomes, or a declared deviation never met

Evidence is kept per test process (one per pytest-xdist worker) and merged from files; a worker
writes its file every few seconds as well as at the end, so a long run's progress can be read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ashcheck.spec.rules import RULES, rule_ids

STATUSES = ("pass", "fail", "xfail", "skip", "unknown")


@dataclass
class Evidence:
    confirmed: int = 0   # observed outcomes this rule allowed
    emulated: int = 0    # allowed outcomes the adapter computed instead of observing them
    violated: int = 0
    deviated: int = 0    # violations of a declared deviation
    lost: int = 0        # steps whose transport was lost while this rule was in play
    message: str = ""    # the explanation of the shortest violation found
    step: str = ""       # the violating operation, as an strace line
    observed: str = ""   # what came back
    allowed: list[str] = field(default_factory=list)  # what the spec allowed there
    reproducer: list[dict[str, Any]] = field(default_factory=list)  # [{"op":…, "outcome":…}], shortest
    shrunk: bool = False  # the reproducer was minimized by replaying it
    # allowed variants seen (spec.branch.Branch.variant), one call at a time only: in a concurrent
    # history the search picks one order of many, so the branch that allowed a call says little
    variants: dict[str, int] = field(default_factory=dict)

    def saw(self, variant: str, times: int = 1) -> None:
        if variant:
            self.variants[variant] = self.variants.get(variant, 0) + times

    def merge(self, other: Evidence) -> None:
        for name in ("confirmed", "emulated", "violated", "deviated", "lost"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for variant, n in other.variants.items():
            self.saw(variant, n)
        if other.reproducer and (not self.reproducer or _better(other, self)):
            for name in ("message", "step", "observed", "allowed", "reproducer", "shrunk"):
                setattr(self, name, getattr(other, name))


def _better(a: Evidence, b: Evidence) -> bool:
    """Shrunk beats not shrunk, then shorter beats longer."""
    return (not a.shrunk, len(a.reproducer)) < (not b.shrunk, len(b.reproducer))


@dataclass
class FlowResult:
    """How one named flow (flows.py) went: fail, lost (the transport was lost on some step), known
    deviation (a declared deviation met, and what it set aside not performed), incomplete (some step
    could not be performed), pass, or skip (capabilities missing)."""

    status: str = "skip"
    reason: str = ""
    rules: dict[str, int] = field(default_factory=dict)  # rule → steps of the flow it allowed
    violated: list[str] = field(default_factory=list)   # rules its steps violated
    steps: list[dict[str, Any]] = field(default_factory=list)  # [{"op":…, "outcome":…}] as performed


FLOW_ORDER = ("fail", "lost", "known deviation", "incomplete", "pass", "skip")  # the worse first


@dataclass
class Totals:
    """Counts over the whole run of one process."""

    examples: int = 0  # test cases (and exhaustive pairs) run
    steps: int = 0     # operations performed
    lost: int = 0      # operations whose outcome was indeterminate
    lossy: int = 0     # test cases with at least one of them
    restarts: int = 0  # times the adapter was restarted because its transport was gone (Adapter.restarts)
    set_aside: int = 0  # operations not performed because what they touch was set aside

    def merge(self, other: Totals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def lost_share(totals: Mapping[str, int]) -> float:
    """How much of a run was lost: the larger of the share of operations lost and the share of
    test cases that lost any (a backend gone for good loses few calls but every test case)."""
    steps, examples = totals.get("steps", 0), totals.get("examples", 0)
    return max(totals.get("lost", 0) / steps if steps else 0.0,
               totals.get("lossy", 0) / examples if examples else 0.0)


class Recorder:
    """Evidence per rule id for one pytest process (one xdist worker)."""

    def __init__(self) -> None:
        self.rules: dict[str, Evidence] = {}
        self.flows: dict[str, FlowResult] = {}
        self.totals = Totals()
        self.unsupported: dict[str, str] = {}  # operation → why, for those the adapter refused at run time
        self.lost_reasons: dict[str, int] = {}  # why outcomes were lost (the transport's message) → how often
        self.path: Path | None = None  # where to write, set by the plugin
        self._written = 0.0

    def get(self, rule: str) -> Evidence:
        return self.rules.setdefault(rule, Evidence())

    def clear(self) -> None:
        self.rules.clear()
        self.flows.clear()
        self.totals = Totals()
        self.unsupported.clear()
        self.lost_reasons.clear()

    def dump(self, path: Path | None = None) -> None:
        path = path or self.path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"rules": {r: asdict(e) for r, e in self.rules.items()},
                                   "flows": {f: asdict(r) for f, r in self.flows.items()},
                                   "totals": asdict(self.totals), "unsupported": self.unsupported,
                                   "lost_reasons": self.lost_reasons}))
        tmp.replace(path)
        self._written = time.monotonic()

    def maybe_dump(self, every: float = 2.0) -> None:
        """Write the file if the last write is older than `every` seconds (progress for long runs)."""
        if self.path is not None and time.monotonic() - self._written >= every:
            self.dump()

    @staticmethod
    def load_all(directory: Path) -> tuple[dict[str, Evidence], Totals]:
        merged: dict[str, Evidence] = {}
        totals = Totals()
        for part in sorted(directory.glob("*.json")):
            data = json.loads(part.read_text())
            for rule, ev in data["rules"].items():
                merged.setdefault(rule, Evidence()).merge(Evidence(**ev))
            totals.merge(Totals(**data["totals"]))
        return merged, totals

    @staticmethod
    def load_lost_reasons(directory: Path, most: int = 5) -> dict[str, int]:
        """The `most` commonest reasons outcomes were lost, over every process, commonest first."""
        found: dict[str, int] = {}
        for part in sorted(directory.glob("*.json")):
            for why, n in json.loads(part.read_text()).get("lost_reasons", {}).items():
                found[why] = found.get(why, 0) + n
        return dict(sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:most])

    @staticmethod
    def load_unsupported(directory: Path) -> dict[str, str]:
        """The operations an adapter refused at run time (UnsupportedOperation), in every process."""
        found: dict[str, str] = {}
        for part in sorted(directory.glob("*.json")):
            found.update(json.loads(part.read_text()).get("unsupported", {}))
        return found

    @staticmethod
    def load_flows(directory: Path) -> dict[str, FlowResult]:
        """The flows of every test process (a flow that ran twice: its worse result)."""
        merged: dict[str, FlowResult] = {}
        for part in sorted(directory.glob("*.json")):
            for name, data in json.loads(part.read_text()).get("flows", {}).items():
                result = FlowResult(**data)
                if name not in merged or FLOW_ORDER.index(result.status) < FLOW_ORDER.index(merged[name].status):
                    merged[name] = result
        return merged


RECORDER = Recorder()


def statuses(evidence: Mapping[str, Evidence], profile: str, capabilities: set[str],
             deviations: Mapping[str, str], unreachable: Mapping[str, str] | None = None,
             ) -> list[dict[str, Any]]:
    """One result per rule of the profile, as the report's `results` list.

    `unreachable`: rule id → why no operation that could reach it was performed (operations the
    adapter declared unsupported)."""
    unreachable = unreachable or {}
    out = []
    for rule_id in rule_ids(profile):
        rule = RULES[rule_id]
        ev = evidence.get(rule_id, Evidence())
        result: dict[str, Any] = {"rule": rule_id, "summary": rule.summary, "source": rule.source,
                                  "confirmed": ev.confirmed, "emulated": ev.emulated, "lost": ev.lost}
        if ev.variants:
            result["variants"] = dict(sorted(ev.variants.items()))
        missing = [n for n in rule.needs if n not in capabilities]
        exercised = ev.confirmed + ev.emulated
        if ev.violated:
            result.update(status="fail", reason=ev.message, step=ev.step, observed=ev.observed,
                          allowed=ev.allowed, steps=ev.reproducer, shrunk=ev.shrunk)
        elif rule_id in deviations:
            if ev.deviated:
                result.update(status="xfail", reason=deviations[rule_id], deviated=ev.deviated)
            elif exercised:
                result.update(status="fail", reason=f"stale deviation: exercised {exercised} times and it held "
                              f"every time (declared: {deviations[rule_id]}); remove the declaration")
            else:
                result.update(status="unknown", reason=f"declared deviation, not exercised ({deviations[rule_id]})")
        elif missing:
            result.update(status="skip", reason=f"needs capability {', '.join(missing)}")
        elif rule_id in unreachable and not exercised:
            result.update(status="skip", reason=unreachable[rule_id])
        elif exercised:
            result.update(status="pass", emulated_only=ev.confirmed == 0)
        else:
            why = f"only lost outcomes ({ev.lost})" if ev.lost else "not exercised"
            result.update(status="unknown", reason=why)
        out.append(result)
    return out
