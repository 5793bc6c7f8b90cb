"""The reference simulator against the facts: kernel-observed.md §2 (ashmem on 5.10.0-46) and
§3 (binder fd transfer), as the tables state them, plus the driver's edge cases read from the
source (ashmem.md §1–5), the range-list property of the Rust driver's `range_test`, and
determinism. Facts go through the `sim` adapter, so they read like the strace of the run.
"""

from __future__ import annotations

import errno
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ashcheck.adapters.base import Capability
from ashcheck.adapters.sim import SimAdapter
from ashcheck.reference import Kernel
from ashcheck.reference.cint import SIZE_MAX
from ashcheck.spec import ops as o
from ashcheck.spec.constants import (
    ASHMEM_IS_PINNED,
    ASHMEM_IS_UNPINNED,
    ASHMEM_NOT_PURGED,
    ASHMEM_WAS_PURGED,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    AshmemIoctl,
)
from ashcheck.spec.outcome import BR_FAILED_REPLY, BR_TRANSACTION_COMPLETE, SIGBUS, SIGSEGV, Outcome, err, fault, ok

P = 4096
RW = PROT_READ | PROT_WRITE
EINVAL, EPERM, EBADF, EFAULT, EACCES = errno.EINVAL, errno.EPERM, errno.EBADF, errno.EFAULT, errno.EACCES


class Run:
    """A sim with no spontaneous purges: `run(op)` is the outcome."""

    def __init__(self, seed: int = 0) -> None:
        self.sim = SimAdapter(seed=seed, ram="-1")  # unlimited: regions of 4 GiB map
        self.sim.spontaneous_purge = False
        self.sim.reset()

    def __call__(self, op: o.Op) -> Outcome:
        return self.sim.perform(op)

    def region(self, size: int = 4 * P, name: bytes = b"r", proc: int = 0, mapped: bool = True) -> int:
        fd = self(o.CreateRegion(proc, name, size)).value
        assert isinstance(fd, int)
        if mapped:
            assert self(o.Mmap(proc, fd, 900 + fd, size, RW, True)) == ok(None)
        return int(fd)

    def ranges(self, fd: int, proc: int = 0) -> list[tuple[int, int, bool]]:
        return [(r.pgstart, r.pgend, r.purged) for r in self.sim.kernel.area(proc, fd).unpinned.ranges]


@pytest.fixture
def run() -> Run:
    r = Run()
    assert r(o.Spawn(0)) == ok((0, 1, 2))
    return r


# --- kernel-observed §2: setup and happy path ------------------------------------------------------

def test_fresh_region(run: Run) -> None:
    fd = run(o.OpenAshmem(0)).value
    assert run(o.GetSize(0, fd)) == ok(0)
    assert run(o.GetName(0, fd)) == ok(b"dev/ashmem")
    assert run(o.GetProtMask(0, fd)) == ok(7)
    assert run(o.GetFdFlags(0, fd)) == ok(1)


def test_names(run: Run) -> None:
    fd = run(o.OpenAshmem(0)).value
    assert run(o.SetName(0, fd, b"pytest-region")) == ok(0)
    assert run(o.GetName(0, fd)) == ok(b"pytest-region")
    assert run(o.SetName(0, fd, b"x" * 300)) == ok(0)
    assert run(o.GetName(0, fd)) == ok(b"x" * 255)
    assert run(o.SetName(0, fd, b"na\0me")) == ok(0)
    assert run(o.GetName(0, fd)) == ok(b"na")
    assert run(o.SetName(0, fd, b"")) == ok(0)
    assert run(o.GetName(0, fd)) == ok(b"dev/ashmem")


