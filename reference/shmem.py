"""The backing file of an ashmem area: a shmem file (mm/shmem.c, Linux 5.10).

`ashmem_mmap` creates it on the first successful mmap with `shmem_file_setup(name, size, …)` and
it lives as long as the area or any mapping holds it. Everything an ashmem region stores lives
here; MAP_SHARED mappings fault its pages in, `read()` reads it, the shrinker punches holes in it.

Pages are sparse, as in the page cache: a page exists once a fault or a store brought it in, and
not before. So a region of 2^40 bytes costs nothing until touched, `read()` of a hole gives zeros
without allocating (SGP_READ), a fault through a mapping allocates (SGP_CACHE), and
SEEK_DATA / SEEK_HOLE answer from the same dict the shrinker empties.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from ashcheck.reference.cint import MAX_LFS_FILESIZE, PAGE_SHIFT, PAGE_SIZE, pages_in, s64
from ashcheck.reference.errors import Fault, SyscallError
from ashcheck.spec.constants import SEEK_CUR, SEEK_DATA, SEEK_END, SEEK_HOLE
from ashcheck.spec.outcome import SIGBUS


@dataclass(eq=False)
class ShmemFile:
    """One shmem inode plus the one `struct file` ashmem opens on it (`asma->file`)."""

    name: bytes  # the dentry name: b"dev/ashmem/<name>" or b"dev/ashmem"
    size: int    # i_size; ashmem never changes it after creation
    pages: dict[int, bytearray] = field(default_factory=dict)
    pos: int = 0  # f_pos of asma->file, which ashmem_llseek moves and copies back

    # --- page cache -----------------------------------------------------------------------------
    def fault(self, index: int) -> bytearray:
        """shmem_fault through a MAP_SHARED mapping: the page, allocated zeroed on first touch.
        An index at or past ceil(i_size / PAGE_SIZE) cannot be faulted in: SIGBUS."""
        if index >= pages_in(self.size):
            raise Fault(SIGBUS)
        page = self.pages.get(index)
        if page is None:
            page = self.pages[index] = bytearray(PAGE_SIZE)
        return page

    def read(self, pos: int, count: int) -> bytes:
        """shmem_file_read_iter: at most up to i_size; holes read as zeros and stay holes."""
        end = min(pos + count, self.size)
        out = bytearray()
        while pos < end:
            index, at = divmod(pos, PAGE_SIZE)
            n = min(PAGE_SIZE - at, end - pos)
            page = self.pages.get(index)
            out += page[at:at + n] if page is not None else bytes(n)
            pos += n
        return bytes(out)

    def punch_hole(self, offset: int, length: int) -> None:
        """shmem_fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length), reached
        through `f_op->fallocate` directly, so without vfs_fallocate's `len > 0` check.

        It calls shmem_truncate_range(offset, offset + length - 1), which frees the whole pages
        from ceil(offset / PAGE) up to (lend + 1) / PAGE, where lend == -1 means "to the end".
        The shrinker can pass length 0 (a degenerate range, nothing freed) or make lend == -1 (a
        range ending at page SIZE_MAX, so everything from its first page is freed)."""
        lend = offset + length - 1
        first = (offset + PAGE_SIZE - 1) >> PAGE_SHIFT
        stop = None if lend == -1 else (lend + 1) >> PAGE_SHIFT
        for index in [i for i in self.pages if i >= first and (stop is None or i < stop)]:
            del self.pages[index]

    # --- llseek ---------------------------------------------------------------------------------
    def llseek(self, offset: int, whence: int) -> int:
        """shmem_file_llseek: generic_file_llseek_size(…, MAX_LFS_FILESIZE, i_size), or the
        page-cache walk for SEEK_DATA / SEEK_HOLE. Moves and returns `pos`."""
        if whence in (SEEK_DATA, SEEK_HOLE):
            return self._setpos(self._seek_hole_data(offset, whence))
        if whence == SEEK_END:
            offset = s64(offset + self.size)
        elif whence == SEEK_CUR:
            if offset == 0:
                return self.pos
            offset = s64(self.pos + offset)
        return self._setpos(offset)

    def _setpos(self, offset: int) -> int:
        """vfs_setpos: negative or beyond MAX_LFS_FILESIZE is EINVAL."""
        if offset < 0 or offset > MAX_LFS_FILESIZE:
            raise SyscallError(errno.EINVAL)
        self.pos = offset
        return offset

    def _seek_hole_data(self, offset: int, whence: int) -> int:
        """shmem_file_llseek's SEEK_DATA / SEEK_HOLE branch (shmem_seek_hole_data)."""
        if offset < 0 or offset >= self.size:
            raise SyscallError(errno.ENXIO)
        index, end = offset >> PAGE_SHIFT, pages_in(self.size)
        if whence == SEEK_DATA:
            index = min((i for i in self.pages if i >= index), default=end)
        else:
            while index < end and index in self.pages:
                index += 1
        found = index << PAGE_SHIFT
        if found <= offset:
            return offset
        if found < self.size:
            return found
        if whence == SEEK_DATA:
            raise SyscallError(errno.ENXIO)
        return self.size
