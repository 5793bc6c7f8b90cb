"""Self-tests of the spec alone (no adapter): it is total over the small domains, every rule it
can answer with is registered with a source, and the range algebra means what it says."""

from __future__ import annotations

import errno
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ashcheck.conformance.exhaustive import STATES, make_op, pairs
from ashcheck.spec import PROFILES, RULES, Spec, pins
from ashcheck.spec import ops as o
from ashcheck.spec.constants import ASHMEM_NOT_PURGED, ASHMEM_WAS_PURGED
from ashcheck.spec.fileio import SEEK_EXACT, SEEK_WRAPS
from ashcheck.spec.outcome import Outcome, err, ok


def _first_allowed(spec: Spec, op: o.Op) -> None:
    """Advance the spec as an implementation that always gives its first allowed answer."""
    branch = spec.allowed(op)[0]
    spec.observe(op, branch.outcome if branch.outcome is not None else ok(10**6))


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_state_operation_pair_is_specified(profile: str) -> None:
    for state, op_name in pairs():
        spec = Spec(profile)
        spec.observe(o.Spawn(0), ok((0, 1, 2)))
        fd = 3
        for make in STATES[state].setup:
            op = make(fd)
            if isinstance(op, o.OpenAshmem) and profile == "memfd":
                break  # memfd has no device to open: that state does not exist there
            _first_allowed(spec, op)
        else:
            branches = spec.allowed(make_op(op_name)(fd))
            assert branches, f"{profile}: no outcome specified for {op_name} in state {state}"
            for b in branches:
                assert b.rule in RULES, f"{profile}: {op_name} in {state} answers with unregistered {b.rule}"


def test_rules_have_sources_and_profiles() -> None:
    assert len(RULES) >= 60
    for rule in RULES.values():
        assert rule.source.strip() and rule.summary.strip(), rule.id
        assert set(rule.profiles) <= set(PROFILES), rule.id


page_ops = st.lists(st.tuples(st.sampled_from(["pin", "unpin"]), st.integers(0, 7), st.integers(0, 7)),
                    max_size=30)


@given(page_ops)
def test_range_list_agrees_with_a_page_model(steps: list[tuple[str, int, int]]) -> None:
    """The property the Rust driver's range_test checks: whatever the list looks like, the pages
    it covers are exactly the pages last unpinned and not pinned since. Ranges stay disjoint and
    descending."""
    ranges: pins.Ranges = ()
    unpinned = [False] * 8
    for kind, a, b in steps:
        s, e = min(a, b), max(a, b)
        if kind == "pin":
            ranges, _, _ = pins.pin(ranges, s, e)
        else:
            ranges, _ = pins.unpin(ranges, s, e)
        for page in range(s, e + 1):
            unpinned[page] = kind == "unpin"
        covered = [any(r[0] <= p <= r[1] for r in ranges) for p in range(8)]
        assert covered == unpinned
        starts = [r[0] for r in ranges]
        assert starts == sorted(starts, reverse=True)
        assert all(x[0] > y[1] for x, y in itertools.pairwise(ranges))


def test_adjacent_unpins_stay_separate_and_pin_reports_per_range() -> None:
    ranges, _ = pins.unpin((), 0, 0)
    ranges, _ = pins.unpin(ranges, 1, 1)
    assert ranges == ((1, 1, False), (0, 0, False))
    ranges = ((1, 1, False), (0, 0, True))
    _, purged, _ = pins.pin(ranges, 1, 1)
    assert not purged
    _, purged, _ = pins.pin(ranges, 0, 1)
    assert purged


def test_unpin_merge_inherits_purged_and_contained_unpin_is_a_no_op() -> None:
    ranges: pins.Ranges = ((2, 3, True),)
    assert pins.unpin(ranges, 3, 3) == (ranges, None)
    merged, new = pins.unpin(ranges, 1, 2)
    assert merged == ((1, 3, True),) and new == (1, 3, True)


def test_pin_splits_a_range_and_both_parts_keep_the_flag() -> None:
    ranges, purged, created = pins.pin(((0, 4, True),), 2, 2)
    assert purged and ranges == ((3, 4, True), (0, 1, True)) and created == (3, 4, True)


