"""/dev/ashmem: `ashmem_fops` (ashmem_open, ashmem_release, ashmem_read_iter, ashmem_llseek,
ashmem_mmap, ashmem_ioctl) and the driver's globals (drivers/staging/android/ashmem.c, 5.10).

One `AshmemDriver` per simulated kernel plays the module: it owns the global LRU and lru_count,
and every open() gets a fresh `Area` as the file's private_data.

- read(): size 0 is EOF; not materialized is EBADF; otherwise the backing file is read at the
  fd's position (holes and purged pages as zeros, EOF at the size).
- lseek(): size 0 is EINVAL; not materialized is EBADF; otherwise the backing file seeks (SEEK_CUR
  from *its* position) and the position is copied back to the ashmem file.
- write(): the driver has none, so the VFS says EINVAL.
- mmap(): size 0 EINVAL, then length > PAGE_ALIGN(size) EINVAL, then a prot bit outside the mask
  EPERM (MAP_PRIVATE too); the mapping's VM_MAY* bits are cut to the mask; the first success
  creates the backing file. Shared mappings use the backing file's pages, private ones are
  anonymous. The file offset is not checked: pages past the size SIGBUS when touched.
- release (last descriptor closed): the area's unpinned ranges leave the LRU. Mappings hold the
  backing file themselves, so they keep working and keep their data.
"""

from __future__ import annotations

import errno

from ashcheck.reference.area import Area
from ashcheck.reference.ashmem_ioctl import ashmem_ioctl
from ashcheck.reference.cint import MAX_LFS_FILESIZE, page_align, pages_in
from ashcheck.reference.errors import SyscallError
from ashcheck.reference.mm import Vma
from ashcheck.reference.ranges import Lru, UnpinnedList
from ashcheck.reference.shmem import ShmemFile
from ashcheck.reference.vfs import Cred, File, FileOperations, IoctlArg, IoctlResult


class AshmemDriver(FileOperations):
    """The ashmem module: its file operations and its globals.

    `ram_pages`: the machine's RAM + swap in pages for shmem's overcommit accounting (the first
    mmap of a region larger than that fails with ENOMEM); None for a machine that never runs out.
    """

    def __init__(self, ram_pages: int | None = None) -> None:
        self.lru = Lru()
        self.ram_pages = ram_pages

    def open(self) -> File:
        """ashmem_open: a new, empty area."""
        return File(self, private_data=Area(UnpinnedList(self.lru)))

    def release(self, file: File) -> None:
        """ashmem_release: delete every range (so it leaves the LRU). The area is then gone; its
        backing file lives on in the mappings that hold it."""
        _area(file).unpinned.release()

    def read(self, file: File, count: int) -> bytes:
        """ashmem_read_iter, reached through vfs_read at the file's position."""
        asma = _area(file)
        if asma.size == 0:
            return b""
        if asma.file is None:
            raise SyscallError(errno.EBADF)
        data = asma.file.read(file.pos, count)
        file.pos += len(data)
        if data:
            asma.file.pos = file.pos
        return data

    def llseek(self, file: File, offset: int, whence: int) -> int:
        """ashmem_llseek: vfs_llseek on the backing file, whose f_pos is then copied back."""
        asma = _area(file)
        if asma.size == 0:
            raise SyscallError(errno.EINVAL)
        if asma.file is None:
            raise SyscallError(errno.EBADF)
        ret = asma.file.llseek(offset, whence)
        file.pos = asma.file.pos
        return ret

    def ioctl(self, file: File, cmd: int, arg: IoctlArg, cred: Cred) -> IoctlResult:
        return ashmem_ioctl(_area(file), cmd, arg, self.lru, cred)

    def mmap(self, file: File, vma: Vma) -> None:
        """ashmem_mmap, after the generic checks of do_mmap (mm.py)."""
        asma = _area(file)
        if asma.size == 0:  # "user needs to SET_SIZE before mapping"
            raise SyscallError(errno.EINVAL)
        if vma.length > page_align(asma.size):
            raise SyscallError(errno.EINVAL)
        if vma.prot & ~asma.prot_mask:
            raise SyscallError(errno.EPERM)
        vma.may &= asma.prot_mask  # vm_flags &= ~calc_vm_may_flags(~prot_mask)
        if asma.file is None:
            asma.file = self._shmem_file_setup(asma.full_name(), asma.size, vma.noreserve)
        vma.file = asma.file  # vma_set_file, for shared and private mappings alike
        vma.anon = None if vma.shared else {}  # shmem_zero_setup vs vma_set_anonymous

    def _shmem_file_setup(self, name: bytes, size: int, noreserve: bool) -> ShmemFile:
        """shmem_file_setup(name, size, vma->vm_flags): a size beyond MAX_LFS_FILESIZE (a negative
        loff_t) is EINVAL; more pages than the machine has is ENOMEM (overcommit heuristic), unless
        the flags hold VM_NORESERVE (shmem_acct_size then charges nothing)."""
        if size > MAX_LFS_FILESIZE:
            raise SyscallError(errno.EINVAL)
        if not noreserve and self.ram_pages is not None and pages_in(size) > self.ram_pages:
            raise SyscallError(errno.ENOMEM)
        return ShmemFile(name, size)


def _area(file: File) -> Area:
    asma = file.private_data
    if not isinstance(asma, Area):
        raise TypeError(f"an ashmem file without an area: {file!r}")
    return asma
