"""Argument strategies: small domains, heavy on the boundaries the driver checks.

Page-relative values are built from the adapter's page size. Offsets and lengths sit on, just
before and just after page boundaries and on the 32-bit edge that PIN's overflow check guards.
"""

from __future__ import annotations

from hypothesis import strategies as st

NAMES = st.one_of(
    st.sampled_from([b"", b"region", b"a" * 255, b"b" * 256, b"c" * 300, b"d" * 249, b"e" * 250,
                     b"na\0me", b"new\nline", b"sp ace", b"\xff\xfe\x80", b"dev/ashmem"]),
    st.binary(min_size=1, max_size=12),
)


def sizes(page: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([page, 2 * page, 4 * page, 1, page - 1, page + 1, 3 * page + 100, 0]),
        st.sampled_from([2**32, 2**31 + page, 2**40 + 1]),
    )


def small_sizes(page: int) -> st.SearchStrategy[int]:
    """Sizes a region can be created with and still be mapped whole."""
    return st.sampled_from([page, 2 * page, 4 * page, 1, page + 1, 3 * page + 100, 0])


def pin_offsets(page: int) -> st.SearchStrategy[int]:
    return st.sampled_from([0, page, 2 * page, 3 * page, 4 * page, 5 * page, 100, 2**32 - page])


def pin_lengths(page: int) -> st.SearchStrategy[int]:
    return st.sampled_from([0, page, 2 * page, 3 * page, page + 100, 2**32 - page])


def map_lengths(page: int) -> st.SearchStrategy[int]:
    from ashcheck.conformance.driver import WHOLE

    return st.sampled_from([WHOLE, WHOLE, WHOLE, page, 2 * page, 1, page + 1, 5 * page, 0])


def map_offsets(page: int) -> st.SearchStrategy[int]:
    return st.sampled_from([0, 0, 0, page, 3 * page, 100])


PROT = st.integers(0, 7)
MAP_PROT = st.one_of(st.just(3), st.just(3), st.just(1), st.integers(0, 7))
PROT_MASK_ARG = st.one_of(st.integers(0, 7), st.just(8), st.just(15))

# Where inside a mapping to load or store: page starts, page ends, straddles.
def positions(page: int) -> st.SearchStrategy[int]:
    return st.sampled_from([0, 8, page - 4, page, page + 16, 2 * page - 1, 3 * page, 4 * page - 8])


DATA = st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from([b"\x00" * 8, b"\xff" * 8]))
