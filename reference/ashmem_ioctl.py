"""`ashmem_ioctl` and its helpers `set_name`, `get_name`, `set_prot_mask`, `ashmem_pin_unpin`
(drivers/staging/android/ashmem.c, Linux 5.10): every check, in the driver's order.

- SET_NAME copies the user string first (a NULL pointer is EFAULT even on a mapped area), keeps
  at most 255 bytes (a longer string is truncated, not refused), stops at the first NUL, and only
  then refuses a materialized area (EINVAL). An empty string resets the name to unset.
- GET_NAME copies strlen(name)+1 bytes, or "dev/ashmem\\0" when unset.
- SET_SIZE takes any size_t while not materialized; GET_SIZE returns it as a long.
- SET_PROT_MASK refuses any bit not already in the mask (EINVAL), non-PROT bits included.
- PIN / UNPIN / GET_PIN_STATUS check, in order: the copy (EFAULT), materialized (EINVAL),
  len 0 = "to PAGE_ALIGN(size)" computed in a __u32, page alignment, __u32 overflow, and the end
  beyond PAGE_ALIGN(size) (all EINVAL); the range algebra is in ranges.py.
- PURGE_ALL_CACHES needs CAP_SYS_ADMIN (EPERM), returns lru_count from before the purge, then
  purges every range on the LRU.
- Any other command: ENOTTY.
"""

from __future__ import annotations

import errno

from ashcheck.reference.area import Area
from ashcheck.reference.cint import LONG_MAX, PAGE_SHIFT, PAGE_SIZE, U32_MAX, page_align, s64, u32, u64
from ashcheck.reference.errors import SyscallError
from ashcheck.reference.ranges import Lru
from ashcheck.reference.shrinker import shrink_scan
from ashcheck.reference.vfs import Cred, IoctlArg, IoctlResult
from ashcheck.spec.constants import ASHMEM_NAME_DEF, ASHMEM_NAME_LEN, AshmemIoctl


def ashmem_ioctl(asma: Area, cmd: int, arg: IoctlArg, lru: Lru, cred: Cred) -> IoctlResult:
    """The driver's switch on `cmd`. Results are the ioctl's return value as a `long`, except
    GET_NAME, whose result is the bytes it copied out (without the NUL)."""
    match cmd:
        case AshmemIoctl.SET_NAME:
            return set_name(asma, arg)
        case AshmemIoctl.GET_NAME:
            return get_name(asma)
        case AshmemIoctl.SET_SIZE:
            if asma.file is not None:
                raise SyscallError(errno.EINVAL)
            asma.size = u64(_value(arg))
            return 0
        case AshmemIoctl.GET_SIZE:
            return s64(asma.size)
        case AshmemIoctl.SET_PROT_MASK:
            return set_prot_mask(asma, u64(_value(arg)))
        case AshmemIoctl.GET_PROT_MASK:
            return asma.prot_mask
        case AshmemIoctl.PIN | AshmemIoctl.UNPIN | AshmemIoctl.GET_PIN_STATUS:
            return ashmem_pin_unpin(asma, cmd, arg)
        case AshmemIoctl.PURGE_ALL_CACHES:
            if not cred.cap_sys_admin:
                raise SyscallError(errno.EPERM)
            count = lru.count  # ashmem_shrink_count, read before the scan
            shrink_scan(lru, LONG_MAX)
            return s64(count)
    raise SyscallError(errno.ENOTTY)


def set_name(asma: Area, arg: IoctlArg) -> int:
    if arg is None:  # strncpy_from_user faults, before the lock and the mapped check
        raise SyscallError(errno.EFAULT)
    if not isinstance(arg, bytes):
        raise TypeError(f"ASHMEM_SET_NAME takes the bytes of a string or None, not {arg!r}")
    # strncpy_from_user(local, name, 256) stops at a NUL; 256 bytes without one are cut to 255
    name = arg.split(b"\0", 1)[0][:ASHMEM_NAME_LEN - 1]
    if asma.file is not None:
        raise SyscallError(errno.EINVAL)
    asma.name = name
    return 0


def get_name(asma: Area) -> bytes:
    return asma.name if asma.name else ASHMEM_NAME_DEF


def set_prot_mask(asma: Area, prot: int) -> int:
    """Only removing bits is allowed. (READ_IMPLIES_EXEC would add PROT_EXEC after the check;
    no simulated process has that personality.)"""
    if asma.prot_mask & prot != prot:
        raise SyscallError(errno.EINVAL)
    asma.prot_mask = prot
    return 0


def ashmem_pin_unpin(asma: Area, cmd: int, arg: IoctlArg) -> int:
    if arg is None:  # copy_from_user of struct ashmem_pin
        raise SyscallError(errno.EFAULT)
    if not (isinstance(arg, tuple) and len(arg) == 2):
        raise TypeError(f"{AshmemIoctl(cmd).name} takes a struct ashmem_pin (offset, len) or None, not {arg!r}")
    offset, length = u32(arg[0]), u32(arg[1])
    if asma.file is None:
        raise SyscallError(errno.EINVAL)
    if length == 0:  # "per custom, you can pass zero for len to mean everything onward"
        length = u32(page_align(asma.size) - offset)
    if (offset | length) & (PAGE_SIZE - 1):
        raise SyscallError(errno.EINVAL)
    if U32_MAX - offset < length:
        raise SyscallError(errno.EINVAL)
    if page_align(asma.size) < offset + length:
        raise SyscallError(errno.EINVAL)
    pgstart = offset >> PAGE_SHIFT
    pgend = u64(pgstart + (length >> PAGE_SHIFT) - 1)  # size_t: [0, SIZE_MAX] when both are 0
    if cmd == AshmemIoctl.PIN:
        return asma.unpinned.pin(asma.file, pgstart, pgend)
    if cmd == AshmemIoctl.UNPIN:
        return asma.unpinned.unpin(asma.file, pgstart, pgend)
    return asma.unpinned.pin_status(pgstart, pgend)


def _value(arg: IoctlArg) -> int:
    if not isinstance(arg, int) or isinstance(arg, bool):
        raise TypeError(f"this ashmem ioctl takes an integer argument, not {arg!r}")
    return arg
