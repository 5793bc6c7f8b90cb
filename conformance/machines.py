"""The Hypothesis state machines: one rule per operation, named after it, so that a shrunk
counterexample reads like an strace. Rules are thin: the Driver performs, the Harness judges.

- AshmemMachine: regions, every ioctl, mappings, the fd operations, a second process sharing
  by binder when the adapter can, and purging.
- MemoryMachine: a few sized regions and their memory: mappings, pin/unpin algebra, purges,
  loads and stores, mprotect, sharing with a second process. Narrower, so it goes deeper: pins
  name a mapping and go through an fd of its region, so they meet materialized regions.
- BinderMachine: several processes passing fds over binder, with enough ashmem operations to
  observe that what arrived is the same open file description.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ashcheck.adapters.base import Capability
from ashcheck.conformance import strategies as S
from ashcheck.conformance.driver import WHOLE, Driver, FdRef, MapRef
from ashcheck.spec import ops as o
from ashcheck.spec.constants import PROT_READ, PROT_WRITE, SEEK_CUR, page_align

PAGE = 4096  # strategies are built once per class; adapters with other page sizes scale below


def _scaled(strategy_fn: Any) -> Any:
    return strategy_fn(PAGE)


class AshmemMachine(RuleBasedStateMachine):
    procs = Bundle("procs")
    fds = Bundle("fds")
    maps = Bundle("maps")

    def __init__(self) -> None:
        super().__init__()
        self.d = Driver()

    @initialize(target=procs)
    def spawn_first(self) -> int:
        return self.d.first_process()

    @precondition(lambda self: self.d.can_spawn() and self.d.can(Capability.UNPRIVILEGED))
    @rule(target=procs)
    def spawn_unprivileged(self) -> int:
        return self.d.spawn(privileged=False)

    # regions ---------------------------------------------------------------------------------
    @rule(target=fds, proc=procs, name=S.NAMES, size=_scaled(S.small_sizes))
    def ashmem_create_region(self, proc: int, name: bytes, size: int) -> Any:
        return self.d.new_fds(o.CreateRegion(proc, name, size))

    @precondition(lambda self: self.d.can(Capability.ASHMEM_DEVICE))
    @rule(target=fds, proc=procs)
    def open_ashmem(self, proc: int) -> Any:
        return self.d.new_fds(o.OpenAshmem(proc))

    @rule(fd=fds, name=S.NAMES)
    def ashmem_set_name(self, fd: FdRef, name: bytes) -> None:
        self.d.on_fd(fd, lambda p, f: o.SetName(p, f, name))

    @rule(fd=fds)
    def ashmem_set_name_null(self, fd: FdRef) -> None:
        self.d.on_fd(fd, lambda p, f: o.SetName(p, f, None))

    @rule(fd=fds)
    def ashmem_get_name(self, fd: FdRef) -> None:
        self.d.on_fd(fd, o.GetName)

    @rule(fd=fds, name=S.NAMES)
    def ashmem_set_name_and_read_back(self, fd: FdRef, name: bytes) -> None:
        """What every caller does; back to back, so that truncation bugs cannot hide behind a later rename."""
        if self.d.on_fd(fd, lambda p, f: o.SetName(p, f, name)) is not None:
            self.d.on_fd(fd, o.GetName)

    @rule(fd=fds, length=st.sampled_from([249, 250, 255, 256, 300]))
    def ashmem_name_at_the_limit(self, fd: FdRef, length: int) -> None:
        """A name one below, at or past the longest kept (255 for the driver, 249 for memfd), read
        back at once."""
        self.ashmem_set_name_and_read_back(fd, bytes([0x61 + length % 26]) * length)

    @rule(fd=fds, size=_scaled(S.sizes))
    def ashmem_set_size(self, fd: FdRef, size: int) -> None:
        self.d.on_fd(fd, lambda p, f: o.SetSize(p, f, size))

    @rule(fd=fds)
    def ashmem_get_size(self, fd: FdRef) -> None:
        self.d.on_fd(fd, o.GetSize)

    @rule(proc=procs, size=st.sampled_from([2**31, 2**32 + 4096, 2**40, 2**63 - 1, 2**63 + 4096]))
    def ashmem_huge_region(self, proc: int, size: int) -> None:
        """A region past 2 GiB: GET_SIZE comes back through ioctl's int, and the first mmap must
        find the memory for it (the machine's RAM + swap) or fail."""
        for fd in self.d.new_fds(o.CreateRegion(proc, b"huge", self.d.page)).values:
            if self.d.on_fd(fd, lambda p, f: o.SetSize(p, f, size)) is not None:
                self.d.on_fd(fd, o.GetSize)
                self.d.mmap(fd, self.d.page, PROT_READ | PROT_WRITE, True, 0)

    @rule(fd=fds, prot=S.PROT_MASK_ARG)
    def ashmem_set_prot_mask(self, fd: FdRef, prot: int) -> None:
        self.d.on_fd(fd, lambda p, f: o.SetProtMask(p, f, prot))

    @rule(fd=fds)
    def ashmem_get_prot_mask(self, fd: FdRef) -> None:
        self.d.on_fd(fd, o.GetProtMask)

    # pinning ---------------------------------------------------------------------------------
    @rule(fd=fds, offset=_scaled(S.pin_offsets), length=_scaled(S.pin_lengths))
    def ashmem_pin(self, fd: FdRef, offset: int, length: int) -> None:
        self.d.on_fd(fd, lambda p, f: o.Pin(p, f, offset, length))

    @rule(fd=fds, offset=_scaled(S.pin_offsets), length=_scaled(S.pin_lengths))
    def ashmem_unpin(self, fd: FdRef, offset: int, length: int) -> None:
        self.d.on_fd(fd, lambda p, f: o.Unpin(p, f, offset, length))

    @rule(fd=fds, offset=_scaled(S.pin_offsets), length=_scaled(S.pin_lengths))
    def ashmem_get_pin_status(self, fd: FdRef, offset: int, length: int) -> None:
        self.d.on_fd(fd, lambda p, f: o.GetPinStatus(p, f, offset, length))

    @rule(fd=fds)
    def ashmem_purge_all_caches(self, fd: FdRef) -> None:
        self.d.on_fd(fd, o.PurgeAllCaches)

    # memory ----------------------------------------------------------------------------------
    @rule(target=maps, fd=fds, length=_scaled(S.map_lengths), prot=S.MAP_PROT, shared=st.booleans(),
          offset=_scaled(S.map_offsets))
    def mmap(self, fd: FdRef, length: int, prot: int, shared: bool, offset: int) -> Any:
        return self.d.mmap(fd, length, prot, shared, offset)

    @rule(m=consumes(maps))
    def munmap(self, m: MapRef) -> None:
        self.d.on_map(m, lambda _: o.Munmap(m.proc, m.map_id))

    @rule(m=maps, prot=S.PROT)
    def mprotect(self, m: MapRef, prot: int) -> None:
        self.d.on_map(m, lambda _: o.Mprotect(m.proc, m.map_id, prot))

    @rule(m=maps, at=_scaled(S.positions), length=st.sampled_from([1, 8, 64]))
    def load(self, m: MapRef, at: int, length: int) -> None:
        self.d.on_map(m, lambda mm: o.Load(m.proc, m.map_id, *self.d.window(mm, at, length)))

    @rule(m=maps, at=_scaled(S.positions), data=S.DATA)
    def store(self, m: MapRef, at: int, data: bytes) -> None:
        def make(mm: Any) -> o.Op:
            start, n = self.d.window(mm, at, len(data))
            return o.Store(m.proc, m.map_id, start, data[:n])
        self.d.on_map(m, make)

    @precondition(lambda self: self.d.can(Capability.MAPS_NAME))
    @rule(m=maps)
    def maps_name(self, m: MapRef) -> None:
        self.d.on_map(m, lambda _: o.MapsName(m.proc, m.map_id))

    # file descriptors ------------------------------------------------------------------------
    @rule(target=fds, fd=fds)
    def dup(self, fd: FdRef) -> Any:
        return self.d.new_fds(o.Dup(fd.proc, fd.fd))

    @rule(fd=fds)
    def close(self, fd: FdRef) -> None:
        self.d.on_fd(fd, o.Close)

    @rule(fd=fds, offset=st.sampled_from([0, 1, PAGE, -1, 3 * PAGE]), whence=st.sampled_from([0, 1, 2, 7]))
    def lseek(self, fd: FdRef, offset: int, whence: int) -> None:
        self.d.on_fd(fd, lambda p, f: o.Lseek(p, f, offset, whence))

    @rule(fd=fds, count=st.sampled_from([1, 16, PAGE + 8]))
    def read(self, fd: FdRef, count: int) -> None:
        self.d.on_fd(fd, lambda p, f: o.Read(p, f, count))

    @rule(fd=fds, data=S.DATA)
    def write(self, fd: FdRef, data: bytes) -> None:
        self.d.on_fd(fd, lambda p, f: o.Write(p, f, data))

    @rule(fd=fds)
    def fcntl_getfd(self, fd: FdRef) -> None:
        self.d.on_fd(fd, o.GetFdFlags)

    @precondition(lambda self: self.d.can(Capability.FD_TRANSFER))
    @rule(target=fds, fd=fds, dst=procs)
    def binder_transaction(self, fd: FdRef, dst: int) -> Any:
        return _transfer(self.d, fd.proc, dst, (fd.fd,))

    @invariant()
    def fd_table(self) -> None:
        self.d.check_fd_table()


def run(machine: type[RuleBasedStateMachine]) -> None:
    """Run a machine under the active Hypothesis profile."""
    run_state_machine_as_test(machine)  # type: ignore[no-untyped-call,unused-ignore]


def _transfer(d: Driver, src: int, dst: int, fds: tuple[int, ...]) -> Any:
    if src == dst or not (d.alive(src) and d.alive(dst)):
        return multiple()
    out = d.step(o.BinderSend(src, dst, fds))
    if not isinstance(out.value, tuple):
        return multiple()
    for fd in out.value:  # the receiver's first question: is it close-on-exec?
        d.step(o.GetFdFlags(dst, fd))
    return multiple(*(FdRef(dst, fd) for fd in out.value))


class BinderMachine(RuleBasedStateMachine):
    procs = Bundle("procs")
    fds = Bundle("fds")
    paths = Bundle("paths")
    maps = Bundle("maps")

    def __init__(self) -> None:
        super().__init__()
        self.d = Driver()

    @initialize(target=procs)
    def spawn_first(self) -> int:
        return self.d.first_process()

    @initialize(target=procs)
    def spawn_refusing_fds(self) -> int:
        """A node without ACCEPTS_FDS from the start, so that every run can send fds to one."""
        return self.d.spawn(self.d.can(Capability.PRIVILEGED), accepts_fds=False)

    @precondition(lambda self: self.d.can_spawn())
    @rule(target=procs, accepts_fds=st.booleans())
    def spawn(self, accepts_fds: bool) -> int:
        return self.d.spawn(self.d.can(Capability.PRIVILEGED), accepts_fds)

    @rule(target=fds, proc=procs, size=st.sampled_from([PAGE, 2 * PAGE]))
    def ashmem_create_region(self, proc: int, size: int) -> Any:
        return self.d.new_fds(o.CreateRegion(proc, b"xfer", size))

    @rule(target=paths, proc=procs)
    def open_path(self, proc: int) -> Any:
        return self.d.new_fds(o.OpenPath(proc))

    @rule(target=fds, fd=fds)
    def dup(self, fd: FdRef) -> Any:
        return self.d.new_fds(o.Dup(fd.proc, fd.fd))

    @rule(fd=fds)
    def close(self, fd: FdRef) -> None:
        self.d.on_fd(fd, o.Close)

    @rule(target=fds, src=procs, dst=procs,
          sent=st.lists(st.one_of(fds, paths), max_size=3), bogus=st.sampled_from([(), (), (), (99,)]))
    def binder_transaction(self, src: int, dst: int, sent: list[FdRef], bogus: tuple[int, ...]) -> Any:
        return _transfer(self.d, src, dst, tuple(r.fd for r in sent) + bogus)

    @rule(target=fds, caller=procs, replier=procs, sent=st.lists(fds, max_size=2), accept_fds=st.booleans())
    def binder_reply(self, caller: int, replier: int, sent: list[FdRef], accept_fds: bool) -> Any:
        if caller == replier or not (self.d.alive(caller) and self.d.alive(replier)):
            return multiple()
        out = self.d.step(o.BinderReply(caller, replier, tuple(r.fd for r in sent), accept_fds))
        got = out.value[0] if isinstance(out.value, tuple) else None
        if not isinstance(got, tuple):
            return multiple()
        for fd in got:
            self.d.step(o.GetFdFlags(caller, fd))
        return multiple(*(FdRef(caller, fd) for fd in got))

    @rule(fd=fds, offset=st.sampled_from([0, 5, PAGE]), whence=st.sampled_from([0, 1, 2]))
    def lseek(self, fd: FdRef, offset: int, whence: int) -> None:
        self.d.on_fd(fd, lambda p, f: o.Lseek(p, f, offset, whence))

    @rule(src=procs, dst=procs)
    def send_what_binder_refuses(self, src: int, dst: int) -> None:
        """An O_PATH fd, then an fd that is not open: each transaction fails whole and nothing
        appears in the receiver (the fd table check after every step sees to that)."""
        for path in self.d.new_fds(o.OpenPath(src)).values:
            self.d.on_fd(path, o.GetFdFlags)
            _transfer(self.d, src, dst, (path.fd,))
        _transfer(self.d, src, dst, (99,))

    @rule(caller=procs, replier=procs)
    def reply_with_a_region(self, caller: int, replier: int) -> None:
        """A reply carrying a fresh region to a caller that accepts fds, then one that also carries
        an fd that is not open (that reply fails for the caller)."""
        if caller == replier or not self.d.alive(caller):
            return
        for fd in self.d.new_fds(o.CreateRegion(replier, b"reply", self.d.page)).values:
            for fds in ((fd.fd,), (fd.fd, 99)):
                out = self.d.step(o.BinderReply(caller, replier, fds, True))
                got = out.value[0] if isinstance(out.value, tuple) else None
                for new in got if isinstance(got, tuple) else ():
                    self.d.step(o.GetFdFlags(caller, new))

    @rule(src=procs, dst=procs)
    def share_a_mapped_region(self, src: int, dst: int) -> None:
        """The common case end to end: create, map and fill a region, send its fd twice in one
        transaction; the receiver seeks and reads through both copies, and the sender sees the
        offset they moved (one open file description for all three)."""
        for fd in self.d.new_fds(o.CreateRegion(src, b"shared", self.d.page)).values:
            for m in self.d.mmap(fd, self.d.page, PROT_READ | PROT_WRITE, True, 0).values:
                self.d.step(o.Store(src, m.map_id, 0, b"shared!"))
            for got in _transfer(self.d, src, dst, (fd.fd, fd.fd)).values:
                self.d.on_fd(got, lambda p, f: o.Lseek(p, f, 1, SEEK_CUR))
                self.d.on_fd(got, lambda p, f: o.Read(p, f, 2))
            self.d.on_fd(fd, lambda p, f: o.Lseek(p, f, 0, SEEK_CUR))

    @rule(fd=fds)
    def fcntl_getfd(self, fd: FdRef) -> None:
        self.d.on_fd(fd, o.GetFdFlags)

    @rule(fd=fds, prot=st.sampled_from([1, 5, 7]))
    def ashmem_set_prot_mask(self, fd: FdRef, prot: int) -> None:
        self.d.on_fd(fd, lambda p, f: o.SetProtMask(p, f, prot))

    @rule(fd=fds)
    def ashmem_get_prot_mask(self, fd: FdRef) -> None:
        self.d.on_fd(fd, o.GetProtMask)

    @rule(target=maps, fd=fds)
    def mmap(self, fd: FdRef) -> Any:
        return self.d.mmap(fd, PAGE, 3, True, 0)

    @rule(m=maps, data=S.DATA)
    def store(self, m: MapRef, data: bytes) -> None:
        self.d.on_map(m, lambda _: o.Store(m.proc, m.map_id, 0, data))

    @rule(m=maps)
    def load(self, m: MapRef) -> None:
        self.d.on_map(m, lambda _: o.Load(m.proc, m.map_id, 0, 8))

    @precondition(lambda self: len(self.d.h.kernel.procs) > 1)
    @rule(proc=procs)
    def exit(self, proc: int) -> None:
        if self.d.alive(proc) and proc != 0:
            self.d.step(o.Exit(proc))

    @invariant()
    def fd_table(self) -> None:
        self.d.check_fd_table()


class MemoryMachine(RuleBasedStateMachine):
    procs = Bundle("procs")
    fds = Bundle("fds")
    maps = Bundle("maps")

    def __init__(self) -> None:
        super().__init__()
        self.d = Driver()

    @initialize(target=procs)
    def spawn_first(self) -> int:
        return self._first_process()

    @initialize(target=maps)
    def first_mapping(self) -> Any:
        """A mapped 4-page region from the start, so that pins, loads and purges have work at once."""
        fd = self.d.new_fds(o.CreateRegion(self._first_process(), b"mem", 4 * PAGE)).values
        return self.d.mmap(fd[0], WHOLE, 3, True, 0) if fd else multiple()

    def _first_process(self) -> int:
        """Initialize rules run in any order; whichever comes first spawns process 0."""
        return 0 if self.d.alive(0) else self.d.first_process()

    @rule(target=fds, proc=procs, size=st.sampled_from([4 * PAGE, 2 * PAGE, 3 * PAGE + 100]))
    def ashmem_create_region(self, proc: int, size: int) -> Any:
        return self.d.new_fds(o.CreateRegion(proc, b"mem", size))

    @precondition(lambda self: self.d.can_spawn())
    @rule(target=procs)
    def spawn(self) -> int:
        return self.d.spawn(self.d.can(Capability.PRIVILEGED))

    @precondition(lambda self: self.d.can(Capability.FD_TRANSFER))
    @rule(target=fds, fd=fds, dst=procs)
    def binder_transaction(self, fd: FdRef, dst: int) -> Any:
        return _transfer(self.d, fd.proc, dst, (fd.fd,))

    @rule(target=maps, fd=fds, prot=S.MAP_PROT, shared=st.sampled_from([True, True, False]),
          length=st.sampled_from([WHOLE, WHOLE, PAGE]), offset=st.sampled_from([0, 0, PAGE]))
    def mmap(self, fd: FdRef, prot: int, shared: bool, length: int, offset: int) -> Any:
        return self.d.mmap(fd, length, prot, shared, offset)

    @rule(m=consumes(maps))
    def munmap(self, m: MapRef) -> None:
        self.d.on_map(m, lambda _: o.Munmap(m.proc, m.map_id))

    @rule(m=maps, prot=S.PROT)
    def mprotect(self, m: MapRef, prot: int) -> None:
        self.d.on_map(m, lambda _: o.Mprotect(m.proc, m.map_id, prot))

    @rule(m=maps, at=_scaled(S.positions), length=st.sampled_from([8, 64]))
    def load(self, m: MapRef, at: int, length: int) -> None:
        self.d.on_map(m, lambda mm: o.Load(m.proc, m.map_id, *self.d.window(mm, at, length)))

    @rule(m=maps, at=_scaled(S.positions), data=S.DATA)
    def store(self, m: MapRef, at: int, data: bytes) -> None:
        def make(mm: Any) -> o.Op:
            start, n = self.d.window(mm, at, len(data))
            return o.Store(m.proc, m.map_id, start, data[:n])
        self.d.on_map(m, make)

    @rule(fd=fds)
    def mask_then_regain_write(self, fd: FdRef) -> None:
        """Drop PROT_WRITE from the mask, map read-only, and try to get write back with mprotect."""
        if self.d.on_fd(fd, lambda p, f: o.SetProtMask(p, f, PROT_READ)) is not None:
            for m in self.d.mmap(fd, self.d.page, PROT_READ, True, 0).values:
                self.d.step(o.Mprotect(m.proc, m.map_id, PROT_READ | PROT_WRITE))

    @rule(m=maps)
    def private_view_of_written_data(self, m: MapRef) -> None:
        """Write through a shared mapping, then map the same fd MAP_PRIVATE and read there: ashmem
        gives zero memory of its own, memfd a copy-on-write view of what was written."""
        mapping, fd = self.d.mapping(m), self.d.fd_of(m)
        if mapping is None or fd is None or not mapping.shared:
            return
        self.d.step(o.Store(m.proc, m.map_id, 0, b"written"))
        for view in self.d.mmap(fd, self.d.page, PROT_READ, False, mapping.offset).values:
            self.d.step(o.Load(view.proc, view.map_id, 0, 7))

    @rule(fd=fds)
    def map_past_the_end(self, fd: FdRef) -> None:
        """Map one page at the offset where the data ends (the driver checks only the length) and
        touch it: SIGBUS, as for any shared page past the end of the file."""
        region = self.d.h.kernel.region_of(fd.proc, fd.fd) if self.d.alive(fd.proc) else None
        if region is not None:
            end = page_align(region.size, self.d.page)
            for m in self.d.mmap(fd, self.d.page, PROT_READ, True, end).values:
                self.d.step(o.Load(m.proc, m.map_id, 0, 1))

    @rule(m=maps)
    def unpin_to_the_end_purge_and_pin(self, m: MapRef) -> None:
        """The cache pattern: UNPIN from the second page to the end (len 0), ask the status, purge,
        read the purged page through the mapping (zeros), and PIN it back (WAS_PURGED)."""
        page = self.d.page
        fd, mapping = self.d.fd_of(m), self.d.mapping(m)
        if fd is None or mapping is None or self.d.on_fd(fd, lambda p, f: o.Unpin(p, f, page, 0)) is None:
            return
        self.d.on_fd(fd, lambda p, f: o.GetPinStatus(p, f, page, page))
        self.d.on_fd(fd, o.PurgeAllCaches)
        if mapping.shared and mapping.offset == 0 and mapping.length > page:
            self.d.step(o.Load(m.proc, m.map_id, page, 8))
        self.d.on_fd(fd, lambda p, f: o.Pin(p, f, page, 0))

    @rule(m=maps)
    def unpin_then_pin_the_middle(self, m: MapRef) -> None:
        """UNPIN three pages, then PIN the middle one: the unpinned range splits in two. Then a PIN
        whose end overflows the u32 offset + len."""
        page = self.d.page
        fd = self.d.fd_of(m)
        if fd is not None and self.d.on_fd(fd, lambda p, f: o.Unpin(p, f, 0, 3 * page)) is not None:
            self.d.on_fd(fd, lambda p, f: o.Pin(p, f, page, page))
            self.d.on_fd(fd, lambda p, f: o.GetPinStatus(p, f, 0, page))
            self.d.on_fd(fd, lambda p, f: o.Pin(p, f, (1 << 32) - page, 2 * page))

    @rule(m=maps, page=st.integers(0, 4), pages=st.integers(0, 3))
    def ashmem_pin(self, m: MapRef, page: int, pages: int) -> None:
        fd = self.d.fd_of(m)
        if fd is not None:
            self.d.on_fd(fd, lambda p, f: o.Pin(p, f, page * PAGE, pages * PAGE))

    @rule(m=maps, page=st.integers(0, 4), pages=st.integers(0, 3))
    def ashmem_unpin(self, m: MapRef, page: int, pages: int) -> None:
        fd = self.d.fd_of(m)
        if fd is not None:
            self.d.on_fd(fd, lambda p, f: o.Unpin(p, f, page * PAGE, pages * PAGE))

    @rule(m=maps, page=st.integers(0, 4), pages=st.integers(0, 3))
    def ashmem_get_pin_status(self, m: MapRef, page: int, pages: int) -> None:
        fd = self.d.fd_of(m)
        if fd is not None:
            self.d.on_fd(fd, lambda p, f: o.GetPinStatus(p, f, page * PAGE, pages * PAGE))

    @rule(fd=fds)
    def ashmem_purge_all_caches(self, fd: FdRef) -> None:
        self.d.on_fd(fd, o.PurgeAllCaches)

    @rule(fd=fds, prot=st.sampled_from([1, 3, 5]))
    def ashmem_set_prot_mask(self, fd: FdRef, prot: int) -> None:
        self.d.on_fd(fd, lambda p, f: o.SetProtMask(p, f, prot))

    @rule(fd=fds, offset=st.sampled_from([0, PAGE, 2 * PAGE + 8]))
    def lseek(self, fd: FdRef, offset: int) -> None:
        self.d.on_fd(fd, lambda p, f: o.Lseek(p, f, offset, 0))

    @rule(fd=fds, count=st.sampled_from([8, PAGE + 8]))
    def read(self, fd: FdRef, count: int) -> None:
        self.d.on_fd(fd, lambda p, f: o.Read(p, f, count))

    @rule(fd=consumes(fds))
    def close(self, fd: FdRef) -> None:
        self.d.on_fd(fd, o.Close)

    @invariant()
    def fd_table(self) -> None:
        self.d.check_fd_table()
