"""The simulated kernel: processes, the system calls the suite makes, and memory pressure.

`Kernel` is a concrete machine with /dev/ashmem (the C driver of Linux 5.10) and binder fd
transfer. Each method is one system call (or one libcutils call, for `ashmem_create_region`) made
by process `pid`, and returns one Outcome, exactly as an adapter reports it: `ok(value)`,
`err(errno)`, or `fault(signo)` for a load or store. Kernel errors never escape as exceptions;
an exception out of a method is a caller bug (a process or mapping it never created).

Processes are named by the caller (`pid`); a fresh one has fds 0, 1 and 2 (/dev/null), so fd
numbers come out as on a real system. Mappings are named by the caller too (`map_id`). A map id
never created is a caller bug (ValueError); one that was unmapped names an address range that is
no longer mapped, and gets what such a range gets: munmap succeeds again, loads and stores
SIGSEGV, mprotect ENOMEM, and /proc/self/maps has no line for it (b"").

Nothing purges on its own here: `memory_pressure()` runs the seeded policy once (the `sim`
adapter calls it after every operation), and `shrink(n)` runs the shrinker directly.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ParamSpec

from ashcheck.reference import binder, mm, vfs
from ashcheck.reference.area import Area
from ashcheck.reference.ashmem import AshmemDriver
from ashcheck.reference.cint import MAX_ERRNO, PAGE_SIZE, s64
from ashcheck.reference.errors import Fault, SyscallError
from ashcheck.reference.shrinker import MemoryPressure, shrink_scan
from ashcheck.reference.vfs import Cred, DevNull, FdTable, File, IoctlArg, PathOnly
from ashcheck.spec.constants import AshmemIoctl
from ashcheck.spec.outcome import BR_FAILED_REPLY, BR_TRANSACTION_COMPLETE, SIGSEGV, Kind, Outcome, err, fault, ok

P = ParamSpec("P")


def syscall(method: Callable[P, Outcome]) -> Callable[P, Outcome]:
    """The user/kernel boundary: a SyscallError becomes err(errno), a Fault becomes fault(signo)."""
    @functools.wraps(method)
    def boundary(*args: P.args, **kwargs: P.kwargs) -> Outcome:
        try:
            return method(*args, **kwargs)
        except SyscallError as e:
            return err(e.errno)
        except Fault as f:
            return fault(f.signo)
    return boundary


def long_return(value: int) -> Outcome:
    """What user space sees of a syscall's `long` return: [-4095, -1] reads as an errno."""
    value = s64(value)
    return err(-value) if -MAX_ERRNO <= value < 0 else ok(value)


@dataclass(eq=False)
class Process:
    """A task with its own fd table, address space (mappings by map id) and binder node."""

    pid: int
    cred: Cred
    accepts_fds: bool  # its binder node was created with FLAT_BINDER_FLAG_ACCEPTS_FDS
    files: FdTable = field(default_factory=FdTable)
    maps: dict[int, mm.Vma] = field(default_factory=dict)
    unmapped: set[int] = field(default_factory=set)  # map ids it had and unmapped