def test_sizes_and_prot_mask(run: Run) -> None:
    fd = run(o.OpenAshmem(0)).value
    assert run(o.SetSize(0, fd, 16384)) == ok(0)
    assert run(o.SetSize(0, fd, 12388)) == ok(0)
    assert run(o.GetSize(0, fd)) == ok(12388)
    assert run(o.SetSize(0, fd, 2**40 + 1)) == ok(0)
    assert run(o.GetSize(0, fd)) == ok(1)  # sys_ioctl's `int`: as 5.10.223 answers
    assert run(o.SetSize(0, fd, 2**31)) == ok(0)
    assert run(o.GetSize(0, fd)) == ok(-2**31)
    assert run(o.SetSize(0, fd, 2**63 - 1)) == ok(0)
    assert run(o.GetSize(0, fd)) == err(errno.EPERM)  # (int)-1 reads as -EPERM
    assert run(o.SetProtMask(0, fd, RW)) == ok(0)
    assert run(o.GetProtMask(0, fd)) == ok(3)


def test_shared_mapping_read_lseek_and_maps_name(run: Run) -> None:
    fd = run.region(16384, b"pytest-region", mapped=False)
    assert run(o.Mmap(0, fd, 0, 16384, RW, True)) == ok(None)
    for page, byte in enumerate(b"ABCD"):
        assert run(o.Store(0, 0, page * P, bytes([byte]) * P)) == ok(None)
    assert run(o.MapsName(0, 0)) == ok(b"/dev/ashmem/pytest-region (deleted)")
    assert (run(o.Lseek(0, fd, 0, 0)), run(o.Read(0, fd, 4))) == (ok(0), ok(b"AAAA"))
    assert (run(o.Lseek(0, fd, P, 0)), run(o.Read(0, fd, 2))) == (ok(P), ok(b"BB"))
    assert run(o.Mmap(0, fd, 1, 16384, RW, True)) == ok(None)  # a second mapping aliases the first
    assert run(o.Store(0, 1, 5, b"!")) == ok(None)
    assert run(o.Load(0, 0, 4, 2)) == ok(b"A!")


def test_pin_unpin_purge_cycle(run: Run) -> None:
    fd = run.region(16384, mapped=False)
    assert run(o.Mmap(0, fd, 0, 16384, RW, True)) == ok(None)
    for page, byte in enumerate(b"ABCD"):
        run(o.Store(0, 0, page * P, bytes([byte]) * P))
    assert run(o.GetPinStatus(0, fd, P, 2 * P)) == ok(ASHMEM_IS_PINNED)
    assert run(o.Pin(0, fd, P, 2 * P)) == ok(ASHMEM_NOT_PURGED)
    assert run(o.Unpin(0, fd, P, 2 * P)) == ok(0)
    statuses = [run(o.GetPinStatus(0, fd, off, n)).value for off, n in [(P, 2 * P), (0, P), (3 * P, P), (0, 0)]]
    assert statuses == [ASHMEM_IS_UNPINNED, ASHMEM_IS_PINNED, ASHMEM_IS_PINNED, ASHMEM_IS_UNPINNED]
    assert run(o.Load(0, 0, P, 1)) == ok(b"B")  # still there before a purge
    assert run(o.PurgeAllCaches(0, fd)) == ok(2)
    assert run(o.PurgeAllCaches(0, fd)) == ok(0)
    assert run(o.GetPinStatus(0, fd, P, 2 * P)) == ok(ASHMEM_IS_UNPINNED)
    assert run(o.Pin(0, fd, P, P)) == ok(ASHMEM_WAS_PURGED)
    assert run(o.Pin(0, fd, 2 * P, P)) == ok(ASHMEM_WAS_PURGED)
    assert run(o.Pin(0, fd, P, 2 * P)) == ok(ASHMEM_NOT_PURGED)
    assert run(o.Load(0, 0, P, 2 * P)) == ok(bytes(2 * P))
    assert (run(o.Load(0, 0, 0, 1)), run(o.Load(0, 0, 3 * P, 1))) == (ok(b"A"), ok(b"D"))
    assert run(o.Unpin(0, fd, 0, P)) == ok(0)
    assert run(o.Pin(0, fd, 0, P)) == ok(ASHMEM_NOT_PURGED)
    assert run(o.Load(0, 0, 0, 1)) == ok(b"A")


