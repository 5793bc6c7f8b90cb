"""ftruncate() and fallocate() on a region's fd: what the peers assert (the kernel's memfd selftest:
resizing refused under F_SEAL_GROW/F_SEAL_SHRINK, a hole never punched after F_SEAL_FUTURE_WRITE, or
a receiver could zero what the sender sealed).

Rules (fs/open.c do_sys_ftruncate, vfs_fallocate, ksys_fallocate; mm/shmem.c shmem_setattr,
shmem_fallocate; Linux 5.10; ashmem.md §6.4):

- ftruncate: a negative length is EINVAL before the fd is looked up; then anything but a regular
  file is EINVAL: the ashmem fd is a character device. A memfd region carries F_SEAL_GROW and
  F_SEAL_SHRINK from libcutils (ashmem_create_region adds both), so a new size is EPERM; its own
  size returns 0 and still truncates there: the bytes past the end in its last page, which a
  mapping can write, are zeroed (shmem_setattr takes newsize <= oldsize; observed on 6.18).
- fallocate: the fd first (EBADF); then offset < 0 or length <= 0 is EINVAL; mode bits outside
  FALLOC_FL_SUPPORTED_MASK, PUNCH_HOLE with ZERO_RANGE, and PUNCH_HOLE without KEEP_SIZE are
  EOPNOTSUPP; then a file that is neither regular nor a block device is ENODEV (ashmem); an end
  past MAX_LFS_FILESIZE is EFBIG. shmem takes only KEEP_SIZE and PUNCH_HOLE (else EOPNOTSUPP).
  A punched hole is EPERM after F_SEAL_WRITE or F_SEAL_FUTURE_WRITE; otherwise the range reads as
  zeros and its whole pages leave the page cache (partial pages stay, zeroed). Allocation
  (mode 0 or KEEP_SIZE) past the size is EPERM under F_SEAL_GROW; within it the pages come into
  the cache (SEEK_DATA finds them) and the data stays.
"""

from __future__ import annotations

import errno

from ashcheck.spec.branch import Branch, ebadf, fails
from ashcheck.spec.constants import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_SUPPORTED_MASK,
    FALLOC_FL_ZERO_RANGE,
    MAX_LFS_FILESIZE,
    PROT_WRITE,
    loff_t,
)
from ashcheck.spec.ops import Fallocate, Ftruncate
from ashcheck.spec.outcome import Outcome, ok
from ashcheck.spec.rules import Rule, declare
from ashcheck.spec.state import Kernel, SpecLimit

ALLOCATION_TRACKED = 1 << 16  # pages one fallocate may allocate and the spec still follow (256 MiB)

OPEN = "fs/open.c"
SHMEM = "mm/shmem.c"
A, M = ("ashmem",), ("memfd",)

declare(
    Rule("fd.ftruncate.negative", "ftruncate() with a negative length is EINVAL, before the fd is looked up",
         OPEN + " do_sys_ftruncate, 5.10"),
    Rule("ashmem.ftruncate.einval", "ftruncate() on an ashmem fd is EINVAL: a character device, not a regular "
         "file", OPEN + " do_sys_ftruncate (!S_ISREG), 5.10", profiles=A),
    Rule("memfd.ftruncate.sealed", "memfd mode: ftruncate() to a new size is EPERM (libcutils seals GROW and "
         "SHRINK at creation); to its own size it is 0 and zeroes what a mapping wrote past the end of the "
         "last page",
         SHMEM + " shmem_setattr, 5.10; libcutils ashmem_create_region (memfd path); memfd_test SEAL-GROW, "
         "SEAL-SHRINK", profiles=M),
    Rule("fd.fallocate.args", "fallocate() with offset < 0 or length <= 0 is EINVAL; with unknown mode bits, "
         "PUNCH_HOLE with ZERO_RANGE or PUNCH_HOLE without KEEP_SIZE it is EOPNOTSUPP (after the fd, before "
         "the file type)", OPEN + " ksys_fallocate, vfs_fallocate, 5.10"),
    Rule("ashmem.fallocate.enodev", "fallocate() on an ashmem fd is ENODEV: neither a regular file nor a "
         "block device", OPEN + " vfs_fallocate, 5.10", profiles=A),
    Rule("memfd.fallocate.punch", "memfd mode: a punched hole reads as zeros, its whole pages leave the page "
         "cache; after write removal (F_SEAL_FUTURE_WRITE) it is EPERM: a receiver cannot zero the region",
         SHMEM + " shmem_fallocate, 5.10; memfd_test SEAL-FUTURE-WRITE", profiles=M),
    Rule("memfd.fallocate.allocate", "memfd mode: fallocate() mode 0 or KEEP_SIZE within the size succeeds "
         "with the data unchanged, and the pages it allocates stay holes to SEEK_DATA/SEEK_HOLE until written, "
         "faulted through a mapping or allocated by a second fallocate (which initializes them); past the size "
         "it is EPERM (F_SEAL_GROW); other modes are EOPNOTSUPP",
         SHMEM + " shmem_fallocate (pages left !Uptodate), shmem_get_folio_gfp (SGP_FALLOC on a page "
         "fallocated earlier clears it and marks it Uptodate), shmem_seek_hole_data (a page not Uptodate is a "
         "hole), 5.10; mm/filemap.c folio_seek_hole_data, 6.1; observed on Debian 5.10.223, 6.1.176, 6.12.117 "
         "and 6.18 (a page fallocated twice is data: 6.18); memfd_test SEAL-GROW", profiles=M),
)


