"""Replaying a recorded program against an adapter: what a reproducer script runs.

A reproducer is standalone: it needs only ashcheck installed. It starts the adapter, performs the
recorded operations one by one through the spec, prints each as a syscall line with what came
back, and stops at the first outcome the spec does not allow.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from hypothesis.errors import UnsatisfiedAssumption

from ashcheck.adapters import load_adapter
from ashcheck.conformance.harness import Harness, RuleViolation
from ashcheck.conformance.results import Recorder
from ashcheck.spec.ops import Op

SCRIPT = '''#!/usr/bin/env python3
"""Reproducer for rule {rule} on adapter {adapter!r} (profile {profile}).

{summary}

Run it with ashcheck installed:  python {filename} [--adapter NAME_OR_MODULE:CLASS]
It prints each step and exits 1 while the implementation still breaks the rule.
"""
import sys

from ashcheck.conformance.replay import main

ADAPTER = {adapter!r}
OPTIONS = {options!r}
STEPS = {steps}

if __name__ == "__main__":
    sys.exit(main(ADAPTER, OPTIONS, STEPS, sys.argv[1:]))
'''


def script(rule: str, summary: str, adapter: str, profile: str, options: dict[str, str],
           steps: list[dict[str, Any]], filename: str) -> str:
    ops = [s["op"] for s in steps]
    body = "[\n" + "".join(f"    {op!r},\n" for op in ops) + "]"  # Python literals: JSON true is not Python
    return SCRIPT.format(rule=rule, summary=summary, adapter=adapter, profile=profile,
                         options=options, steps=body, filename=filename)


def main(adapter: str, options: dict[str, str], steps: list[dict[str, Any]], argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--adapter":
        adapter = argv[1]
    instance = load_adapter(adapter)(**options)
    instance.start()
    try:
        h = Harness(instance, Recorder())
        for data in steps:
            op = Op.from_json(data)
            try:
                outcome = h.step(op)
            except RuleViolation as exc:
                print(exc)
                return 1
            except UnsatisfiedAssumption:
                print(f"{op}  →  {h.trace[-1][1]}  (cannot be judged: declared deviation or lost transport)")
                return 2
            print(f"{op}  →  {outcome}")
        print("every step was allowed: the failure did not reproduce")
        return 0
    finally:
        instance.close()


if __name__ == "__main__":  # pragma: no cover - convenience
    sys.exit(main(sys.argv[1], {}, json.loads(sys.stdin.read()), []))
