"""The arguments of the exploration's operations: small domains, heavy on the boundaries the driver
checks, each decoded from plain integers.

Why integers: every step draws the same shape from Hypothesis (CHOICES integers), whatever kind of
operation the step turns out to be, and each domain below turns the next integers into an
argument. The kind of a step depends on the test case's swarm, which does not come from
Hypothesis's data (machines.py says why), and Hypothesis requires that the same prefix of data
always asks for the same draws: fixed-shape draws keep that true, however the kinds are chosen.

Offsets and lengths are in pages and become bytes with the adapter's page size
(`Driver.bytes_of`), so a 16 KiB-page device gets the same program as a 4 KiB one. Named values
stand for the edges: "unaligned" (100 bytes), "byte" (1), "odd" (a page and a byte: misaligned in
bit 0 only, so a check that masks the wrong bits lets it through), "neg" (-1: SIZE_MAX as a
length), "neg-page" (minus a page: a page-aligned offset that is huge as an unsigned long), "max"
(2^63 - 1, LONG_MAX and MAX_LFS_FILESIZE), "top" (2^32 - page: offset + len overflows PIN's u32
check), "end" (the region's page-aligned size, known only when the step runs: UNPIN from there
with len 0 makes the empty range the driver keeps; a mapping from there lies wholly past the end
of the file), "last" (the region's last byte: a read or a write from there crosses the end),
"whole" (a mapping length: the region's size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

Units = int | str  # pages, or one of the named edges above
CHOICES = 8         # integers drawn per step: one for the kind, the rest for its arguments
STEP = st.lists(st.integers(0, 2**16 - 1), min_size=CHOICES, max_size=CHOICES)
Draws = Iterator[int]
Domain = Callable[[Draws], Any]  # reads as many integers as it needs, returns an argument


@dataclass(frozen=True)
class Focus:
    """The index-th region (or mapping) of those recently used, the most recent first (Driver.focus)."""
    index: int


@dataclass(frozen=True)
class AnyFd:
    """The index-th fd handle made in this test case (modulo their number): perhaps closed since."""
    index: int


@dataclass(frozen=True)
class AnyMap:
    """The index-th mapping handle made in this test case: perhaps unmapped since."""
    index: int


@dataclass(frozen=True)
class NameInUse:
    """The name of the index-th region recently used (Driver.name): a second region under a name
    that is taken, as two processes that pick one constant do."""
    index: int


def pick(values: Sequence[Any]) -> Domain:
    """One of `values` (list a value twice to make it twice as likely)."""
    return lambda draws: values[next(draws) % len(values)]


def mixed(*parts: tuple[int, Domain]) -> Domain:
    """One of several domains, each with a weight."""
    total = sum(w for w, _ in parts)

    def decode(draws: Draws) -> Any:
        n = next(draws) % total
        for weight, domain in parts:
            if n < weight:
                return domain(draws)
            n -= weight
        raise AssertionError("unreachable")
    return decode


def listing(domain: Domain, most: int) -> Domain:
    """Between 0 and `most` values of `domain`."""
    return lambda draws: [domain(draws) for _ in range(next(draws) % (most + 1))]


def fresh_bytes(low: int, high: int) -> Domain:
    """Bytes made from the draws themselves: between `low` and `high` bytes, varied."""
    def decode(draws: Draws) -> bytes:
        n = low + next(draws) % (high - low + 1)
        seed = next(draws)
        return bytes((seed * 131 + i * 29 + (seed >> 8)) % 256 for i in range(n))
    return decode


BOOL = pick([False, True])
# The region in focus most of the time (so that one region goes deep), the next ones less.
FOCUS: Domain = lambda draws: Focus((0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3)[next(draws) % 12])  # noqa: E731
REGION_REF = mixed((4, FOCUS), (1, lambda d: AnyFd(next(d))), (1, lambda d: AnyMap(next(d))))
MAPPING_REF = mixed((4, FOCUS), (1, lambda d: AnyMap(next(d))))
MAYBE_MAPPING = mixed((1, pick([None])), (1, MAPPING_REF))
PROC_REF: Domain = lambda draws: next(draws) % 4  # noqa: E731  (the index-th live process)
BOGUS_FDS = pick([(), (), (), (99,)])
RECEIVER_ENDS = pick(["keeps", "keeps", "closes", "exits"])  # what a process that received a region does last
SHARED = pick([True, True, False])
NAME_LIMITS = pick([249, 250, 255, 256, 300])

NAMES = mixed((2, pick([b"", b"region", b"a" * 255, b"b" * 256, b"c" * 300, b"d" * 249, b"e" * 250,
                        b"na\0me", b"new\nline", b"sp ace", b"\xff\xfe\x80", b"dev/ashmem"])),
              (1, fresh_bytes(1, 12)), (1, lambda draws: NameInUse(next(draws) % 4)))
NAME_OR_NULL = mixed((6, NAMES), (1, pick([None])))

# Region sizes as (pages, extra bytes): bytes = pages * page + extra.
SMALL_SIZES = pick([(1, 0), (2, 0), (4, 0), (3, 100), (0, 1), (1, 1), (0, 0)])
# Past 2 GiB: GET_SIZE's long result is cut to ioctl's int, so each bit and errno edge of that
# cut is a size here (bit 30 only, bit 31, 2^32 - 4096 and - 4095 reading as -4096 and -4095,
# exactly 2^32 and 2^63, and MAX_LFS_FILESIZE on each side).
HUGE_SIZES = pick([(0, 2**30 + 4096), (0, 2**31), (0, 2**32 - 4096), (0, 2**32 - 4095), (0, 2**32),
                   (0, 2**32 + 4096), (0, 2**40 + 1), (0, 2**63 - 1), (0, 2**63), (0, 2**63 + 4096)])
SIZES = mixed((2, SMALL_SIZES), (1, HUGE_SIZES))
# Creation's sizes: mostly small (the regions everything else acts on), now and then one of the
# huge edges, so that creation's own failure path (memfd: ftruncate refuses 2^63 and more) is taken
CREATE_SIZES = mixed((5, SMALL_SIZES), (1, HUGE_SIZES))

PIN_OFFSETS = pick([0, 0, 1, 1, 2, 2, 3, 4, 5, "unaligned", "byte", "top", "end"])
PIN_LENGTHS = pick([1, 1, 0, 0, 2, 2, 3, "unaligned", "odd", "top"])


@dataclass(frozen=True)
class Around:
    """A page span placed relative to one of the region's unpinned ranges (the index-th), as the
    model knows them when the step runs: `how` is inside (strictly), exact, over-start, over-end,
    cover, below or above (adjacent). Every case of the pin/unpin algebra, on purpose."""
    how: str
    index: int


AROUND = ("inside", "exact", "over-start", "over-end", "cover", "below", "above")
PIN_SPAN = mixed((1, lambda d: (PIN_OFFSETS(d), PIN_LENGTHS(d))),
                 (2, lambda d: Around(AROUND[next(d) % len(AROUND)], next(d))))
PIN_COMMANDS = pick(["PIN", "UNPIN", "GET_PIN_STATUS"])
# A cache's entries (scenarios.cache_entries_purged): two to four, of one to three pages, and the
# order they are unpinned in (a permutation of their indices)
CACHE_ENTRIES = lambda draws: [(1, 1, 2, 3)[next(draws) % 4] for _ in range(2 + next(draws) % 3)]  # noqa: E731


def permutation(n: int) -> Domain:
    """An order of 0..n-1 (Fisher-Yates over the draws)."""
    def decode(draws: Draws) -> list[int]:
        items = list(range(n))
        for i in range(n - 1, 0, -1):
            j = next(draws) % (i + 1)
            items[i], items[j] = items[j], items[i]
        return items
    return decode


CACHE_ORDER = permutation(4)
PAGE_ORDERS = pick(["up", "up", "down", "odd-first", "middle-out"])


def page_order(order: str, pages: int) -> list[int]:
    """The pages 0..pages-1 in the order a page-by-page pin or unpin visits them: in the odd-first
    and middle-out orders most visits land strictly inside a range left by the earlier ones."""
    up = list(range(pages))
    if order == "down":
        return up[::-1]
    if order == "odd-first":
        return up[1::2] + up[0::2]
    if order == "middle-out":
        return sorted(up, key=lambda p: (abs(2 * p - (pages - 1)), p))
    return up


MAP_LENGTHS = pick(["whole", "whole", "whole", 0, 1, 2, 5, "unaligned", "neg", "max"])
MAP_OFFSETS = pick([0, 0, 0, 0, 1, 2, 3, "unaligned", "odd", "end", "neg", "neg-page"])

PROT = pick([1, 1, 3, 3, 3, 5, 7, 0, 2, 4, 6, 9])  # mostly readable: the data checks look through it; 8 PROT_SEM
MAYBE_PROT = mixed((2, pick([None])), (1, PROT))  # a second mprotect, or none
MAP_PROT = pick([3, 3, 3, 1, 1, 0, 2, 4, 5, 6, 7])
PROT_MASK_ARG = pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 15])

# Where inside a mapping to load or store: page starts, page ends, straddles (in bytes of a
# 4 KiB page; the driver folds them into the mapping).
POSITIONS = pick([0, 8, 4092, 4096, 4112, 8191, 12288, 16376])
LOAD_LENGTHS = pick([1, 8, 64, 4096])
DATA = mixed((3, fresh_bytes(1, 8)), (1, pick([b"\x00" * 8, b"\xff" * 8])))

SEEK_OFFSETS = pick([0, 1, 2, 3, "byte", "odd", "last", "end", "neg", "unaligned", "max"])
SEEK_WALK = 9  # SEEK_DATA/SEEK_HOLE pairs of a walk at most: a region of 16 pages has at most 8 data runs
WHENCES = pick([0, 0, 0, 1, 2, 3, 3, 4, 4, 5, 7, -1])  # SET, CUR, END, DATA, HOLE, and none of them
READ_COUNTS = pick([1, 16, 4104])
TRUNCATE_LENGTHS = pick(["same", "same", "grow", "shrink", "zero", "neg"])
# fallocate: punching a hole (KEEP_SIZE | PUNCH_HOLE) most, allocation, and the modes refused before
# or by the file (PUNCH_HOLE alone, ZERO_RANGE, both with PUNCH_HOLE, a bit outside the mask)
FALLOC_MODES = pick([3, 3, 3, 0, 0, 1, 2, 0x10, 0x13, 0x80])
FALLOC_OFFSETS = pick([0, 0, 1, "byte", "unaligned", "end", "neg"])
FALLOC_LENGTHS = pick([1, 1, 3, "byte", "to-end", "past-end", 0, "neg", "max"])
UNKNOWN_IOCTLS = pick([0, 11, 12, 255])
FD_ROOM = pick([0, 0, 1, 1, 2, -1, "lift"])  # fds that still fit under the new RLIMIT_NOFILE
FD_LIMIT_LIFTED = 64  # above every fd a test case makes, below any hard limit
AT_THE_LIMIT = pick(["", "dup", "receive", "reply"])  # the call that meets a new fd limit
