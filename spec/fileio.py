"""read(), lseek() and write() on a region's fd.

Rules (C driver = drivers/staging/android/ashmem.c ashmem_read_iter / ashmem_llseek, Linux 5.10;
ashmem.md §1.4; memfd = mm/shmem.c shmem_file_write_iter / shmem_write_begin):

- The file position belongs to the open file description, so every fd made from it by dup or
  binder moves one position.
- ashmem: read with size 0 returns EOF; before the first mmap it is EBADF; then it reads the
  backing file from the position, up to the size (purged pages read as zeros).
  lseek with a whence above SEEK_MAX is EINVAL before the driver is asked (fs/read_write.c
  ksys_lseek), then size 0 is EINVAL, before the first mmap EBADF, then ordinary SEEK_SET/CUR/END
  on the backing file (vfs_llseek; its position is copied back).
- SEEK_DATA / SEEK_HOLE (shmem_file_llseek, both profiles) answer from the pages the backing file
  holds (state.Mem.present: faulted in through a mapping or written, not yet purged): an offset
  below 0 or at or past the size is ENXIO; SEEK_DATA returns the offset if its page is held, else
  the start of the next held page, else ENXIO; SEEK_HOLE the offset if its page is a hole, else
  the start of the next hole, else the size.
- ashmem has no write operation: write() is EINVAL (vfs_write without FMODE_CAN_WRITE).
- Before any file's own read or write, rw_verify_area: an end (position + count) past LONG_MAX is
  EINVAL (a read at position 2^63 - 1 is not EOF).
- memfd: write() stores data at the position, page chunk by page chunk; a chunk that would grow
  the file is EPERM under F_SEAL_GROW (a partial write returns what it wrote); any write after
  F_SEAL_FUTURE_WRITE is EPERM.
"""

from __future__ import annotations

import errno

from ashcheck.spec.branch import Branch, ebadf, fails
from ashcheck.spec.constants import (
    MAX_LFS_FILESIZE,
    PROT_WRITE,
    SEEK_CUR,
    SEEK_DATA,
    SEEK_END,
    SEEK_HOLE,
    SEEK_MAX,
    SEEK_SET,
    loff_t,
    page_align,
)
from ashcheck.spec.ops import Lseek, Read, Write
from ashcheck.spec.outcome import Kind, Outcome, err, ok
from ashcheck.spec.rules import Rule, declare
from ashcheck.spec.state import Kernel, Mem, Region

C = "drivers/staging/android/ashmem.c"
OBS = "K510-OBS §2 (Debian 5.10.0-46)"
# The two ways kernels answer a memfd write that crosses the end under F_SEAL_GROW (write_body)
CROSSING_SHORT = "write crossing the end: stores what fits"
CROSSING_EPERM = "write crossing the end: EPERM whole"
# The two ways kernels compute SEEK_DATA/SEEK_HOLE within a page of MAX_LFS_FILESIZE (_seek)
SEEK_WRAPS = "SEEK_DATA/HOLE near 2^63: loff_t wraps (5.10)"
SEEK_EXACT = "SEEK_DATA/HOLE near 2^63: exact (6.x)"
A, M = ("ashmem",), ("memfd",)

