"""Unpinned ranges and the global LRU: `ashmem_pin`, `ashmem_unpin`, `ashmem_get_pin_status`
and their helpers `range_alloc`, `range_del`, `range_shrink`, `lru_add`, `lru_del`
(drivers/staging/android/ashmem.c, Linux 5.10).

Theory of operation. Pages are pinned by default. Each area keeps `unpinned`, a list of inclusive
page ranges [pgstart, pgend], each with a `purged` flag, in **descending** order, disjoint, and
**not** merged when adjacent (unpinning page 0, then page 1, leaves two ranges). Every unpinned
range that is not purged is also on one global LRU, oldest first, and `lru_count` is the number
of pages on it; the shrinker (shrinker.py) purges ranges whole from the LRU head.

The code below follows the C walk step by step, including its arithmetic on `size_t` page
numbers: a query [N, N-1] (offset == PAGE_ALIGN(size), len 0) is a zero-page range that the
"subsumes" test still matches, and [0, SIZE_MAX] (offset 0 with a 32-bit len that wrapped to 0)
is a range of size 0 that overlaps everything. Both are recorded exactly as the driver records
them, because the lists and counts they leave behind are observable.
"""

from __future__ import annotations

from dataclasses import dataclass

from ashcheck.reference.cint import u64
from ashcheck.reference.shmem import ShmemFile
from ashcheck.spec.constants import ASHMEM_IS_PINNED, ASHMEM_IS_UNPINNED, ASHMEM_NOT_PURGED, ASHMEM_WAS_PURGED


@dataclass(eq=False)
class Range:
    """struct ashmem_range. `file` is range->asma->file: set before any range can exist
    (PIN/UNPIN need a materialized area) and never changed afterwards."""

    file: ShmemFile
    pgstart: int
    pgend: int
    purged: bool

    def __repr__(self) -> str:
        return f"Range({self.pgstart}, {self.pgend}{', purged' if self.purged else ''})"


def range_size(r: Range) -> int:
    """`pgend - pgstart + 1` in size_t: 0 for the degenerate [N, N-1] and for [0, SIZE_MAX]."""
    return u64(r.pgend - r.pgstart + 1)


def _in_range(r: Range, page: int) -> bool:  # page_in_range
    return r.pgstart <= page <= r.pgend


def _subsumes(r: Range, start: int, end: int) -> bool:  # page_range_subsumes_range: r ⊆ [start, end]
    return r.pgstart >= start and r.pgend <= end


def _subsumed_by(r: Range, start: int, end: int) -> bool:  # page_range_subsumed_by_range: r ⊇ [start, end]
    return r.pgstart <= start and r.pgend >= end


def _overlaps(r: Range, start: int, end: int) -> bool:  # page_range_in_range
    return _in_range(r, start) or _in_range(r, end) or _subsumes(r, start, end)


def _before(r: Range, page: int) -> bool:  # range_before_page: r lies entirely below `page`
    return r.pgend < page


class Lru:
    """ashmem_lru_list and lru_count (an `unsigned long`, in pages), shared by every area.
    A dict keeps insertion order and removes in O(1): first key = list head = oldest."""

    def __init__(self) -> None:
        self.ranges: dict[Range, None] = {}
        self.count = 0

    def add(self, r: Range) -> None:  # lru_add: list_add_tail
        self.ranges[r] = None
        self.count = u64(self.count + range_size(r))

    def delete(self, r: Range) -> None:  # lru_del
        del self.ranges[r]
        self.count = u64(self.count - range_size(r))

    def head(self) -> Range | None:
        return next(iter(self.ranges), None)


class UnpinnedList:
    """asma->unpinned_list with the operations that edit it, all under the (implicit) mutex."""

    def __init__(self, lru: Lru) -> None:
        self.lru = lru
        self.ranges: list[Range] = []

    # --- helpers ------------------------------------------------------------------------------
    def _alloc(self, before: Range | None, file: ShmemFile, purged: bool, start: int, end: int) -> None:
        """range_alloc: list_add_tail(new, &before->unpinned) puts it just before `before`
        (or at the list's end when the walk ran off it); on the LRU tail unless purged."""
        r = Range(file, start, end, purged)
        self.ranges.insert(len(self.ranges) if before is None else self.ranges.index(before), r)
        if not purged:
            self.lru.add(r)

    def _del(self, r: Range) -> None:  # range_del
        self.ranges.remove(r)
        if not r.purged:
            self.lru.delete(r)

    def _shrink(self, r: Range, start: int, end: int) -> None:
        """range_shrink: keeps its LRU position; lru_count moves by the size difference."""
        pre = range_size(r)
        r.pgstart, r.pgend = start, end
        if not r.purged:
            self.lru.count = u64(self.lru.count - u64(pre - range_size(r)))

    def release(self) -> None:
        """ashmem_release: every range is deleted, so it leaves the LRU and lru_count."""
        for r in list(self.ranges):
            self._del(r)

    # --- the three ioctls ---------------------------------------------------------------------
    def pin(self, file: ShmemFile, pgstart: int, pgend: int) -> int:
        """ashmem_pin: pin [pgstart, pgend]; WAS_PURGED if any overlapped range was purged."""
        ret = ASHMEM_NOT_PURGED
        for r in list(self.ranges):
            if _before(r, pgstart):
                break
            if not _overlaps(r, pgstart, pgend):
                continue
            ret |= ASHMEM_WAS_PURGED if r.purged else ASHMEM_NOT_PURGED
            if _subsumes(r, pgstart, pgend):        # case 1: the request covers the range
                self._del(r)
            elif r.pgstart >= pgstart:              # case 2: it overlaps the range's start
                self._shrink(r, u64(pgend + 1), r.pgend)
            elif r.pgend <= pgend:                  # case 3: it overlaps the range's end
                self._shrink(r, r.pgstart, u64(pgstart - 1))
            else:                                   # case 4: a hole in the middle; the walk ends
                self._alloc(r, file, r.purged, u64(pgend + 1), r.pgend)
                self._shrink(r, r.pgstart, u64(pgstart - 1))
                break
        return ret

    def unpin(self, file: ShmemFile, pgstart: int, pgend: int) -> int:
        """ashmem_unpin: unpin [pgstart, pgend]. A range that already contains it: no change at
        all. Each overlapping range is absorbed (bounds widened, `purged` OR-ed in, deleted) and
        the walk restarts; the result is inserted in order, on the LRU tail unless purged."""
        purged, restart = False, True
        while restart:
            restart, insert_before = False, None
            for r in self.ranges:
                if _before(r, pgstart):  # the insertion point
                    insert_before = r
                    break
                if _subsumed_by(r, pgstart, pgend):
                    return 0
                if _overlaps(r, pgstart, pgend):
                    pgstart, pgend = min(r.pgstart, pgstart), max(r.pgend, pgend)
                    purged |= r.purged
                    self._del(r)
                    restart = True  # goto restart
                    break
        self._alloc(insert_before, file, purged, pgstart, pgend)
        return 0

    def pin_status(self, pgstart: int, pgend: int) -> int:
        """ashmem_get_pin_status: IS_UNPINNED iff some range (purged or not) overlaps."""
        for r in self.ranges:
            if _before(r, pgstart):
                break
            if _overlaps(r, pgstart, pgend):
                return ASHMEM_IS_UNPINNED
        return ASHMEM_IS_PINNED