def ftruncate(k: Kernel, op: Ftruncate) -> list[Branch]:
    if loff_t(op.length) < 0:
        return fails("fd.ftruncate.negative", errno.EINVAL)
    region = k.region_of(op.proc, op.fd)
    if region is None:
        return ebadf()
    if not k.profile.regular_file:
        return fails("ashmem.ftruncate.einval", errno.EINVAL)
    if op.length != region.size:
        return fails("memfd.ftruncate.sealed", errno.EPERM)

    def tail_zeroed(_: Outcome) -> None:  # newsize <= oldsize: shmem_truncate_range(newsize, -1)
        region.worlds = list(dict.fromkeys(w.punch(region.size, MAX_LFS_FILESIZE, k.page) for w in region.worlds))
    return [Branch("memfd.ftruncate.sealed", ok(0), tail_zeroed)]


def fallocate(k: Kernel, op: Fallocate) -> list[Branch]:
    region = k.region_of(op.proc, op.fd)
    if region is None:
        return ebadf()
    punch = op.mode & FALLOC_FL_PUNCH_HOLE
    offset, length = loff_t(op.offset), loff_t(op.length)
    if offset < 0 or length <= 0:
        return fails("fd.fallocate.args", errno.EINVAL)
    if (op.mode & ~FALLOC_FL_SUPPORTED_MASK or (punch and op.mode & FALLOC_FL_ZERO_RANGE)
            or (punch and not op.mode & FALLOC_FL_KEEP_SIZE)):
        return fails("fd.fallocate.args", errno.EOPNOTSUPP)
    if not k.profile.regular_file:
        return fails("ashmem.fallocate.enodev", errno.ENODEV)
    end = offset + length  # both below 2^63: the loff_t sum wraps negative exactly when it passes the max
    if end > MAX_LFS_FILESIZE:
        return fails("fd.fallocate.args", errno.EFBIG)
    if op.mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
        return fails("memfd.fallocate.allocate", errno.EOPNOTSUPP)
    page = k.page
    if punch:
        if not region.prot_mask & PROT_WRITE:  # the memfd profile's mask is the F_SEAL_FUTURE_WRITE seal
            return fails("memfd.fallocate.punch", errno.EPERM)

        def hole(_: Outcome) -> None:
            region.worlds = list(dict.fromkeys(w.punch(offset, end, page) for w in region.worlds))
        return [Branch("memfd.fallocate.punch", ok(0), hole)]
    if end > region.size:
        return fails("memfd.fallocate.allocate", errno.EPERM)

    # shmem_fallocate leaves the pages it allocates !Uptodate (to undo them on a failure), and both
    # shmem_seek_hole_data (5.10) and folio_seek_hole_data (6.x) take such a page for a hole; a read()
    # keeps it one (SGP_READ), a write or a fault through a mapping makes it data, and so does a
    # second fallocate over it (Mem.fallocate).
    indexes = range(offset // page, -(-end // page))
    if len(indexes) > ALLOCATION_TRACKED:  # a real one may fail for want of memory: not followed here
        raise SpecLimit(f"fallocate of {len(indexes)} pages")

    def allocate(_: Outcome) -> None:
        region.worlds = list(dict.fromkeys(w.fallocate(indexes) for w in region.worlds))
    return [Branch("memfd.fallocate.allocate", ok(0), allocate)]