declare(
    Rule("ashmem.read.size-zero", "read() of a size-0 region returns EOF", C + " ashmem_read_iter, 5.10; "
         + OBS, profiles=A),
    Rule("ashmem.read.not-mapped", "read() before the first mmap is EBADF", C + " ashmem_read_iter, 5.10",
         profiles=A),
    Rule("fd.read.data", "read() returns the bytes at the position, up to the size, and advances it",
         C + " ashmem_read_iter; " + OBS),
    Rule("fd.rw.range", "read() or write() whose end (the position plus the count) passes LONG_MAX is EINVAL, "
         "before the file's own read or write", "fs/read_write.c vfs_read, vfs_write, rw_verify_area, 5.10"),
    Rule("ashmem.lseek.size-zero", "lseek() on a size-0 region is EINVAL", C + " ashmem_llseek, 5.10; " + OBS,
         profiles=A),
    Rule("ashmem.lseek.not-mapped", "lseek() before the first mmap is EBADF", C + " ashmem_llseek, 5.10",
         profiles=A),
    Rule("fd.lseek.position", "lseek() SEEK_SET/CUR/END moves the shared position; a result that is negative "
         "(the loff_t sum may wrap) or past the file system's s_maxbytes (MAX_LFS_FILESIZE on shmem; an "
         "emulation's own files may have less, Adapter.max_file_offset), or an unknown whence, is EINVAL (the "
         "whence first, in ksys_lseek)",
         "fs/read_write.c ksys_lseek, generic_file_llseek_size(file, offset, whence, inode->i_sb->s_maxbytes, "
         "...), 5.10; mm/shmem.c shmem_fill_super (s_maxbytes = MAX_LFS_FILESIZE); " + OBS),
    Rule("fd.lseek.hole-data", "lseek() SEEK_DATA/SEEK_HOLE answers from the pages the backing file holds "
         "(faulted in through a mapping or written, not purged since): ENXIO for an offset below 0 or at or "
         "past the size and for SEEK_DATA with no data after it; SEEK_HOLE finds the size when no hole is left "
         "(5.10, for a size within a page of 2^63: the offset itself, its loff_t arithmetic overflowing)",
         "mm/shmem.c shmem_file_llseek, shmem_seek_hole_data, 5.10; mm/filemap.c mapping_seek_hole_data, 6.1; "
         + C + " ashmem_llseek (vfs_llseek on the backing file), 5.10; observed on Debian 5.10.223"),
    Rule("ashmem.write.einval", "write() on an ashmem fd is EINVAL: the driver has no write operation",
         C + " ashmem_fops; fs/read_write.c vfs_write; " + OBS, profiles=A),
    Rule("memfd.write.stores", "memfd mode: write() stores at the position; growing is EPERM (F_SEAL_GROW); "
         "a write crossing the end stores what fits (5.10, 6.1, 6.18) or is EPERM whole (6.12)",
         "mm/shmem.c shmem_write_begin; mm/filemap.c generic_perform_write (6.12: folio-sized chunks), "
         "replayed on Debian 5.10.223, 6.1.176, 6.12.117 and 6.18", profiles=M),
    Rule("memfd.seal.write", "memfd mode: write() after write removal is EPERM: F_SEAL_FUTURE_WRITE forbids "
         "every later write through the file", "man 2 fcntl (F_SEAL_FUTURE_WRITE); mm/shmem.c shmem_write_begin; "
         "ashmem.md §6.4", profiles=M),
)


def _past_loff_t(pos: int, count: int) -> bool:
    """rw_verify_area's check: the count as a ssize_t, and the end as a loff_t, must not go negative."""
    return count > MAX_LFS_FILESIZE or pos + count > MAX_LFS_FILESIZE  # MAX_LFS_FILESIZE is LONG_MAX


def _region(k: Kernel, proc: int, fd: int) -> Region | None:
    return k.region_of(proc, fd)


def _tagged(k: Kernel, proc: int, fd: int, rule: str) -> str:
    """Operations through an fd that binder delivered also confirm that it is the same file."""
    entry = k.procs[proc].fds.get(fd)
    return "binder.fd.same-file" if entry is not None and entry.origin == "binder" else rule


def read(k: Kernel, op: Read) -> list[Branch]:
    """read() as one step: the bytes at the position, which moves past them."""
    region = _region(k, op.proc, op.fd)
    return ebadf() if region is None else read_body(k, op, region.pos, advance=True)


# read() and write() are three steps that other calls may come between (fs/read_write.c ksys_read,
# ksys_write, 5.10 to 6.12: the position is copied before vfs_read/vfs_write and stored back after).
# fdget_pos would hold f_pos_lock across them only for FMODE_ATOMIC_POS files, which fs/open.c
# do_dentry_open marks (regular files and directories opened by path): /dev/ashmem is a character
# device, and a memfd is made by alloc_file_pseudo (shmem_file_setup), which never marks it. A
# concurrent lseek() can so be undone, a read read at the position it had before, two writes store
# at the same place (observed: 5.10.223 ashmem with 2 vCPUs; 6.1.176 memfd). linearize.py uses these.
# Not modelled: the driver's own store of the backing file's position (which SEEK_CUR starts from)
# comes a little before the VFS's store of the file's; an lseek between them leaves the two apart,
# which the next read or lseek shows only one of (both then move together) unless that read is at
# the end of the file (it stores the file's position alone).

