"""mmap, munmap, mprotect, loads and stores through mappings, and /proc/pid/maps names.

Rules (C driver = drivers/staging/android/ashmem.c ashmem_mmap, Linux 5.10; generic = mm/mmap.c
do_mmap and mm/mprotect.c; memfd = mm/shmem.c + memfd seals; ashmem.md §2, §6.4; K510-OBS):

- Generic checks run first: an unaligned offset is EINVAL, then a bad fd EBADF, then length 0
  EINVAL; a length whose PAGE_ALIGN wraps to 0 (-1 as a size_t) or longer than the address space
  ENOMEM; an offset (an unsigned long) whose page number plus the length's pages overflows, or
  passes what the file may map (file_mmap_ok: ULONG_MAX for /dev/ashmem, a char device;
  MAX_LFS_FILESIZE for a memfd), EOVERFLOW. A negative page-aligned offset is the last case.
- The C driver then checks, in order: size 0 → EINVAL; PAGE_ALIGN(length) > PAGE_ALIGN(size) →
  EINVAL (the offset is not checked); a prot bit outside the mask → EPERM, for MAP_PRIVATE too.
  The first mmap then creates the backing file (shmem_file_setup): a size beyond MAX_LFS_FILESIZE
  is EINVAL, more pages than RAM + swap ENOMEM (observed on 5.10.223: 2 GiB in a 512 MiB guest),
  unless the mapping asks MAP_NORESERVE (VM_NORESERVE: no accounting at all).
  memfd mode checks none of these.
- Seals are a contract (man 2 fcntl, memfd_create): once WRITE is removed from a memfd's mask
  (F_SEAL_FUTURE_WRITE), no new shared mapping may be writable (EPERM) and no shared mapping made
  after the seal may become writable (mprotect EACCES). How the kernel places the new mapping is
  no excuse: one merged into an older mapping is held to the same contract.
- The mapping's VM_MAY* bits are the mask at mmap time: mprotect beyond them is EACCES, while a
  mapping made before the mask shrank keeps what it had.
- The first successful mmap materializes an ashmem region (sticky, even after munmap).
- MAP_SHARED mappings, in every process and through every fd, see one set of pages. A page at or
  past the end of the file (ceil(size / PAGE) pages) is SIGBUS when touched.
- A name is not an identity: two regions with equal names have pages of their own. A load that
  would tell them apart (the other region holds other bytes there) is judged by that rule.
- ashmem MAP_PRIVATE is anonymous zero memory of its own (vma_set_anonymous); memfd MAP_PRIVATE
  is a copy-on-write view of the file.
- Loads need PROT_READ (PROT_NONE is SIGSEGV; a write- or exec-only mapping is readable on some
  architectures and not on others), stores need PROT_WRITE (else SIGSEGV). Loads and stores go
  byte by byte upwards, so one that faults part-way has touched the pages before the faulting one.
- A load or store through a file-backed mapping faults the file's page in (shmem_fault, SGP_CACHE),
  zero or not; read() does not (SGP_READ). SEEK_DATA / SEEK_HOLE see those pages (fileio.py).
- Mappings keep the memory after every fd is closed (ashmem_area doc: "Mappings do NOT pin this
  structure", the vma holds the backing file).
- /proc/pid/maps names the mapping "/dev/ashmem/<name> (deleted)" ("/dev/ashmem (deleted)"
  unnamed) for shared and private mappings; memfd: "/memfd:<name> (deleted)". The kernel
  escapes a newline in a path as \\012 (fs/proc/task_mmu.c show_map_vma → seq_file_path).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import replace

from ashcheck.spec import pins
from ashcheck.spec.branch import Branch, ebadf, fails
from ashcheck.spec.constants import (
    MAX_LFS_FILESIZE,
    PROT_MASK,
    PROT_READ,
    PROT_WRITE,
    SIZE_MAX,
    TASK_SIZE_LEAST,
    TASK_SIZE_MOST,
    page_align,
)
from ashcheck.spec.ops import Load, MapsName, Mmap, Mprotect, Munmap, Store
from ashcheck.spec.outcome import SIGBUS, SIGSEGV, Outcome, err, fault, ok
from ashcheck.spec.rules import Rule, declare
from ashcheck.spec.state import Kernel, Mapping, Mem, Region, SpecLimit, dedup

C = "drivers/staging/android/ashmem.c ashmem_mmap, 5.10"
OBS = "K510-OBS §2 (Debian 5.10.0-46)"
A, M = ("ashmem",), ("memfd",)

declare(
    Rule("mem.mmap.generic-einval", "mmap with an unaligned offset is EINVAL even on a bad fd; "
         "length 0 is EINVAL after the fd lookup",
         "arch/x86/kernel/sys_x86_64.c sys_mmap (offset first); mm/mmap.c ksys_mmap_pgoff, do_mmap, 5.10"),
    Rule("mem.mmap.range", "mmap whose length page-aligns to 0 (wraps) or exceeds the address space is ENOMEM; "
         "one whose offset's page number plus the length passes what the file may map is EOVERFLOW "
         "(a negative page-aligned offset included), before the driver is asked. A 32-bit process's C library "
         "checks first: an offset below 0 or of 2^44 or more is EINVAL (mmap2 counts pages in 32 bits), a "
         "length (a 32-bit size_t) of PTRDIFF_MAX or more ENOMEM, even on a bad fd",
         "mm/mmap.c do_mmap, file_mmap_size_max, file_mmap_ok, get_unmapped_area; "
         "arch/x86/kernel/sys_x86_64.c sys_mmap (an unsigned long offset), 5.10; musl src/mman/mmap.c "
         "(OFF_MASK, PTRDIFF_MAX); bionic libc/bionic/mmap.cpp mmap64; observed with a 32-bit executor on "
         "Debian 5.10.223"),
    Rule("ashmem.mmap.size-zero", "mmap of a region whose size is 0 is EINVAL", C + "; " + OBS, profiles=A),
    Rule("ashmem.mmap.too-long", "mmap longer than PAGE_ALIGN(size) is EINVAL", C + "; " + OBS, profiles=A),
    Rule("ashmem.mmap.prot-outside-mask", "mmap asking for a prot bit outside the mask is EPERM, "
         "MAP_PRIVATE included", C + "; " + OBS, profiles=A),
    Rule("memfd.seal.mmap", "memfd mode: after write removal (F_SEAL_FUTURE_WRITE) a new MAP_SHARED mapping "
         "with PROT_WRITE is EPERM, wherever the kernel places it (next to an older mapping too)",
         "man 2 fcntl and memfd_create (F_SEAL_FUTURE_WRITE); mm/shmem.c shmem_mmap, 5.10", profiles=M),
    Rule("memfd.seal.mprotect", "memfd mode: a MAP_SHARED mapping made after write removal cannot be made "
         "writable: mprotect(PROT_WRITE) is EACCES (VM_MAYWRITE cleared), merged with an older mapping or not",
         "man 2 fcntl (F_SEAL_FUTURE_WRITE); mm/shmem.c shmem_mmap clears VM_MAYWRITE, 5.10", profiles=M),
    Rule("ashmem.mmap.materializes", "the first successful mmap materializes the region",
         C, profiles=A),
    Rule("ashmem.mmap.setup-fails", "the first mmap creates the backing file and fails with it: EINVAL for a "
         "size beyond MAX_LFS_FILESIZE, ENOMEM for more pages than RAM + swap (overcommit heuristic; "
         "with the machine's memory unknown, a first mmap over 64 MiB may fail with ENOMEM)",
         C + " shmem_file_setup → shmem_acct_size → __vm_enough_memory (OVERCOMMIT_GUESS), 5.10; "
         "observed on Debian 5.10.223 with 512 MiB: a 2 GiB region's first mmap is ENOMEM", profiles=A),
    Rule("ashmem.mmap.noreserve", "a first mmap with MAP_NORESERVE creates the backing file without charging "
         "it to RAM + swap: it succeeds where a reserving one gets ENOMEM (a size beyond MAX_LFS_FILESIZE "
         "stays EINVAL)", C + " shmem_file_setup(name, size, vma->vm_flags) → shmem_acct_size skips "
         "VM_NORESERVE, 5.10", profiles=A),
    Rule("ashmem.mmap.ok", "mmap within the rules succeeds, any number of times, from any holder", C),
    Rule("ashmem.mmap.offset-unchecked", "the file offset is not checked: offset + length may pass the size",
         C + " (only vm_end - vm_start is compared)", profiles=A),
    Rule("memfd.mmap.no-size-check", "memfd mode: mmap of a size-0 region or longer than the size succeeds",
         "mm/shmem.c shmem_mmap; ashmem.md §6.4 (probed)", profiles=M),
    Rule("mem.munmap.ok", "munmap of a mapping succeeds", "mm/mmap.c"),
    Rule("mem.mprotect.ok", "mprotect within the mapping's VM_MAY* bits succeeds", "mm/mprotect.c"),
    Rule("ashmem.mprotect.beyond-mask", "mprotect adding a bit that was outside the mask at mmap time "
         "is EACCES (VM_MAY* cleared)", C + " calc_vm_may_flags; mm/mprotect.c; " + OBS, profiles=A),
    Rule("mem.load.shared", "a load through a MAP_SHARED mapping returns the region's bytes, the same "
         "through every fd, process and mapping", "mm/shmem.c; " + C),
    Rule("ashmem.name.not-an-identity", "regions with equal names are independent: a load through one never "
         "shows another's bytes (the name labels GET_NAME and /proc/pid/maps; nothing looks a region up by it, "
         "unlike shm_open's)", "drivers/staging/android/ashmem.c, 5.10: ashmem_open allocates a new area on every "
         "open, asma->name is read only by get_name and shmem_file_setup (the dentry name); "
         "man 2 memfd_create (names 'do not affect the behavior of the file descriptor')"),
    Rule("ashmem.shrinker.any-time", "unpinned memory may read as the old bytes or as zeros: the "
         "shrinker purges whole unpinned ranges at any time, of one region's the oldest on the LRU first "
         "(memfd mode never purges)",
         "ashmem_shrink_scan (list_for_each_entry_safe from the LRU's head), lru_add (list_add_tail), "
         "range_shrink (keeps the LRU place), 5.10; ashmem.md §3.5", profiles=A),
    Rule("ashmem.purge.zero-fill", "after a purge the range reads as zeros in every shared mapping",
         "ashmem_shrink_scan (FALLOC_FL_PUNCH_HOLE), 5.10; " + OBS, profiles=A),
    Rule("ashmem.mmap.private-anonymous", "an ashmem MAP_PRIVATE mapping is zero-filled memory of its "
         "own, blind to the region's data", C + " vma_set_anonymous (commit 11980c2ac4cc)", profiles=A),
    Rule("memfd.mmap.private-cow", "a memfd MAP_PRIVATE mapping is a copy-on-write view of the data",
         "mm/shmem.c; ashmem.md §6.4 (probed)", profiles=M),
    Rule("mem.load.segv", "a load through a PROT_NONE mapping is SIGSEGV", "arch fault handling"),
    Rule("mem.sigbus-beyond-eof", "touching a shared page at or past ceil(size/PAGE) is SIGBUS",
         "mm/shmem.c shmem_fault beyond i_size; ashmem.md §2"),
    Rule("mem.store.ok", "a store through a writable mapping succeeds", "mm"),
    Rule("mem.store.segv", "a store through a mapping without PROT_WRITE is SIGSEGV", "arch fault handling"),
    Rule("ashmem.lifetime.mapping-outlives-close", "a mapping keeps working after every fd of its region "
         "is closed", "ashmem_area comment 'Mappings do NOT pin this structure'; CTS testUseAfterClose"),
    Rule("ashmem.maps.name", "/proc/pid/maps shows /dev/ashmem/<name> (deleted) or /memfd:<name> (deleted)",
         C + " shmem_file_setup(asma->name); " + OBS, needs=("maps-name",)),
)


def mmap(k: Kernel, op: Mmap) -> list[Branch]:
    if op.offset % k.page:  # arch sys_mmap checks the offset before it looks the fd up
        return fails("mem.mmap.generic-einval", errno.EINVAL)
    if k.long_bits == 32:  # the C library's mmap64 → mmap2 (page units), before any syscall
        if not 0 <= op.offset < LIBC32_OFFSET_LIMIT:
            return fails("mem.mmap.range", errno.EINVAL)
        if k.ulong(op.length) >= LIBC32_PTRDIFF_MAX:
            return fails("mem.mmap.range", errno.ENOMEM)
    region = k.region_of(op.proc, op.fd)
    if region is None:
        return ebadf()
    length, offset = k.ulong(op.length), op.offset & SIZE_MAX  # size_t, unsigned long (the kernel's)
    if length == 0:
        return fails("mem.mmap.generic-einval", errno.EINVAL)
    pages = page_align(length, k.page) // k.page
    if pages * k.page > SIZE_MAX:  # PAGE_ALIGN wrapped to 0
        return fails("mem.mmap.range", errno.ENOMEM)
    pgoff, size, limit = offset // k.page, pages * k.page, k.profile.mmap_file_max
    if pgoff + pages > SIZE_MAX:  # do_mmap's overflow check, in page numbers
        return fails("mem.mmap.range", errno.EOVERFLOW)
    if size > TASK_SIZE_MOST:  # get_unmapped_area, before file_mmap_ok
        return fails("mem.mmap.range", errno.ENOMEM)
    # between the least and the most TASK_SIZE the spec does not know this kernel's: ENOMEM may come
    # first; a 32-bit process's 4 GiB may have no gap that long
    least = TASK32_ROOM if k.long_bits == 32 else TASK_SIZE_LEAST
    maybe = [Branch("mem.mmap.range", err(errno.ENOMEM))] if size > least else []
    if size > limit or pgoff > (limit - size) // k.page:  # file_mmap_ok
        return [*maybe, Branch("mem.mmap.range", err(errno.EOVERFLOW))]
    return maybe + _mmap_checked(k, replace(op, length=length, offset=offset), region)


def _mmap_checked(k: Kernel, op: Mmap, region: Region) -> list[Branch]:
    """mmap after the generic checks: the driver's (or shmem's) own."""
    profile = k.profile
    aligned_size = page_align(region.size, k.page)
    if profile.mmap_checks_size:
        if region.size == 0:
            return fails("ashmem.mmap.size-zero", errno.EINVAL)
        if page_align(op.length, k.page) > aligned_size:
            return fails("ashmem.mmap.too-long", errno.EINVAL)
    checked = op.shared or profile.private_checks_mask
    if checked and op.prot & ~region.prot_mask & PROT_MASK:
        return fails("memfd.seal.mmap" if profile.mask_is_seal else "ashmem.mmap.prot-outside-mask", errno.EPERM)
    if not profile.mmap_checks_size and (region.size == 0 or op.length > aligned_size):
        rule = "memfd.mmap.no-size-check"
    elif op.offset + op.length > aligned_size:
        rule = "ashmem.mmap.offset-unchecked"
    else:
        rule = "ashmem.mmap.ok" if region.materialized else "ashmem.mmap.materializes"
    may = region.prot_mask if checked else PROT_MASK

    def effect(_: Outcome) -> None:
        region.materialized = True
        k.procs[op.proc].maps[op.map_id] = Mapping(region.rid, op.length, op.prot, may, op.shared, op.offset)

    failure = None if region.materialized else _shmem_file_setup_fails(k, region)
    if failure is None:
        return [Branch(rule, ok(None), effect)]
    code, certain = failure
    if code == errno.ENOMEM and op.noreserve:  # what a reserving mmap would meet: here it must succeed
        return [Branch("ashmem.mmap.noreserve", ok(None), effect)]
    fail = Branch("ashmem.mmap.setup-fails", err(code))
    return [fail] if certain else [Branch(rule, ok(None), effect), fail]


LIBC32_OFFSET_LIMIT = 1 << 44  # musl's OFF_MASK: mmap2's page offset is a 32-bit unsigned long
LIBC32_PTRDIFF_MAX = 2**31 - 1  # musl: len >= PTRDIFF_MAX is ENOMEM (bionic: the page-rounded len above it)
TASK32_ROOM = 1 << 30  # a 32-bit process surely has a free gap this long, and perhaps no longer one
UNKNOWN_MEMORY_FLOOR = 64 << 20  # every machine we run on has this much to spare


def _shmem_file_setup_fails(k: Kernel, region: Region) -> tuple[int, bool] | None:
    """How the first mmap's shmem_file_setup(name, size, vm_flags) fails, if it may: (errno, whether
    it must, for a reserving mmap). The size goes in as a loff_t, so one beyond MAX_LFS_FILESIZE is
    negative: EINVAL, whatever the flags. Then shmem_acct_size asks __vm_enough_memory for
    VM_ACCT(size) pages unless VM_NORESERVE, which under the default heuristic refuses more pages
    than RAM + swap (the caller turns that case into a success for MAP_NORESERVE)."""
    if region.size > MAX_LFS_FILESIZE:
        return errno.EINVAL, True
    if k.memory is None:
        return (errno.ENOMEM, False) if region.size > UNKNOWN_MEMORY_FLOOR else None
    if page_align(region.size, k.page) // k.page > k.memory // k.page:
        return errno.ENOMEM, True
    return None


def munmap(k: Kernel, op: Munmap) -> list[Branch]:
    def effect(_: Outcome) -> None:
        rid = k.procs[op.proc].maps.pop(op.map_id).rid
        k.collect(rid)

    return [Branch("mem.munmap.ok", ok(None), effect)]


def mprotect(k: Kernel, op: Mprotect) -> list[Branch]:
    m = k.procs[op.proc].maps[op.map_id]
    if op.prot & ~m.may & PROT_MASK:
        return fails("memfd.seal.mprotect" if k.profile.mask_is_seal else "ashmem.mprotect.beyond-mask",
                     errno.EACCES)

    def effect(_: Outcome) -> None:
        m.prot = op.prot

    return [Branch("mem.mprotect.ok", ok(None), effect)]


def _file_backed(k: Kernel, m: Mapping) -> bool:
    return m.shared or not k.profile.private_is_anonymous


def _first_bus_page(k: Kernel, m: Mapping, region: Region, offset: int, length: int) -> int | None:
    """The first page of [offset, offset+length) in the mapping that lies past the end of file."""
    if not _file_backed(k, m):
        return None
    end_pages = region.npages_file(k.page)
    for index in range(offset // k.page, (offset + length - 1) // k.page + 1):
        if index in m.private:
            continue
        if (m.offset // k.page) + index >= end_pages:
            return index
    return None


def _view(k: Kernel, m: Mapping, world: Mem, offset: int, length: int) -> bytes:
    """What the mapping shows at [offset, offset+length) in one possible world."""
    if m.shared:
        return world.read(m.offset + offset, length, k.page)
    out = bytearray()
    for index in range(offset // k.page, (offset + length - 1) // k.page + 1):
        lo, hi = max(offset, index * k.page), min(offset + length, (index + 1) * k.page)
        page = m.private.get(index)
        if page is None:
            if k.profile.private_is_anonymous:
                page = bytes(k.page)
            else:
                page = world.read(m.offset + index * k.page, k.page, k.page)
        out += page[lo - index * k.page:hi - index * k.page]
    return bytes(out)


def load(k: Kernel, op: Load) -> list[Branch]:
    m = k.procs[op.proc].maps[op.map_id]
    region = k.regions[m.rid]
    if m.prot == 0:
        return [Branch("mem.load.segv", fault(SIGSEGV))]
    branches: list[Branch] = []
    if not m.prot & PROT_READ:  # write- or exec-only: readable on x86, not with exec-only pkeys
        branches.append(Branch("mem.load.segv", fault(SIGSEGV)))
    bus = _first_bus_page(k, m, region, op.offset, op.length)
    if bus is not None:  # the bytes before the bad page were read, their pages faulted in
        faulted = _file_pages(k, m, op.offset, bus * k.page - op.offset)
        return [*branches, Branch("mem.sigbus-beyond-eof", fault(SIGBUS), _keep(region, region.worlds, faulted))]
    groups: dict[bytes, list[Mem]] = {}
    for world in region.worlds:
        groups.setdefault(_view(k, m, world, op.offset, op.length), []).append(world)
    rule = _load_rule(k, m, region, op.offset, op.length)
    faulted = _file_pages(k, m, op.offset, op.length)
    for data, worlds in groups.items():
        branches.append(Branch(rule, ok(data), _keep(region, worlds, faulted)))
    return branches


def _file_pages(k: Kernel, m: Mapping, offset: int, length: int) -> set[int]:
    """The backing file's pages that touching [offset, offset+length) of the mapping faults in:
    none for anonymous memory (an ashmem MAP_PRIVATE mapping, a private page already copied)."""
    if length <= 0 or not _file_backed(k, m):
        return set()
    pages = range(offset // k.page, (offset + length - 1) // k.page + 1)
    return {m.offset // k.page + i for i in pages if m.shared or i not in m.private}


def _keep(region: Region, worlds: list[Mem], faulted: set[int]) -> Callable[[Outcome], None]:
    def effect(_: Outcome) -> None:
        region.worlds = dedup([w.touch(faulted) for w in worlds])
    return effect


def _load_rule(k: Kernel, m: Mapping, region: Region, offset: int, length: int) -> str:
    if not m.shared:
        return "ashmem.mmap.private-anonymous" if k.profile.private_is_anonymous else "memfd.mmap.private-cow"
    if region.fd_refs == 0:
        return "ashmem.lifetime.mapping-outlives-close"
    first = (m.offset + offset) // k.page
    last = (m.offset + offset + length - 1) // k.page
    touched = [r for w in region.worlds for r in w.ranges if pins.overlaps(r, first, last)]
    if any(not r[2] for r in touched) and len(region.worlds) > 1:
        return "ashmem.shrinker.any-time"
    if any(r[2] for r in touched):
        return "ashmem.purge.zero-fill"
    if _namesake_differs(k, region, m.offset + offset, length):
        return "ashmem.name.not-an-identity"
    return "mem.load.shared"


def _namesake_differs(k: Kernel, region: Region, at: int, length: int) -> bool:
    """Whether another region of the same name holds other bytes where this load reads: then the
    load tells two regions apart that an implementation keyed by name would have merged."""
    namesakes = [other for other in k.regions.values()
                 if other.name == region.name and other.rid != region.rid and not other.untracked]
    if not namesakes:  # the common case, on every shared load: nothing to read
        return False
    mine = {w.read(at, length, k.page) for w in region.worlds}
    return any(w.read(at, length, k.page) not in mine for other in namesakes for w in other.worlds)


def store(k: Kernel, op: Store) -> list[Branch]:
    m = k.procs[op.proc].maps[op.map_id]
    region = k.regions[m.rid]
    if not m.prot & PROT_WRITE:
        return [Branch("mem.store.segv", fault(SIGSEGV))]
    bus = _first_bus_page(k, m, region, op.offset, len(op.data))
    written = op.data if bus is None else op.data[:max(0, bus * k.page - op.offset)]

    def effect(_: Outcome) -> None:
        if written:
            _write(k, m, region, op.offset, written)

    if bus is not None:
        return [Branch("mem.sigbus-beyond-eof", fault(SIGBUS), effect)]
    return [Branch("mem.store.ok", ok(None), effect)]


def _write(k: Kernel, m: Mapping, region: Region, offset: int, data: bytes) -> None:
    if m.shared:
        region.worlds = list(dict.fromkeys(w.write(m.offset + offset, data, k.page) for w in region.worlds))
        return
    end = offset + len(data)
    for index in range(offset // k.page, (end - 1) // k.page + 1):
        if index not in m.private:  # copy-on-write: the file's page is faulted in first (memfd)
            views = {_view(k, m, w, index * k.page, k.page) for w in region.worlds}
            if len(views) > 1:
                raise SpecLimit("copy-on-write of a page whose contents are uncertain")
            faulted = _file_pages(k, m, index * k.page, k.page)
            region.worlds = dedup([w.touch(faulted) for w in region.worlds])
            m.private[index] = views.pop()
        page = bytearray(m.private[index])
        lo, hi = max(offset, index * k.page), min(end, (index + 1) * k.page)
        page[lo - index * k.page:hi - index * k.page] = data[lo - offset:hi - offset]
        m.private[index] = bytes(page)


def maps_name(k: Kernel, op: MapsName) -> list[Branch]:
    region = k.regions[k.procs[op.proc].maps[op.map_id].rid]
    name = region.name
    path = k.profile.maps_prefix + (k.profile.maps_separator + name if name else b"")
    return [Branch("ashmem.maps.name", ok(path.replace(b"\n", b"\\012") + b" (deleted)"))]