def _sealed_memfd_with_a_mapping(first_prot: int, first_offset: int) -> Spec:
    """memfd profile: one process, a 4-page region, a shared mapping (map 0) made before
    F_SEAL_FUTURE_WRITE (SET_PROT_MASK to PROT_READ), then the seal."""
    spec = Spec("memfd")
    P = 4096
    steps: list[tuple[o.Op, object]] = [
        (o.Spawn(0), (0, 1, 2)), (o.CreateRegion(0, b"m", 4 * P), 3),
        (o.Mmap(0, 3, 0, 3 * P, first_prot, True, first_offset), None), (o.SetProtMask(0, 3, 1), 0)]
    for op, value in steps:
        assert spec.observe(op, ok(value)).ok, op
    return spec


@pytest.mark.parametrize("first", [(1, 4096), (3, 4096), (1, 8192), (3, 8192)])
def test_the_seal_is_a_contract_wherever_the_new_mapping_lands(first: tuple[int, int]) -> None:
    # 5.10.223 merges a new mapping into an older, file-contiguous one before shmem_mmap checks the
    # seal, and lets it be made writable: that is a failure of the seal's rules, not an outcome
    spec = _sealed_memfd_with_a_mapping(first_prot=first[0], first_offset=first[1])
    verdict = spec.observe(o.Mmap(0, 3, 1, 4096, 3, True, 0, near=0), ok(None))
    assert not verdict.ok and verdict.rule == "memfd.seal.mmap"
    assert spec.observe(o.Mmap(0, 3, 1, 4096, 1, True, 0, near=0), ok(None)).ok
    verdict = spec.observe(o.Mprotect(0, 1, 3), ok(None))
    assert not verdict.ok and verdict.rule == "memfd.seal.mprotect"
    assert spec.observe(o.Mprotect(0, 0, 3), ok(None)).ok  # made before the seal: it may
    assert spec.observe(o.Write(0, 3, b"w"), err(errno.EPERM)).rule == "memfd.seal.write"


def _lseek_answers(spec: Spec, whence: int, offset: int) -> set[object]:
    return {b.outcome for b in spec.allowed(o.Lseek(0, 3, offset, whence))}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_seek_data_and_hole_answer_from_the_pages_a_mapping_touched(profile: str) -> None:
    """Issue 15: the peers' ashmem_test seeks SEEK_DATA on a mapped region; the answer depends on
    which pages the backing file holds, not on the bytes (a load of zeros faults a page in too)."""
    page, data, hole = 4096, 3, 4
    spec = Spec(profile)
    spec.observe(o.Spawn(0), ok((0, 1, 2)))
    spec.observe(o.CreateRegion(0, b"r", 3 * page), ok(3))
    spec.observe(o.Mmap(0, 3, 0, 3 * page, 3, True, 0), ok(None))
    assert _lseek_answers(spec, data, 0) == {err(errno.ENXIO)}  # nothing touched yet
    assert _lseek_answers(spec, hole, page + 5) == {ok(page + 5)}
    spec.observe(o.Load(0, 0, page, 1), ok(b"\0"))  # page 1 faulted in, still zero
    assert _lseek_answers(spec, data, 0) == {ok(page)}
    assert _lseek_answers(spec, data, page + 5) == {ok(page + 5)}
    assert _lseek_answers(spec, hole, page) == {ok(2 * page)}
    spec.observe(o.Store(0, 0, 2 * page, b"x"), ok(None))
    assert _lseek_answers(spec, hole, page) == {ok(3 * page)}  # no hole left: the size
    assert _lseek_answers(spec, data, 3 * page) == {err(errno.ENXIO)}  # at the size
    assert _lseek_answers(spec, hole, -1) == {err(errno.ENXIO)}
    assert spec.kernel.regions[0].pos == 0  # asking moved nothing yet
    _first_allowed(spec, o.Lseek(0, 3, 0, data))
    assert spec.kernel.regions[0].pos == page