def position(k: Kernel, op: Read | Write) -> int | None:
    """The position a read or write takes as it starts (None: the fd is not a region's)."""
    region = _region(k, op.proc, op.fd)
    return None if region is None else region.pos


def read_body(k: Kernel, op: Read, at: int | None, *, advance: bool = False) -> list[Branch]:
    """The read at position `at` (from position()); the position moves only if `advance`."""
    region = _region(k, op.proc, op.fd)
    if region is None or at is None:
        return ebadf()
    if _past_loff_t(at, op.count):
        return fails("fd.rw.range", errno.EINVAL)
    if k.profile.fd_io_needs_mapping:
        if region.size == 0:
            return [Branch("ashmem.read.size-zero", ok(b""))]
        if not region.materialized:
            return fails("ashmem.read.not-mapped", errno.EBADF)
    n = max(0, min(op.count, region.size - at))
    groups: dict[bytes, list[Mem]] = {}
    for world in region.worlds:
        groups.setdefault(world.read(at, n, k.page), []).append(world)

    def keep(data: bytes, worlds: list[Mem]) -> Branch:
        def effect(_: Outcome) -> None:
            region.worlds = worlds
            if advance:
                region.pos = at + n
        return Branch(_tagged(k, op.proc, op.fd, "fd.read.data"), ok(data), effect)

    return [keep(data, ws) for data, ws in groups.items()]


def store_position(k: Kernel, op: Read | Write, at: int | None, outcome: Outcome) -> None:
    """The position stored back: where the call began plus what it read or wrote (an error stores
    nothing)."""
    region = _region(k, op.proc, op.fd)
    if region is None or at is None or outcome.kind is not Kind.VALUE:
        return
    value = outcome.value
    if isinstance(value, bytes):
        region.pos = at + len(value)
    elif isinstance(value, int):
        region.pos = at + value


def lseek(k: Kernel, op: Lseek) -> list[Branch]:
    region = _region(k, op.proc, op.fd)
    if region is None:
        return ebadf()
    if not 0 <= op.whence <= SEEK_MAX:  # ksys_lseek rejects it (an unsigned int) before f_op->llseek runs
        return fails("fd.lseek.position", errno.EINVAL)
    if k.profile.fd_io_needs_mapping:
        if region.size == 0:
            return fails("ashmem.lseek.size-zero", errno.EINVAL)
        if not region.materialized:
            return fails("ashmem.lseek.not-mapped", errno.EBADF)
    if op.whence in (SEEK_DATA, SEEK_HOLE):
        return _hole_or_data(k, op, region)
    base = {SEEK_SET: 0, SEEK_CUR: region.pos, SEEK_END: region.size}.get(op.whence)
    new = None if base is None else loff_t(base + op.offset)  # the sum is a loff_t: it may wrap
    if new is None or not 0 <= new <= k.max_offset:  # generic_file_llseek_size / vfs_setpos: s_maxbytes
        return fails("fd.lseek.position", errno.EINVAL)

    def effect(_: Outcome) -> None:
        region.pos = new

    return [Branch(_tagged(k, op.proc, op.fd, "fd.lseek.position"), ok(new), effect)]


