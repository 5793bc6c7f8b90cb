"""The exploration: one Hypothesis state machine in which every operation may follow every other.

One rule per operation, named after it, so that a shrunk counterexample reads like an strace:
processes (spawn, exit), regions (create, open, every ioctl), pinning and purging, mappings
(mmap with placement next to an older mapping, munmap, mprotect, loads, stores, maps names), the
fd calls (dup, close, lseek, read, write, F_GETFD) and binder (transactions and replies carrying
fds, O_PATH and closed fds included). Bugs live where areas cross (binder + unpin + exit; dup +
unpin + close; split + purge + pin), so nothing is kept apart.

How the search covers the space:
- Swarm testing (Groce et al., ISSTA 2012): in every test case Hypothesis enables a random subset
  of the rules (its FeatureFlags over rule names, built into RuleBasedStateMachine), so some test
  cases go deep into a few operations and others mix many.
- Targeted search: at the end of each test case `hypothesis.target()` is told how much of the rare
  state it reached (unpinned and purged ranges, regions held by several processes, mappings that
  outlive every fd, fds received over binder), and Hypothesis steers towards more of it.
- Region operations take either an fd or a mapping (resolved to an fd of the mapped region), so
  pins, purges and reads meet mapped regions as often as unmapped ones.
- Observations after every step: the fd tables that may have changed, and the data of live
  mappings (after a purge or an exit, every page of every mapping).
- Scenarios (scenarios.py): the patterns real callers use, one rule each; `scenarios = False`
  switches them off.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis import target
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, multiple, precondition, rule

from ashcheck.adapters.base import Adapter, Capability
from ashcheck.conformance import scenarios
from ashcheck.conformance import strategies as S
from ashcheck.conformance.driver import WHOLE, Driver, FdRef, MapRef
from ashcheck.spec import ops as o
from ashcheck.spec.state import FdKind

Ref = FdRef | MapRef


class Conformance(RuleBasedStateMachine):
    procs = Bundle("procs")
    fds = Bundle("fds")
    maps = Bundle("maps")
    scenarios = True

    def __init__(self, adapter: Adapter) -> None:
        super().__init__()
        self.d = Driver(adapter)
        self.reached: dict[str, int] = {}

    # processes -------------------------------------------------------------------------------
    @initialize(target=procs)
    def spawn_first(self) -> int:
        return self.d.first_process()

    @initialize(target=procs)
    def spawn_second(self) -> Any:
        """A second process from the start where the adapter has more than one, so that sharing
        over binder, and what it does to lifetimes, is in reach of every test case."""
        if not (self.d.can(Capability.MULTI_PROCESS) and self.d.can(Capability.FD_TRANSFER)):
            return multiple()
        self.d.first_process()  # spawns process 0 if the other initializer has not yet
        return self.d.spawn(self.d.can(Capability.PRIVILEGED), accepts_fds=True)

    @initialize(target=maps)
    def first_mapping(self) -> Any:
        """A mapped 4-page region from the start, data in every page, so that pins, loads and purges
        have work at once and a page lost or misplaced anywhere shows."""
        made = self.d.new_fds(o.CreateRegion(self.d.first_process(), b"first", 4 * self.d.page)).values
        mapped = self.d.mmap(made[0], WHOLE, 3, True, 0) if made else multiple()
        for m in mapped.values:
            self.d.fill(m)
        return mapped

    @precondition(lambda self: self.d.can_spawn())
    @rule(target=procs, privileged=st.booleans(), accepts_fds=st.booleans())
    def spawn(self, privileged: bool, accepts_fds: bool) -> int:
        if not self.d.can(Capability.UNPRIVILEGED if not privileged else Capability.PRIVILEGED):
            privileged = not privileged
        return self.d.spawn(privileged, accepts_fds)

    @precondition(lambda self: len(self.d.h.model.procs) > 1)
    @rule(proc=procs)
    def exit(self, proc: int) -> None:
        if self.d.alive(proc):
            self.d.step(o.Exit(proc))

    # regions ---------------------------------------------------------------------------------
    @rule(target=fds, proc=procs, name=S.NAMES, size=S.SMALL_SIZES)
    def ashmem_create_region(self, proc: int, name: bytes, size: tuple[int, int]) -> Any:
        return self.d.new_fds(o.CreateRegion(proc, name, size[0] * self.d.page + size[1]))

    @precondition(lambda self: self.d.can(Capability.ASHMEM_DEVICE))
    @rule(target=fds, proc=procs)
    def open_ashmem(self, proc: int) -> Any:
        return self.d.new_fds(o.OpenAshmem(proc))

    @rule(target=fds, proc=procs)
    def open_path(self, proc: int) -> Any:
        return self.d.new_fds(o.OpenPath(proc))

    @rule(r=st.one_of(fds, maps), name=S.NAME_OR_NULL)
    def ashmem_set_name(self, r: Ref, name: bytes | None) -> None:
        self.d.on_region(r, lambda p, f: o.SetName(p, f, name))

    @rule(r=st.one_of(fds, maps))
    def ashmem_get_name(self, r: Ref) -> None:
        self.d.on_region(r, o.GetName)

    @rule(r=st.one_of(fds, maps), size=S.SIZES)
    def ashmem_set_size(self, r: Ref, size: tuple[int, int]) -> None:
        self.d.on_region(r, lambda p, f: o.SetSize(p, f, size[0] * self.d.page + size[1]))

    @rule(r=st.one_of(fds, maps))
    def ashmem_get_size(self, r: Ref) -> None:
        self.d.on_region(r, o.GetSize)

    @rule(r=st.one_of(fds, maps), prot=S.PROT_MASK_ARG)
    def ashmem_set_prot_mask(self, r: Ref, prot: int) -> None:
        self.d.on_region(r, lambda p, f: o.SetProtMask(p, f, prot))

    @rule(r=st.one_of(fds, maps))
    def ashmem_get_prot_mask(self, r: Ref) -> None:
        self.d.on_region(r, o.GetProtMask)

    @rule(r=st.one_of(fds, maps), nr=S.UNKNOWN_IOCTLS)
    def ioctl_unknown(self, r: Ref, nr: int) -> None:
        self.d.on_region(r, lambda p, f: o.UnknownIoctl(p, f, nr))

    # pinning and purging -----------------------------------------------------------------------
    def _pin_like(self, r: Ref, offset: S.Units, length: S.Units, make: type[o.Pin | o.Unpin | o.GetPinStatus],
                  ) -> None:
        fd = self.d.resolve(r)
        if fd is not None:
            size = self.d.size_of(fd)
            self.d.on_fd(fd, lambda p, f: make(p, f, self.d.bytes_of(offset, size), self.d.bytes_of(length, size)))

    @rule(r=st.one_of(fds, maps), offset=S.PIN_OFFSETS, length=S.PIN_LENGTHS)
    def ashmem_pin(self, r: Ref, offset: S.Units, length: S.Units) -> None:
        self._pin_like(r, offset, length, o.Pin)

    @rule(r=st.one_of(fds, maps), offset=S.PIN_OFFSETS, length=S.PIN_LENGTHS)
    def ashmem_unpin(self, r: Ref, offset: S.Units, length: S.Units) -> None:
        self._pin_like(r, offset, length, o.Unpin)

    @rule(r=st.one_of(fds, maps), offset=S.PIN_OFFSETS, length=S.PIN_LENGTHS)
    def ashmem_get_pin_status(self, r: Ref, offset: S.Units, length: S.Units) -> None:
        self._pin_like(r, offset, length, o.GetPinStatus)

    @rule(r=st.one_of(fds, maps))
    def ashmem_pin_every_page(self, r: Ref) -> None:
        """PIN the region back one page at a time, as a cache does before it reuses its memory: each
        answer says whether that page's unpinned range was purged, so every range's purged flag
        (split, merged, inherited or forgotten) is observed, page by page."""
        fd = self.d.resolve(r)
        if fd is not None:
            for page in range(min(self.d.size_of(fd) // self.d.page, 16)):
                if self.d.on_fd(fd, self._pin_page(page)) is None:
                    return

    def _pin_page(self, page: int) -> Any:
        return lambda p, f: o.Pin(p, f, page * self.d.page, self.d.page)

    @rule(r=st.one_of(fds, maps), cmd=S.PIN_COMMANDS)
    def ioctl_null(self, r: Ref, cmd: str) -> None:
        self.d.on_region(r, lambda p, f: o.IoctlNullArg(p, f, cmd))

    @rule(r=st.one_of(fds, maps))
    def ashmem_purge_all_caches(self, r: Ref) -> None:
        self.d.on_region(r, o.PurgeAllCaches)

    # memory ----------------------------------------------------------------------------------
    @rule(target=maps, r=st.one_of(fds, maps), length=S.MAP_LENGTHS, prot=S.MAP_PROT,
          shared=st.sampled_from([True, True, False]), offset=S.MAP_OFFSETS, noreserve=st.booleans(),
          near=st.one_of(st.none(), maps), above=st.booleans())
    def mmap(self, r: Ref, length: S.Units, prot: int, shared: bool, offset: S.Units, noreserve: bool,
             near: MapRef | None, above: bool) -> Any:
        fd = self.d.resolve(r)
        if fd is None:
            return multiple()
        size = self.d.size_of(fd)
        n = WHOLE if length == "whole" else self.d.bytes_of(length, size)
        return self.d.mmap(fd, n, prot, shared, self.d.bytes_of(offset, size), noreserve=noreserve,
                           near=near, above=above)

    @rule(m=maps)
    def munmap(self, m: MapRef) -> None:
        self.d.on_map(m, lambda _: o.Munmap(m.proc, m.map_id))

    @rule(m=maps, prot=S.PROT)
    def mprotect(self, m: MapRef, prot: int) -> None:
        self.d.on_map(m, lambda _: o.Mprotect(m.proc, m.map_id, prot))

    @rule(m=maps, at=S.POSITIONS, length=S.LOAD_LENGTHS)
    def load(self, m: MapRef, at: int, length: int) -> None:
        self.d.on_map(m, lambda mm: o.Load(m.proc, m.map_id, *self.d.window(mm, at, length)))

    @rule(m=maps, at=S.POSITIONS, data=S.DATA)
    def store(self, m: MapRef, at: int, data: bytes) -> None:
        def make(mm: Any) -> o.Op:
            start, n = self.d.window(mm, at, len(data))
            return o.Store(m.proc, m.map_id, start, data[:n])
        self.d.on_map(m, make)

    @rule(m=maps)
    def fill(self, m: MapRef) -> None:
        """A store at the start of every page of a mapping, each with bytes of its own: what a
        caller does with a buffer it maps, and what makes a page that is lost, purged too eagerly
        or shared by mistake visible to the data checks."""
        self.d.fill(m)

    @precondition(lambda self: self.d.can(Capability.MAPS_NAME))
    @rule(m=maps)
    def maps_name(self, m: MapRef) -> None:
        self.d.on_map(m, lambda _: o.MapsName(m.proc, m.map_id))

    # file descriptors ------------------------------------------------------------------------
    @rule(target=fds, r=st.one_of(fds, maps))
    def dup(self, r: Ref) -> Any:
        fd = self.d.resolve(r)
        return multiple() if fd is None else self.d.new_fds(o.Dup(fd.proc, fd.fd))

    @rule(r=st.one_of(fds, maps))
    def close(self, r: Ref) -> None:
        """Through a mapping handle: an fd of the mapped region, so that every fd of a mapped region
        gets closed now and then, and the mapping outlives them."""
        fd = self.d.resolve(r)
        if fd is not None:
            self.d.on_fd(fd, o.Close)

    @rule(r=st.one_of(fds, maps), offset=S.SEEK_OFFSETS, whence=S.WHENCES)
    def lseek(self, r: Ref, offset: S.Units, whence: int) -> None:
        self.d.on_region(r, lambda p, f: o.Lseek(p, f, self.d.bytes_of(offset), whence))

    @rule(r=st.one_of(fds, maps), count=S.READ_COUNTS)
    def read(self, r: Ref, count: int) -> None:
        self.d.on_region(r, lambda p, f: o.Read(p, f, count))

    @rule(r=st.one_of(fds, maps), data=S.DATA)
    def write(self, r: Ref, data: bytes) -> None:
        self.d.on_region(r, lambda p, f: o.Write(p, f, data))

    @rule(fd=fds)
    def fcntl_getfd(self, fd: FdRef) -> None:
        self.d.on_fd(fd, o.GetFdFlags)

    # binder ----------------------------------------------------------------------------------
    @precondition(lambda self: self.d.can(Capability.FD_TRANSFER))
    @rule(target=fds, src=procs, dst=procs, sent=st.lists(st.one_of(fds, maps), max_size=3),
          bogus=st.sampled_from([(), (), (), (99,)]))
    def binder_transaction(self, src: int, dst: int, sent: list[Ref], bogus: tuple[int, ...]) -> Any:
        """Sent from the process of the first handle, when there is one (so that most fds sent are
        the sender's own); handles of other processes name numbers that may not be open there."""
        if sent:
            src = sent[0].proc
        return self.d.transfer(src, self._other(src, dst), self._fds_of(sent) + bogus)

    @precondition(lambda self: self.d.can(Capability.FD_TRANSFER))
    @rule(target=fds, caller=procs, replier=procs, sent=st.lists(st.one_of(fds, maps), max_size=2),
          accept_fds=st.booleans())
    def binder_reply(self, caller: int, replier: int, sent: list[Ref], accept_fds: bool) -> Any:
        if sent:
            replier = sent[0].proc
        return self.d.reply(self._other(replier, caller), replier, self._fds_of(sent), accept_fds)

    def _other(self, proc: int, wanted: int) -> int:
        """`wanted`, or another live process when it is `proc` itself (binder needs two)."""
        if wanted != proc:
            return wanted
        return next((p for p in sorted(self.d.h.model.procs) if p != proc and self.d.alive(p)), wanted)

    def _fds_of(self, refs: list[Ref]) -> tuple[int, ...]:
        """The fd numbers of `refs`. A handle of another process names a number that may or may
        not be open in the sender: the spec judges it either way (binder.fd.invalid)."""
        return tuple(fd.fd for fd in map(self.d.resolve, refs) if fd is not None)

    # scenarios -------------------------------------------------------------------------------
    @precondition(lambda self: self.scenarios)
    @rule(r=st.one_of(fds, maps), name=S.NAMES)
    def ashmem_set_name_and_read_back(self, r: Ref, name: bytes) -> None:
        fd = self.d.resolve(r)
        if fd is not None:
            scenarios.set_name_and_read_back(self.d, fd, name)

    @precondition(lambda self: self.scenarios)
    @rule(fd=fds, length=st.sampled_from([249, 250, 255, 256, 300]))
    def ashmem_name_at_the_limit(self, fd: FdRef, length: int) -> None:
        scenarios.name_at_the_limit(self.d, fd, length)

    @precondition(lambda self: self.scenarios)
    @rule(proc=procs, size=S.HUGE_SIZES, noreserve=st.booleans())
    def ashmem_huge_region(self, proc: int, size: tuple[int, int], noreserve: bool) -> None:
        scenarios.huge_region(self.d, proc, size[0] * self.d.page + size[1], noreserve)

    @precondition(lambda self: self.scenarios)
    @rule(fd=fds)
    def mask_then_regain_write(self, fd: FdRef) -> None:
        scenarios.mask_then_regain_write(self.d, fd)

    @precondition(lambda self: self.scenarios)
    @rule(m=maps)
    def private_view_of_written_data(self, m: MapRef) -> None:
        scenarios.private_view_of_written_data(self.d, m)

    @precondition(lambda self: self.scenarios)
    @rule(fd=fds)
    def map_past_the_end(self, fd: FdRef) -> None:
        scenarios.map_past_the_end(self.d, fd)

    @precondition(lambda self: self.scenarios)
    @rule(m=maps)
    def unpin_to_the_end_purge_and_pin(self, m: MapRef) -> None:
        scenarios.unpin_to_the_end_purge_and_pin(self.d, m)

    @precondition(lambda self: self.scenarios)
    @rule(m=maps)
    def unpin_then_pin_the_middle(self, m: MapRef) -> None:
        scenarios.unpin_then_pin_the_middle(self.d, m)

    @precondition(lambda self: self.scenarios and self.d.can(Capability.FD_TRANSFER))
    @rule(src=procs, dst=procs)
    def share_a_mapped_region(self, src: int, dst: int) -> None:
        scenarios.share_a_mapped_region(self.d, src, dst)

    @precondition(lambda self: self.scenarios and self.d.can(Capability.FD_TRANSFER))
    @rule(src=procs, dst=procs)
    def send_what_binder_refuses(self, src: int, dst: int) -> None:
        scenarios.send_what_binder_refuses(self.d, src, dst)

    @precondition(lambda self: self.scenarios and self.d.can(Capability.FD_TRANSFER))
    @rule(caller=procs, replier=procs)
    def reply_with_a_region(self, caller: int, replier: int) -> None:
        scenarios.reply_with_a_region(self.d, caller, replier)

    # observations ----------------------------------------------------------------------------
    @invariant()
    def fd_tables(self) -> None:
        self.d.check_fd_tables()

    @invariant()
    def data(self) -> None:
        self.d.check_data()

    @invariant()
    def diversity(self) -> None:
        """Remember the most of each rare state this test case reached (told to target() at the end)."""
        k = self.d.h.model
        holders: dict[int, set[int]] = {}
        for pid, p in k.procs.items():
            for e in p.fds.values():
                if e.kind is FdKind.REGION:
                    holders.setdefault(e.rid, set()).add(pid)
        now = {
            "unpinned ranges": sum(len(r.worlds[0].ranges) for r in k.regions.values()),
            "purged ranges": sum(sum(x[2] for x in r.worlds[0].ranges) for r in k.regions.values()),
            "regions held by several processes": sum(len(h) > 1 for h in holders.values()),
            "mappings that outlive every fd": sum(1 for p in k.procs.values() for m in p.maps.values()
                                                  if m.rid in k.regions and k.regions[m.rid].fd_refs == 0),
            "fds received over binder": sum(1 for p in k.procs.values() for e in p.fds.values()
                                            if e.origin == "binder"),
        }
        for label, value in now.items():
            self.reached[label] = max(self.reached.get(label, 0), value)

    def teardown(self) -> None:
        for label, value in self.reached.items():
            target(value, label=label)
