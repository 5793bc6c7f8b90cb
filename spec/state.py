"""The abstract state the spec reasons about.

A `Kernel` holds processes (fd tables, mappings) and regions. A region is one open file
description: what `open("/dev/ashmem")` or `memfd_create` made, shared by every fd that dup,
fork or binder produced from it (ashmem.md §5), so name, size, prot mask, pin state and file
position live here.

Nondeterminism is explicit. The shrinker may purge an unpinned, not yet purged range, whole, at
any time (ashmem.md §3.5), and nothing tells the caller when; of one region's ranges, the one that
went on the LRU first goes first (Region.lru). So a region's memory is not one
value but a set of *possible worlds* (`Mem`): page contents plus the unpinned ranges with their
purged flags. Every operation maps each world to its outcome; an observation keeps only the
worlds that explain it (once zeros are seen, the range was purged). Worlds never differ in
anything but memory contents and purged flags.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import TypeVar

from ashcheck.spec import pins
from ashcheck.spec.constants import MAX_LFS_FILESIZE, page_align
from ashcheck.spec.profiles import Profile

Pages = tuple[tuple[int, bytes], ...]  # sorted (page index, contents) of the non-zero pages


@dataclass(frozen=True, slots=True)
class Mem:
    """One possible world of a region's backing memory.

    `present` is the page cache of the backing file: the pages a fault through a file-backed
    mapping or a write brought in (zero or not), less those a purge punched out. SEEK_DATA and
    SEEK_HOLE answer from it (shmem, with transparent huge pages off, the distributions' default).
    A page fallocate() allocated is not in it until written or faulted: shmem keeps it !Uptodate;
    `allocated` holds those, since a second fallocate over one initializes it (present from then).
    """

    pages: Pages = ()
    ranges: pins.Ranges = ()
    present: frozenset[int] = frozenset()
    allocated: frozenset[int] = frozenset()  # fallocated, never written or faulted: holes to SEEK_DATA

    def read(self, start: int, length: int, page: int) -> bytes:
        out = bytearray(length)
        data = dict(self.pages)
        for index in range(start // page, (start + length - 1) // page + 1 if length else 0):
            content = data.get(index)
            if content is None:
                continue
            lo, hi = max(start, index * page), min(start + length, (index + 1) * page)
            out[lo - start:hi - start] = content[lo - index * page:hi - index * page]
        return bytes(out)

    def write(self, start: int, chunk: bytes, page: int) -> Mem:
        data = dict(self.pages)
        end = start + len(chunk)
        for index in range(start // page, (end - 1) // page + 1 if chunk else 0):
            content = bytearray(data.get(index, bytes(page)))
            lo, hi = max(start, index * page), min(end, (index + 1) * page)
            content[lo - index * page:hi - index * page] = chunk[lo - start:hi - start]
            data[index] = bytes(content)
        touched = range(start // page, (end - 1) // page + 1) if chunk else range(0)
        return replace(self, pages=_normal(data), present=self.present.union(touched))

    def touch(self, indexes: set[int]) -> Mem:
        """The file pages `indexes` were faulted in (a load or a copy-on-write through a mapping)."""
        return self if indexes <= self.present else replace(self, present=self.present | indexes)

    def punch(self, start: int, end: int, page: int) -> Mem:
        """shmem_truncate_range(start, end - 1): the bytes zeroed; the pages wholly inside dropped (the
        range may be 2^63 bytes long: only the pages the world holds are visited)."""
        first, last = -(-start // page), end // page  # the pages wholly inside: [first, last)
        data = {}
        for index, content in self.pages:
            lo, hi = max(start, index * page) - index * page, min(end, (index + 1) * page) - index * page
            if first <= index < last:
                continue
            if lo < hi:
                content = content[:lo] + bytes(hi - lo) + content[hi:]
            data[index] = content
        return replace(self, pages=_normal(data), present=frozenset(i for i in self.present if not first <= i < last),
                       allocated=frozenset(i for i in self.allocated if not first <= i < last))

    def fallocate(self, indexes: range) -> Mem:
        """shmem_fallocate over the pages `indexes`: a page not in the cache is allocated and left
        !Uptodate (a hole still); one a fallocate left so before is initialized now, zeroed and
        Uptodate ("SGP_FALLOC on a folio fallocated earlier must initialize it now, lest undo on
        failure cancel our earlier guarantee": shmem_get_folio_gfp), and so becomes data."""
        again = self.allocated.intersection(indexes) - self.present
        fresh = frozenset(i for i in indexes if i not in self.present and i not in self.allocated)
        if not again and not fresh:
            return self
        return replace(self, present=self.present | again, allocated=(self.allocated - again) | fresh)

    def purge(self, r: pins.Range) -> Mem:
        """The shrinker punches the whole range (zeros, the pages gone) and marks it purged."""
        data = {i: c for i, c in self.pages if not r[0] <= i <= r[1]}
        ranges = tuple((s, e, True) if (s, e) == (r[0], r[1]) else (s, e, p) for s, e, p in self.ranges)
        return Mem(_normal(data), ranges, frozenset(i for i in self.present if not r[0] <= i <= r[1]),
                   frozenset(i for i in self.allocated if not r[0] <= i <= r[1]))

    def unpurged(self) -> list[pins.Range]:
        return [r for r in self.ranges if not r[2]]


def _normal(data: dict[int, bytes]) -> Pages:
    return tuple(sorted((i, c) for i, c in data.items() if c.count(0) != len(c)))


class FdKind(enum.Enum):
    REGION = "region"
    OPATH = "opath"      # open(..., O_PATH): binder's fget refuses it; ioctls say EBADF
    FOREIGN = "foreign"  # present at spawn (stdio, transport): never touched by the suite


@dataclass
class Fd:
    kind: FdKind
    rid: int = -1
    cloexec: bool = False
    origin: str = ""  # "binder", "dup", "create", …: which rule an F_GETFD on it confirms


@dataclass
class Mapping:
    rid: int
    length: int
    prot: int
    may: int          # the VM_MAY* bits fixed at mmap time: mprotect cannot go beyond them
    shared: bool
    offset: int
    private: dict[int, bytes] = field(default_factory=dict)  # MAP_PRIVATE pages of its own


@dataclass
class Region:
    rid: int
    name: bytes
    size: int
    prot_mask: int
    materialized: bool
    worlds: list[Mem]
    pos: int = 0
    fd_refs: int = 0  # fds in all processes; at 0 the area is released (ashmem_release)
    untracked: bool = False  # set aside: a violation or a lost transport made its state unknown
    name_unknown: bool = False  # set aside for its name only: a GET_NAME answer the spec does not allow
    # When each unpinned range went on the LRU (by first and last page: the ranges' geometry is the
    # same in every world). ashmem_shrink_scan walks the LRU from its head and lru_add puts a range at
    # the tail, so of one region's ranges the shrinker purges the older before a younger one; across
    # regions nothing is assumed (the LRU is system-wide, shared with every other user).
    lru: dict[tuple[int, int], int] = field(default_factory=dict)
    lru_clock: int = 0

    def npages_file(self, page: int) -> int:
        return page_align(self.size, page) // page


@dataclass
class Proc:
    privileged: bool
    accepts_fds: bool
    fds: dict[int, Fd] = field(default_factory=dict)
    maps: dict[int, Mapping] = field(default_factory=dict)
    has_sent_fds: bool = False
    fd_limit: int | None = None  # the soft RLIMIT_NOFILE once SetFdLimit set it (None: far above any fd)

    def lowest_free(self, taken: set[int] | None = None) -> int:
        fd = 0
        while fd in self.fds or (taken is not None and fd in taken):
            fd += 1
        return fd

    def beyond_limit(self, fd: int) -> bool:
        """alloc_fd refuses `fd` (EMFILE): it is at or above the soft RLIMIT_NOFILE."""
        return self.fd_limit is not None and fd >= self.fd_limit


@dataclass
class Kernel:
    profile: Profile
    page: int = 4096
    long_bits: int = 64
    spontaneous_purge: bool = False
    memory: int | None = None  # RAM + swap in bytes, for shmem's overcommit check (None: unknown)
    max_offset: int = MAX_LFS_FILESIZE  # the region files' s_maxbytes: shmem's, unless an emulation's files differ
    procs: dict[int, Proc] = field(default_factory=dict)
    regions: dict[int, Region] = field(default_factory=dict)
    next_rid: int = 0
    purges_in_flight: int = 0  # PURGE_ALL_CACHES calls begun, not returned (a concurrent history's)

    def clone(self) -> Kernel:
        """An independent copy: containers copied, the immutable parts (profile, worlds) shared."""
        twin = _shallow(self)
        twin.procs = {pid: _clone_proc(p) for pid, p in self.procs.items()}
        twin.regions = {rid: _clone_region(r) for rid, r in self.regions.items()}
        return twin

    def ulong(self, value: int) -> int:
        """`value` as the caller's unsigned long (size_t) holds it: cut to `long_bits` bits."""
        return value & ((1 << self.long_bits) - 1)

    def region_of(self, proc: int, fd: int) -> Region | None:
        entry = self.procs[proc].fds.get(fd)
        if entry is None or entry.kind is not FdKind.REGION:
            return None
        return self.regions[entry.rid]

    def new_region(self, name: bytes, size: int, prot_mask: int, materialized: bool) -> Region:
        region = Region(self.next_rid, name, size, prot_mask, materialized, [Mem()])
        self.regions[region.rid] = region
        self.next_rid += 1
        return region

    def install(self, proc: int, entry: Fd) -> int:
        """Allocate the lowest free fd, as every fd-creating syscall and binder do."""
        p = self.procs[proc]
        fd = p.lowest_free()
        p.fds[fd] = entry
        if entry.kind is FdKind.REGION:
            self.regions[entry.rid].fd_refs += 1
        return fd

    def drop_fd(self, proc: int, fd: int) -> None:
        entry = self.procs[proc].fds.pop(fd)
        if entry.kind is FdKind.REGION:
            region = self.regions[entry.rid]
            region.fd_refs -= 1
            if region.fd_refs == 0:
                release(region)
            self.collect(region.rid)

    def collect(self, rid: int) -> None:
        """Forget a region no fd and no mapping refers to any more (nothing can observe it)."""
        region = self.regions.get(rid)
        if region is None or region.fd_refs:
            return
        if any(m.rid == rid for p in self.procs.values() for m in p.maps.values()):
            return
        del self.regions[rid]


T = TypeVar("T")


def _shallow(obj: T) -> T:
    """A copy of a plain dataclass instance: its fields, not what they hold (copy.copy, faster)."""
    twin = object.__new__(type(obj))
    twin.__dict__.update(obj.__dict__)
    return twin


def _clone_proc(p: Proc) -> Proc:
    twin = _shallow(p)
    twin.fds = {fd: _shallow(e) for fd, e in p.fds.items()}
    twin.maps = {i: _clone_mapping(m) for i, m in p.maps.items()}
    return twin


def _clone_mapping(m: Mapping) -> Mapping:
    twin = _shallow(m)
    twin.private = dict(m.private)
    return twin


def _clone_region(r: Region) -> Region:
    twin = _shallow(r)
    twin.worlds = list(r.worlds)
    twin.lru = dict(r.lru)
    return twin


def release(region: Region) -> None:
    """ashmem_release(): the last fd is gone; unpinned ranges are deleted and leave the LRU, so
    nothing can purge this memory any more, and PURGE_ALL_CACHES stops counting it."""
    region.worlds = dedup([replace(w, ranges=()) for w in region.worlds])
    region.lru = {}


def relabel_lru(region: Region, after: pins.Ranges, created: pins.Range | None) -> None:
    """After a PIN or UNPIN made the ranges `after`: `created` (UNPIN's new range, or the right part
    of a range PIN split) went on the LRU's young end (range_alloc, lru_add); a range only shrunk
    keeps its place (range_shrink leaves the LRU alone); ranges gone left it."""
    lru: dict[tuple[int, int], int] = {}
    for s, e, _ in after:
        if created is not None and (s, e) == created[:2]:
            region.lru_clock += 1
            lru[(s, e)] = region.lru_clock
        else:  # the same range, or what is left of the one that held it
            lru[(s, e)] = region.lru.get((s, e), next((seq for (a, b), seq in region.lru.items()
                                                        if a <= s and e <= b), 0))
    region.lru = lru


def dedup(worlds: list[Mem]) -> list[Mem]:
    """The worlds without repeats, in their order."""
    return list(dict.fromkeys(worlds))


def expand_purges(region: Region, limit: int) -> None:
    """Close the set of worlds under "the shrinker purged one more range": the oldest on the LRU of
    those not purged in that world (Region.lru). Raises SpecLimit when the set would exceed `limit`
    (the machine then gives up on the example, not on the rule)."""
    seen = dict.fromkeys(region.worlds)
    todo = list(region.worlds)
    while todo:
        w = todo.pop()
        if not (unpurged := w.unpurged()):
            continue
        purged = w.purge(min(unpurged, key=lambda r: region.lru.get((r[0], r[1]), 0)))
        if purged not in seen:
            seen[purged] = None
            todo.append(purged)
            if len(seen) > limit:
                raise SpecLimit(f"more than {limit} possible purge histories")
    region.worlds = list(seen)


class SpecLimit(Exception):
    """The example went beyond what the spec tracks precisely; not a conformance failure."""
