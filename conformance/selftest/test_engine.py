"""The engine's promises, each with a failure it must be able to see: blame goes to the rule that
matches what was observed, a surprise sets aside exactly what it touched and the rest goes on, a
lost transport never fails a run, unsupported operations are never sent and skip only their
rules, a failing program shrinks to its few steps, and the pytest plugin leaves other suites alone.
"""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

from ashcheck.adapters.sim import SimAdapter
from ashcheck.conformance.explore import explore
from ashcheck.conformance.harness import Harness
from ashcheck.conformance.results import RECORDER, Evidence, Recorder, statuses
from ashcheck.conformance.selftest.mutants import DefaultNameSlash, ProtMaskCanGrow
from ashcheck.conformance.settings import PROFILES
from ashcheck.conformance.shrink import minimize
from ashcheck.spec import RULES, Spec
from ashcheck.spec import ops as o
from ashcheck.spec.outcome import SIGSEGV, Outcome, err, fault, indeterminate, ok
from ashcheck.spec.reach import OPS_OF, unreachable

P = 4096


def test_blame_goes_to_the_branch_that_matches_what_came_back() -> None:
    spec = Spec("ashmem")
    for op, out in [(o.Spawn(0), ok((0, 1, 2))), (o.CreateRegion(0, b"r", P), ok(3)),
                    (o.Mmap(0, 3, 0, P, 2, True), ok(None)), (o.Store(0, 0, 0, b"x"), ok(None))]:
        assert spec.observe(op, out).ok
    load = o.Load(0, 0, 0, 1)  # a write-only mapping: SIGSEGV or the data are both allowed
    assert spec.observe(load, fault(SIGSEGV)).ok
    wrong = spec.observe(load, ok(b"?"))
    assert not wrong.ok and wrong.rule == "mem.load.shared"  # wrong data is not a SIGSEGV rule's failure
    assert spec.observe(load, fault(7)).rule == "mem.load.segv"  # a fault, but the wrong one


class BrokenName(DefaultNameSlash):
    """Reports a wrong default name; everything else is the reference's."""


def test_a_violation_sets_aside_its_region_and_the_rest_goes_on() -> None:
    h = Harness(ProtMaskCanGrow(), Recorder())
    h.step(o.Spawn(0))
    first = h.step(o.CreateRegion(0, b"", P))
    second = h.step(o.CreateRegion(0, b"b", P))
    assert first == ok(3) and second == ok(4)
    assert h.step(o.SetProtMask(0, 3, 1)) == ok(0)
    assert h.step(o.SetProtMask(0, 3, 3)) == ok(0) and h.violated == ["ashmem.set-prot-mask.add"]
    assert h.step(o.GetSize(0, 3)) is None  # set aside: not performed
    assert h.step(o.Close(0, 3)) == ok(None)  # fd-level calls on it still are
    assert h.step(o.GetSize(0, 4)) == ok(P)  # the other region goes on being judged
    assert h.recorder.get("ashmem.get-size.value").confirmed == 1


def test_a_wrong_name_sets_aside_the_name_alone() -> None:
    h = Harness(BrokenName(), Recorder())
    h.step(o.Spawn(0))
    h.step(o.CreateRegion(0, b"", P))
    assert h.step(o.GetName(0, 3)) == ok(b"dev/ashmem/") and h.violated == ["ashmem.get-name.value"]
    assert h.step(o.GetName(0, 3)) is None  # the name is set aside
    assert h.step(o.SetName(0, 3, b"x")) == ok(0)  # its answer does not depend on the name it replaces
    assert h.step(o.GetSize(0, 3)) == ok(P)  # the rest of the region goes on being judged
    assert h.step(o.Mmap(0, 3, 0, P, 3, True)) == ok(None)
    assert h.step(o.Store(0, 0, 0, b"x")) == ok(None) and h.step(o.Load(0, 0, 0, 1)) == ok(b"x")
    assert h.violated == ["ashmem.get-name.value"]


class CloseTakesTheNextFd(SimAdapter):
    """close(fd) closes fd + 1 too, when it is open: an fd table the model no longer knows."""

    def perform(self, op: o.Op) -> Outcome:
        out = super().perform(op)
        if isinstance(op, o.Close) and out.succeeded:
            super().perform(o.Close(op.proc, op.fd + 1))
        return out


