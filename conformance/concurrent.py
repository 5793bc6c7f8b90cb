"""Concurrent histories: several processes call at the same time, and the history is checked for
a linearization the spec allows (parallel state-machine testing, as in QuickCheck and PropEr;
the check is spec/linearize.py).

One history:
1. a sequential prefix: the exploration's own start and a few of its steps (machines.py), judged
   step by step as always; then the region in focus is sent to the other processes and mapped
   there, so that the branches share memory, fds and pin state;
2. branches: one per process (two or three), a few calls each (branches.py), run at the same time
   by the adapter (`perform_concurrently`: real processes on real kernels; the simulator under a
   deterministic scheduler whose schedule Hypothesis draws);
3. the look after: every process's fd table, and for every fd and mapping it may have, the size,
   pin state, end of file and the bytes of every mapped page, called one at a time after the
   branches ended (so a race that left a wrong state shows even if no call of the race saw it);
4. the check: branches and look together must have one order the spec accepts.

A history with no such order violates `concurrent.linearizable`; the report names the call that
no order could explain and the rule that refused it, with the history (each call with its times)
and a reproducer that replays it many times and says how often it failed. A failing history is
shrunk by dropping calls while it still fails (on a real kernel a race may need several tries).
"""

from __future__ import annotations

import itertools
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import given, seed, settings
from hypothesis import strategies as st

from ashcheck.adapters.base import Adapter, Capability, Timed
from ashcheck.conformance import branches as B
from ashcheck.conformance import strategies as S
from ashcheck.conformance.driver import WHOLE, Driver
from ashcheck.conformance.harness import Harness
from ashcheck.conformance.replay import MAP_OPS, replay, started
from ashcheck.conformance.results import RECORDER, Recorder
from ashcheck.conformance.settings import Profile
from ashcheck.spec import ops as o
from ashcheck.spec.constants import SEEK_END
from ashcheck.spec.linearize import LINEARIZABLE, Call, Result, linearize
from ashcheck.spec.outcome import Kind, Outcome

PREFIX_MOST = 6     # exploration steps before the branches
BRANCH_MOST = 8     # calls per branch
SCHEDULE_MOST = 64  # task switches the schedule decides (round robin after)
LOOK_PAGES = 4      # pages of each mapping the look after loads
SWARM_BASE = 0xc0c0  # the swarm of ci shard k's histories comes from seeds (SWARM_BASE + k) * 100003 + n


@dataclass
class History:
    prefix: list[o.Op]
    branches: list[list[o.Op]]
    schedule: list[int]


@dataclass
class Checked:
    result: Result
    calls: list[list[Call]]  # the branches' calls, then the look after as one more branch
    program: list[dict[str, Any]]  # the prefix as performed


def concurrent(adapter: Adapter, profile: Profile, shard: int = 0, *, shrink: bool = True) -> list[str]:
    """One shard of concurrent histories (`profile.histories` of them). Returns the rules newly violated."""
    from ashcheck.conformance.explore import SEED_BASE, _finish, _no_local_constants, _violated

    before = _violated(RECORDER)
    base = (SWARM_BASE + shard) * 100_003 if profile.seeded else random.getrandbits(32)
    count = itertools.count()

    @settings(profile.hypothesis(), max_examples=profile.histories)
    @given(st.data())
    def histories(data: st.DataObject) -> None:
        one(adapter, data, base + next(count))

    run = seed(SEED_BASE + shard)(histories) if profile.seeded else histories
    with _no_local_constants():
        run()
    if shrink and LINEARIZABLE in set(_violated(RECORDER)) - before:
        shrink_recorded(adapter, RECORDER, profile.shrink_replays)
    return _finish(adapter, profile, before, shrink)


def able(adapter: Adapter) -> str | None:
    """Why `adapter` cannot run concurrent histories, or None."""
    missing = [c.value for c in (Capability.CONCURRENT, Capability.MULTI_PROCESS) if c not in adapter.capabilities]
    if missing:
        return f"the adapter lacks {', '.join(missing)}"
    if type(adapter).perform_concurrently is Adapter.perform_concurrently:
        return "the adapter declares concurrent but does not implement perform_concurrently"
    return None