def test_the_shrinker_purges_a_regions_ranges_oldest_first() -> None:
    """ashmem_shrink_scan walks the LRU from its head and lru_add appends: of two ranges unpinned
    in turn, the younger is purged only after the older, wherever each lies; a range PIN shrinks
    keeps its place, the right part of a split goes last."""
    page = 4096
    spec = Spec("ashmem", spontaneous_purge=True)
    for op, value in [(o.Spawn(0), (0, 1, 2)), (o.CreateRegion(0, b"r", 8 * page), 3),
                      (o.Mmap(0, 3, 0, 8 * page, 3, True), None), (o.Unpin(0, 3, 4 * page, 3 * page), 0),
                      (o.Unpin(0, 3, 0, page), 0)]:  # pages 4-6, then page 0: the younger, lower one
        assert spec.observe(op, ok(value)).ok, op
    pin_younger = o.Pin(0, 3, 0, page)
    assert {b.outcome for b in spec.allowed(pin_younger)} == {ok(ASHMEM_NOT_PURGED), ok(ASHMEM_WAS_PURGED)}
    probe = spec.copy()
    assert probe.observe(pin_younger, ok(ASHMEM_WAS_PURGED)).ok
    # the younger was purged, so the older was before it: every world says so
    assert {b.outcome for b in probe.allowed(o.Pin(0, 3, 4 * page, page))} == {ok(ASHMEM_WAS_PURGED)}
    # PIN page 5 splits 4-6: page 4 keeps the old place, page 6 goes after page 0
    assert spec.observe(o.Pin(0, 3, 5 * page, page), ok(ASHMEM_NOT_PURGED)).ok
    assert spec.kernel.regions[0].lru == {(6, 6): 3, (4, 4): 1, (0, 0): 2}
    spec.observe(o.Pin(0, 3, 0, page), ok(ASHMEM_WAS_PURGED))  # page 0 went: page 4 before it
    assert {b.outcome for b in spec.allowed(o.Pin(0, 3, 4 * page, page))} == {ok(ASHMEM_WAS_PURGED)}
    assert {b.outcome for b in spec.allowed(o.Pin(0, 3, 6 * page, page))} == {ok(ASHMEM_NOT_PURGED),
                                                                             ok(ASHMEM_WAS_PURGED)}


def test_a_page_fallocated_twice_is_data() -> None:
    """Found on this host's 6.18 by the memfd adapter: shmem leaves a page fallocate allocated
    !Uptodate (a hole to SEEK_DATA), but a second fallocate over it initializes it (shmem_get_folio_gfp,
    SGP_FALLOC on a page fallocated earlier), so from then on it is data."""
    page, data = 4096, 3
    spec = Spec("memfd")
    spec.observe(o.Spawn(0), ok((0, 1, 2)))
    spec.observe(o.CreateRegion(0, b"r", 8 * page), ok(3))
    assert spec.observe(o.Fallocate(0, 3, 1, page, 2 * page), ok(0)).ok  # KEEP_SIZE: pages 1 and 2
    assert _lseek_answers(spec, data, 0) == {err(errno.ENXIO)}
    assert spec.observe(o.Fallocate(0, 3, 0, 1, 2 * page), ok(0)).ok  # pages 0 to 2: 1 and 2 again
    assert _lseek_answers(spec, data, 0) == {ok(page)}  # page 0 met its first: a hole still
    assert spec.observe(o.Fallocate(0, 3, 3, 0, page), ok(0)).ok  # a punched page leaves both sets
    assert _lseek_answers(spec, data, 0) == {ok(page)}
    assert spec.observe(o.Fallocate(0, 3, 0, 0, page), ok(0)).ok
    assert _lseek_answers(spec, data, 0) == {ok(page)}  # allocated once since the punch


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_creation_with_a_size_ftruncate_refuses(profile: str) -> None:
    """libcutils' memfd mode ftruncates the new memfd to the size_t it was given as an off_t: 2^63
    and more are negative, EINVAL, and the memfd is closed; the ashmem driver's SET_SIZE takes any."""
    spec = Spec(profile)
    spec.observe(o.Spawn(0), ok((0, 1, 2)))
    huge = err(errno.EINVAL) if profile == "memfd" else ok(3)
    assert {b.outcome for b in spec.allowed(o.CreateRegion(0, b"r", 2**63))} == {huge}
    assert {b.outcome for b in spec.allowed(o.CreateRegion(0, b"r", 2**63 - 1))} == {ok(3)}
    assert spec.observe(o.CreateRegion(0, b"r", 2**64 - 1), huge).ok
    assert {b.outcome for b in spec.allowed(o.CreateRegion(0, b"r", 4096))} == {ok(3 if profile == "memfd" else 4)}


def test_a_32_bit_process_uses_the_compat_numbers_of_the_two_sized_ioctls() -> None:
    """drivers/staging/android/ashmem.c: COMPAT_ASHMEM_SET_SIZE = _IOW(0x77, 3, compat_size_t) and
    COMPAT_ASHMEM_SET_PROT_MASK = _IOW(0x77, 5, unsigned int) are what compat_ashmem_ioctl
    translates; every other request number is the same in both ABIs."""
    from ashcheck.spec.constants import AshmemIoctl, abi_number

    assert abi_number(AshmemIoctl.SET_SIZE, 32) == 0x40047703 and abi_number(AshmemIoctl.SET_SIZE) == 0x40087703
    assert abi_number(AshmemIoctl.SET_PROT_MASK, 32) == 0x40047705
    assert abi_number(AshmemIoctl.SET_PROT_MASK, 64) == 0x40087705
    others = [c for c in AshmemIoctl if c not in (AshmemIoctl.SET_SIZE, AshmemIoctl.SET_PROT_MASK)]
    assert all(abi_number(c, 32) == abi_number(c, 64) == int(c) for c in others)