def test_another_process_shares_the_region(run: Run) -> None:
    run(o.Spawn(1))
    fd = run.region(P)
    (theirs,) = run(o.BinderSend(0, 1, (fd,))).value
    assert run(o.Mmap(1, theirs, 0, P, RW, True)) == ok(None)
    assert run(o.Store(1, 0, 0, b"child")) == ok(None)
    assert run(o.Load(0, 900 + fd, 0, 5)) == ok(b"child")


# --- kernel-observed §2: error cases -------------------------------------------------------------

def test_set_size_and_name_after_mmap(run: Run) -> None:
    fd = run.region(16384, b"kept")
    assert run(o.SetSize(0, fd, P)) == err(EINVAL)
    assert run(o.GetSize(0, fd)) == ok(16384)
    assert run(o.SetName(0, fd, b"other")) == err(EINVAL)
    assert run(o.GetName(0, fd)) == ok(b"kept")
    assert run(o.SetName(0, fd, None)) == err(EFAULT)  # the copy comes before the mapped check


def test_mmap_errors(run: Run) -> None:
    fd = run.region(4 * P, mapped=False)
    assert run(o.Mmap(0, fd, 0, 5 * P, PROT_READ, True)) == err(EINVAL)
    unsized = run(o.OpenAshmem(0)).value
    assert run(o.Mmap(0, unsized, 1, P, PROT_READ, True)) == err(EINVAL)
    assert run(o.SetProtMask(0, fd, RW)) == ok(0)
    assert run(o.Mmap(0, fd, 2, P, PROT_EXEC, True)) == err(EPERM)
    assert run(o.SetProtMask(0, fd, PROT_READ)) == ok(0)
    assert run(o.Mmap(0, fd, 3, P, RW, True)) == err(EPERM)
    assert run(o.Mmap(0, fd, 4, P, RW, False)) == err(EPERM)  # MAP_PRIVATE is checked too
    assert run(o.Mmap(0, fd, 5, P, PROT_READ, True)) == ok(None)
    assert run(o.Mprotect(0, 5, RW)) == err(EACCES)  # VM_MAYWRITE was cleared
    assert run(o.SetProtMask(0, fd, 0)) == ok(0)
    assert run(o.Mmap(0, fd, 6, P, PROT_READ, True)) == err(EPERM)


def test_prot_mask_only_shrinks(run: Run) -> None:
    fd = run(o.OpenAshmem(0)).value
    assert run(o.SetProtMask(0, fd, RW)) == ok(0)
    assert run(o.SetProtMask(0, fd, 7)) == err(EINVAL)
    assert run(o.SetProtMask(0, fd, 0)) == ok(0)
    assert run(o.SetProtMask(0, fd, PROT_READ)) == err(EINVAL)
    assert run(o.SetProtMask(0, fd, 8)) == err(EINVAL)


def test_prot_mask_after_mmap_affects_only_new_mappings(run: Run) -> None:
    fd = run.region(P, mapped=False)
    assert run(o.Mmap(0, fd, 0, P, RW, True)) == ok(None)
    assert run(o.SetProtMask(0, fd, PROT_READ)) == ok(0)
    assert run(o.Store(0, 0, 0, b"w")) == ok(None)
    assert run(o.Mmap(0, fd, 1, P, RW, True)) == err(EPERM)
    assert run(o.Mprotect(0, 0, 0)) == ok(None)
    assert run(o.Mprotect(0, 0, RW)) == ok(None)  # VM_MAYWRITE was fixed at mmap time