def one(adapter: Adapter, data: st.DataObject, swarm_seed: int) -> None:
    """Draw and run one history, and record what its check found."""
    from ashcheck.conformance.machines import Conformance

    m = Conformance(adapter, swarm_seed)
    m.start()
    m.observe()  # the prefix is looked at as the exploration looks, from its start on
    for _ in range(data.draw(st.integers(0, PREFIX_MOST), label="prefix steps")):
        m.step(data.draw(S.STEP))
        m.observe()
    d = m.d
    draws = iter(data.draw(st.lists(st.integers(0, 2**16 - 1), min_size=64, max_size=64)) * 8)
    procs = _share(d, draws)
    if len(procs) < 2:
        return
    rng = random.Random(swarm_seed)
    kinds = B.swarm(rng, adapter.concurrent_transfers and Capability.FD_TRANSFER in adapter.capabilities)
    branches = [B.draw_branch(d, B.view(d, p, [q for q in procs if q != p]), kinds,
                              1 + next(draws) % BRANCH_MOST, draws) for p in procs]
    schedule = data.draw(st.lists(st.integers(0, 15), max_size=SCHEDULE_MOST), label="schedule")
    record(adapter, RECORDER, d.h, History([], branches, schedule))


def _share(d: Driver, draws: S.Draws) -> list[int]:
    """Make the processes of the branches share a region: the one in focus (mapped, filled, mostly
    with a span unpinned), or half the time a new one, not mapped yet (so that the first
    mmap meets the calls that a mapping freezes). A second process (sometimes a third) is sent an
    fd of it over binder and may map it.
    The usable processes, at most 3."""
    if (len(d.live_procs()) < 2 or next(draws) % 4 == 0) and d.can_spawn():
        d.spawn(d.can(Capability.PRIVILEGED))
    focus = d.focus(0)
    live = d.live_procs()
    if live and (focus is None or next(draws) % 2):
        size = S.SMALL_SIZES(draws)
        made = d.new_fds(o.CreateRegion(live[next(draws) % len(live)], b"shared", size[0] * d.page + size[1]))
        focus = next(iter(made.values), focus)
    region = None if focus is None else d.h.model.region_of(focus.proc, focus.fd)
    mapped = focus is not None and region is not None and d.maps(focus.proc, region.rid)
    if focus is not None and mapped and next(draws) % 4:  # part of it given back, as a cache does
        d.step(o.Unpin(focus.proc, focus.fd, *d.span_of(focus, S.PIN_SPAN(draws))))
    if focus is not None and d.can(Capability.FD_TRANSFER):
        for p in d.live_procs():
            if p != focus.proc and next(draws) % 5:
                for got in d.transfer(focus.proc, p, (focus.fd,)).values:
                    if mapped and next(draws) % 4:
                        d.mmap(got, WHOLE, 3, True, 0)
    return d.live_procs()[:3]


def run(adapter: Adapter, h: Harness, history: History) -> Checked:
    """Run the branches from the harness's state, look after, and check the whole."""
    start = h.spec.copy()
    program = h.program()
    # what a surprise in the prefix set aside (a declared deviation met, say) the spec no longer
    # follows: not asked, as one call at a time
    branches = [[op for op in ops if not h.quarantine.blocks(h.model, op)] for ops in history.branches]
    timed = adapter.perform_concurrently(branches, history.schedule)
    calls = history_calls(branches, timed, look_after(adapter, h, branches, timed))
    return Checked(linearize(start, calls), calls, program)


def history_calls(branches: Sequence[Sequence[o.Op]], timed: Sequence[Sequence[Timed]],
                  after: Sequence[tuple[o.Op, Outcome]]) -> list[list[Call]]:
    """The branches' calls, then the look after as one more branch, each call after all of theirs."""
    calls = [[Call(op, t.outcome, t.invoked, t.completed) for op, t in zip(ops, got, strict=True)]
             for ops, got in zip(branches, timed, strict=True)]
    end = max((c.completed for b in calls for c in b), default=0)
    calls.append([Call(op, out, end + 1 + 2 * i, end + 2 + 2 * i) for i, (op, out) in enumerate(after)])
    return calls


