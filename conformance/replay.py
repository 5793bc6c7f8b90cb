"""Replaying a recorded program against an adapter: what shrinking and reproducer scripts run.

A program is a list of operations as recorded (fd numbers as the implementation returned them,
map ids as the model chose them). Replaying goes through a fresh Harness, so every step is judged
again; an operation that names something the model does not have at that point (a process never
spawned, a mapping never made, because the step that made it was dropped) is skipped, as the
state machine would never have asked it.

A reproducer script is standalone: it needs only ashcheck installed. It prints each step as a
syscall line with what came back, and exits 1 if the failure reproduced, 0 if it did not, 2 if it
could not run (the adapter cannot be loaded or started), with a one-line reason.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from ashcheck.adapters import load_adapter
from ashcheck.adapters.base import Adapter, AdapterUnavailable
from ashcheck.conformance.harness import Harness
from ashcheck.conformance.results import Recorder
from ashcheck.spec import ops as o

MAP_OPS = (o.Munmap, o.Mprotect, o.Load, o.Store, o.MapsName)


def addressable(h: Harness, op: o.Op) -> o.Op | None:
    """`op` as it can be asked in the harness's current state, or None if it names what is not there."""
    model = h.model
    if isinstance(op, o.Spawn):
        return op if op.proc not in model.procs else None
    others = [op.dst] if isinstance(op, o.BinderSend) else [op.replier] if isinstance(op, o.BinderReply) else []
    if not all(h.usable(p) for p in [op.proc, *others]):
        return None
    maps = model.procs[op.proc].maps
    if isinstance(op, MAP_OPS) and op.map_id not in maps:
        return None
    if isinstance(op, o.Mmap):
        if op.map_id in maps:
            return None
        if op.near is not None and op.near not in maps:
            return dataclasses.replace(op, near=None, above=False)
    return op


def replay(adapter: Adapter, program: list[o.Op], until: Callable[[Harness], bool] | None = None,
           echo: Callable[[str], None] | None = None) -> tuple[Harness, int | None]:
    """Run `program`; stop after the first step at which `until(harness)` holds. Returns the harness
    (its recorder holds the evidence) and the index of that step in `program`, or None."""
    h = Harness(adapter, Recorder())
    for index, op in enumerate(program):
        asked = addressable(h, op)
        if asked is None:
            continue
        out = h.step(asked)
        if echo is not None:
            echo(f"{asked}  →  {'(not performed: set aside)' if out is None else out}")
        if until is not None and until(h):
            return h, index
    return h, None


SCRIPT = '''#!/usr/bin/env python3
"""Reproducer for rule {rule} on adapter {adapter!r} (profile {profile}){what}.

{summary}
{about}
Run it with ashcheck installed:  python {filename} [--adapter NAME_OR_MODULE:CLASS]{more}
Exit status: 1 the failure reproduced{once}, 0 it did not, 2 the adapter could not run.
"""
import sys

from ashcheck.conformance.{module} import main

RULE = {rule!r}
ADAPTER = {adapter!r}
OPTIONS = {options!r}
STEPS = {steps}

if __name__ == "__main__":
    sys.exit(main(RULE, ADAPTER, OPTIONS, STEPS, sys.argv[1:]))
'''
# What a reproducer of a concurrent history says and runs differently.
CONCURRENT = {
    "what": ": a concurrent history", "more": " [--times N]", "once": " at least once", "module": "concurrent",
    "about": "\nThe prefix runs one call at a time, then the branches run at the same time (on the simulator,\n"
             "under the recorded schedule), then the look after; the whole is checked for a linearization.\n"
             "A race may not show on every run: the history is run --times N times (default 20) and the script\n"
             "says how often it failed.\n"}
SEQUENTIAL = {"what": "", "more": "", "once": "", "module": "replay", "about": ""}


def script(rule: str, summary: str, adapter: str, profile: str, options: dict[str, str],
           steps: list[dict[str, Any]], filename: str) -> str:
    concurrent = any("branch" in s for s in steps)
    kept = [{k: v for k, v in s.items() if k in ("op", "branch", "schedule")} for s in steps
            if s.get("branch") != "after"] if concurrent else [s["op"] for s in steps]
    body = "[\n" + "".join(f"    {x!r},\n" for x in kept) + "]"  # Python literals: JSON true is not Python
    return SCRIPT.format(rule=rule, summary=summary, adapter=adapter, profile=profile, options=options, steps=body,
                         filename=filename, **(CONCURRENT if concurrent else SEQUENTIAL))


def started(adapter: str, options: dict[str, str]) -> Adapter | None:
    """The adapter of a reproducer script, started; None (the reason printed) if it cannot run."""
    try:
        instance = load_adapter(adapter)(**options)
        reason = instance.why_unavailable()
        if reason is not None:
            raise AdapterUnavailable(reason)
        instance.start()
    except (LookupError, ValueError, TypeError, AdapterUnavailable) as exc:
        print(f"cannot run: adapter {adapter!r}: {exc}", file=sys.stderr)
        return None
    return instance


def main(rule: str, adapter: str, options: dict[str, str], steps: list[dict[str, Any]], argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--adapter":
        adapter, options = argv[1], {}
    elif argv:
        print("usage: python REPRODUCER.py [--adapter NAME_OR_MODULE:CLASS]", file=sys.stderr)
        return 2
    instance = started(adapter, options)
    if instance is None:
        return 2
    try:
        program = [o.Op.from_json(data) for data in steps]
        h, at = replay(instance, program, until=lambda h: rule in h.violated, echo=print)
        if at is None:
            print(f"every step was allowed for {rule}: the failure did not reproduce")
            return 0
        print(h.recorder.get(rule).message)
        return 1
    finally:
        instance.close()
