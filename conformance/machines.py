"""The exploration: one Hypothesis state machine in which every operation may follow every other.

One operation kind per system call, each a method named after it, so that a program reads like an
strace: processes (spawn, exit), regions (create, open, every ioctl), pinning and purging,
mappings (mmap with placement next to an older mapping, munmap, mprotect, loads, stores, maps
names), the fd calls (dup, close, lseek, read, write, F_GETFD) and binder (transactions and
replies carrying fds, O_PATH and closed fds included). Bugs live where areas cross (binder +
unpin + exit; dup + unpin + close; split + purge + pin), so nothing is kept apart.

How the search covers the space:
- Swarm testing (Groce et al., ISSTA 2012): each test case enables a random subset of the
  operation kinds (each with a probability drawn per test case), so some test cases go deep into a
  few operations and others mix many, and no operation can keep another from ever being followed
  far enough. The subset comes from the test case's own seed (its number in the shard), not from
  Hypothesis's data: Hypothesis makes most test cases by mutating earlier ones, which copies the
  start of a test case, so a subset drawn there repeated in 20 of 50 test cases when measured.
- Uniform choice among the enabled kinds. Hypothesis's own rule selection (one @rule per kind)
  was measured here to favour some rules 4 to 10 times over others (the first rule in its sort
  order took 12% of all steps, and test cases derived from one another repeat the same few
  rules), which starved the chains real bugs need (unpin, then close the last fd, then purge). So
  the machine has one rule, `step`, that draws the kind itself, rotated by a per-test-case offset
  so that no kind is always first.
- Focus: region and mapping operations mostly act on the recently used ones (Driver.focus), so
  one region goes deep, and sometimes on any handle ever made, stale ones included (EBADF).
- Targeted search: at the end of each test case `hypothesis.target()` is told how much of the rare
  state it reached (unpinned and purged ranges, regions held by several processes, mappings that
  outlive every fd, fds received over binder), and Hypothesis steers towards more of it.
- Data everywhere: the first region is filled page by page, `fill` fills any mapping, and a
  mapping that mprotect leaves writable is filled at once (a permission granted is used, as its
  caller would), so a page lost, purged too eagerly or shared by mistake shows in the checks after
  every step (fd tables, pin states of the regions touched, mapped data: driver.py).
- Scenarios (scenarios.py): the patterns real callers use, one kind each; `scenarios = False`
  switches them off (the self-tests do, to show that the exploration alone catches each bug).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import target
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ashcheck.adapters.base import Adapter, Capability
from ashcheck.conformance import scenarios
from ashcheck.conformance import strategies as S
from ashcheck.conformance.driver import WHOLE, Driver
from ashcheck.conformance.handles import MapRef, Ref
from ashcheck.spec import ops as o
from ashcheck.spec.constants import FALLOC_FL_PUNCH_HOLE, SEEK_DATA, SEEK_HOLE
from ashcheck.spec.state import FdKind


@dataclass(frozen=True)
class Kind:
    """One kind of operation the exploration may take: a method and the domains of its arguments."""

    name: str
    run: Callable[..., Any]
    args: dict[str, S.Domain]
    needs: tuple[Capability, ...] = ()
    scenario: bool = False
    weight: int = 1  # how many shares of the steps it gets among the enabled kinds


KINDS: dict[str, Kind] = {}


def kind(*, needs: tuple[Capability, ...] = (), scenario: bool = False, weight: int = 1,
         **args: S.Domain) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a method of Conformance as an operation kind with the domains of its arguments.
    Kinds that change state get weight 2: an observation can follow any state, a state has to be
    built."""
    def register(method: Callable[..., Any]) -> Callable[..., Any]:
        KINDS[method.__name__] = Kind(method.__name__, method, args, needs, scenario, weight)
        return method
    return register


REGION, MAPPING, PROC = S.REGION_REF, S.MAPPING_REF, S.PROC_REF
SWARM_LOW, SWARM_HIGH = 0.05, 0.6  # the share of kinds a test case enables, drawn uniformly between
XFER = (Capability.MULTI_PROCESS, Capability.FD_TRANSFER)
FIRST_REGIONS = ((b"first", 4, 0), (b"first", 4, 0), (b"", 4, 0), (b"first", 3, 100))  # name, pages, bytes
MAPPED_FIRST = 2 / 3  # the share of test cases whose focus takes mapped regions first
SECOND_UNPRIVILEGED, SECOND_REFUSES_FDS = 1 / 4, 1 / 4  # the shares of test cases whose process 1 is so


