"""Purging: `ashmem_shrink_scan` / `ashmem_shrink_count` (drivers/staging/android/ashmem.c,
Linux 5.10), and the memory pressure that decides when the shrinker runs.

The shrinker takes ranges from the LRU head (least recently unpinned first), whole: it marks
each purged, takes it off the LRU, and punches a hole over its pages in the backing file, so
every shared mapping and read() sees zeros there. It stops after `nr_to_scan` ranges (5.10
counts ranges, not pages). A purged range stays in its area's list (still unpinned) and never
returns to the LRU until it is pinned and unpinned again.

The real kernel calls the shrinker whenever memory is short. Here a `MemoryPressure` policy,
seeded, decides after each operation: mostly nothing, sometimes one range, rarely everything.
The same seed and the same operations always purge the same ranges, so a failing example
replays exactly.
"""

from __future__ import annotations

import random

from ashcheck.reference.cint import LONG_MAX, PAGE_SIZE, s64, u64
from ashcheck.reference.ranges import Lru, range_size


def shrink_scan(lru: Lru, nr_to_scan: int) -> int:
    """ashmem_shrink_scan: purge up to `nr_to_scan` ranges from the LRU head; pages freed."""
    freed = 0
    while (r := lru.head()) is not None:
        # loff_t start = pgstart * PAGE_SIZE, end = (pgend + 1) * PAGE_SIZE, in size_t first:
        # a range ending at page SIZE_MAX has end 0, and shmem then truncates to the file's end.
        start = s64(u64(r.pgstart * PAGE_SIZE))
        end = s64(u64(u64(r.pgend + 1) * PAGE_SIZE))
        r.purged = True
        lru.delete(r)
        freed = u64(freed + range_size(r))
        r.file.punch_hole(start, end - start)
        nr_to_scan -= 1
        if nr_to_scan <= 0:
            break
    return freed


class MemoryPressure:
    """How often the simulated machine runs short of memory: after each operation, nothing with
    probability QUIET, one LRU range up to ONE, otherwise the whole LRU."""

    # Memory pressure is the exception: unpinned data usually lives long enough to be used. A draw
    # per operation, and the checks after each step are operations too (three or so a step): at
    # 5% a draw, 95% of the operations of a ci run met an empty LRU, and a purge met two ranges or
    # more 9 times in 540 (measured), so what the LRU's order and the shrinker's scan do to several
    # ranges was rarely seen. At 1%: 88% and 6% of operations with two ranges or more (2.4% before).
    QUIET = 0.99
    ONE = 0.998

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def ranges_to_scan(self) -> int:
        """0 (no shrinker call), 1, or LONG_MAX (everything); one draw per call, always, so the
        sequence of decisions depends only on the seed and the number of operations."""
        draw = self.rng.random()
        if draw < self.QUIET:
            return 0
        return 1 if draw < self.ONE else LONG_MAX
