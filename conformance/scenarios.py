"""Scenarios: short sequences that real callers make, as one step of the state machine.

The exploration (machines.py) may reach each of these by chance; a scenario makes the common
patterns of real code happen in every run: create, map and fill, then share; the cache pattern
of unpin, purge and pin back; names at the length limit read back at once. They can be switched
off (`Conformance.scenarios`), and the self-tests do so to show that the exploration alone
catches each injected bug.
"""

from __future__ import annotations

from functools import partial

from ashcheck.conformance.driver import Driver
from ashcheck.conformance.handles import FdRef, MapRef
from ashcheck.spec import ops as o
from ashcheck.spec.constants import PROT_READ, PROT_WRITE, SEEK_CUR, SEEK_SET, page_align

RW = PROT_READ | PROT_WRITE


def set_name_and_read_back(d: Driver, fd: FdRef, name: bytes) -> None:
    """What every caller does; back to back, so that truncation cannot hide behind a rename."""
    if d.on_fd(fd, lambda p, f: o.SetName(p, f, name)) is not None:
        d.on_fd(fd, o.GetName)


def name_at_the_limit(d: Driver, fd: FdRef, length: int) -> None:
    """A name one below, at or past the longest kept (255 for the driver, 249 for memfd)."""
    set_name_and_read_back(d, fd, bytes([0x61 + length % 26]) * length)


def huge_region(d: Driver, proc: int, size: int, noreserve: bool) -> None:
    """A region past 2 GiB: GET_SIZE comes back through ioctl's int, and the first mmap must find
    the memory for it (the machine's RAM + swap) or fail, unless it asks MAP_NORESERVE."""
    for fd in d.new_fds(o.CreateRegion(proc, b"huge", d.page)).values:
        if d.on_fd(fd, lambda p, f: o.SetSize(p, f, size)) is not None:
            d.on_fd(fd, o.GetSize)
            d.mmap(fd, d.page, RW, True, 0, noreserve=noreserve)


def mask_then_regain_write(d: Driver, fd: FdRef) -> None:
    """Drop PROT_WRITE from the mask, map read-only, and try to get write back with mprotect."""
    if d.on_fd(fd, lambda p, f: o.SetProtMask(p, f, PROT_READ)) is not None:
        for m in d.mmap(fd, d.page, PROT_READ, True, 0).values:
            d.step(o.Mprotect(m.proc, m.map_id, RW))


def private_view_of_written_data(d: Driver, m: MapRef) -> None:
    """Write through a shared mapping, then map the same fd MAP_PRIVATE and read there: ashmem
    gives zero memory of its own, memfd a copy-on-write view of what was written."""
    mapping, fd = d.mapping(m), d.resolve(m)
    if mapping is None or fd is None or not mapping.shared or not mapping.prot & PROT_WRITE:
        return
    d.step(o.Store(m.proc, m.map_id, 0, b"written"))
    for view in d.mmap(fd, d.page, PROT_READ, False, mapping.offset).values:
        d.step(o.Load(view.proc, view.map_id, 0, 7))


def map_past_the_end(d: Driver, fd: FdRef) -> None:
    """Map one page at the offset where the data ends (the driver checks only the length) and
    touch it: SIGBUS, as for any shared page past the end of the file."""
    end = page_align(d.size_of(fd), d.page)
    for m in d.mmap(fd, d.page, PROT_READ, True, end).values:
        d.step(o.Load(m.proc, m.map_id, 0, 1))


def unpin_to_the_end_purge_and_pin(d: Driver, m: MapRef, whole: bool) -> None:
    """The cache pattern: UNPIN from the second page (or, `whole`, the first: a cache dropping
    everything) to the end (len 0, which the driver computes in a u32: on a region of 4 GiB it
    wraps to a range over every page), ask the status, purge, read the purged page through the
    mapping (zeros), and PIN it back (WAS_PURGED)."""
    page = d.page
    at = 0 if whole else page
    fd, mapping = d.resolve(m), d.mapping(m)
    if fd is None or mapping is None or d.on_fd(fd, lambda p, f: o.Unpin(p, f, at, 0)) is None:
        return
    d.on_fd(fd, lambda p, f: o.GetPinStatus(p, f, at, page))
    d.on_fd(fd, o.PurgeAllCaches)
    if mapping.shared and mapping.offset == 0 and mapping.length > at and mapping.prot & PROT_READ:
        d.step(o.Load(m.proc, m.map_id, at, 8))
    d.on_fd(fd, lambda p, f: o.Pin(p, f, at, 0))