def _hole_or_data(k: Kernel, op: Lseek, region: Region) -> list[Branch]:
    """One branch per answer over the possible worlds (a purge the shrinker may have made is a hole)
    and over the two ways kernels compute it for a size within a page of MAX_LFS_FILESIZE."""
    rule = _tagged(k, op.proc, op.fd, "fd.lseek.hole-data")
    if not 0 <= op.offset < region.size:
        return fails(rule, errno.ENXIO)
    groups: dict[int | None, list[Mem]] = {}
    ways: dict[int | None, set[bool]] = {}  # answer → the ways (wraps or not) that give it
    data = op.whence == SEEK_DATA
    for world in region.worlds:
        for wraps in (False, True):
            found = _seek(world, op.offset, region.size, data, k.page, wraps)
            if world not in groups.setdefault(found, []):
                groups[found].append(world)
            ways.setdefault(found, set()).add(wraps)
    differ = any(len(w) == 1 for w in ways.values())  # the two ways disagree: name each answer's

    def keep(found: int | None, worlds: list[Mem]) -> Branch:
        def effect(_: Outcome) -> None:
            region.worlds = worlds
            if found is not None:
                region.pos = found
        variant = "" if not differ or len(ways[found]) == 2 else SEEK_WRAPS if True in ways[found] else SEEK_EXACT
        return Branch(rule, err(errno.ENXIO) if found is None else ok(found), effect, variant=variant)

    return [keep(found, ws) for found, ws in groups.items()]


def _seek(world: Mem, offset: int, size: int, data: bool, page: int, wraps: bool) -> int | None:
    """shmem_seek_hole_data's answer in one world: a position, or None for ENXIO. `wraps`: as 5.10's
    shmem_file_llseek computes it, in loff_t, where (i_size + PAGE_SIZE - 1) overflows for a size
    within a page of MAX_LFS_FILESIZE and the page found, shifted back, wraps negative (observed on
    5.10.223: SEEK_DATA at 0 of an untouched region of 2^63 - 1 bytes returns 0); 6.x's
    mapping_seek_hole_data does not overflow."""
    # an arithmetic shift of the wrapped loff_t, then a pgoff_t; or the page count as it is
    end = (loff_t(size + page - 1) // page) & ((1 << 64) - 1) if wraps else page_align(size, page) // page
    index = offset // page
    if data:  # the first page held at or after index (the set is small; the region may be 2^63 bytes)
        index = min((i for i in world.present if i >= index), default=end)
    else:
        while index in world.present:
            index += 1
    index = min(index, end)
    found = loff_t(index * page) if wraps else index * page
    if found <= offset:
        return offset
    if found < size:
        return found
    return None if data else size


def write(k: Kernel, op: Write) -> list[Branch]:
    """write() as one step: the bytes stored at the position, which moves past them."""
    region = _region(k, op.proc, op.fd)
    return ebadf() if region is None else write_body(k, op, region.pos, advance=True)


def write_body(k: Kernel, op: Write, at: int | None, *, advance: bool = False) -> list[Branch]:
    """The write at position `at` (from position()); the position moves only if `advance`."""
    region = _region(k, op.proc, op.fd)
    if region is None or at is None:
        return ebadf()
    if not k.profile.fd_write:
        return fails("ashmem.write.einval", errno.EINVAL)
    if _past_loff_t(at, len(op.data)):
        return fails("fd.rw.range", errno.EINVAL)
    if not region.prot_mask & PROT_WRITE:
        return fails("memfd.seal.write", errno.EPERM)
    written = 0
    while written < len(op.data):  # generic_perform_write: one page chunk at a time
        chunk = min(k.page - (at + written) % k.page, len(op.data) - written)
        if at + written + chunk > region.size:
            break
        written += chunk
    if written == 0 and op.data:
        return fails("memfd.write.stores", errno.EPERM)

    def effect(_: Outcome) -> None:
        region.worlds = list(dict.fromkeys(w.write(at, op.data[:written], k.page) for w in region.worlds))
        if advance:
            region.pos = at + written

    if written == len(op.data):
        return [Branch("memfd.write.stores", ok(written), effect)]
    # Kernel wins: on Linux 6.12 (Debian 6.12.117, in the VM) a write crossing the end is EPERM with
    # nothing stored: generic_perform_write hands shmem_write_begin the whole write as one
    # folio-sized chunk, and F_SEAL_GROW refuses pos + len > i_size. 5.10.223, 6.1.176 and 6.18
    # store what fits and return the short count (replayed: lseek to size - 1, write 8 bytes).
    return [Branch("memfd.write.stores", ok(written), effect, variant=CROSSING_SHORT),
            Branch("memfd.write.stores", err(errno.EPERM), variant=CROSSING_EPERM)]
