"""C integer arithmetic of the simulated machine: x86_64 / arm64, LP64, 4 KiB pages.

The driver computes with `__u32` (struct ashmem_pin), `size_t` (sizes, page numbers) and `loff_t`
(file offsets), and several of its edge cases are wrap-arounds: `len == 0` becomes
`PAGE_ALIGN(size) - offset` truncated to 32 bits, and `pgend = pgstart + pages - 1` is `SIZE_MAX`
when `pgstart == 0` and `pages == 0`. Python integers do not wrap, so every such expression goes
through one of these helpers, named after the C type whose arithmetic it performs.
"""

from __future__ import annotations

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

U32_MAX = (1 << 32) - 1
SIZE_MAX = (1 << 64) - 1           # also ULONG_MAX
LONG_MAX = (1 << 63) - 1
MAX_LFS_FILESIZE = LONG_MAX        # include/linux/fs.h, 64-bit
TASK_SIZE = (1 << 47) - PAGE_SIZE  # x86_64 user address space (4-level paging)
MAX_RW_COUNT = 0x7FFFFFFF & ~(PAGE_SIZE - 1)  # INT_MAX & PAGE_MASK: read()/write() clamp
MAX_ERRNO = 4095                   # a syscall return in [-4095, -1] is an error (IS_ERR_VALUE)


def u32(x: int) -> int:
    """The value as a `__u32`."""
    return x & U32_MAX


def u64(x: int) -> int:
    """The value as a `size_t` / `unsigned long`."""
    return x & SIZE_MAX


def s32(x: int) -> int:
    """The value as an `int` (two's complement)."""
    x &= U32_MAX
    return x - (1 << 32) if x >> 31 else x


def s64(x: int) -> int:
    """The value as a `long` / `loff_t` (two's complement)."""
    x &= SIZE_MAX
    return x - (1 << 64) if x > LONG_MAX else x


def page_align(x: int) -> int:
    """`PAGE_ALIGN(x)` on a `size_t`: wraps to 0 near SIZE_MAX, as in C."""
    return u64(x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def pages_in(size: int) -> int:
    """ceil(size / PAGE_SIZE): the number of file pages below i_size."""
    return (size + PAGE_SIZE - 1) >> PAGE_SHIFT