@pytest.mark.parametrize(("offset", "length"), [(100, P), (0, 100), (4 * P, P), (3 * P, 2 * P), (P, 2**32 - P)])
def test_pin_argument_errors(run: Run, offset: int, length: int) -> None:
    fd = run.region(4 * P)
    for op in (o.Pin, o.Unpin, o.GetPinStatus):
        assert run(op(0, fd, offset, length)) == err(EINVAL)


def test_pin_before_mmap_unknown_ioctl_write_lseek_read(run: Run) -> None:
    fd = run.region(4 * P, mapped=False)
    assert run(o.Pin(0, fd, 0, P)) == err(EINVAL)
    assert run.sim.kernel.ioctl(0, fd, AshmemIoctl.PIN, None) == err(EFAULT)
    assert run.sim.kernel.ioctl(0, fd, 0x770B) == err(errno.ENOTTY)  # _IO(0x77, 11)
    assert run(o.Write(0, fd, b"w")) == err(EINVAL)
    unsized = run(o.OpenAshmem(0)).value
    assert run(o.Lseek(0, unsized, 0, 0)) == err(EINVAL)
    assert run(o.Read(0, unsized, 8)) == ok(b"")
    assert run(o.Read(0, fd, 8)) == err(EBADF)  # sized, not materialized
    assert run(o.Lseek(0, fd, 0, 0)) == err(EBADF)


def test_purge_all_caches_needs_cap_sys_admin(run: Run) -> None:
    run(o.Spawn(1, privileged=False))
    fd = run.region(P, proc=1)
    assert run(o.PurgeAllCaches(1, fd)) == err(EPERM)


# --- kernel-observed §3: binder ------------------------------------------------------------------

def test_binder_delivers_lowest_free_cloexec_same_description(run: Run) -> None:
    run(o.Spawn(1))
    fd = run.region(4 * P)
    assert run(o.Dup(0, fd)) == ok(fd + 1)
    assert run(o.GetFdFlags(0, fd + 1)) == ok(0)
    assert run(o.Lseek(0, fd, 123, 0)) == ok(123)
    got = run(o.BinderSend(0, 1, (fd + 1, fd + 1)))
    assert got == ok((3, 4))  # the same fd twice: two fds
    assert [run(o.GetFdFlags(1, n)) for n in (3, 4)] == [ok(1), ok(1)]
    assert run(o.Lseek(1, 3, 0, 1)) == ok(123)  # the file position is shared
    assert run(o.Lseek(1, 4, 456, 0)) == ok(456)
    assert run(o.Lseek(0, fd, 0, 1)) == ok(456)
    assert run(o.ListFds(0)) == ok((0, 1, 2, fd, fd + 1))  # the sender's fds are untouched
    assert run(o.BinderSend(0, 1, ())) == ok(())


@pytest.mark.parametrize("bad", [987, 0xFFFFFFFF, "path", "closed"])
def test_binder_send_of_a_bad_fd_delivers_nothing(run: Run, bad: int | str) -> None:
    run(o.Spawn(1))
    fd = run.region(P)
    if bad == "path":
        bad = run(o.OpenPath(0)).value
    elif bad == "closed":
        bad = run.region(P, mapped=False)
        run(o.Close(0, bad))
    assert run(o.BinderSend(0, 1, (fd, int(bad)))) == ok(BR_FAILED_REPLY)
    assert run(o.ListFds(1)) == ok((0, 1, 2))


def test_binder_target_must_accept_fds(run: Run) -> None:
    run(o.Spawn(1, accepts_fds=False))
    fd = run.region(P)
    assert run(o.BinderSend(0, 1, (fd,))) == ok(BR_FAILED_REPLY)
    assert run(o.BinderSend(0, 1, ())) == ok(())
    assert run(o.ListFds(1)) == ok((0, 1, 2))