def look_after(adapter: Adapter, h: Harness, branches: Sequence[Sequence[o.Op]],
               timed: Sequence[Sequence[Timed]]) -> list[tuple[o.Op, Outcome]]:
    """One call at a time, after the branches: each process's fd table; for each fd that may be a
    region's, its size, pin state and end of file; the bytes of every page of each mapping that
    may exist."""
    model = h.model
    procs = [ops[0].proc for ops in branches if ops]
    fds = {p: {fd for fd, e in model.procs[p].fds.items() if e.rid >= 0} for p in procs}
    maps = {p: {m: mp.length for m, mp in model.procs[p].maps.items()} for p in procs}  # map id → length
    for ops, got in zip(branches, timed, strict=True):
        for op, t in zip(ops, got, strict=True):
            value = t.outcome.value if t.outcome.kind is Kind.VALUE else None
            if isinstance(op, o.Dup | o.CreateRegion) and isinstance(value, int):
                fds[op.proc].add(value)
            elif isinstance(op, o.BinderSend) and isinstance(value, tuple) and op.dst in fds:
                fds[op.dst] |= {fd for fd in value if isinstance(fd, int)}
            elif isinstance(op, o.Mmap) and t.outcome.succeeded:
                maps[op.proc][op.map_id] = op.length
            elif isinstance(op, o.Munmap):
                maps[op.proc].pop(op.map_id, None)
    done: list[tuple[o.Op, Outcome]] = []

    def call(op: o.Op) -> Outcome | None:
        if h.quarantine.blocks(model, op) or type(op) in adapter.unsupported:
            return None
        out = h.perform(op)
        if out is None:
            return None
        done.append((op, out))
        return out

    for p in procs:
        listed = call(o.ListFds(p))
        table = set(listed.value) if listed and listed.kind is Kind.VALUE and isinstance(listed.value, tuple) \
            else fds[p]
        for fd in sorted(fds[p] & table):
            for op in (o.GetSize(p, fd), o.GetPinStatus(p, fd, 0, 0), o.Lseek(p, fd, 0, SEEK_END), o.GetFdFlags(p, fd)):
                call(op)
        for map_id, length in sorted(maps[p].items()):
            for page in range(min(LOOK_PAGES, -(-length // adapter.page_size))):
                looked = call(o.Load(p, map_id, page * adapter.page_size, adapter.page_size))
                if looked is None or looked.kind is not Kind.VALUE:
                    break
    return done


def record(adapter: Adapter, recorder: Recorder, h: Harness, history: History) -> Checked:
    checked = run(adapter, h, history)
    recorder.totals.steps += sum(map(len, checked.calls))
    result, evidence = checked.result, recorder.get(LINEARIZABLE)
    if result.undecided:
        if "lost" in result.undecided:
            evidence.lost += 1
            h.count_lost(next((str(c.outcome.value) for branch in checked.calls for c in branch
                               if c.outcome.kind is Kind.INDETERMINATE), "a call of the history was lost"))
        else:
            recorder.totals.set_aside += 1
        return checked
    if result.ok:
        evidence.confirmed += 1
        for (b, i), verdict in zip(result.order, result.verdicts, strict=True):
            got = recorder.get(verdict.rule)
            if checked.calls[b][i].outcome.emulated:
                got.emulated += 1
            else:
                got.confirmed += 1
        return checked
    if LINEARIZABLE in adapter.deviations:
        evidence.deviated += 1
        return checked
    if result.blame is not None and result.blame.rule in adapter.deviations:
        # what no order explains is a difference the adapter declares (seen one call at a time too)
        recorder.get(result.blame.rule).deviated += 1
        recorder.totals.set_aside += 1
        return checked
    if result.refused & adapter.deviations.keys():
        # a call the search could not place somewhere has a difference the adapter declares: no
        # order may exist because of it, so the history says nothing more (and credits no rule,
        # since which one the search met first depends on the timing)
        recorder.totals.set_aside += 1
        return checked
    evidence.violated += 1
    steps = reproducer(checked, history.schedule)
    if not evidence.reproducer or len(steps) < len(evidence.reproducer):
        evidence.message = explain(adapter, checked)
        call = checked.calls[result.blamed[0]][result.blamed[1]] if result.blamed else None
        evidence.step, evidence.observed = (str(call.op), str(call.outcome)) if call else ("", "")
        evidence.allowed = list(result.blame.expected) if result.blame else []
        evidence.reproducer, evidence.shrunk = steps, False
    recorder.maybe_dump()
    return checked


def reproducer(checked: Checked, schedule: list[int]) -> list[dict[str, Any]]:
    """The prefix as performed, then each call with its branch ("after" for the look) and times;
    the first branch call carries the schedule."""
    steps = list(checked.program)
    last = len(checked.calls) - 1
    for b, calls in enumerate(checked.calls):
        for c in calls:
            steps.append({"op": c.op.to_json(), "outcome": c.outcome.to_json(),
                          "branch": "after" if b == last else b, "at": [c.invoked, c.completed]})
    first = next((s for s in steps if isinstance(s.get("branch"), int)), None)
    if first is not None:
        first["schedule"] = list(schedule)
    return steps


def history_of(steps: list[dict[str, Any]]) -> History:
    """The history a reproducer's steps describe (the look after is made again on each run)."""
    prefix = [o.Op.from_json(s["op"]) for s in steps if "branch" not in s]
    branched = [s for s in steps if isinstance(s.get("branch"), int)]
    count = 1 + max((s["branch"] for s in branched), default=-1)
    branches: list[list[o.Op]] = [[] for _ in range(count)]
    for s in branched:
        branches[s["branch"]].append(o.Op.from_json(s["op"]))
    schedule = next((list(s["schedule"]) for s in branched if "schedule" in s), [])
    return History(prefix, branches, schedule)


def explain(adapter: Adapter, checked: Checked) -> str:
    result = checked.result
    total = sum(map(len, checked.calls))
    lines = [f"rule {LINEARIZABLE} violated by adapter {adapter.name!r}",
             "  no order of the concurrent calls is one the spec allows (each call judged as if alone);",
             f"  the longest order it accepts takes {len(result.order)} of {total} calls, then none of the "
             "calls that may come next is allowed:"]
    if result.blame is not None and result.blamed is not None:
        c = checked.calls[result.blamed[0]][result.blamed[1]]
        lines.append(f"    {c.op}  →  {c.outcome}   (rule {result.blame.rule}; "
                     f"allowed: {'; '.join(result.blame.expected)})")
    lines.append("  history (branch: [invoked–completed] call → outcome):")
    last = len(checked.calls) - 1
    for b, calls in enumerate(checked.calls):
        for c in calls:
            lines.append(f"    {'after' if b == last else f'b{b}'}: [{c.invoked}–{c.completed}] {c.op}  →  {c.outcome}")
    return "\n".join(lines)


def replay_history(adapter: Adapter, history: History) -> Checked | None:
    """Run `history` from scratch (nothing recorded); None if its prefix does not replay."""
    h, _ = replay(adapter, history.prefix)
    if any(ops and not h.usable(ops[0].proc) for ops in history.branches):
        return None
    if any(isinstance(op, MAP_OPS) and op.map_id not in h.model.procs[op.proc].maps
           for ops in history.branches for op in ops):
        return None  # a mapping the shortened prefix no longer makes
    return run(adapter, h, history)


def differs(adapter: Adapter, checked: Checked | None) -> bool:
    """Whether a replayed history shows what `record` would call a violation: no order, and not
    because of a lost call or of a difference the adapter declares (else shrinking could trade the
    failure for one the adapter declares)."""
    if checked is None or checked.result.ok or checked.result.undecided or LINEARIZABLE in adapter.deviations:
        return False
    return not checked.result.refused & adapter.deviations.keys()


def fails(adapter: Adapter, history: History, tries: int) -> bool:
    return any(differs(adapter, replay_history(adapter, history)) for _ in range(tries))


def shrink_history(adapter: Adapter, history: History, budget: int, tries: int) -> History:
    """Drop calls (branch calls last first, then prefix steps) while the history still fails."""
    spent = 0
    for b in range(len(history.branches)):
        for i in reversed(range(len(history.branches[b]))):
            if spent >= budget or len(history.branches[b]) == 1:
                break
            smaller = [list(x) for x in history.branches]
            del smaller[b][i]
            candidate = History(history.prefix, smaller, history.schedule)
            spent += tries
            if fails(adapter, candidate, tries):
                history = candidate
    for i in reversed(range(len(history.prefix))):
        if spent >= budget:
            break
        if isinstance(history.prefix[i], o.Spawn):
            continue
        candidate = History(history.prefix[:i] + history.prefix[i + 1:], history.branches, history.schedule)
        spent += tries
        if fails(adapter, candidate, tries):
            history = candidate
    return history


def shrink_recorded(adapter: Adapter, recorder: Recorder, budget: int) -> None:
    """Shrink the recorded failing history of `concurrent.linearizable`, and describe the result."""
    ev = recorder.get(LINEARIZABLE)
    if not ev.reproducer or ev.shrunk:
        return
    tries = 1 if adapter.replays_schedule else 3
    history = history_of(ev.reproducer)
    smaller = shrink_history(adapter, history, budget, tries)
    for _ in range(tries):
        checked = replay_history(adapter, smaller)
        if checked is not None and differs(adapter, checked):
            ev.message = explain(adapter, checked)
            ev.reproducer = reproducer(checked, smaller.schedule)
            break
    ev.shrunk = True


def main(rule: str, adapter: str, options: dict[str, str], steps: list[dict[str, Any]], argv: list[str]) -> int:
    """A reproducer script of a concurrent history: replay it `--times N` times (default 20)."""
    times = 20
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag == "--adapter" and args:
            adapter, options = args.pop(0), {}
        elif flag == "--times" and args and args[0].isdigit():
            times = int(args.pop(0))
        else:
            print("usage: python REPRODUCER.py [--adapter NAME_OR_MODULE:CLASS] [--times N]", file=sys.stderr)
            return 2
    instance = started(adapter, options)
    if instance is None:
        return 2
    try:
        history, failed, example = history_of(steps), 0, None
        for _ in range(times):
            checked = replay_history(instance, history)
            if checked is not None and differs(instance, checked):
                failed, example = failed + 1, example or checked
        if example is not None:
            print(explain(instance, example))
        print(f"{rule}: violated in {failed} of {times} runs of the history")
        return 1 if failed else 0
    finally:
        instance.close()
