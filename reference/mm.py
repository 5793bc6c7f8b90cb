"""Mappings: the generic half of mmap/mprotect (arch sys_mmap, ksys_mmap_pgoff, do_mmap,
do_mprotect_pkey in mm/, Linux 5.10), page faults, and /proc/self/maps.

A `Vma` is one mapping made by one mmap call. Its protection is `prot`; `may` is the ceiling
that mprotect may raise it to (VM_MAYREAD/MAYWRITE/MAYEXEC), fixed when the mapping is made and
narrowed there by the driver (ashmem clears the bits outside the area's prot mask). A MAP_SHARED
mapping reads and writes the pages of its file (`file`, a ShmemFile); a private ashmem mapping is
anonymous zero memory of its own (`anon`) that only carries the file's name.

Memory access, as a CPU on x86_64 does it, page by page in ascending order:
- a load needs any of PROT_READ/WRITE/EXEC (x86 page tables cannot express write-only or, without
  protection keys, execute-only), a store needs PROT_WRITE; otherwise SIGSEGV;
- a shared page at or beyond ceil(i_size / PAGE_SIZE) cannot be faulted in: SIGBUS;
- a store that faults part-way has already written the bytes of the pages before.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from ashcheck.reference.cint import PAGE_SHIFT, PAGE_SIZE, SIZE_MAX, TASK_SIZE, page_align, u64
from ashcheck.reference.errors import Fault, SyscallError
from ashcheck.reference.shmem import ShmemFile
from ashcheck.reference.vfs import FdTable
from ashcheck.spec.constants import PROT_EXEC, PROT_MASK, PROT_READ, PROT_WRITE
from ashcheck.spec.outcome import SIGSEGV

PROT_SEM = 0x8  # accepted by x86's arch_validate_prot and ignored


@dataclass(eq=False)
class Vma:
    """struct vm_area_struct, reduced to what is observable."""

    length: int  # vm_end - vm_start: the requested length rounded up to pages
    pgoff: int   # vm_pgoff: the file page at the mapping's start
    prot: int    # VM_READ|VM_WRITE|VM_EXEC, as PROT_* bits
    may: int     # VM_MAYREAD|VM_MAYWRITE|VM_MAYEXEC, as PROT_* bits
    shared: bool
    noreserve: bool = False                   # VM_NORESERVE (MAP_NORESERVE): no memory accounting
    file: ShmemFile | None = None             # vm_file, set by the driver's mmap
    anon: dict[int, bytearray] | None = None  # the private pages of an anonymous mapping


def do_mmap(files: FdTable, fd: int, length: int, prot: int, shared: bool, offset: int,
            noreserve: bool = False) -> Vma:
    """mmap(NULL, length, prot, MAP_SHARED or MAP_PRIVATE [| MAP_NORESERVE], fd, offset) up to the
    driver's `f_op->mmap`, which gets the new Vma to check and complete. (With the default
    overcommit heuristic, MAP_NORESERVE becomes VM_NORESERVE.)"""
    offset, length = u64(offset), u64(length)
    if offset & (PAGE_SIZE - 1):              # arch sys_mmap, before the fd is even looked up
        raise SyscallError(errno.EINVAL)
    file = files.get(fd)                      # ksys_mmap_pgoff: fget; O_PATH is EBADF
    if length == 0:                           # do_mmap
        raise SyscallError(errno.EINVAL)
    length = page_align(length)
    if length == 0:
        raise SyscallError(errno.ENOMEM)
    pgoff = offset >> PAGE_SHIFT
    if pgoff + (length >> PAGE_SHIFT) > SIZE_MAX:
        raise SyscallError(errno.EOVERFLOW)
    if length > TASK_SIZE:                    # get_unmapped_area
        raise SyscallError(errno.ENOMEM)
    if pgoff > (SIZE_MAX - length) >> PAGE_SHIFT:  # file_mmap_ok, a character device: ULONG_MAX
        raise SyscallError(errno.EOVERFLOW)
    # Every file here is O_RDWR or O_PATH, so the FMODE_READ / FMODE_WRITE checks always pass.
    vma = Vma(length, pgoff, prot & PROT_MASK, PROT_MASK, shared, noreserve)
    file.fops.mmap(file, vma)                 # mmap_region → call_mmap
    return vma


def mprotect(vma: Vma, prot: int) -> None:
    """mprotect over the whole mapping: unknown bits EINVAL, a bit beyond `may` EACCES."""
    if prot & ~(PROT_MASK | PROT_SEM):
        raise SyscallError(errno.EINVAL)
    if prot & PROT_MASK & ~vma.may:
        raise SyscallError(errno.EACCES)
    vma.prot = prot & PROT_MASK


def load(vma: Vma, offset: int, length: int) -> bytes:
    """Read `length` bytes at `offset` in the mapping."""
    _check_window(vma, offset, length)
    if length and not vma.prot & (PROT_READ | PROT_WRITE | PROT_EXEC):
        raise Fault(SIGSEGV)
    out = bytearray()
    for index, at, n in _pages(offset, length):
        page = _page(vma, index, allocate=False)
        out += page[at:at + n] if page is not None else bytes(n)
    return bytes(out)


def store(vma: Vma, offset: int, data: bytes) -> None:
    """Write `data` at `offset`, byte by byte in ascending order (so page by page)."""
    _check_window(vma, offset, len(data))
    if data and not vma.prot & PROT_WRITE:
        raise Fault(SIGSEGV)
    done = 0
    for index, at, n in _pages(offset, len(data)):
        page = _page(vma, index, allocate=True)
        assert page is not None
        page[at:at + n] = data[done:done + n]
        done += n


def maps_name(vma: Vma) -> bytes:
    """The pathname column of the mapping's /proc/self/maps line: the backing shmem file is
    unlinked, so d_path ends in " (deleted)"; seq_file_path escapes b"\\n" as b"\\012"."""
    assert vma.file is not None, "every ashmem mapping has a vm_file"
    return b"/" + vma.file.name.replace(b"\n", b"\\012") + b" (deleted)"


def _check_window(vma: Vma, offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset + length > vma.length:
        raise ValueError(f"access [{offset}, {offset + length}) outside a mapping of {vma.length} bytes: "
                         "the harness must only touch its own mappings")


def _pages(offset: int, length: int) -> list[tuple[int, int, int]]:
    """(page index in the mapping, offset in the page, byte count) for each page touched."""
    out = []
    end = offset + length
    while offset < end:
        index, at = divmod(offset, PAGE_SIZE)
        n = min(PAGE_SIZE - at, end - offset)
        out.append((index, at, n))
        offset += n
    return out


def _page(vma: Vma, index: int, allocate: bool) -> bytearray | None:
    """The page behind mapping page `index`: an anonymous page (zero-filled, allocated on first
    store), or the file page through shmem_fault (allocated on any fault, SIGBUS past EOF)."""
    if vma.anon is not None:
        page = vma.anon.get(index)
        if page is None and allocate:
            page = vma.anon[index] = bytearray(PAGE_SIZE)
        return page
    assert vma.file is not None, "a shared mapping has a vm_file"
    return vma.file.fault(vma.pgoff + index)