def test_binder_reply(run: Run) -> None:
    run(o.Spawn(1))
    fd = run.region(P, proc=1)
    assert run(o.BinderReply(0, 1, (fd,), True)) == ok(((3,), BR_TRANSACTION_COMPLETE))
    assert run(o.GetFdFlags(0, 3)) == ok(1)
    assert run(o.BinderReply(0, 1, (fd,), False)) == ok((BR_FAILED_REPLY, BR_TRANSACTION_COMPLETE))
    assert run(o.BinderReply(0, 1, (55,), True)) == ok((BR_FAILED_REPLY, BR_TRANSACTION_COMPLETE))
    assert run(o.BinderReply(0, 1, (), False)) == ok(((), BR_TRANSACTION_COMPLETE))
    assert run(o.ListFds(0)) == ok((0, 1, 2, 3))
    assert run(o.ListFds(1)) == ok((0, 1, 2, fd))  # the replier keeps its own copy


# --- the driver's edge cases (ashmem.md §2–5, code-read) ------------------------------------------

def test_adjacent_unpins_stay_separate_and_merges_inherit_purged(run: Run) -> None:
    fd = run.region(8 * P)
    run(o.Unpin(0, fd, 0, P))
    run(o.Unpin(0, fd, P, P))
    assert run.ranges(fd) == [(1, 1, False), (0, 0, False)]
    assert run.sim.kernel.shrink(1) == 1  # the oldest: page 0
    assert run.ranges(fd) == [(1, 1, False), (0, 0, True)]
    run(o.Unpin(0, fd, 0, 2 * P))  # absorbs both; the purged flag wins, off the LRU
    assert run.ranges(fd) == [(0, 1, True)]
    assert run.sim.kernel.lru_count == 0
    run(o.Unpin(0, fd, 4 * P, 3 * P))
    assert run(o.Pin(0, fd, 5 * P, P)) == ok(ASHMEM_NOT_PURGED)  # case 4: a hole in the middle
    assert run.ranges(fd) == [(6, 6, False), (4, 4, False), (0, 1, True)]
    assert run.sim.kernel.lru_count == 2


def test_degenerate_range_at_the_end(run: Run) -> None:
    fd = run.region(4 * P)
    assert run(o.Unpin(0, fd, 4 * P, 0)) == ok(0)  # offset == PAGE_ALIGN(size), len 0
    assert run.ranges(fd) == [(4, 3, False)]
    assert run(o.GetPinStatus(0, fd, 0, 0)) == ok(ASHMEM_IS_UNPINNED)  # the last page "overlaps" it
    assert run(o.GetPinStatus(0, fd, 0, P)) == ok(ASHMEM_IS_PINNED)
    assert run(o.PurgeAllCaches(0, fd)) == ok(0)
    assert run(o.Pin(0, fd, 0, 0)) == ok(ASHMEM_WAS_PURGED)  # spurious, as the C driver does
    assert run.ranges(fd) == []


def test_len_zero_wraps_modulo_2_32(run: Run) -> None:
    fd = run.region(2**32, mapped=False)
    assert run(o.Mmap(0, fd, 0, P, RW, True)) == ok(None)
    assert run(o.Store(0, 0, 0, b"data")) == ok(None)
    assert run(o.Unpin(0, fd, 0, 0)) == ok(0)  # len = 2^32 mod 2^32 = 0: pgend = SIZE_MAX
    assert run.ranges(fd) == [(0, SIZE_MAX, False)]
    assert run.sim.kernel.lru_count == 0  # range_size wraps to 0
    assert run(o.PurgeAllCaches(0, fd)) == ok(0)
    assert run(o.Load(0, 0, 0, 4)) == ok(bytes(4))  # the punch reached the end of the file