def cache_entries_purged(d: Driver, m: MapRef, sizes: list[int], order: list[int]) -> None:
    """The pattern ashmem exists for, with several entries: a cache (discardable memory, an image
    or font cache) keeps entries of `sizes` pages side by side in one mapped region and unpins
    them one by one (`order`: the entries' indices), so the LRU holds ranges of assorted sizes
    in that order; then everything is purged; then each entry is read through the mapping and
    pinned back. Every entry must read zeros and say WAS_PURGED, whatever the sizes and the order."""
    page = d.page
    fd, mapping = d.resolve(m), d.mapping(m)
    if fd is None or mapping is None:
        return
    pages = page_align(d.size_of(fd), page) // page
    spans, at = [], 0
    for n in sizes:
        if at + n > pages:
            break
        spans.append((at * page, n * page))
        at += n
    spans = [spans[i] for i in order if i < len(spans)]
    for start, length in spans:
        if d.on_fd(fd, partial(o.Unpin, offset=start, length=length)) is None:
            return
    d.on_fd(fd, o.PurgeAllCaches)
    for start, length in spans:
        inside = start - mapping.offset
        if mapping.shared and mapping.prot & PROT_READ and 0 <= inside < mapping.length:
            d.step(o.Load(m.proc, m.map_id, inside, 8))
        d.on_fd(fd, partial(o.Pin, offset=start, length=length))


def unpin_then_pin_the_middle(d: Driver, m: MapRef) -> None:
    """UNPIN three pages, then PIN the middle one: the unpinned range splits in two. Then a PIN
    whose end overflows the u32 offset + len."""
    page = d.page
    fd = d.resolve(m)
    if fd is not None and d.on_fd(fd, lambda p, f: o.Unpin(p, f, 0, 3 * page)) is not None:
        d.on_fd(fd, lambda p, f: o.Pin(p, f, page, page))
        d.on_fd(fd, lambda p, f: o.GetPinStatus(p, f, 0, page))
        d.on_fd(fd, lambda p, f: o.Pin(p, f, (1 << 32) - page, 2 * page))


def share_a_mapped_region(d: Driver, src: int, dst: int) -> None:
    """The common case end to end: create, map and fill a region, send its fd twice in one
    transaction; the receiver seeks and reads through both copies, and the sender sees the
    offset they moved (one open file description for all three)."""
    for fd in d.new_fds(o.CreateRegion(src, b"shared", d.page)).values:
        for m in d.mmap(fd, d.page, RW, True, 0).values:
            d.step(o.Store(src, m.map_id, 0, b"shared!"))
        for got in d.transfer(src, dst, (fd.fd, fd.fd)).values:
            d.on_fd(got, lambda p, f: o.Lseek(p, f, 1, SEEK_CUR))
            d.on_fd(got, lambda p, f: o.Read(p, f, 2))
        d.on_fd(fd, lambda p, f: o.Lseek(p, f, 0, SEEK_CUR))
        d.on_fd(fd, lambda p, f: o.Lseek(p, f, 3, SEEK_SET))
        d.on_fd(fd, lambda p, f: o.Read(p, f, 4))


def send_what_binder_refuses(d: Driver, src: int, dst: int) -> None:
    """An O_PATH fd, then an fd that is not open: each transaction fails whole and nothing
    appears in the receiver (the fd table check after every step sees to that)."""
    for path in d.new_fds(o.OpenPath(src)).values:
        d.on_fd(path, o.GetFdFlags)
        d.transfer(src, dst, (path.fd,))
    d.transfer(src, dst, (99,))


def reply_with_a_region(d: Driver, caller: int, replier: int) -> None:
    """A reply carrying a fresh region to a caller that accepts fds, then one that also carries
    an fd that is not open (that reply fails for the caller)."""
    if caller == replier or not d.alive(caller):
        return
    for fd in d.new_fds(o.CreateRegion(replier, b"reply", d.page)).values:
        for fds in ((fd.fd,), (fd.fd, 99)):
            d.reply(caller, replier, fds, True)