def test_an_fd_closed_under_the_model_sets_aside_its_process() -> None:
    """EBADF for an fd the model has open says the process's fd table is not what the model
    thinks: its next fd numbers would fail rule after rule (create, dup, binder) for one bug."""
    h = Harness(CloseTakesTheNextFd(), Recorder())
    h.step(o.Spawn(0))
    h.step(o.Spawn(1))
    assert [h.step(o.CreateRegion(p, b"", P)) for p in (0, 0, 0, 1)] == [ok(3), ok(4), ok(5), ok(3)]
    assert h.step(o.Close(0, 3)) == ok(None)  # 4 went with it
    assert h.step(o.GetSize(0, 4)) == err(errno.EBADF) and h.violated == ["ashmem.get-size.value"]
    assert not h.usable(0)
    assert h.step(o.CreateRegion(0, b"", P)) is None  # would be 3 (the model says 4): not asked
    assert h.step(o.GetSize(0, 5)) is None
    assert h.step(o.CreateRegion(1, b"", P)) == ok(4)  # the other process goes on being judged
    assert h.violated == ["ashmem.get-size.value"]


def test_the_simulators_quiet_stretches_replay_and_the_spec_follows_them() -> None:
    """pressure=mixed: each UNPIN starts a stretch with or without memory pressure, the same for
    the same program; in a quiet one the spec allows only the data in unpinned memory."""
    program: list[o.Op] = [o.Spawn(0), o.CreateRegion(0, b"r", 4 * P), o.Mmap(0, 3, 0, 4 * P, 3, True)]
    program += [o.Store(0, 0, page * P, b"kept") for page in range(4)]
    for page in range(40):
        program += [o.Unpin(0, 3, (page % 4) * P, P), o.Pin(0, 3, (page % 4) * P, P)]
    stretches = []
    for _ in range(2):
        h = Harness(SimAdapter(), Recorder())
        seen = []
        for op in program:
            h.step(op)
            assert h.model.spontaneous_purge == h.adapter.spontaneous_purge
            seen.append(h.adapter.spontaneous_purge)
        stretches.append(seen)
    assert stretches[0] == stretches[1] and {True, False} <= set(stretches[0])
    for quiet in (False, True):  # the page just unpinned: kept, or kept or purged
        at = next(i for i, op in enumerate(program) if isinstance(op, o.Unpin) and stretches[0][i] is not quiet)
        h = Harness(SimAdapter(), Recorder())
        for op in program[:at + 1]:
            h.step(op)
        unpinned = program[at]
        assert isinstance(unpinned, o.Unpin)
        load = o.Load(0, 0, unpinned.offset, 4)
        assert {b.outcome for b in h.spec.allowed(load)} == ({ok(b"kept")} if quiet else {ok(b"kept"), ok(bytes(4))})
    for pressure, expected in (("on", True), ("off", False)):
        h = Harness(SimAdapter(pressure=pressure), Recorder())
        assert [h.step(op) is not None for op in program[:6]] and h.model.spontaneous_purge is expected
    # a concurrent history is judged under one stretch: its UNPINs start none
    sim = WatchedPressure()
    for op in program[:8]:
        sim.perform(op)
    before, sim.seen = sim.spontaneous_purge, []
    unpins = [op for op in program[8:] if isinstance(op, o.Unpin)][:8]
    sim.perform_concurrently([unpins[:4], unpins[4:]], [0, 1] * 8)
    assert sim.seen == [before] * 8 and sim.pressure == "mixed"