def test_offset_mapping_past_the_size_sigbus_and_partial_store(run: Run) -> None:
    fd = run.region(2 * P, mapped=False)
    assert run(o.Mmap(0, fd, 0, 2 * P, RW, True, P)) == ok(None)  # the file offset is not checked
    assert run(o.Store(0, 0, P - 2, b"abcd")) == fault(SIGBUS)
    assert run(o.Load(0, 0, P - 2, 2)) == ok(b"ab")  # the bytes before the bad page were written
    assert run(o.Load(0, 0, P, 1)) == fault(SIGBUS)
    assert run(o.Mprotect(0, 0, 0)) == ok(None)
    assert run(o.Load(0, 0, P, 1)) == fault(SIGSEGV)  # the permission check comes first
    sized = run.region(P + 1, mapped=False)
    assert run(o.Mmap(0, sized, 1, 2 * P, RW, True)) == ok(None)
    assert run(o.Load(0, 1, P + 100, 1)) == ok(b"\0")  # within ceil(size / PAGE) pages


def test_private_mappings_are_anonymous(run: Run) -> None:
    fd = run.region(P, b"priv", mapped=False)
    assert run(o.Mmap(0, fd, 0, P, RW, True)) == ok(None)
    assert run(o.Store(0, 0, 0, b"shared")) == ok(None)
    assert run(o.Mmap(0, fd, 1, P, RW, False)) == ok(None)
    assert run(o.Load(0, 1, 0, 6)) == ok(bytes(6))
    assert run(o.Store(0, 1, 0, b"mine")) == ok(None)
    assert run(o.Load(0, 0, 0, 6)) == ok(b"shared")
    assert run(o.MapsName(0, 1)) == ok(b"/dev/ashmem/priv (deleted)")
    assert run(o.Mprotect(0, 1, PROT_WRITE)) == ok(None)
    assert run(o.Load(0, 1, 0, 4)) == ok(b"mine")  # write-only is readable on x86
    assert run(o.Mprotect(0, 1, PROT_READ)) == ok(None)
    assert run(o.Store(0, 1, 0, b"x")) == fault(SIGSEGV)


def test_private_mmap_materializes_too(run: Run) -> None:
    fd = run.region(P, mapped=False)
    assert run(o.Mmap(0, fd, 0, P, PROT_READ, False)) == ok(None)
    assert run(o.SetSize(0, fd, 2 * P)) == err(EINVAL)
    assert run(o.Pin(0, fd, 0, 0)) == ok(ASHMEM_NOT_PURGED)


def test_maps_names(run: Run) -> None:
    unnamed = run.region(P, b"", mapped=False)
    newline = run.region(P, b"new\nline", mapped=False)
    run(o.Mmap(0, unnamed, 0, P, PROT_READ, True))
    run(o.Mmap(0, newline, 1, P, PROT_READ, True))
    assert run(o.MapsName(0, 0)) == ok(b"/dev/ashmem (deleted)")
    assert run(o.MapsName(0, 1)) == ok(b"/dev/ashmem/new\\012line (deleted)")


def test_mapping_outlives_every_fd_and_leaves_the_lru(run: Run) -> None:
    fd = run.region(4 * P)
    run(o.Store(0, 900 + fd, 0, b"live"))
    run(o.Unpin(0, fd, 0, 2 * P))
    assert run.sim.kernel.lru_count == 2
    assert run(o.Close(0, fd)) == ok(None)
    assert run.sim.kernel.lru_count == 0
    assert run(o.Load(0, 900 + fd, 0, 4)) == ok(b"live")
    other = run.region(P, mapped=False)
    assert run(o.PurgeAllCaches(0, other)) == ok(0)
    assert run(o.Load(0, 900 + fd, 0, 4)) == ok(b"live")


def test_unmapped_map_ids(run: Run) -> None:
    fd = run.region(P)
    assert run(o.Munmap(0, 900 + fd)) == ok(None)
    assert run(o.Munmap(0, 900 + fd)) == ok(None)  # munmap of an unmapped range succeeds
    assert run(o.Load(0, 900 + fd, 0, 1)) == fault(SIGSEGV)
    with pytest.raises(ValueError, match="never had a mapping"):
        run(o.Munmap(0, 12345))
    with pytest.raises(ValueError, match="no mapping"):
        run(o.Load(0, 12345, 0, 1))
    assert run(o.Mmap(0, fd, 1, P, PROT_READ, True)) == ok(None)
    with pytest.raises(ValueError, match="outside a mapping"):
        run(o.Load(0, 1, P, 1))


