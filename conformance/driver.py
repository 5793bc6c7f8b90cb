"""What the state machine's rules share: handles, and one method per operation family.

The machine composes a Driver (no inheritance between machines). Handles name what the model
made: `FdRef(proc, fd)` and `MapRef(proc, map_id)`. A handle may go stale (closed fd, exited
process): an operation through a stale fd is still a real call that must say EBADF, but one
through a dead or set-aside process, or a forgotten mapping, is skipped, since there is nobody to
ask. Every method returns None (or no handles) for an operation that was not performed.

The driver also feeds the looks made after every step (observe.py: `self.watch`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis.stateful import multiple

from ashcheck.adapters.base import Adapter, Capability
from ashcheck.conformance.handles import FdRef, MapRef, Ref
from ashcheck.conformance.harness import Harness
from ashcheck.conformance.observe import Watch
from ashcheck.conformance.quarantine import involved
from ashcheck.conformance.strategies import AnyFd, AnyMap, Around, Focus, NameInUse, Units
from ashcheck.spec import ops as o
from ashcheck.spec.constants import PROT_WRITE, page_align
from ashcheck.spec.outcome import Kind, Outcome
from ashcheck.spec.state import Mapping

WHOLE = -1  # a mmap length meaning "the region's size"


class Driver:
    MAX_PROCS = 3

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.h = Harness(adapter)
        self.page = adapter.page_size
        self.next_proc = 0
        self.next_map = 0
        self.fills = 0
        self.watch = Watch(self)
        self.recent: list[int] = []  # region ids, most recently used first
        self.mapped_first = True  # focus(): mapped regions before the others (else recency alone)
        self.fd_handles: list[FdRef] = []  # every fd handle made in this test case
        self.map_handles: list[MapRef] = []

    def bytes_of(self, units: Units, region_size: int = 0) -> int:
        """Pages, or a named edge (strategies.py), in bytes."""
        if isinstance(units, int):
            return units * self.page
        if units == "top":
            return 2**32 - self.page
        if units == "end":
            return page_align(region_size, self.page)
        if units == "last":  # the region's last byte: a read or write from there crosses the end
            return max(0, region_size - 1)
        return {"unaligned": 100, "byte": 1, "odd": self.page + 1, "neg": -1, "neg-page": -self.page,
                "max": 2**63 - 1}[units]

    def span_of(self, ref: FdRef, span: Around | tuple[Units, Units]) -> tuple[int, int]:
        """(offset, length) in bytes for PIN/UNPIN/GET_PIN_STATUS: drawn in pages and edges, or
        placed around one of the region's unpinned ranges (strategies.Around); with no unpinned
        range, around the whole region."""
        size = self.size_of(ref)
        if not isinstance(span, Around):
            return self.bytes_of(span[0], size), self.bytes_of(span[1], size)
        region = self.h.model.region_of(ref.proc, ref.fd)
        pages = max(1, page_align(size, self.page) // self.page)
        ranges = [(s, e) for s, e, _ in region.worlds[0].ranges if s <= e] if region is not None else []
        s, e = ranges[span.index % len(ranges)] if ranges else (0, pages - 1)
        first, last = {
            "inside": (s + 1, max(s + 1, e - 1)) if e - s >= 2 else (s, e),
            "exact": (s, e),
            "over-start": (max(0, s - 1), s),
            "over-end": (e, e + 1),
            "cover": (max(0, s - 1), e + 1),
            "below": (max(0, s - 1), max(0, s - 1)),
            "above": (e + 1, e + 1),
        }[span.how]
        if span.how == "inside" and e - s >= 2:  # one page strictly inside, chosen by the index
            first = last = s + 1 + span.index % (e - s - 1)
        return first * self.page, (last - first + 1) * self.page

    def name(self, drawn: bytes | NameInUse) -> bytes:
        """A drawn name as it is, or the name of a region in use (the index-th most recently used)."""
        if isinstance(drawn, bytes):
            return drawn
        regions = [self.h.model.regions[rid] for rid in self.recent if rid in self.h.model.regions]
        return regions[drawn.index % len(regions)].name if regions else b""

    def size_of(self, ref: FdRef) -> int:
        """The size of the region behind `ref` as the model knows it (0 if none)."""
        region = self.h.model.region_of(ref.proc, ref.fd) if self.alive(ref.proc) else None
        return 0 if region is None else region.size

    def can(self, capability: Capability) -> bool:
        return capability in self.adapter.capabilities

    def alive(self, proc: int) -> bool:
        return self.h.usable(proc)

    def step(self, op: o.Op) -> Outcome | None:
        regions = involved(self.h.model, op).regions  # before: a close takes the fd away
        if isinstance(op, o.Exit) and op.proc in self.h.model.procs:
            regions |= {e.rid for e in self.h.model.procs[op.proc].fds.values() if e.rid >= 0}
        out = self.h.step(op)
        if out is None:
            return None
        if out.succeeded and isinstance(op, o.CreateRegion | o.OpenAshmem) and isinstance(out.value, int):
            regions = {e.rid for fd, e in self.h.model.procs[op.proc].fds.items() if fd == out.value}
        self.watch.note(op, regions, out)
        self.recent = [*sorted(regions), *(rid for rid in self.recent if rid not in regions)]
        return out

    # processes -------------------------------------------------------------------------------
    def can_spawn(self) -> bool:
        return len(self.h.model.procs) < self.MAX_PROCS and (
            self.next_proc == 0 or self.can(Capability.MULTI_PROCESS))

    def spawn(self, privileged: bool, accepts_fds: bool = True) -> int:
        proc = self.next_proc
        self.next_proc += 1
        self.step(o.Spawn(proc, privileged, accepts_fds))
        return proc

    def maps(self, proc: int, rid: int) -> bool:
        """Whether `proc` has a mapping of region `rid`."""
        return any(m.rid == rid for m in self.h.model.procs[proc].maps.values())

    def releasing_exits(self) -> list[int]:
        """The live processes whose exit would release a region that another live process maps:
        they hold every fd of it left."""
        live = self.live_procs()
        found = []
        for proc in live:
            others = [p for p in live if p != proc]
            held = {e.rid for e in self.h.model.procs[proc].fds.values() if e.rid >= 0}
            if any(not any(self.fds_of(p, rid) for p in others) and any(self.maps(p, rid) for p in others)
                   for rid in held):
                found.append(proc)
        return found

    def first_process(self) -> int:
        """Process 0, spawned by whichever initializer asks first (Hypothesis runs them in any order)."""
        if self.next_proc == 0:
            self.spawn(privileged=self.can(Capability.PRIVILEGED))
        return 0

    # fds -------------------------------------------------------------------------------------
    def new_fds(self, op: o.Op) -> Any:
        """Perform an fd-creating op; the resulting handles go to the bundle: those the model made
        (none on error, and none when the implementation answered what the spec does not allow)."""
        if not self.alive(op.proc):
            return multiple()
        out = self.step(op)
        if out is not None and out.kind is Kind.VALUE and isinstance(out.value, int):
            return self._known(FdRef(op.proc, out.value))
        return multiple()

    def _known(self, *refs: FdRef) -> Any:
        known = [r for r in refs if self.alive(r.proc) and r.fd in self.h.model.procs[r.proc].fds]
        self.fd_handles += known
        return multiple(*known)

    def on_fd(self, ref: FdRef, make: Callable[[int, int], o.Op]) -> Outcome | None:
        if not self.alive(ref.proc):
            return None
        return self.step(make(ref.proc, ref.fd))

    def resolve(self, ref: Ref) -> FdRef | None:
        """An fd handle as it is; a mapping as an open fd of the mapping's region in its process
        (the lowest), so that an operation on a region meets one that is mapped; Focus as the
        region in focus; AnyFd as one of the fd handles made so far."""
        if isinstance(ref, Focus):
            return self.focus(ref.index)
        if isinstance(ref, AnyFd):
            ref = self.fd_handles[ref.index % len(self.fd_handles)] if self.fd_handles else FdRef(-1, -1)
        if isinstance(ref, FdRef):
            return ref if self.alive(ref.proc) else None
        handle = self.as_map(ref)
        m = None if handle is None else self.mapping(handle)
        if handle is None or m is None:
            return None
        fds = [fd for fd, e in self.h.model.procs[handle.proc].fds.items() if e.rid == m.rid]
        return FdRef(handle.proc, min(fds)) if fds else None

    def region_fd(self, proc: int) -> FdRef | None:
        """An fd `proc` holds of the most recently used region it has (None if it has none)."""
        for rid in self.recent:
            for ref in self.fds_of(proc, rid):
                return ref
        return None

    def proc(self, index: int) -> int | None:
        """The index-th live process (modulo their number)."""
        live = self.live_procs()
        return live[index % len(live)] if live else None

    def live_procs(self) -> list[int]:
        return [p for p in sorted(self.h.model.procs) if self.alive(p)]

    def other(self, proc: int, index: int) -> int:
        """The index-th live process other than `proc` (`proc` itself when it is the only one)."""
        others = [p for p in self.live_procs() if p != proc]
        return others[index % len(others)] if others else proc

    def focus(self, index: int) -> FdRef | None:
        """The `index`-th region that can still be asked about, as an fd a usable process holds:
        mapped regions first (with `mapped_first`, most test cases), then the others, each most
        recently used first. So index 0 (what is
        drawn most) is the mapped region the last steps worked on, and one region goes deep:
        unpinned, shared, closed and purged in turn."""
        mapped = {m.rid for p in self.h.model.procs.values() for m in p.maps.values()}
        order = sorted(self.recent, key=lambda rid: self.mapped_first and rid not in mapped)  # stable
        # every fd of the region, in every process: the next indexes reach its dups and the fds
        # other processes received for it
        candidates = [fd for rid in order for proc in self.live_procs() for fd in self.fds_of(proc, rid)]
        return candidates[index % len(candidates)] if candidates else None

    def focus_map(self, index: int) -> MapRef | None:
        """The `index`-th live mapping, those of recently used regions first."""
        order = {rid: i for i, rid in enumerate(self.recent)}
        live = [(order.get(m.rid, len(order)), -map_id, MapRef(proc, map_id))
                for proc in self.h.model.procs if self.alive(proc)
                for map_id, m in self.h.model.procs[proc].maps.items()
                if m.rid in self.h.model.regions and not self.h.model.regions[m.rid].untracked]
        live.sort(key=lambda x: x[:2])
        return live[index % len(live)][2] if live else None

    def on_region(self, ref: Ref, make: Callable[[int, int], o.Op]) -> Outcome | None:
        fd = self.resolve(ref)
        return None if fd is None else self.on_fd(fd, make)

    def transfer(self, src: int, dst: int, fds: tuple[int, ...]) -> Any:
        """A binder transaction from src to dst carrying fds; the receiver's new fds go to the
        bundle, each first asked whether it is close-on-exec (the receiver's first question)."""
        if src == dst or not (self.alive(src) and self.alive(dst)):
            return multiple()
        out = self.step(o.BinderSend(src, dst, fds))
        if out is None or not isinstance(out.value, tuple):
            return multiple()
        known = self._known(*(FdRef(dst, fd) for fd in out.value if isinstance(fd, int)))
        for ref in known.values:
            self.step(o.GetFdFlags(ref.proc, ref.fd))
        return known

    def reply(self, caller: int, replier: int, fds: tuple[int, ...], accept_fds: bool) -> Any:
        if caller == replier or not (self.alive(caller) and self.alive(replier)):
            return multiple()
        out = self.step(o.BinderReply(caller, replier, fds, accept_fds))
        got = out.value[0] if out is not None and isinstance(out.value, tuple) else None
        if not isinstance(got, tuple):
            return multiple()
        known = self._known(*(FdRef(caller, fd) for fd in got if isinstance(fd, int)))
        for ref in known.values:
            self.step(o.GetFdFlags(ref.proc, ref.fd))
        return known

    # mappings --------------------------------------------------------------------------------
    def mmap(self, ref: FdRef, length: int, prot: int, shared: bool, offset: int, *,
             noreserve: bool = False, near: MapRef | None = None, above: bool = False) -> Any:
        """`length` WHOLE maps the region's whole size as the model knows it (most real callers do
        that, and it keeps the machine in mapped states often enough to test what follows).
        `near`, a mapping of the same process, asks for the address next to it."""
        if not self.alive(ref.proc):
            return multiple()
        if length == WHOLE:
            region = self.h.model.region_of(ref.proc, ref.fd)
            length = self.page if region is None or not 0 < region.size <= 16 * self.page else region.size
        near_id = near.map_id if near is not None and near.proc == ref.proc and self.mapping(near) else None
        map_id = self.next_map
        self.next_map += 1
        out = self.step(o.Mmap(ref.proc, ref.fd, map_id, length, prot, shared, offset, noreserve,
                               near_id, above and near_id is not None))
        made = MapRef(ref.proc, map_id)
        if out is None or self.mapping(made) is None:
            return multiple()
        self.map_handles.append(made)
        return multiple(made)

    def as_map(self, ref: Ref) -> MapRef | None:
        """A mapping handle as it is; Focus as the mapping in focus; AnyMap as one of the mapping
        handles made so far; anything else is not a mapping."""
        if isinstance(ref, Focus):
            return self.focus_map(ref.index)
        if isinstance(ref, AnyMap):
            return self.map_handles[ref.index % len(self.map_handles)] if self.map_handles else None
        return ref if isinstance(ref, MapRef) else None

    def mapping(self, ref: Ref) -> Mapping | None:
        handle = self.as_map(ref)
        if handle is None or not self.alive(handle.proc):
            return None
        return self.h.model.procs[handle.proc].maps.get(handle.map_id)

    def on_map(self, ref: Ref, make: Callable[[MapRef, Mapping], o.Op]) -> Outcome | None:
        handle = self.as_map(ref)
        m = None if handle is None else self.mapping(handle)
        return None if handle is None or m is None else self.step(make(handle, m))

    def span(self, m: Mapping) -> int:
        return (m.length + self.page - 1) // self.page * self.page

    def window(self, m: Mapping, at: int, length: int) -> tuple[int, int]:
        """Clamp a drawn position and length into the mapping (the executor refuses to touch
        memory outside its own mappings: that would be a harness bug, not a kernel outcome)."""
        span = self.span(m)
        at %= span
        return at, max(1, min(length, span - at))

    def fill(self, ref: MapRef) -> None:
        """Store a tag of its own at the start of every page of the mapping (one store per page),
        and one in the last bytes of its last page: past the end of the file when the region's size
        is not page-aligned, where only a mapping can write and ftruncate must zero."""
        m = self.mapping(ref)
        if m is None or not m.prot & PROT_WRITE:
            return
        self.fills += 1
        span = self.span(m)
        for at in [*range(0, span, self.page), span - 8]:
            tag = f"{ref.proc}.{ref.map_id}.{at // self.page}.{self.fills}".encode()
            tag = tag if at % self.page == 0 else tag[-8:]
            if self.step(o.Store(ref.proc, ref.map_id, at, tag)) is None or self.mapping(ref) is None:
                return

    def fds_of(self, proc: int, rid: int) -> list[FdRef]:
        """The fds of region `rid` that `proc` holds, lowest first."""
        if not self.alive(proc):
            return []
        return [FdRef(proc, fd) for fd, e in sorted(self.h.model.procs[proc].fds.items()) if e.rid == rid]

    def holders(self, rid: int) -> list[FdRef]:
        """The lowest fd of region `rid` in each usable process that holds one."""
        return [fds[0] for proc in self.live_procs() if (fds := self.fds_of(proc, rid))]

    def holder(self, rid: int) -> FdRef | None:
        """An fd of region `rid` that a usable process holds (the first process's lowest), or None."""
        holders = self.holders(rid)
        return holders[0] if holders else None
