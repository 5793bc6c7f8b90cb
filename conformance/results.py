"""Per-rule evidence gathered during a run, and the status each rule ends with.

A step confirms the rule that allowed its outcome. A step whose outcome no rule allows is a
failure of the rule that was expected (or, when that rule is a declared deviation of the adapter,
an expected failure). A lost transport makes the step unknown. At the end each rule of the
profile gets one status:

  fail    a violation was seen, or a deviation was declared but never seen (stale declaration)
  xfail   a declared deviation was seen
  skip    the rule needs a capability the adapter lacks (the reason names it)
  pass    confirmed at least once, never violated
  unknown never exercised, or only indeterminate outcomes
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ashcheck.spec.rules import RULES, rule_ids

STATUSES = ("pass", "fail", "xfail", "skip", "unknown")


@dataclass
class Evidence:
    confirmed: int = 0
    violated: int = 0
    deviated: int = 0
    indeterminate: int = 0
    message: str = ""
    reproducer: list[dict[str, Any]] = field(default_factory=list)

    def merge(self, other: Evidence) -> None:
        self.confirmed += other.confirmed
        self.violated += other.violated
        self.deviated += other.deviated
        self.indeterminate += other.indeterminate
        if other.reproducer and (not self.reproducer or len(other.reproducer) < len(self.reproducer)):
            self.reproducer, self.message = other.reproducer, other.message


class Recorder:
    """Evidence per rule id for one pytest process (one xdist worker)."""

    def __init__(self) -> None:
        self.rules: dict[str, Evidence] = {}

    def get(self, rule: str) -> Evidence:
        return self.rules.setdefault(rule, Evidence())

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({r: asdict(e) for r, e in self.rules.items()}))
        tmp.replace(path)

    @staticmethod
    def load_all(directory: Path) -> dict[str, Evidence]:
        merged: dict[str, Evidence] = {}
        for part in sorted(directory.glob("*.json")):
            for rule, data in json.loads(part.read_text()).items():
                merged.setdefault(rule, Evidence()).merge(Evidence(**data))
        return merged


RECORDER = Recorder()


def statuses(evidence: Mapping[str, Evidence], profile: str, capabilities: set[str],
             deviations: Mapping[str, str]) -> list[dict[str, Any]]:
    """One result per rule of the profile, as the report's `results` list."""
    out = []
    for rule_id in rule_ids(profile):
        rule = RULES[rule_id]
        ev = evidence.get(rule_id, Evidence())
        result: dict[str, Any] = {"rule": rule_id, "summary": rule.summary, "source": rule.source,
                                  "confirmed": ev.confirmed}
        missing = [n for n in rule.needs if n not in capabilities]
        if ev.violated:
            result.update(status="fail", reason=ev.message, steps=ev.reproducer)
        elif rule_id in deviations:
            if ev.deviated:
                result.update(status="xfail", reason=deviations[rule_id])
            elif missing:
                result.update(status="skip", reason=f"needs capability {', '.join(missing)}")
            else:
                result.update(status="fail", reason="declared deviation was not observed (stale "
                              f"declaration: {deviations[rule_id]}); remove it if the backend now conforms")
        elif missing:
            result.update(status="skip", reason=f"needs capability {', '.join(missing)}")
        elif ev.confirmed:
            result.update(status="pass")
        else:
            why = "only indeterminate outcomes" if ev.indeterminate else "never exercised"
            result.update(status="unknown", reason=why)
        out.append(result)
    return out
