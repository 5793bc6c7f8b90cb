"""Numbers the drivers and the C library define, named as the kernel names them.

Sources: drivers/staging/android/uapi/ashmem.h (Linux 5.10), include/uapi/linux/android/binder.h,
include/uapi/asm-generic/mman-common.h and fcntl.h. ioctl numbers are for the asm-generic `_IOC`
encoding and an LP64 ABI (x86_64, arm64); see ../shared/semantics/ashmem.md §1.2.
"""

from __future__ import annotations

import enum

PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4
PROT_MASK = PROT_READ | PROT_WRITE | PROT_EXEC

MAP_SHARED = 1
MAP_PRIVATE = 2
MAP_NORESERVE = 0x4000  # asm-generic and x86; the executor's targets all use this value

FD_CLOEXEC = 1
F_GETFD = 1
O_RDWR = 2
O_CLOEXEC = 0o2000000
O_PATH = 0o10000000

SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2
SEEK_DATA, SEEK_HOLE = 3, 4  # include/uapi/linux/fs.h
SEEK_MAX = 4  # SEEK_HOLE; include/uapi/linux/fs.h
MAX_ERRNO = 4095  # a syscall result in [-4095, -1] is an error (include/linux/err.h)
MAX_LFS_FILESIZE = (1 << 63) - 1  # include/linux/fs.h, 64-bit
SIZE_MAX = (1 << 64) - 1  # size_t and unsigned long, 64-bit (ULONG_MAX)
# A mapping longer than the process's address space (TASK_SIZE) is ENOMEM (get_unmapped_area).
# TASK_SIZE depends on the kernel: at least 2^39 (arm64 with 39-bit addresses), at most 2^56
# (x86_64 with 5-level paging; arm64 with 52-bit addresses has 2^52).
TASK_SIZE_LEAST, TASK_SIZE_MOST = 1 << 39, 1 << 56

ASHMEM_NAME_LEN = 256  # the user buffer, NUL included: at most 255 name bytes
ASHMEM_NAME_DEF = b"dev/ashmem"
ASHMEM_NOT_PURGED, ASHMEM_WAS_PURGED = 0, 1
ASHMEM_IS_UNPINNED, ASHMEM_IS_PINNED = 0, 1

MEMFD_NAME_MAX = 249  # NAME_MAX minus strlen("memfd:"), mm/memfd.c

F_ADD_SEALS, F_GET_SEALS = 1033, 1034
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE, F_SEAL_FUTURE_WRITE = 1, 2, 4, 8, 16


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (0x77 << 8) | nr


class AshmemIoctl(enum.IntEnum):
    """The /dev/ashmem ioctls (LP64 numbers)."""

    SET_NAME = _ioc(1, 1, 256)
    GET_NAME = _ioc(2, 2, 256)
    SET_SIZE = _ioc(1, 3, 8)
    GET_SIZE = _ioc(0, 4, 0)
    SET_PROT_MASK = _ioc(1, 5, 8)
    GET_PROT_MASK = _ioc(0, 6, 0)
    PIN = _ioc(1, 7, 8)
    UNPIN = _ioc(1, 8, 8)
    GET_PIN_STATUS = _ioc(0, 9, 0)  # _IO, yet the argument is a struct ashmem_pin pointer
    PURGE_ALL_CACHES = _ioc(0, 10, 0)


def abi_number(cmd: AshmemIoctl, long_bits: int = 64) -> int:
    """The request number a process of an ABI with `long_bits`-bit longs uses: SET_SIZE (size_t) and
    SET_PROT_MASK (unsigned long) carry the argument's size, so a 32-bit process sends the numbers
    that the driver's compat_ioctl translates (COMPAT_ASHMEM_SET_SIZE, COMPAT_ASHMEM_SET_PROT_MASK;
    drivers/staging/android/ashmem.c compat_ashmem_ioctl, 5.10). The others are the same in every ABI."""
    if long_bits == 64 or cmd not in (AshmemIoctl.SET_SIZE, AshmemIoctl.SET_PROT_MASK):
        return int(cmd)
    return _ioc(1, cmd & 0xFF, long_bits // 8)


def ashmem_io(nr: int) -> int:
    """_IO(__ASHMEMIOC, nr): an ashmem request number without an argument size."""
    return _ioc(0, nr, 0)


def loff_t(value: int) -> int:
    """`value` as a loff_t holds it: 64 bits, signed (a sum past the maximum wraps negative)."""
    return as_long(value, 64)


def as_long(value: int, bits: int) -> int:
    """`value` as a signed integer of `bits` bits holds it (a caller's long, or ioctl's int)."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def page_align(n: int, page: int) -> int:
    return (n + page - 1) // page * page

# fallocate modes (include/uapi/linux/falloc.h); FALLOC_FL_SUPPORTED_MASK as fs/open.c vfs_fallocate, 5.10
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_SUPPORTED_MASK = 0x7F
