"""A deterministic simulator of a kernel with the C ashmem driver (Linux 5.10) and binder fd
transfer: one way to do it, checked by the suite like any other implementation (it is not the
oracle, and it shares no code with ashcheck.spec beyond the vocabulary of operations, outcomes
and constants).

    kernel = Kernel(seed=0)
    kernel.spawn(0)                                 # ok((0, 1, 2))
    fd = kernel.ashmem_create_region(0, b"r", 4096).value
    kernel.mmap(0, 0, fd, 4096, PROT_READ | PROT_WRITE, shared=True)
    kernel.store(0, 0, 0, b"hi"); kernel.load(0, 0, 0, 2)   # ok(b"hi")

Modules, each mirroring the kernel code named in its header:
  kernel.py        processes and the system calls (→ Outcome), memory pressure
  vfs.py           open file descriptions, fd tables, the generic read/write/lseek/ioctl checks
  mm.py            do_mmap's generic checks, mprotect, page faults, /proc/self/maps names
  ashmem.py        ashmem_fops: open, release, read_iter, llseek, mmap
  ashmem_ioctl.py  ashmem_ioctl: names, size, prot mask, pin argument checks, PURGE_ALL_CACHES
  area.py          struct ashmem_area
  ranges.py        the unpinned range list (ashmem_pin / ashmem_unpin) and the global LRU
  shrinker.py      ashmem_shrink_scan and the seeded memory-pressure policy
  shmem.py         the backing shmem file: sparse pages, read, punch hole, SEEK_DATA/HOLE
  binder.py        binder_translate_fd and the receiver's fd fixups
  cint.py          C integer widths (u32, size_t, loff_t) and page arithmetic
  errors.py        SyscallError and Fault, which never leave the Kernel
"""

from ashcheck.reference.kernel import Kernel, Process

__all__ = ["Kernel", "Process"]