@dataclass
class Swarm:
    """The kinds enabled in one test case, each listed `weight` times, in the order the draw
    indexes them."""

    kinds: list[Kind] = field(default_factory=list)
    rotation: int = 0


class Conformance(RuleBasedStateMachine):
    scenarios = True

    def __init__(self, adapter: Adapter, swarm_seed: int = 0) -> None:
        super().__init__()
        self.d = Driver(adapter)
        self.swarm_seed = swarm_seed
        self.swarm = Swarm()
        self.reached: dict[str, int] = {}

    # the generator ---------------------------------------------------------------------------
    @initialize()
    def start(self) -> None:
        """Processes 0 and 1 (when the adapter has more than one; whether 1 accepts fds and is
        privileged varies by test case), a mapped region with data in every page, and this test
        case's swarm: the enabled kinds and their rotation."""
        d = self.d
        rng = random.Random(self.swarm_seed)
        # The region every test case starts from is where depth goes: its name and size, and whether
        # the focus prefers mapped regions, vary by test case, so unnamed regions and sizes that are
        # not whole pages meet everything a named one of 4 pages does.
        name, pages, extra = rng.choice(FIRST_REGIONS)
        d.mapped_first = rng.random() < MAPPED_FIRST
        d.first_process()
        if d.can(Capability.MULTI_PROCESS) and d.can(Capability.FD_TRANSFER):
            # The second process varies by test case too: in one in four it refuses fds (binder's
            # ACCEPTS_FDS), in one in four it is unprivileged, so that binder's refusals and
            # PURGE_ALL_CACHES's EPERM meet everything else (a spawn during the run is rare: it waits
            # for an exit to free a slot).
            unprivileged = d.can(Capability.UNPRIVILEGED) and rng.random() < SECOND_UNPRIVILEGED
            d.spawn(d.can(Capability.PRIVILEGED) and not unprivileged,
                    accepts_fds=rng.random() >= SECOND_REFUSES_FDS)
        for fd in d.new_fds(o.CreateRegion(0, name, pages * d.page + extra)).values:
            for m in d.mmap(fd, WHOLE, 3, True, 0).values:
                d.fill(m)
        usable = [k for k in KINDS.values()
                  if all(d.can(c) for c in k.needs) and (self.scenarios or not k.scenario)]
        share = rng.uniform(SWARM_LOW, SWARM_HIGH)
        enabled = [k for k in usable if rng.random() < share] or usable
        weighted = [k for k in enabled for _ in range(k.weight)]
        self.swarm = Swarm(weighted, rng.randrange(len(weighted)))

    @rule(choices=S.STEP)
    def step(self, choices: list[int]) -> None:
        """One operation: its kind uniformly among the enabled ones, its arguments from the rest of
        the integers drawn (strategies.py)."""
        draws = iter(choices[1:] * 4)  # a list argument may read more than CHOICES - 1
        kinds = self.swarm.kinds
        chosen = kinds[(choices[0] + self.swarm.rotation) % len(kinds)]
        chosen.run(self, **{name: domain(draws) for name, domain in chosen.args.items()})

    # processes -------------------------------------------------------------------------------
    @kind(privileged=S.BOOL, accepts_fds=S.BOOL)
    def spawn(self, privileged: bool, accepts_fds: bool) -> None:
        if self.d.can_spawn():
            if not self.d.can(Capability.PRIVILEGED if privileged else Capability.UNPRIVILEGED):
                privileged = not privileged
            self.d.spawn(privileged, accepts_fds)

    @kind(weight=2, proc=PROC, holder=S.BOOL)
    def exit(self, proc: int, holder: bool) -> None:
        """A process exits: any one, or (`holder`) one whose exit releases a region under a mapping
        another process keeps (else one that holds the region in focus), so that the lifetime
        rules meet releases by exit, not only by close."""
        releasing = self.d.releasing_exits() if holder else []
        focus = self.d.focus(0) if holder and not releasing else None
        p = releasing[proc % len(releasing)] if releasing else focus.proc if focus else self.d.proc(proc)
        if p is not None and len(self.d.live_procs()) > 1:
            self.d.step(o.Exit(p))

    @kind(proc=PROC, room=S.FD_ROOM, then=S.AT_THE_LIMIT, other=PROC)
    def setrlimit_nofile(self, proc: int, room: int | str, then: str, other: int) -> None:
        """Set a process's fd limit near what it holds: `room` more fds fit (negative: below fds it
        already has), or it is lifted well above. Then (`then`) a call that makes fds in it: a dup,
        or two fds coming in by binder, in a transaction or in a reply to its call, from `other`:
        with room for one of two, a transfer fails half way and must leave nothing."""
        p = self.d.proc(proc)
        if p is None:
            return
        free = self.d.h.model.procs[p].lowest_free()
        self.d.step(o.SetFdLimit(p, S.FD_LIMIT_LIFTED if room == "lift" else max(0, free + int(room))))
        mine = self.d.region_fd(p)
        if then == "dup" and mine is not None:
            self.d.new_fds(o.Dup(p, mine.fd))
            return
        q = self.d.other(p, other)
        theirs = self.d.region_fd(q)
        if theirs is None or q == p or not self.d.can(Capability.FD_TRANSFER):
            return
        if then == "receive":
            self.d.transfer(q, p, (theirs.fd, theirs.fd))
        elif then == "reply":
            self.d.reply(p, q, (theirs.fd, theirs.fd), accept_fds=True)

    # regions ---------------------------------------------------------------------------------
    @kind(weight=2, proc=PROC, name=S.NAMES, size=S.CREATE_SIZES)
    def ashmem_create_region(self, proc: int, name: bytes | S.NameInUse, size: tuple[int, int]) -> None:
        p = self.d.proc(proc)
        if p is not None:
            self.d.new_fds(o.CreateRegion(p, self.d.name(name), size[0] * self.d.page + size[1]))

    @kind(proc=PROC, needs=(Capability.ASHMEM_DEVICE,))
    def open_ashmem(self, proc: int) -> None:
        p = self.d.proc(proc)
        if p is not None:
            self.d.new_fds(o.OpenAshmem(p))

    @kind(proc=PROC)
    def open_path(self, proc: int) -> None:
        p = self.d.proc(proc)
        if p is not None:
            self.d.new_fds(o.OpenPath(p))

    @kind(r=REGION, name=S.NAME_OR_NULL)
    def ashmem_set_name(self, r: Ref, name: bytes | S.NameInUse | None) -> None:
        chosen = None if name is None else self.d.name(name)
        self.d.on_region(r, lambda p, f: o.SetName(p, f, chosen))

    @kind(r=REGION)
    def ashmem_get_name(self, r: Ref) -> None:
        self.d.on_region(r, o.GetName)

    @kind(r=REGION, size=S.SIZES)
    def ashmem_set_size(self, r: Ref, size: tuple[int, int]) -> None:
        """SET_SIZE, and GET_SIZE after it as a caller checks what it set: each size's trip through
        ioctl's int result is read back (strategies.HUGE_SIZES has its edges)."""
        fd = self.d.resolve(r)
        bytes_ = size[0] * self.d.page + size[1]
        if fd is not None and self.d.on_fd(fd, lambda p, f: o.SetSize(p, f, bytes_)) is not None:
            self.d.on_fd(fd, o.GetSize)

    @kind(r=REGION)
    def ashmem_get_size(self, r: Ref) -> None:
        self.d.on_region(r, o.GetSize)

    @kind(r=REGION, prot=S.PROT_MASK_ARG)
    def ashmem_set_prot_mask(self, r: Ref, prot: int) -> None:
        self.d.on_region(r, lambda p, f: o.SetProtMask(p, f, prot))

    @kind(r=REGION)
    def ashmem_get_prot_mask(self, r: Ref) -> None:
        self.d.on_region(r, o.GetProtMask)

    @kind(r=REGION, nr=S.UNKNOWN_IOCTLS)
    def ioctl_unknown(self, r: Ref, nr: int) -> None:
        self.d.on_region(r, lambda p, f: o.UnknownIoctl(p, f, nr))

    # pinning and purging -----------------------------------------------------------------------
    def _pin_like(self, r: Ref, span: S.Around | tuple[S.Units, S.Units],
                  make: type[o.Pin | o.Unpin | o.GetPinStatus]) -> None:
        fd = self.d.resolve(r)
        if fd is not None:
            offset, length = self.d.span_of(fd, span)
            self.d.on_fd(fd, lambda p, f: make(p, f, offset, length))

    @kind(weight=2, r=REGION, span=S.PIN_SPAN)
    def ashmem_pin(self, r: Ref, span: S.Around | tuple[S.Units, S.Units]) -> None:
        self._pin_like(r, span, o.Pin)

    @kind(weight=2, r=REGION, span=S.PIN_SPAN)
    def ashmem_unpin(self, r: Ref, span: S.Around | tuple[S.Units, S.Units]) -> None:
        self._pin_like(r, span, o.Unpin)

    @kind(r=REGION, span=S.PIN_SPAN)
    def ashmem_get_pin_status(self, r: Ref, span: S.Around | tuple[S.Units, S.Units]) -> None:
        self._pin_like(r, span, o.GetPinStatus)

    @kind(r=REGION, order=S.PAGE_ORDERS)
    def ashmem_pin_every_page(self, r: Ref, order: str) -> None:
        """PIN the region back one page at a time, as a cache does before it reuses its memory: each
        answer says whether that page's unpinned range was purged, so every range's purged flag
        (split, merged, inherited or forgotten) is observed, page by page. Out of order, a pin
        lands inside a range and splits it, and the pins after it ask each part."""
        self._every_page(r, order, o.Pin)

    @kind(r=REGION, order=S.PAGE_ORDERS)
    def ashmem_unpin_every_page(self, r: Ref, order: str) -> None:
        """UNPIN the region one page at a time, as a cache that releases its entries one by one:
        adjacent ranges that the driver must keep apart, each on the LRU in its turn (out of order,
        also ranges that the next unpin overlaps on both sides)."""
        self._every_page(r, order, o.Unpin)

    def _every_page(self, r: Ref, order: str, make: Callable[[int, int, int, int], o.Op]) -> None:
        fd = self.d.resolve(r)
        if fd is not None:
            for page in S.page_order(order, min(self.d.size_of(fd) // self.d.page, 16)):
                if self.d.step(make(fd.proc, fd.fd, page * self.d.page, self.d.page)) is None:
                    return

    @kind(r=REGION, cmd=S.PIN_COMMANDS)
    def ioctl_null(self, r: Ref, cmd: str) -> None:
        self.d.on_region(r, lambda p, f: o.IoctlNullArg(p, f, cmd))

    @kind(r=REGION)
    def ashmem_purge_all_caches(self, r: Ref) -> None:
        self.d.on_region(r, o.PurgeAllCaches)

    # memory ----------------------------------------------------------------------------------
    @kind(weight=2, r=REGION, length=S.MAP_LENGTHS, prot=S.MAP_PROT, shared=S.SHARED, offset=S.MAP_OFFSETS,
          noreserve=S.BOOL, near=S.MAYBE_MAPPING, above=S.BOOL)
    def mmap(self, r: Ref, length: S.Units, prot: int, shared: bool, offset: S.Units, noreserve: bool,
             near: Ref | None, above: bool) -> None:
        fd = self.d.resolve(r)
        if fd is not None:
            size = self.d.size_of(fd)
            n = WHOLE if length == "whole" else self.d.bytes_of(length, size)
            self.d.mmap(fd, n, prot, shared, self.d.bytes_of(offset, size), noreserve=noreserve,
                        near=None if near is None else self.d.as_map(near), above=above)

    @kind(m=MAPPING)
    def munmap(self, m: Ref) -> None:
        self.d.on_map(m, lambda h, _: o.Munmap(h.proc, h.map_id))

    @kind(m=MAPPING, prot=S.PROT, again=S.MAYBE_PROT)
    def mprotect(self, m: Ref, prot: int, again: int | None) -> None:
        """mprotect, and now and then a second one on the same mapping: what the first allowed or
        refused must not change what the second may add (the mask is the region's, not the last
        call's). A mapping left writable is then used, as the caller that asked for it would: a
        store in every page (Driver.fill), so that where the bytes land (the file, or the private
        copies of a MAP_PRIVATE mapping) shows in the data checks."""
        handle = self.d.as_map(m)
        if self.d.on_map(m, lambda h, _: o.Mprotect(h.proc, h.map_id, prot)) is not None and again is not None:
            self.d.on_map(m, lambda h, _: o.Mprotect(h.proc, h.map_id, again))
        if handle is not None:
            self.d.fill(handle)

    @kind(m=MAPPING, at=S.POSITIONS, length=S.LOAD_LENGTHS)
    def load(self, m: Ref, at: int, length: int) -> None:
        self.d.on_map(m, lambda h, mm: o.Load(h.proc, h.map_id, *self.d.window(mm, at, length)))

    @kind(weight=2, m=MAPPING, at=S.POSITIONS, data=S.DATA)
    def store(self, m: Ref, at: int, data: bytes) -> None:
        def make(h: MapRef, mm: Any) -> o.Op:
            start, n = self.d.window(mm, at, len(data))
            return o.Store(h.proc, h.map_id, start, data[:n])
        self.d.on_map(m, make)

    @kind(m=MAPPING)
    def fill(self, m: Ref) -> None:
        """A store at the start of every page of a mapping, each with bytes of its own: what a
        caller does with a buffer it maps, and what makes a page that is lost, purged too eagerly
        or shared by mistake visible to the data checks."""
        handle = self.d.as_map(m)
        if handle is not None:
            self.d.fill(handle)

    @kind(m=MAPPING, needs=(Capability.MAPS_NAME,))
    def maps_name(self, m: Ref) -> None:
        self.d.on_map(m, lambda h, _: o.MapsName(h.proc, h.map_id))

    # file descriptors ------------------------------------------------------------------------
    @kind(weight=2, r=REGION)
    def dup(self, r: Ref) -> None:
        fd = self.d.resolve(r)
        if fd is not None:
            self.d.new_fds(o.Dup(fd.proc, fd.fd))

    @kind(weight=2, r=REGION)
    def close(self, r: Ref) -> None:
        """On the region in focus: its fds one by one, so that the last one goes now and then while
        a mapping lives on."""
        fd = self.d.resolve(r)
        if fd is not None:
            self.d.on_fd(fd, o.Close)

    @kind(r=REGION)
    def close_every_fd(self, r: Ref) -> None:
        """Every fd of the region in that process, lowest first: what a caller done with a buffer
        does while its mapping stays in use."""
        fd = self.d.resolve(r)
        region = None if fd is None else self.d.h.model.region_of(fd.proc, fd.fd)
        if fd is None or region is None:
            return
        for other in self.d.fds_of(fd.proc, region.rid):
            if self.d.on_fd(other, o.Close) is None:
                return

    @kind(weight=2, r=REGION, offset=S.SEEK_OFFSETS, whence=S.WHENCES, count=S.READ_COUNTS, write=S.BOOL,
          data=S.DATA)
    def lseek(self, r: Ref, offset: S.Units, whence: int, count: int, write: bool, data: bytes) -> None:
        """lseek, and where it moved the position, a read or (`write`) a write from there: a caller
        seeks to read or to write, so positions at the edges (a byte before the end, the end,
        LONG_MAX) meet the checks of both."""
        fd = self.d.resolve(r)
        if fd is not None:
            at = self.d.bytes_of(offset, self.d.size_of(fd))
            out = self.d.on_fd(fd, lambda p, f: o.Lseek(p, f, at, whence))
            if out is not None and out.succeeded:
                self.d.on_fd(fd, lambda p, f: o.Write(p, f, data) if write else o.Read(p, f, count))

    @kind(r=REGION)
    def seek_data_and_holes(self, r: Ref) -> None:
        """Walk the region as a sparse copy does (cp, rsync): SEEK_DATA from where the last hole
        began, then SEEK_HOLE from the data found, to the end. Every page the backing file holds,
        and every hole a purge punched, is found in turn."""
        fd = self.d.resolve(r)
        if fd is None:
            return
        pos = 0
        for _ in range(S.SEEK_WALK):
            for whence in (SEEK_DATA, SEEK_HOLE):
                out = self.d.step(o.Lseek(fd.proc, fd.fd, pos, whence))
                if out is None or not out.succeeded or not isinstance(out.value, int):
                    return
                pos = out.value

    @kind(r=REGION, count=S.READ_COUNTS)
    def read(self, r: Ref, count: int) -> None:
        self.d.on_region(r, lambda p, f: o.Read(p, f, count))

    @kind(r=REGION, data=S.DATA)
    def write(self, r: Ref, data: bytes) -> None:
        self.d.on_region(r, lambda p, f: o.Write(p, f, data))

    @kind(r=REGION)
    def fcntl_getfd(self, r: Ref) -> None:
        self.d.on_region(r, o.GetFdFlags)

    @kind(r=REGION, length=S.TRUNCATE_LENGTHS)
    def ftruncate(self, r: Ref, length: str) -> None:
        """Resize the region's file (the kernel's memfd selftest: refused under the GROW and SHRINK
        seals libcutils adds): to its own size, a page more, a byte less, 0, or -1."""
        fd = self.d.resolve(r)
        if fd is not None:
            size = self.d.size_of(fd)
            n = {"same": size, "grow": size + self.d.page, "shrink": max(0, size - 1), "zero": 0, "neg": -1}[length]
            self.d.on_fd(fd, lambda p, f: o.Ftruncate(p, f, n))

    @kind(weight=2, r=REGION, mode=S.FALLOC_MODES, offset=S.FALLOC_OFFSETS, length=S.FALLOC_LENGTHS)
    def fallocate(self, r: Ref, mode: int, offset: S.Units, length: S.Units) -> None:
        """Punch a hole (what a receiver would do to zero a region it may no longer write) or bring
        pages in. Allocation stays within 16 pages of the offset: a real file would allocate what
        it is asked (the length of every edge, MAX included, goes to holes, which cost nothing)."""
        fd = self.d.resolve(r)
        if fd is None:
            return
        size, page = self.d.size_of(fd), self.d.page
        at, cap = self.d.bytes_of(offset, size), 16 * page
        if length in ("to-end", "past-end"):
            n = (size - at if 0 < size - at <= cap else cap) + (length == "past-end")
        elif length == "max":
            n = 2**63 - 1 if mode & FALLOC_FL_PUNCH_HOLE else cap
        else:
            n = self.d.bytes_of(length, size)
        self.d.on_fd(fd, lambda p, f: o.Fallocate(p, f, mode, at, n))

    # binder ----------------------------------------------------------------------------------
    @kind(weight=2, src=PROC, dst=PROC, sent=S.listing(REGION, 3), bogus=S.BOGUS_FDS, needs=XFER)
    def binder_transaction(self, src: int, dst: int, sent: list[Ref], bogus: tuple[int, ...]) -> None:
        """From the process of the first handle, when there is one (so that most fds sent are the
        sender's own); handles of other processes name numbers that may not be open there
        (binder.fd.invalid), and `bogus` one that is open nowhere."""
        fds = [fd for fd in map(self.d.resolve, sent) if fd is not None]
        sender = fds[0].proc if fds else self.d.proc(src)
        if sender is not None:
            self.d.transfer(sender, self.d.other(sender, dst), tuple(fd.fd for fd in fds) + bogus)

    @kind(r=REGION, dst=PROC, gives_back=S.BOOL, then=S.RECEIVER_ENDS, needs=XFER)
    def hand_over(self, r: Ref, dst: int, gives_back: bool, then: str) -> None:
        """The usual life of a shared region, as one step: the sender maps it (unless it has) and
        fills it, sends the region's fd over binder, the receiver maps it whole, and the sender
        closes every fd it had of it (its mapping stays). Then the receiver may give the memory
        back (UNPIN of all of it, as a cache entry no longer used) and keep its fd, close it, or
        exit: the region changes hands, and is released (by a close, by an exit) under a mapping
        another process keeps."""
        fd = self.d.resolve(r)
        region = None if fd is None else self.d.h.model.region_of(fd.proc, fd.fd)
        if fd is None or region is None:
            return
        if not self.d.maps(fd.proc, region.rid):
            for mine in self.d.mmap(fd, WHOLE, 3, True, 0).values:
                self.d.fill(mine)
        for got in self.d.transfer(fd.proc, self.d.other(fd.proc, dst), (fd.fd,)).values:
            self.d.mmap(got, WHOLE, 3, True, 0)
            for mine in self.d.fds_of(fd.proc, region.rid):
                self.d.step(o.Close(mine.proc, mine.fd))
            if gives_back:
                self.d.step(o.Unpin(got.proc, got.fd, 0, 0))
            if then == "closes":
                self.d.step(o.Close(got.proc, got.fd))
            elif then == "exits" and len(self.d.live_procs()) > 1:
                self.d.step(o.Exit(got.proc))

    @kind(caller=PROC, sent=S.listing(REGION, 2), accept_fds=S.BOOL, needs=XFER)
    def binder_reply(self, caller: int, sent: list[Ref], accept_fds: bool) -> None:
        """The replier is the process of the first handle (else one other than the caller)."""
        fds = [fd for fd in map(self.d.resolve, sent) if fd is not None]
        asking = self.d.proc(caller)
        if asking is None:
            return
        replier = fds[0].proc if fds else self.d.other(asking, caller + 1)
        self.d.reply(self.d.other(replier, caller), replier, tuple(fd.fd for fd in fds), accept_fds)

    # scenarios -------------------------------------------------------------------------------
    @kind(r=REGION, name=S.NAMES, scenario=True)
    def ashmem_set_name_and_read_back(self, r: Ref, name: bytes | S.NameInUse) -> None:
        fd = self.d.resolve(r)
        if fd is not None:
            scenarios.set_name_and_read_back(self.d, fd, self.d.name(name))

    @kind(r=REGION, length=S.NAME_LIMITS, scenario=True)
    def ashmem_name_at_the_limit(self, r: Ref, length: int) -> None:
        fd = self.d.resolve(r)
        if fd is not None:
            scenarios.name_at_the_limit(self.d, fd, length)

    @kind(proc=PROC, size=S.HUGE_SIZES, noreserve=S.BOOL, scenario=True)
    def ashmem_huge_region(self, proc: int, size: tuple[int, int], noreserve: bool) -> None:
        p = self.d.proc(proc)
        if p is not None:
            scenarios.huge_region(self.d, p, size[0] * self.d.page + size[1], noreserve)

    @kind(r=REGION, scenario=True)
    def mask_then_regain_write(self, r: Ref) -> None:
        fd = self.d.resolve(r)
        if fd is not None:
            scenarios.mask_then_regain_write(self.d, fd)

    @kind(m=MAPPING, scenario=True)
    def private_view_of_written_data(self, m: Ref) -> None:
        handle = self.d.as_map(m)
        if handle is not None:
            scenarios.private_view_of_written_data(self.d, handle)

    @kind(r=REGION, scenario=True)
    def map_past_the_end(self, r: Ref) -> None:
        fd = self.d.resolve(r)
        if fd is not None:
            scenarios.map_past_the_end(self.d, fd)

    @kind(m=MAPPING, whole=S.BOOL, scenario=True)
    def unpin_to_the_end_purge_and_pin(self, m: Ref, whole: bool) -> None:
        handle = self.d.as_map(m)
        if handle is not None:
            scenarios.unpin_to_the_end_purge_and_pin(self.d, handle, whole)

    @kind(m=MAPPING, sizes=S.CACHE_ENTRIES, order=S.CACHE_ORDER, scenario=True)
    def cache_entries_purged(self, m: Ref, sizes: list[int], order: list[int]) -> None:
        handle = self.d.as_map(m)
        if handle is not None:
            scenarios.cache_entries_purged(self.d, handle, sizes, order)

    @kind(m=MAPPING, scenario=True)
    def unpin_then_pin_the_middle(self, m: Ref) -> None:
        handle = self.d.as_map(m)
        if handle is not None:
            scenarios.unpin_then_pin_the_middle(self.d, handle)

    @kind(src=PROC, dst=PROC, needs=XFER, scenario=True)
    def share_a_mapped_region(self, src: int, dst: int) -> None:
        p = self.d.proc(src)
        if p is not None:
            scenarios.share_a_mapped_region(self.d, p, self.d.other(p, dst))

    @kind(src=PROC, dst=PROC, needs=XFER, scenario=True)
    def send_what_binder_refuses(self, src: int, dst: int) -> None:
        p = self.d.proc(src)
        if p is not None:
            scenarios.send_what_binder_refuses(self.d, p, self.d.other(p, dst))

    @kind(caller=PROC, replier=PROC, needs=XFER, scenario=True)
    def reply_with_a_region(self, caller: int, replier: int) -> None:
        p = self.d.proc(caller)
        if p is not None:
            scenarios.reply_with_a_region(self.d, p, self.d.other(p, replier))

    # observations ----------------------------------------------------------------------------
    @invariant()
    def observe(self) -> None:
        """After every step: fd tables, then pin states, then mapped data (driver.py); and the most
        of each rare state reached so far, for target() at the end."""
        self.d.watch.look()
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
