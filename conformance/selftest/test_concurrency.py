"""Concurrent histories: the linearizability check, the deterministic scheduler, the race mutants
(each invisible one call at a time, each caught by the concurrency profile on the simulator), the
reference and memfd passing, the hub shared by threads, and the reproducer of a race."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import MappingProxyType

import pytest

from ashcheck.adapters import load_adapter
from ashcheck.adapters.base import Adapter
from ashcheck.adapters.channel import Hub
from ashcheck.adapters.sim import SimAdapter
from ashcheck.conformance import concurrent as C
from ashcheck.conformance.harness import Harness
from ashcheck.conformance.replay import script
from ashcheck.conformance.results import RECORDER, Recorder
from ashcheck.conformance.selftest.catching import violated_rules
from ashcheck.conformance.selftest.mutants import RACE_MUTANTS, Mutant
from ashcheck.conformance.settings import PROFILES
from ashcheck.reference.sched import Scheduler, point
from ashcheck.spec import LINEARIZABLE, Spec, linearize
from ashcheck.spec import ops as o
from ashcheck.spec.linearize import Call
from ashcheck.spec.outcome import err, indeterminate, ok


def _spec_with_region() -> Spec:
    spec = Spec("ashmem")
    for op, out in [(o.Spawn(0), ok((0, 1, 2))), (o.Spawn(1), ok((0, 1, 2))), (o.CreateRegion(0, b"r", 4096), ok(3)),
                    (o.BinderSend(0, 1, (3,)), ok((3,)))]:
        assert spec.observe(op, out).ok
    return spec


def test_a_race_that_no_order_explains_is_rejected_and_one_order_is_found_otherwise() -> None:
    spec = _spec_with_region()
    set_size = Call(o.SetSize(0, 3, 8192), ok(0), 0, 10)
    mapped = Call(o.Mmap(1, 3, 0, 4096, 3, True), ok(None), 1, 2)
    # SET_SIZE overlapping the first mmap: SET_SIZE first, then the mmap, explains size 8192 ...
    fine = linearize(spec, [[set_size, Call(o.GetSize(0, 3), ok(8192), 11, 12)], [mapped]])
    assert fine.ok and [spec_call for spec_call in fine.order] == [(0, 0), (1, 0), (0, 1)]
    # ... but not a file whose end is still at 4096: no order has both
    racy = linearize(spec, [[set_size, Call(o.Lseek(0, 3, 0, 2), ok(4096), 11, 12)], [mapped]])
    assert not racy.ok and not racy.undecided
    assert racy.blame is not None and racy.blame.rule == "fd.lseek.position"
    # real time is kept: a SET_SIZE that completed before the mmap began must come first
    before = linearize(spec, [[Call(o.SetSize(0, 3, 8192), err(22), 0, 1)], [Call(o.Mmap(1, 3, 0, 4096, 3, True),
                                                                                     ok(None), 2, 3)]])
    assert not before.ok
    # the spec itself is not changed by the search
    assert spec.kernel.regions[0].size == 4096 and not spec.kernel.regions[0].materialized


@pytest.mark.parametrize("profile", ["ashmem", "memfd"])
def test_a_read_may_take_the_position_before_an_lseek_and_store_it_after(profile: str) -> None:
    spec = Spec(profile)
    for op, out in [(o.Spawn(0), ok((0, 1, 2))), (o.Spawn(1), ok((0, 1, 2))), (o.CreateRegion(0, b"r", 8192), ok(3)),
                    (o.Mmap(0, 3, 0, 8192, 3, True), ok(None)), (o.Store(0, 0, 0, b"A"), ok(None)),
                    (o.BinderSend(0, 1, (3,)), ok((3,)))]:
        assert spec.observe(op, out).ok, op

    def history(lseek_at: tuple[int, int]) -> list[list[Call]]:
        read = Call(o.Read(0, 3, 1), ok(b"A"), 3, 10)
        seek = Call(o.Lseek(1, 3, 4096, 0), ok(4096), *lseek_at)
        return [[read], [seek], [Call(o.Lseek(0, 3, 0, 1), ok(1), 11, 12)]]

    # the lseek inside the read's span: the read began at 0 and stored 1 after it (fs/read_write.c
    # ksys_read; neither /dev/ashmem nor a memfd has FMODE_ATOMIC_POS), so the lseek is lost
    lost = linearize(spec, history((4, 5)))
    assert lost.ok and not lost.undecided
    # the lseek done before the read began: no kernel reads at 0 then
    before = linearize(spec, history((1, 2)))
    assert not before.ok and not before.undecided and before.blame is not None
    assert before.blame.rule == "fd.read.data"


@pytest.mark.parametrize("overlap", [True, False])
def test_two_writes_at_once_may_store_at_the_same_place_but_not_when_one_follows_the_other(overlap: bool) -> None:
    spec = Spec("memfd")
    for op, out in [(o.Spawn(0), ok((0, 1, 2))), (o.Spawn(1), ok((0, 1, 2))), (o.CreateRegion(0, b"r", 8192), ok(3)),
                    (o.Mmap(0, 3, 0, 8192, 3, True), ok(None)), (o.BinderSend(0, 1, (3,)), ok((3,)))]:
        assert spec.observe(op, out).ok, op
    second = (4, 6) if overlap else (11, 12)
    history = [[Call(o.Write(0, 3, b"AB"), ok(2), 3, 10)], [Call(o.Write(1, 3, b"C"), ok(1), *second)],
               [Call(o.Load(0, 0, 0, 4), ok(b"CB\x00\x00"), 20, 21), Call(o.Lseek(0, 3, 0, 1), ok(2), 22, 23)]]
    # both took position 0; "C" stored over "A"; the first write stored its end (2) last
    result = linearize(spec, history)
    assert result.ok is overlap and not result.undecided


@pytest.mark.parametrize("pinned", ["purged", "not purged"])
def test_a_purge_that_meets_a_pin_may_stop_half_way_but_never_purges_pinned_pages(pinned: str) -> None:
    spec = Spec("ashmem")
    page = spec.kernel.page
    for op, out in [(o.Spawn(0), ok((0, 1, 2))), (o.Spawn(1), ok((0, 1, 2))),
                    (o.CreateRegion(0, b"r", 2 * page), ok(3)), (o.Mmap(0, 3, 0, 2 * page, 3, True), ok(None)),
                    (o.Store(0, 0, 0, b"A"), ok(None)), (o.Store(0, 0, page, b"B"), ok(None)),
                    (o.Unpin(0, 3, 0, page), ok(0)), (o.Unpin(0, 3, page, page), ok(0)),
                    (o.BinderSend(0, 1, (3,)), ok((3,)))]:
        assert spec.observe(op, out).ok, op
    was = 1 if pinned == "purged" else 0
    history = [[Call(o.PurgeAllCaches(0, 3), ok(2), 0, 10)], [Call(o.Pin(1, 3, 0, page), ok(was), 2, 5)],
               [Call(o.Load(0, 0, 0, page), ok(bytes(page)), 11, 12),  # page 0 purged ...
                Call(o.Load(0, 0, page, page), ok(b"B" + bytes(page - 1)), 13, 14)]]  # ... page 1 not
    result = linearize(spec, history)
    # the shrinker punched page 0, then PIN held ashmem_mutex and its trylock gave up (5.10); but a
    # PIN that found page 0 not purged pinned it, and nothing purges it after
    assert result.ok is (pinned == "purged") and not result.undecided


def test_a_lost_call_makes_the_history_undecided_not_a_violation() -> None:
    result = linearize(_spec_with_region(), [[Call(o.GetSize(0, 3), indeterminate("gone"), 0, 1)]])
    assert not result.ok and result.undecided


def test_the_schedule_decides_the_interleaving_and_replays_it_exactly() -> None:
    def run(schedule: list[int]) -> list[str]:
        seen: list[str] = []

        def task(name: str) -> None:
            for i in range(3):
                seen.append(f"{name}{i}")
                point()
        Scheduler(schedule).run([lambda: task("a"), lambda: task("b")])
        return seen

    assert run([0, 1, 1, 1, 1, 1, 1]) == run([0, 1, 1, 1, 1, 1, 1])
    orders = {tuple(run([s, s >> 1, s >> 2, s >> 3, s >> 4, s >> 5])) for s in range(64)}
    assert len(orders) > 5  # different schedules, different interleavings
    assert all(sorted(order) == ["a0", "a1", "a2", "b0", "b1", "b2"] for order in orders)


def test_a_task_that_raises_fails_the_run() -> None:
    def bad() -> None:
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        Scheduler([]).run([bad, lambda: None])


@pytest.mark.parametrize("mutant", RACE_MUTANTS, ids=lambda m: m.name)
def test_a_race_is_invisible_one_call_at_a_time(mutant: type[Mutant]) -> None:
    """The exploration, tables and flows (one call at a time) see nothing: only concurrency can."""
    assert not violated_rules(f"{mutant.__module__}:{mutant.__name__}", profile="quick").rules


@pytest.mark.parametrize("mutant", RACE_MUTANTS, ids=lambda m: m.name)
def test_a_race_is_caught_by_the_concurrency_profile(mutant: type[Mutant]) -> None:
    adapter = load_adapter(f"{mutant.__module__}:{mutant.__name__}")()
    adapter.start()
    RECORDER.clear()
    found = False
    for shard in range(PROFILES["concurrency"].shards):
        _histories(adapter, shard, PROFILES["concurrency"].histories)
        if RECORDER.get(LINEARIZABLE).violated:
            found = True
            break
    assert found, f"{mutant.name} ({mutant.__doc__}) went unnoticed by the concurrency profile"


def _histories(adapter: Adapter, shard: int, count: int) -> None:
    """`count` histories as the concurrency profile draws them, recorded in RECORDER."""
    C.concurrent(adapter, dataclasses.replace(PROFILES["concurrency"], histories=count), shard, shrink=False)


@pytest.mark.parametrize("name", ["sim", "memfd"])
def test_correct_implementations_pass_concurrent_histories(name: str) -> None:
    adapter = load_adapter(name)()
    reason = adapter.why_unavailable()
    if reason:
        pytest.skip(reason)
    adapter.start()
    try:
        RECORDER.clear()
        _histories(adapter, 0, 150)
        evidence = RECORDER.get(LINEARIZABLE)
        assert evidence.violated == 0, evidence.message
        assert evidence.confirmed > 100
    finally:
        adapter.close()


def test_a_race_found_has_a_reproducer_that_says_how_often_it_fails(tmp_path: Path) -> None:
    name = "ashcheck.conformance.selftest.mutants:SetSizeRacesMmap"
    adapter = load_adapter(name)()
    h = Harness(adapter, Recorder())
    for op in [o.Spawn(0), o.Spawn(1), o.CreateRegion(0, b"r", 4096), o.BinderSend(0, 1, (3,))]:
        h.step(op)
    history = C.History([], [[o.SetSize(0, 3, 8192)], [o.Mmap(1, 3, 0, 4096, 3, True)]], [0, 1, 0, 0])
    checked = C.run(adapter, h, history)
    assert not checked.result.ok and not checked.result.undecided
    text = script(LINEARIZABLE, "a race", name, "ashmem", {}, C.reproducer(checked, history.schedule), "r.py")
    path = tmp_path / "r.py"
    path.write_text(text)
    run = subprocess.run([sys.executable, str(path), "--times", "3"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "violated in 3 of 3 runs" in run.stdout
    fixed = subprocess.run([sys.executable, str(path), "--adapter", "sim", "--times", "2"], capture_output=True,
                           text=True, timeout=120)
    assert fixed.returncode == 0 and "violated in 0 of 2 runs" in fixed.stdout


def test_threads_share_one_hub_and_each_gets_its_own_reply() -> None:
    """Concurrent branches over a VM or a device: several threads wait on one hub at once."""
    ours, theirs = socket.socketpair()
    hub = Hub(ours, timeout=10)

    def far_side() -> None:  # answers what each read brought, the last request first
        buffer = b""
        while data := theirs.recv(65536):
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in reversed(lines):
                proc, rid, rest = line.split(b" ", 2)
                theirs.sendall(proc + b" " + rid + b" ok " + rest.split(b" ")[-1] + b"\n")

    server = threading.Thread(target=far_side, daemon=True)
    server.start()
    got: dict[int, list[str]] = {}

    def client(k: int) -> None:
        got[k] = [hub.request(f"p{k}", f"echo {k * 100 + i}").fields[0] for i in range(25)]

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    theirs.close()
    ours.close()
    assert got == {k: [str(k * 100 + i) for i in range(25)] for k in range(4)}


def test_a_history_no_order_explains_because_of_a_declared_difference_is_set_aside_not_a_violation() -> None:
    """The search lists every rule it refused; a history whose refusals include one the adapter
    declares is not a violation (and shrinking may not trade a violation for it)."""
    spec = _spec_with_region()
    calls = [[Call(o.GetSize(1, 3), ok(999), 0, 10)], [Call(o.GetName(0, 3), err(25), 5, 6)]]  # ENOTTY
    result = linearize(spec, calls)
    assert not result.ok and result.blame is not None and result.blame.rule == "ashmem.get-size.value"
    assert result.refused == {"ashmem.get-size.value", "ashmem.get-name.value"}

    class DeclaresNames(SimAdapter):
        deviations = MappingProxyType({"ashmem.get-name.value": "no names"})

    checked = C.Checked(result, calls, [])
    assert C.differs(SimAdapter(), checked) and not C.differs(DeclaresNames(), checked)