class WatchedPressure(SimAdapter):
    """Notes whether memory pressure is on after each call."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def perform(self, op: o.Op) -> Outcome:
        out = super().perform(op)
        self.seen.append(self.spontaneous_purge)
        return out


class DeclaresIt(BrokenName):
    deviations = MappingProxyType({"ashmem.get-name.value": "known"})


def test_a_declared_deviation_is_set_aside_exactly_like_a_violation() -> None:
    traces = []
    for cls in (BrokenName, DeclaresIt):
        h = Harness(cls(), Recorder())
        for op in [o.Spawn(0), o.CreateRegion(0, b"", P), o.GetName(0, 3), o.GetSize(0, 3), o.GetName(0, 3)]:
            h.step(op)
        traces.append([(op, out) for op, out in h.trace])
    assert traces[0] == traces[1]
    declared = Harness(DeclaresIt(), Recorder())
    for op in [o.Spawn(0), o.CreateRegion(0, b"", P), o.GetName(0, 3)]:
        declared.step(op)
    assert declared.violated == [] and declared.recorder.get("ashmem.get-name.value").deviated == 1


class LosesOneSpawn(SimAdapter):
    """The transport is lost once: on the first Spawn of the 10th test case (then on every later
    operation of that process, as an adapter that lost its executor says)."""
    spawns: ClassVar[int] = 0

    def reset(self) -> None:
        super().reset()
        self.lost: set[int] = set()

    def perform(self, op: o.Op) -> Outcome:
        if isinstance(op, o.Spawn) and op.proc == 0:
            LosesOneSpawn.spawns += 1
            if LosesOneSpawn.spawns == 10:
                self.lost.add(0)
        if op.proc in self.lost:
            return indeterminate("executor lost (test)")
        return super().perform(op)


def test_a_lost_transport_makes_outcomes_unknown_and_the_run_goes_on() -> None:
    RECORDER.clear()
    LosesOneSpawn.spawns = 0
    try:
        violated = explore(LosesOneSpawn(), PROFILES["quick"], 0, shrink=False)
        assert violated == []
        assert RECORDER.totals.lost >= 1 and RECORDER.totals.examples >= 20
        assert RECORDER.get("proc.spawn").lost >= 1
    finally:
        RECORDER.clear()


class DiesUnseen(SimAdapter):
    """A process that dies between two calls (an executor killed from outside): its fds and
    mappings are closed by the simulated kernel, and every later call of it is lost."""
    spontaneous_purge = False  # the purge's count is then exact, not a floor

    def reset(self) -> None:
        super().reset()
        self.dead: set[int] = set()

    def kill(self, proc: int) -> None:
        super().perform(o.Exit(proc))
        self.dead.add(proc)

    def perform(self, op: o.Op) -> Outcome:
        if {op.proc, getattr(op, "dst", op.proc)} & self.dead:
            return indeterminate("executor lost (test)")
        return super().perform(op)


def test_a_lost_process_puts_in_doubt_what_it_held() -> None:
    """Its death released the last fd of a region it had unpinned pages of: a purge through another
    region then counts fewer pages than the model would, and must not fail."""
    a = DiesUnseen()
    h = Harness(a, Recorder())
    for op in [o.Spawn(0), o.Spawn(1), o.CreateRegion(0, b"a", P), o.CreateRegion(0, b"b", P),
               o.BinderSend(0, 1, (4,)), o.Close(0, 4)]:
        assert h.step(op) is not None and h.violated == [], op
    held = h.model.procs[1].fds
    (fd,) = [n for n, e in held.items() if e.rid >= 0]
    for op in [o.Mmap(1, fd, 0, P, 3, True), o.Unpin(1, fd, 0, P)]:
        assert h.step(op) is not None and h.violated == [], op
    a.kill(1)
    assert h.step(o.ListFds(1)) == indeterminate("executor lost (test)") and h.lost == 1
    assert h.step(o.PurgeAllCaches(0, 3)) == ok(0)
    assert h.violated == [], h.violated


class NoNames(SimAdapter):
    unsupported = MappingProxyType({o.GetName: "the library has no get-name call"})
    asked: ClassVar[list[o.Op]] = []

    def perform(self, op: o.Op) -> Outcome:
        NoNames.asked.append(op)
        return super().perform(op)


def test_unsupported_operations_are_never_sent_and_skip_only_their_rules() -> None:
    h = Harness(NoNames(), Recorder())
    h.step(o.Spawn(0))
    h.step(o.CreateRegion(0, b"n", P))
    assert h.step(o.GetName(0, 3)) is None
    assert not any(isinstance(op, o.GetName) for op in NoNames.asked)
    skipped = unreachable({"GetName": "no call"})
    assert set(skipped) == {r for r, ops in OPS_OF.items() if set(ops) == {"GetName"}} == {"ashmem.get-name.value"}
    result = {r["rule"]: r for r in statuses({}, "ashmem", {"privileged"}, {}, skipped)}
    name = result["ashmem.get-name.value"]
    assert name["status"] == "skip" and "no call" in name["reason"]
    assert result["ashmem.set-name.stores"]["status"] == "unknown"  # reachable otherwise: not skipped


def test_every_rule_says_which_operations_reach_it() -> None:
    assert set(OPS_OF) == set(RULES)
    assert all(ops and set(ops) <= set(o.OPS) for ops in OPS_OF.values())


def test_a_deviation_never_met_is_not_exercised_and_one_that_held_is_stale() -> None:
    declared = {"ashmem.get-name.value": "known", "ashmem.get-size.value": "known"}
    evidence = {"ashmem.get-size.value": Evidence(confirmed=3)}
    result = {r["rule"]: r for r in statuses(evidence, "ashmem", {"privileged"}, declared)}
    assert result["ashmem.get-name.value"]["status"] == "unknown"
    assert result["ashmem.get-size.value"]["status"] == "fail" and "stale" in result["ashmem.get-size.value"]["reason"]


def test_a_failing_program_shrinks_to_its_few_steps() -> None:
    a = BrokenName()
    noise = [o.CreateRegion(0, b"x", 2 * P), o.Mmap(0, 3, 0, 2 * P, 3, True), o.Store(0, 0, 0, b"abc"),
             o.Dup(0, 3), o.Unpin(0, 3, 0, P), o.Close(0, 4), o.GetSize(0, 3), o.OpenPath(0)]
    program = [o.Spawn(0), *noise, o.CreateRegion(0, b"", P), o.Lseek(0, 3, 0, 0), o.GetName(0, 5)]
    smaller = minimize(a, program, "ashmem.get-name.value", budget=200)
    assert smaller is not None
    assert len(smaller) <= 5, smaller  # spawn, two fds to take numbers 3 and 4, the unnamed region, GET_NAME
    h = Harness(a, Recorder())
    for op in smaller:
        h.step(op)
    assert h.violated == ["ashmem.get-name.value"]
    assert minimize(SimAdapter(), program, "ashmem.get-name.value", budget=50) is None  # nothing to shrink


def test_the_plugin_leaves_other_test_suites_alone(tmp_path: Path) -> None:
    """The same foreign suite, with ashcheck's plugin loaded and without it, sees the same Hypothesis
    settings (whatever the environment loaded: Hypothesis picks a "ci" profile by itself under $CI);
    the plugin only adds its own command-line options."""
    (tmp_path / "test_other.py").write_text(textwrap.dedent("""
        from hypothesis import given, settings, strategies as st

        def test_defaults(pytestconfig) -> None:
            print("SETTINGS", repr(settings()))
            print("OPTIONS", sorted(k for k in vars(pytestconfig.option) if "ashcheck" in k))

        @given(st.integers())
        def test_runs(n: int) -> None:
            assert isinstance(n, int)
    """))

    def run(*extra: str) -> str:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *extra,
                               "test_other.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:]
        return done.stdout

    def settings_line(out: str) -> str:
        return next(line for line in out.splitlines() if line.startswith("SETTINGS"))

    with_plugin, without = run(), run("-p", "no:ashcheck")
    assert settings_line(with_plugin) == settings_line(without)
    assert "ashcheck_profile" in with_plugin and "ashcheck_profile" not in without  # it was loaded, then not


def test_an_error_answer_is_judged_like_any_other() -> None:
    spec = Spec("ashmem")
    spec.observe(o.Spawn(0), ok((0, 1, 2)))
    assert not spec.observe(o.Close(0, 7), ok(None)).ok
    assert spec.observe(o.Close(0, 7), err(9)).rule == "fd.ebadf"


def test_every_operation_declaration_is_complete() -> None:
    """spec/ops.py declares each operation once: a spec function (resolved when spec.check loads),
    a simulator handler by name, and a wire form: a request template over its own fields whose
    answer is a known one, or REGIONS / ADAPTER (the executor adapter's own encoders)."""
    from ashcheck.adapters.executor_ops import ANSWERS
    from ashcheck.adapters.sim import SimAdapter

    assert set(ANSWERS) == set(o.ANSWERS)
    by_adapter = set()
    for name, op in o.OPS.items():
        assert op.call and op.spec, name
        assert callable(getattr(SimAdapter, f"_{op.snake_name()}", None)), name
        if op.wire == o.ADAPTER:
            by_adapter.add(name)
        elif op.wire != o.REGIONS:
            assert op.answer in o.ANSWERS, name
            assert not op.wire.startswith(" ") and "  " not in op.wire, name
    # processes and binder transactions are the transport's, not a request line
    assert by_adapter == {"Spawn", "Exit", "BinderSend", "BinderReply"}
    assert o.Mmap(0, 3, 1, 4096, 3, True, near=2).request() == "mmap 1 3 4096 3 1 0 2 -1"
    assert o.Write(0, 3, b"").request() == "write 3 -"
    assert o.UnknownIoctl(0, 3, 11).request() == f"ioctl 3 {0x770b} int 0"


def test_every_operation_is_specified_simulated_explored_and_reaches_a_rule() -> None:
    """Totality over the operations: each has a spec function, a simulator call, rules that only it
    (or it among others) reaches, and the exploration performs it."""
    from ashcheck.adapters.sim import _HANDLERS
    from ashcheck.spec.check import SPEC

    reached = {op for ops in OPS_OF.values() for op in ops}
    assert set(SPEC) == set(_HANDLERS) == set(o.OPS.values())
    assert reached == set(o.OPS)

    performed: set[str] = set()

    class Watching(SimAdapter):
        def perform(self, op: o.Op) -> Outcome:
            performed.add(type(op).__name__)
            return super().perform(op)

    RECORDER.clear()
    try:
        explore(Watching(), PROFILES["ci"], 0, shrink=False)  # seeded: the same programs every run
    finally:
        RECORDER.clear()
    assert performed == set(o.OPS), f"never explored: {sorted(set(o.OPS) - performed)}"