def test_a_32_bit_caller_passes_sizes_cut_to_32_bits() -> None:
    """Observed with the 32-bit executor on Debian 5.10.223: SET_SIZE(2^32 + 4096) makes a one-page
    region, and mmap's C library refuses a negative offset before the kernel is asked."""
    spec = Spec("ashmem", long_bits=32)
    spec.observe(o.Spawn(0), ok((0, 1, 2)))
    spec.observe(o.CreateRegion(0, b"r", 2**32 + 8192), ok(3))
    assert spec.kernel.regions[0].size == 8192
    spec.observe(o.SetSize(0, 3, 2**32 + 4096), ok(0))
    assert {b.outcome for b in spec.allowed(o.GetSize(0, 3))} == {ok(4096)}
    assert {b.outcome for b in spec.allowed(o.Mmap(0, 3, 0, 4096, 3, True, -4096))} == {err(errno.EINVAL)}
    assert {b.outcome for b in spec.allowed(o.Mmap(0, 9, 0, 2**31, 3, True, 0))} == {err(errno.ENOMEM)}


def test_seek_data_near_max_lfs_filesize_allows_5_10s_overflow() -> None:
    """5.10.223 answered SEEK_DATA at 0 of an untouched region of 2^63 - 1 bytes with 0: its
    (i_size + PAGE_SIZE - 1) overflows loff_t. 6.x answers ENXIO; both are allowed there, and
    nowhere else."""
    page, data = 4096, 3
    spec = Spec("ashmem")
    spec.observe(o.Spawn(0), ok((0, 1, 2)))
    spec.observe(o.CreateRegion(0, b"r", 2**63 - 1), ok(3))
    spec.observe(o.Mmap(0, 3, 0, page, 3, True, 0, True), ok(None))
    assert _lseek_answers(spec, data, 0) == {err(errno.ENXIO), ok(0)}
    named = {b.outcome: b.variant for b in spec.allowed(o.Lseek(0, 3, 0, data))}
    assert named == {err(errno.ENXIO): SEEK_EXACT, ok(0): SEEK_WRAPS}  # the report says which was met
    spec.observe(o.CreateRegion(0, b"r", 2**63 - 2 * page), ok(4))
    spec.observe(o.Mmap(0, 4, 1, page, 3, True, 0, True), ok(None))
    assert {(b.outcome, b.variant) for b in spec.allowed(o.Lseek(0, 4, 0, data))} == {(err(errno.ENXIO), "")}


def test_a_write_crossing_the_end_is_one_of_two_variants() -> None:
    """Under F_SEAL_GROW a memfd write that crosses the end stores what fits (5.10, 6.1, 6.18) or is
    EPERM whole (6.12): both allowed, each named, so the report says which a kernel showed; a write
    that fits is no variant, and any other answer fails."""
    from ashcheck.spec.fileio import CROSSING_EPERM, CROSSING_SHORT

    P = 4096

    def crossing(observed: Outcome) -> tuple[bool, str]:
        spec = Spec("memfd")
        for op, out in [(o.Spawn(0), ok((0, 1, 2))), (o.CreateRegion(0, b"r", P), ok(3)),
                        (o.Lseek(0, 3, P - 1, 0), ok(P - 1))]:
            assert spec.observe(op, out).ok, op
        verdict = spec.observe(o.Write(0, 3, b"12345678"), observed)
        return verdict.ok, verdict.variant

    assert crossing(ok(1)) == (True, CROSSING_SHORT)
    assert crossing(err(errno.EPERM)) == (True, CROSSING_EPERM)
    assert crossing(ok(8))[0] is False and crossing(err(errno.ENOSPC))[0] is False
    fits = Spec("memfd")
    for op, out in [(o.Spawn(0), ok((0, 1, 2))), (o.CreateRegion(0, b"r", P), ok(3))]:
        fits.observe(op, out)
    assert fits.observe(o.Write(0, 3, b"1234"), ok(4)).variant == ""
