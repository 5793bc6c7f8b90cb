"""Pin/unpin range algebra of the C driver, as pure functions.

Theory (drivers/staging/android/ashmem.c, Linux 5.10: ashmem_pin, ashmem_unpin,
ashmem_get_pin_status; ../shared/semantics/ashmem.md §3):

Pages are pinned by default. An area keeps a list of *unpinned ranges*: inclusive page ranges
`(start, end, purged)`, disjoint, kept in descending order (the C list order, which decides where
walks stop). The algebra is not a set algebra:

- UNPIN [s,e]: if one range already contains [s,e], nothing changes (its purged flag and LRU place
  stay). Otherwise every range that overlaps [s,e] (contains s, contains e, or lies inside) is
  absorbed: [s,e] widens to cover it and inherits its purged flag; the walk restarts. Ranges that
  are merely *adjacent* are not merged. The result is inserted as one new range.
- PIN [s,e]: every overlapping range is cut: removed (inside [s,e]), shrunk from the start or the
  end, or split in two (the hole case, after which the walk stops). The result is WAS_PURGED if
  any overlapped range was purged — per range, not per page.
- GET_PIN_STATUS [s,e]: IS_UNPINNED if any range overlaps, purged or not.

A range with end = start - 1 can exist: UNPIN(offset = PAGE_ALIGN(size), len = 0) passes every
argument check and inserts it (code-read, ashmem.md §3.1). It covers no page, but the overlap
test still matches queries that end on the last page. It is kept here as the C code keeps it.
So can [0, SIZE_MAX]: offset 0 with a len whose u32 wrapped to 0 makes pgend = 0 + 0 - 1 in size_t.
It overlaps everything, counts 0 pages on the LRU, and a purge of it frees the whole file.
"""

from __future__ import annotations

from ashcheck.spec.constants import SIZE_MAX  # page numbers are size_t in the driver

Range = tuple[int, int, bool]  # (first page, last page, purged)
Ranges = tuple[Range, ...]     # descending, as the C list


def _in(r: Range, page: int) -> bool:
    return r[0] <= page <= r[1]


def overlaps(r: Range, s: int, e: int) -> bool:
    """page_range_in_range(): contains s, or contains e, or lies inside [s, e]."""
    return _in(r, s) or _in(r, e) or (r[0] >= s and r[1] <= e)


def _before(r: Range, page: int) -> bool:
    """range_before_page(): the walk stops at the first range entirely below `page`."""
    return r[1] < page


def unpin(ranges: Ranges, s: int, e: int) -> tuple[Ranges, Range | None]:
    """Returns the new list and the inserted range (None when an existing range contained [s,e])."""
    current = list(ranges)
    purged = False
    restart = True
    while restart:
        restart = False
        for i, r in enumerate(current):
            if _before(r, s):
                break
            if r[0] <= s and r[1] >= e:  # page_range_subsumed_by_range: nothing to do
                return ranges, None
            if overlaps(r, s, e):
                s, e, purged = min(r[0], s), max(r[1], e), purged or r[2]
                del current[i]
                restart = True
                break
    new: Range = (s, e, purged)
    at = next((i for i, r in enumerate(current) if _before(r, s)), len(current))
    current.insert(at, new)
    return tuple(current), new


def pin(ranges: Ranges, s: int, e: int) -> tuple[Ranges, bool, Range | None]:
    """Returns the new list, whether any overlapped range was purged, and the range created by a
    split (the right part of the hole case), which goes to the young end of the LRU."""
    out: list[Range] = []
    was_purged = False
    created: Range | None = None
    for i, r in enumerate(ranges):
        if _before(r, s):
            out.extend(ranges[i:])
            break
        if not overlaps(r, s, e):
            out.append(r)
            continue
        was_purged = was_purged or r[2]
        if r[0] >= s and r[1] <= e:          # case 1: inside [s,e]: delete
            continue
        if r[0] >= s:                         # case 2: overlaps its start: keep the tail
            out.append((e + 1, r[1], r[2]))
            continue
        if r[1] <= e:                         # case 3: overlaps its end: keep the head
            out.append((r[0], s - 1, r[2]))
            continue
        created = (e + 1, r[1], r[2])         # case 4: punch a hole, then stop
        out.extend([created, (r[0], s - 1, r[2])])
        out.extend(ranges[i + 1:])
        break
    return tuple(out), was_purged, created


def is_unpinned(ranges: Ranges, s: int, e: int) -> bool:
    for r in ranges:
        if _before(r, s):
            return False
        if overlaps(r, s, e):
            return True
    return False


def pages(r: Range) -> int:
    """range_size(): pgend - pgstart + 1 in size_t, so 0 for [N, N-1] and for [0, SIZE_MAX]."""
    return (r[1] - r[0] + 1) & SIZE_MAX
