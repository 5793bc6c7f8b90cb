"""Argument strategies: small domains, heavy on the boundaries the driver checks.

Offsets and lengths are drawn in pages and turned into bytes with the adapter's page size
(`Driver.bytes_of`), so a 16 KiB-page device gets the same program as a 4 KiB one. A few named
values stand for the edges: "unaligned" (100 bytes), "byte" (1), "neg" (-1), "top" (2^32 - page:
offset + len overflows PIN's u32 check), "end" (the region's page-aligned size, known only when the
step runs: UNPIN from there with len 0 makes the empty range the driver keeps; a mapping from there
lies wholly past the end of the file), "whole" (a mapping length: the region's size).
"""

from __future__ import annotations

from hypothesis import strategies as st

Units = int | str  # pages, or one of the named edges above

NAMES = st.one_of(
    st.sampled_from([b"", b"region", b"a" * 255, b"b" * 256, b"c" * 300, b"d" * 249, b"e" * 250,
                     b"na\0me", b"new\nline", b"sp ace", b"\xff\xfe\x80", b"dev/ashmem"]),
    st.binary(min_size=1, max_size=12),
)
NAME_OR_NULL = st.one_of(NAMES, st.none())

# Region sizes as (pages, extra bytes): bytes = pages * page + extra.
SMALL_SIZES = st.sampled_from([(1, 0), (2, 0), (4, 0), (3, 100), (0, 1), (1, 1), (0, 0)])
HUGE_SIZES = st.sampled_from([(0, 2**31), (0, 2**32 + 4096), (0, 2**40 + 1), (0, 2**63 - 1), (0, 2**63 + 4096)])
SIZES = st.one_of(SMALL_SIZES, SMALL_SIZES, HUGE_SIZES)

PIN_OFFSETS: st.SearchStrategy[Units] = st.one_of(st.integers(0, 5), st.sampled_from(["unaligned", "top", "end"]))
PIN_LENGTHS: st.SearchStrategy[Units] = st.one_of(st.just(1), st.integers(0, 3), st.sampled_from(["unaligned", "top"]))
PIN_COMMANDS = st.sampled_from(["PIN", "UNPIN", "GET_PIN_STATUS"])

MAP_LENGTHS: st.SearchStrategy[Units] = st.one_of(st.just("whole"), st.just("whole"), st.integers(0, 5),
                                                   st.just("unaligned"))
MAP_OFFSETS: st.SearchStrategy[Units] = st.one_of(st.just(0), st.just(0), st.integers(1, 3),
                                                   st.sampled_from(["unaligned", "end"]))

PROT = st.integers(0, 7)
MAP_PROT = st.one_of(st.just(3), st.just(3), st.just(1), st.integers(0, 7))
PROT_MASK_ARG = st.one_of(st.integers(0, 7), st.just(8), st.just(15))

# Where inside a mapping to load or store: page starts, page ends, straddles (in bytes of a
# 4 KiB page; the driver folds them into the mapping).
POSITIONS = st.sampled_from([0, 8, 4092, 4096, 4112, 8191, 12288, 16376])
LOAD_LENGTHS = st.sampled_from([1, 8, 64, 4096])
DATA = st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from([b"\x00" * 8, b"\xff" * 8]))

SEEK_OFFSETS: st.SearchStrategy[Units] = st.sampled_from([0, 1, 3, "byte", "neg", "unaligned"])
WHENCES = st.sampled_from([0, 0, 1, 2, 7])
READ_COUNTS = st.sampled_from([1, 16, 4104])
UNKNOWN_IOCTLS = st.sampled_from([0, 11, 12, 255])