def test_fds_o_path_dup_exit(run: Run) -> None:
    path = run(o.OpenPath(0)).value
    assert path == 3 and run(o.GetFdFlags(0, path)) == ok(0)
    for op in (o.GetSize(0, path), o.Pin(0, path, 0, 0), o.Read(0, path, 1), o.Lseek(0, path, 0, 0),
               o.Write(0, path, b"x"), o.Mmap(0, path, 0, P, PROT_READ, True)):
        assert run(op) == err(EBADF), op
    assert run(o.Dup(0, path)) == ok(4)
    assert run(o.Close(0, 3)) == ok(None)
    assert run(o.Close(0, 3)) == err(EBADF)
    assert run(o.CreateRegion(0, b"r", P)) == ok(3)  # lowest free
    assert run(o.GetSize(0, 1)) == err(errno.ENOTTY)  # stdio is /dev/null
    assert run(o.Lseek(0, 3, 0, 7)) == err(EINVAL)
    run(o.Spawn(1))
    assert run(o.Exit(1)) == ok(None)
    assert run(o.Spawn(1)) == ok((0, 1, 2))


# --- the range list against a per-page model (the Rust driver's range_test) ----------------------

PAGES = 8
page_ops = st.lists(st.tuples(st.sampled_from(["pin", "unpin", "status", "shrink"]),
                              st.integers(0, PAGES - 1), st.integers(1, PAGES)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(page_ops)
def test_range_list_agrees_with_a_per_page_model(program: list[tuple[str, int, int]]) -> None:
    k = Kernel()
    k.spawn(0)
    fd = k.ashmem_create_region(0, b"model", PAGES * P).value
    k.mmap(0, 0, fd, PAGES * P, RW, True)
    unpinned: set[int] = set()
    area = k.area(0, fd)
    for what, first, count in program:
        pages = set(range(first, min(first + count, PAGES)))
        arg = (first * P, len(pages) * P)
        if what == "pin":
            purged_before = any(r.purged and pages & set(range(r.pgstart, r.pgend + 1)) for r in area.unpinned.ranges)
            assert k.ioctl(0, fd, AshmemIoctl.PIN, arg) == ok(int(purged_before))
            unpinned -= pages
        elif what == "unpin":
            assert k.ioctl(0, fd, AshmemIoctl.UNPIN, arg) == ok(0)
            unpinned |= pages
        elif what == "status":
            expected = ASHMEM_IS_UNPINNED if pages & unpinned else ASHMEM_IS_PINNED
            assert k.ioctl(0, fd, AshmemIoctl.GET_PIN_STATUS, arg) == ok(expected)
        else:
            k.shrink(count)
        ranges = area.unpinned.ranges
        assert all(a.pgstart > b.pgend for a, b in itertools.pairwise(ranges)), "descending, disjoint"
        assert all(r.pgstart <= r.pgend for r in ranges)
        assert {p for r in ranges for p in range(r.pgstart, r.pgend + 1)} == unpinned
        on_lru = [r for r in ranges if not r.purged]
        assert set(k.ashmem.lru.ranges) == set(on_lru)
        assert k.lru_count == sum(r.pgend - r.pgstart + 1 for r in on_lru)


# --- determinism ---------------------------------------------------------------------------------

def _program(seed: int) -> list[o.Op]:
    """A fixed program that unpins and reads back a lot, so memory pressure shows."""
    prog: list[o.Op] = [o.Spawn(0), o.CreateRegion(0, b"d", 8 * P), o.Mmap(0, 3, 0, 8 * P, RW, True)]
    for i in range(60):
        page = (i * 5 + seed) % 8
        prog += [o.Store(0, 0, page * P, b"x"), o.Unpin(0, 3, page * P, P), o.Load(0, 0, page * P, 1),
                 o.Pin(0, 3, page * P, P)]
    return prog


def test_same_seed_same_outcomes() -> None:
    def outcomes(seed: int) -> list[Outcome]:
        sim = SimAdapter(seed=str(seed))
        sim.reset()
        return [sim.perform(op) for op in _program(1)]

    assert outcomes(7) == outcomes(7)
    runs = {tuple(outcomes(seed)) for seed in range(4)}
    assert len(runs) > 1, "memory pressure should depend on the seed"
    assert any(ok(ASHMEM_WAS_PURGED) in r for r in runs), "memory pressure should purge sometimes"


random_ops = st.lists(st.one_of(
    st.builds(o.CreateRegion, st.just(0), st.just(b"d"), st.sampled_from([P, 4 * P, 0])),
    st.builds(lambda fd, m: o.Mmap(0, fd, m, 4 * P, RW, True), st.integers(3, 5), st.integers(0, 3)),
    st.builds(lambda fd, a, n: o.Unpin(0, fd, a * P, n * P), st.integers(3, 5), st.integers(0, 4), st.integers(0, 2)),
    st.builds(lambda fd, a, n: o.Pin(0, fd, a * P, n * P), st.integers(3, 5), st.integers(0, 4), st.integers(0, 2)),
    st.builds(lambda m, a: o.Store(0, m, a * P, b"z"), st.integers(0, 3), st.integers(0, 3)),
    st.builds(lambda m, a: o.Load(0, m, a * P, 1), st.integers(0, 3), st.integers(0, 3)),
    st.builds(lambda fd: o.PurgeAllCaches(0, fd), st.integers(3, 5)),
    st.builds(lambda fd: o.Close(0, fd), st.integers(3, 5)),
), max_size=30)


@settings(max_examples=100, deadline=None)
@given(random_ops, st.integers(0, 2**32))
def test_random_programs_replay_exactly(program: list[o.Op], seed: int) -> None:
    def outcomes() -> list[object]:
        sim = SimAdapter(seed=seed)
        sim.perform(o.Spawn(0))
        results: list[object] = []
        for op in program:
            try:
                results.append(sim.perform(op))
            except ValueError as exc:  # a mapping this random program never made
                results.append(str(exc))
        return results

    assert outcomes() == outcomes()


# --- the adapter ---------------------------------------------------------------------------------

def test_adapter_declarations_and_options() -> None:
    sim = SimAdapter()
    assert (sim.name, sim.profile, sim.page_size, sim.long_bits) == ("sim", "ashmem", 4096, 64)
    assert sim.capabilities == frozenset(Capability) and dict(sim.deviations) == {}
    assert sim.spontaneous_purge
    assert SimAdapter(seed="3").seed == 3
    with pytest.raises(ValueError, match="color"):
        SimAdapter(color="blue")
    with pytest.raises(ValueError, match="not an integer"):
        SimAdapter(seed="x")


def test_a_machine_with_finite_ram() -> None:
    sim = SimAdapter(ram=str(64 * P))
    sim.perform(o.Spawn(0))
    fd = sim.perform(o.CreateRegion(0, b"big", 65 * P)).value
    assert sim.perform(o.Mmap(0, fd, 0, P, PROT_READ, True)) == err(errno.ENOMEM)
    assert sim.perform(o.SetSize(0, fd, 64 * P)) == ok(0)  # still not materialized
    assert sim.perform(o.Mmap(0, fd, 0, P, PROT_READ, True)) == ok(None)


def test_adapter_reset_starts_from_nothing() -> None:
    sim = SimAdapter()
    sim.perform(o.Spawn(0))
    sim.reset()
    with pytest.raises(ValueError, match="does not exist"):
        sim.perform(o.ListFds(0))
    assert sim.perform(o.Spawn(0)) == ok((0, 1, 2))
