"""Profiles: where implementations legitimately differ, stated as data.

The spec code reads these fields; it never asks which implementation runs.

- `ashmem`: the C driver, drivers/staging/android/ashmem.c, Linux 5.10 (K-5x in
  ../shared/semantics/ashmem.md), confirmed on Debian's 5.10.0-46 build.
- `memfd`: libcutils in memfd mode (system/core libcutils/ashmem-dev.cpp, HEAD a3b721a3, 2025)
  together with the kernel's memfd-ashmem shim (mm/memfd-ashmem-shim.c, 2025) for the ioctls
  libcutils has no call for. A memfd region is born "materialized": the shim answers SET_NAME
  and SET_SIZE "as if the buffer was already mapped".
"""

from __future__ import annotations

from dataclasses import dataclass

from ashcheck.spec.constants import (
    ASHMEM_NAME_DEF,
    MAX_LFS_FILESIZE,
    MEMFD_NAME_MAX,
    PROT_EXEC,
    PROT_MASK,
    PROT_READ,
    SIZE_MAX,
)


@dataclass(frozen=True)
class Profile:
    name: str
    born_materialized: bool     # region is mapped-equivalent from creation (size and name frozen)
    name_max: int               # longest name kept
    name_too_long_rejected: bool  # True: creation fails EINVAL; False: silently truncated
    default_name: bytes | None  # what GET_NAME says for an unset name (None: the empty name)
    maps_prefix: bytes          # pathname prefix in /proc/pid/maps
    prot_unremovable: int       # bits SET_PROT_MASK silently keeps
    prot_ignored: int           # bits SET_PROT_MASK ignores instead of rejecting
    mmap_checks_size: bool      # EINVAL for size 0 and for length beyond PAGE_ALIGN(size)
    private_checks_mask: bool   # MAP_PRIVATE is held to the prot mask too (and its VM_MAY* bits)
    maps_separator: bytes       # between maps_prefix and a non-empty name
    private_is_anonymous: bool  # MAP_PRIVATE = fresh zero memory (else a copy-on-write view)
    pinning: bool               # PIN/UNPIN/GET_PIN_STATUS are real (else no-ops, never purged)
    fd_write: bool              # write() on the fd stores data (else EINVAL: no .write op)
    fd_io_needs_mapping: bool   # read/lseek say EBADF before the first mmap, EINVAL/EOF at size 0
    ioctl_returns_int: bool     # GET_SIZE comes back through sys_ioctl's `int` (else a long: fstat)
    mask_is_seal: bool          # removing WRITE is F_SEAL_FUTURE_WRITE: its contract is memfd.seal.*
    mmap_file_max: int          # file_mmap_size_max of the file mmap is asked on: /dev/ashmem, a char
                                # device, ULONG_MAX; a memfd, a regular file, MAX_LFS_FILESIZE
    regular_file: bool          # the fd is a regular file (a memfd), not a character device (/dev/ashmem):
                                # ftruncate and fallocate reach it


ASHMEM = Profile(
    name="ashmem", born_materialized=False, name_max=255, name_too_long_rejected=False,
    default_name=ASHMEM_NAME_DEF, maps_prefix=b"/dev/ashmem", prot_unremovable=0, prot_ignored=0,
    mmap_checks_size=True, private_checks_mask=True, maps_separator=b"/", private_is_anonymous=True,
    pinning=True, fd_write=False,
    fd_io_needs_mapping=True, ioctl_returns_int=True, mask_is_seal=False, mmap_file_max=SIZE_MAX,
    regular_file=False,
)

MEMFD = Profile(
    name="memfd", born_materialized=True, name_max=MEMFD_NAME_MAX, name_too_long_rejected=True,
    default_name=None, maps_prefix=b"/memfd:", prot_unremovable=PROT_READ | PROT_EXEC,
    prot_ignored=~PROT_MASK, mmap_checks_size=False, private_checks_mask=False, maps_separator=b"",
    private_is_anonymous=False, pinning=False,
    fd_write=True, fd_io_needs_mapping=False, ioctl_returns_int=False, mask_is_seal=True,
    mmap_file_max=MAX_LFS_FILESIZE, regular_file=True,
)

PROFILES = {p.name: p for p in (ASHMEM, MEMFD)}
