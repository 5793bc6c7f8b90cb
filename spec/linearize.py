"""Is a concurrent history allowed? A search for a linearization the spec accepts.

Several processes ("branches") run operations at the same time; each call is recorded with when
it was invoked and when it completed, on one clock. The history is allowed iff the calls can be
put in one sequence that (1) keeps real-time order: a call that completed before another was
invoked comes first, and (2) the spec accepts step by step, every outcome as observed
(linearizability, Herlihy & Wing 1990). The driver serializes each region's operations on one
mutex (`ashmem_mutex`), binder its transactions on the proc locks, so a correct implementation
always has such a sequence; a race that lets one call see another half done has none.

The search is Wing & Gong's, with Lowe's memo of (calls done, state) pairs already known to fail,
as in Knossos and Porcupine. Calls of one branch are sequential (one process), so "calls done" is
one position per branch. Operations that commute reach the same state by different orders, and
the memo cuts those repeats. The spec's possible worlds stay inside each state, so purges that
may or may not have happened need no search of their own.

A call that the kernel makes of several steps, other calls coming between them, is searched as
those steps, each at its own point of the call's span (Spec.steps): read() and write(), whose file
position is not locked (taken, the bytes moved, stored back), and PURGE_ALL_CACHES, which punches
range after range with ashmem_mutex dropped and may give up half way.

A call whose transport was lost is not judged: the history is then undecided, never a violation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ashcheck.spec.check import BEGIN, BODY, WHOLE, Spec, Verdict
from ashcheck.spec.ops import Op
from ashcheck.spec.outcome import Kind, Outcome
from ashcheck.spec.rules import Rule, declare
from ashcheck.spec.state import SpecLimit

LINEARIZABLE = "concurrent.linearizable"
declare(Rule(
    LINEARIZABLE, "calls made at the same time by several processes behave as if made one at a time, in an "
    "order that keeps real time: a race never shows a state no order explains (pinned data purged by a purge "
    "in flight, a size changed after another process mapped, a failed transaction's fds seen by the target)",
    "drivers/staging/android/ashmem.c ashmem_mutex, ashmem_shrink_inflight, 5.10; drivers/android/binder.c "
    "binder_apply_fd_fixups, 5.10; HERLIHY-WING", needs=("concurrent", "multi-process")))


@dataclass(frozen=True)
class Call:
    """One operation of a history: what was asked, what came back, and when (any common clock)."""

    op: Op
    outcome: Outcome
    invoked: int
    completed: int


@dataclass
class Result:
    """`ok`: a linearization exists (`order` is one, `verdicts` the spec's verdict for each of its
    calls). Otherwise `order` is the longest sequence the spec accepted, and `blame` the verdict of
    the call that could not follow it (the earliest invoked of those that could have come next).
    `undecided`: no verdict (a lost call, or a state beyond what the spec tracks). `refused`: the
    rules of every call the search found not allowed where it tried it, so that a caller can tell
    a history that may have failed on a difference an implementation declares."""

    ok: bool
    order: list[tuple[int, int]] = field(default_factory=list)  # (branch, index) in sequence
    verdicts: list[Verdict] = field(default_factory=list)
    blame: Verdict | None = None
    blamed: tuple[int, int] | None = None
    undecided: str = ""
    states: int = 0  # search nodes visited
    refused: frozenset[str] = frozenset()


def linearize(spec: Spec, branches: Sequence[Sequence[Call]], budget: int = 200_000) -> Result:
    """Search for a linearization of `branches` starting from `spec`'s state (which is not changed).
    `budget` bounds the search nodes; past it the history is undecided."""
    if any(c.outcome.kind is Kind.INDETERMINATE for b in branches for c in b):
        return Result(False, undecided="a call's transport was lost")
    start = (0,) * len(branches), (None,) * len(branches)
    quick = _Search(spec, branches, 4 * sum(map(len, branches)) + 16, memo=False)
    try:  # most histories have an order found at once: first a search without the memo's cost
        found = quick.run(spec.copy(), *start, [], [])
        if found is not None:
            return Result(True, found[0], found[1], states=quick.states)
    except (SpecLimit, _OutOfBudget):
        pass
    search = _Search(spec, branches, budget)
    try:
        found = search.run(spec.copy(), *start, [], [])
    except SpecLimit as exc:
        return Result(False, undecided=f"beyond what the spec tracks: {exc}", states=search.states)
    except _OutOfBudget:
        return Result(False, undecided=f"more than {budget} states searched", states=search.states)
    if found is not None:
        order, verdicts = found
        return Result(True, order, verdicts, states=search.states)
    return Result(False, search.deepest, search.deepest_verdicts, search.blame, search.blamed, states=search.states,
                  refused=frozenset(quick.refused | search.refused))


class _OutOfBudget(Exception):
    pass


class _Search:
    """Positions count steps (Spec.steps: a call may be several); `taken` holds, for each branch,
    what the BEGIN step of its call in progress took."""

    def __init__(self, spec: Spec, branches: Sequence[Sequence[Call]], budget: int, *, memo: bool = True) -> None:
        self.branches = branches
        self.steps = [[(i, phase) for i, c in enumerate(b) for phase in spec.steps(c.op)] for b in branches]
        self.budget = budget
        self.memo = memo
        self.failed: set[tuple[tuple[int, ...], tuple[int | None, ...], int, str] | None] = set()
        self.states = 0
        self.deepest: list[tuple[int, int]] = []
        self.deepest_verdicts: list[Verdict] = []
        self.blame: Verdict | None = None
        self.blamed: tuple[int, int] | None = None
        self.refused: set[str] = set()

    def call(self, b: int, at: tuple[int, ...]) -> Call:
        return self.branches[b][self.steps[b][at[b]][0]]

    def candidates(self, at: tuple[int, ...]) -> list[int]:
        """The branches whose next step may come next: none of the pending calls completed before
        its call was invoked. Earliest invoked first (the likeliest order)."""
        pending = [(b, self.call(b, at)) for b, i in enumerate(at) if i < len(self.steps[b])]
        free = [b for b, call in pending if all(other.completed >= call.invoked for _, other in pending)]
        return sorted(free, key=lambda b: self.call(b, at).invoked)

    def run(self, spec: Spec, at: tuple[int, ...], taken: tuple[int | None, ...], order: list[tuple[int, int]],
            verdicts: list[Verdict]) -> tuple[list[tuple[int, int]], list[Verdict]] | None:
        """A linearization of what is left from `at`, or None. `spec` is this node's own (changed)."""
        if all(i == len(s) for i, s in zip(at, self.steps, strict=True)):
            return order, verdicts
        k = spec.kernel
        key = (at, taken, k.purges_in_flight, repr((k.procs, k.regions, k.next_rid))) if self.memo else None
        if key in self.failed:
            return None
        self.states += 1
        if self.states > self.budget:
            raise _OutOfBudget
        free = self.candidates(at)
        for n, b in enumerate(free):
            index, phase = self.steps[b][at[b]]
            call = self.branches[b][index]
            twin = spec.copy() if n < len(free) - 1 else spec  # the last try may use the state up
            step = tuple(i + 1 if j == b else i for j, i in enumerate(at))
            now, done, judged = taken, order, verdicts
            if phase in (WHOLE, BODY):
                allowed = twin.allowed(call.op) if phase == WHOLE else twin.allowed_body(call.op, taken[b])
                verdict = twin.judge(allowed, call.outcome)
                if not verdict.ok:
                    self.refused.add(verdict.rule)
                    if len(order) > len(self.deepest) or self.blame is None:
                        self.deepest, self.deepest_verdicts = list(order), list(verdicts)
                        self.blame, self.blamed = verdict, (b, index)
                    continue
                done, judged = [*order, (b, index)], [*verdicts, verdict]
            elif phase == BEGIN:
                now = _put(taken, b, twin.begin(call.op))
            else:
                twin.end(call.op, taken[b], call.outcome)
                now = _put(taken, b, None)
            found = self.run(twin, step, now, done, judged)
            if found is not None:
                return found
        if self.memo:
            self.failed.add(key)
        return None


def _put(taken: tuple[int | None, ...], b: int, at: int | None) -> tuple[int | None, ...]:
    return tuple(at if j == b else t for j, t in enumerate(taken))