class Kernel:
    """A deterministic machine. `seed` drives memory pressure; `ram` (bytes, None = unlimited)
    bounds the size of a region's backing file (shmem overcommit accounting)."""

    def __init__(self, seed: int = 0, *, ram: int | None = None) -> None:
        self.ashmem = AshmemDriver(None if ram is None else ram // PAGE_SIZE)
        self.procs: dict[int, Process] = {}
        self.pressure = MemoryPressure(seed)

    # --- processes ---------------------------------------------------------------------------
    def spawn(self, pid: int, privileged: bool = True, accepts_fds: bool = True) -> Outcome:
        """A fresh process with stdin/stdout/stderr on /dev/null. Result: its fds (0, 1, 2)."""
        if pid in self.procs:
            raise ValueError(f"process {pid} already exists")
        p = self.procs[pid] = Process(pid, Cred(cap_sys_admin=privileged), accepts_fds)
        null = File(DevNull())
        for _ in range(3):
            p.files.install(null, cloexec=False)
        return ok(p.files.fds())

    def exit(self, pid: int) -> Outcome:
        """The process ends: its mappings go, then its descriptors close, lowest first."""
        p = self._proc(pid)
        p.maps.clear()
        p.files.close_all()
        del self.procs[pid]
        return ok(None)

    def setrlimit_nofile(self, pid: int, limit: int) -> Outcome:
        """setrlimit(RLIMIT_NOFILE, soft = limit): later fds must be below it; none is closed."""
        self._proc(pid).files.limit = limit
        return ok(0)

    def list_fds(self, pid: int) -> Outcome:
        return ok(self._proc(pid).files.fds())

    # --- opening -----------------------------------------------------------------------------
    @syscall
    def open_ashmem(self, pid: int) -> Outcome:
        """open("/dev/ashmem", O_RDWR | O_CLOEXEC): a new, empty region."""
        return ok(self._proc(pid).files.install(self.ashmem.open(), cloexec=True))

    @syscall
    def open_path(self, pid: int) -> Outcome:
        """open("/", O_PATH): no FD_CLOEXEC."""
        return ok(self._proc(pid).files.install(File(PathOnly(), o_path=True), cloexec=False))

    def ashmem_create_region(self, pid: int, name: bytes, size: int) -> Outcome:
        """libcutils (ashmem mode): open, SET_NAME, SET_SIZE; on failure close and report it."""
        fd = self.open_ashmem(pid)
        if fd.kind is not Kind.VALUE:
            return fd
        for cmd, arg in ((AshmemIoctl.SET_NAME, name), (AshmemIoctl.SET_SIZE, size)):
            got = self.ioctl(pid, fd.value, cmd, arg)
            if got.kind is not Kind.VALUE:
                self._proc(pid).files.close(fd.value)
                return got
        return fd

    # --- descriptors -------------------------------------------------------------------------
    @syscall
    def dup(self, pid: int, fd: int) -> Outcome:
        files = self._proc(pid).files
        return ok(files.install(files.get_raw(fd).file, cloexec=False))

    @syscall
    def close(self, pid: int, fd: int) -> Outcome:
        self._proc(pid).files.close(fd)
        return ok(None)

    @syscall
    def fcntl_getfd(self, pid: int, fd: int) -> Outcome:
        return ok(int(self._proc(pid).files.get_raw(fd).cloexec))

    @syscall
    def lseek(self, pid: int, fd: int, offset: int, whence: int) -> Outcome:
        return ok(vfs.sys_lseek(self._proc(pid).files, fd, s64(offset), whence))

    @syscall
    def read(self, pid: int, fd: int, count: int) -> Outcome:
        return ok(vfs.sys_read(self._proc(pid).files, fd, count))

    @syscall
    def write(self, pid: int, fd: int, data: bytes) -> Outcome:
        return ok(vfs.sys_write(self._proc(pid).files, fd, data))

    @syscall
    def ftruncate(self, pid: int, fd: int, length: int) -> Outcome:
        return ok(vfs.sys_ftruncate(self._proc(pid).files, fd, s64(length)))

    @syscall
    def fallocate(self, pid: int, fd: int, mode: int, offset: int, length: int) -> Outcome:
        return ok(vfs.sys_fallocate(self._proc(pid).files, fd, mode, s64(offset), s64(length)))

    @syscall
    def ioctl(self, pid: int, fd: int, cmd: int, arg: IoctlArg = None) -> Outcome:
        """ioctl(fd, cmd, arg); see vfs.IoctlArg for what `arg` is. GET_NAME's result is the name."""
        p = self._proc(pid)
        result = vfs.sys_ioctl(p.files, fd, cmd, arg, p.cred)
        return ok(result) if isinstance(result, bytes) else long_return(result)

    # --- memory ------------------------------------------------------------------------------
    @syscall
    def mmap(self, pid: int, map_id: int, fd: int, length: int, prot: int, shared: bool,
             offset: int = 0, noreserve: bool = False) -> Outcome:
        """No address is modelled: a placement hint (Mmap.near) changes nothing here."""
        p = self._proc(pid)
        if map_id in p.maps:
            raise ValueError(f"process {pid} already has a mapping {map_id}")
        p.maps[map_id] = mm.do_mmap(p.files, fd, length, prot, shared, offset, noreserve)
        p.unmapped.discard(map_id)
        return ok(None)

    def munmap(self, pid: int, map_id: int) -> Outcome:
        """Unmapping a mapping already unmapped succeeds, as munmap of an unmapped range does."""
        p = self._proc(pid)
        if p.maps.pop(map_id, None) is None and map_id not in p.unmapped:
            raise ValueError(f"process {pid} never had a mapping {map_id}")
        p.unmapped.add(map_id)
        return ok(None)

    @syscall
    def mprotect(self, pid: int, map_id: int, prot: int) -> Outcome:
        if self._unmapped(pid, map_id):
            return err(errno.ENOMEM)  # mprotect over pages that are not mapped
        mm.mprotect(self._vma(pid, map_id), prot)
        return ok(None)

    @syscall
    def load(self, pid: int, map_id: int, offset: int, length: int) -> Outcome:
        if self._unmapped(pid, map_id):
            raise Fault(SIGSEGV)
        return ok(mm.load(self._vma(pid, map_id), offset, length))

    @syscall
    def store(self, pid: int, map_id: int, offset: int, data: bytes) -> Outcome:
        if self._unmapped(pid, map_id):
            raise Fault(SIGSEGV)
        mm.store(self._vma(pid, map_id), offset, data)
        return ok(None)

    def maps_name(self, pid: int, map_id: int) -> Outcome:
        """The mapping's pathname in /proc/self/maps (b"" once it is unmapped: no such line)."""
        if self._unmapped(pid, map_id):
            return ok(b"")
        return ok(mm.maps_name(self._vma(pid, map_id)))

    # --- binder ------------------------------------------------------------------------------
    def binder_transaction(self, pid: int, dst: int, fds: Sequence[int]) -> Outcome:
        """A transaction from `pid` to the node of `dst` with one BINDER_TYPE_FD per fd. Result:
        the new fds in `dst`, or BR_FAILED_REPLY (also for a process calling itself)."""
        src, target = self._proc(pid), self._proc(dst)
        if src is target:  # "got transaction to context manager from process owning it"
            return ok(BR_FAILED_REPLY)
        try:
            return ok(binder.transfer_fds(src.files, target.files, fds, target.accepts_fds))
        except SyscallError:
            return ok(BR_FAILED_REPLY)

    def binder_reply(self, pid: int, replier: int, fds: Sequence[int], accept_fds: bool) -> Outcome:
        """`pid` calls `replier` (TF_ACCEPT_FDS iff `accept_fds`), which replies with `fds`.
        Result: (the caller's new fds or BR_FAILED_REPLY, what the replier got)."""
        caller, server = self._proc(pid), self._proc(replier)
        if caller is server:
            raise ValueError(f"process {pid} cannot be its own replier")
        try:
            got: tuple[int, ...] | str = binder.transfer_fds(server.files, caller.files, fds, accept_fds)
        except SyscallError:
            got = BR_FAILED_REPLY  # binder_send_failed_reply to the caller
        return ok((got, BR_TRANSACTION_COMPLETE))  # the replier's BC_REPLY always completes

    # --- memory pressure ---------------------------------------------------------------------
    def memory_pressure(self) -> int:
        """One decision of the seeded policy; the pages the shrinker freed (often none)."""
        n = self.pressure.ranges_to_scan()
        return shrink_scan(self.ashmem.lru, n) if n else 0

    def shrink(self, nr_to_scan: int) -> int:
        """Run the shrinker now over up to `nr_to_scan` LRU ranges; the pages freed."""
        return shrink_scan(self.ashmem.lru, nr_to_scan)

    @property
    def lru_count(self) -> int:
        return self.ashmem.lru.count

    # --- looking inside (tests, debugging) -----------------------------------------------------
    def area(self, pid: int, fd: int) -> Area:
        """The ashmem area behind `fd` of `pid` (ValueError if it is not an ashmem fd)."""
        entry = self._proc(pid).files.entries.get(fd)
        asma = None if entry is None else entry.file.private_data
        if not isinstance(asma, Area):
            raise ValueError(f"fd {fd} of process {pid} is not an open ashmem fd")
        return asma

    def _proc(self, pid: int) -> Process:
        p = self.procs.get(pid)
        if p is None:
            raise ValueError(f"process {pid} does not exist (never spawned, or exited)")
        return p

    def _vma(self, pid: int, map_id: int) -> mm.Vma:
        vma = self._proc(pid).maps.get(map_id)
        if vma is None:
            raise ValueError(f"process {pid} has no mapping {map_id}")
        return vma

    def _unmapped(self, pid: int, map_id: int) -> bool:
        p = self._proc(pid)
        return map_id in p.unmapped and map_id not in p.maps
