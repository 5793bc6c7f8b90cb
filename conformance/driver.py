"""What the state machine's rules share: handles, and one method per operation family.

The machine composes a Driver (no inheritance between machines). Handles name what the model
made: `FdRef(proc, fd)` and `MapRef(proc, map_id)`. A handle may go stale (closed fd, exited
process): an operation through a stale fd is still a real call that must say EBADF, but one
through a dead or set-aside process, or a forgotten mapping, is skipped, since there is nobody to
ask. Every method returns None (or no handles) for an operation that was not performed.

The driver also carries the observations made after steps (the machine's invariants): the fd
tables of the processes whose table may have changed, the pin state of the regions a step touched
(page by page), and the data of live mappings. A bug that changes state without changing the
answer of the call that caused it shows there, at the next step, rather than by luck much later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis.stateful import multiple

from ashcheck.adapters.base import Adapter, Capability
from ashcheck.conformance.harness import Harness
from ashcheck.conformance.quarantine import involved
from ashcheck.conformance.strategies import AnyFd, AnyMap, Around, Focus, Units
from ashcheck.spec import ops as o
from ashcheck.spec.constants import PROT_READ, PROT_WRITE, page_align
from ashcheck.spec.outcome import Kind, Outcome
from ashcheck.spec.state import Mapping

WHOLE = -1  # a mmap length meaning "the region's size"
FD_CHANGING = (o.CreateRegion, o.OpenAshmem, o.OpenPath, o.Dup, o.Close, o.BinderSend, o.BinderReply,
               o.Spawn, o.Exit)
# After these, mapped data may have changed somewhere: some pages are loaded again.
DATA_CHANGING = (o.PurgeAllCaches, o.Exit, o.Close, o.Unpin, o.Store, o.Write, o.Munmap, o.Pin, o.BinderSend)
# After these, every live mapping's data and every region's pin state is checked, within FULL_CHECK_LIMIT.
FULL_CHECK = (o.PurgeAllCaches, o.Exit)
FULL_CHECK_LIMIT = 64  # observations made by one full check at most
# After these, the pin state of the regions they name may have changed (or gone with a release).
PIN_CHANGING = (o.Pin, o.Unpin, o.Close, o.Dup, o.BinderSend, o.BinderReply, o.Mmap)
PIN_CHECK_PAGES = 8  # pages of a region whose pin status is asked, at most


@dataclass(frozen=True)
class FdRef:
    proc: int
    fd: int

    def __repr__(self) -> str:
        return f"FdRef(proc={self.proc}, fd={self.fd})"


@dataclass(frozen=True)
class MapRef:
    proc: int
    map_id: int


Ref = FdRef | MapRef | Focus | AnyFd | AnyMap  # what an operation's region or mapping argument may be


class Driver:
    MAX_PROCS = 3

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.h = Harness(adapter)
        self.page = adapter.page_size
        self.next_proc = 0
        self.next_map = 0
        self.changed_tables: set[int] = set()
        self.data_dirty = False
        self.full_check = False
        self.cursor = 0  # where the next partial data check starts, over all mapped pages
        self.fills = 0
        self.touched: set[int] = set()  # regions whose pin state a step may have changed
        self.released: set[int] = set()  # regions a step released while a mapping still holds them
        self.recent: list[int] = []  # region ids, most recently used first
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
        return {"unaligned": 100, "byte": 1, "neg": -1}[units]

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
        if isinstance(op, o.Close | o.Exit):
            self.released |= {rid for rid in regions if self._released_while_mapped(rid)}
        if isinstance(op, FD_CHANGING):
            self.changed_tables |= {op.proc} | ({op.dst} if isinstance(op, o.BinderSend) else set())
        self.data_dirty = self.data_dirty or isinstance(op, DATA_CHANGING)
        self.full_check = self.full_check or isinstance(op, FULL_CHECK)
        if isinstance(op, FULL_CHECK):
            self.touched |= set(self.h.model.regions)
        elif isinstance(op, PIN_CHANGING):
            self.touched |= regions
        if out.succeeded and isinstance(op, o.CreateRegion | o.OpenAshmem) and isinstance(out.value, int):
            regions = {e.rid for fd, e in self.h.model.procs[op.proc].fds.items() if fd == out.value}
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
        mapped regions first, then the others, each most recently used first. So index 0 (what is
        drawn most) is the mapped region the last steps worked on, and one region goes deep:
        unpinned, shared, closed and purged in turn."""
        mapped = {m.rid for p in self.h.model.procs.values() for m in p.maps.values()}
        order = sorted(self.recent, key=lambda rid: rid not in mapped)  # stable: recency kept within
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
        """Store a tag of its own at the start of every page of the mapping (one store per page)."""
        m = self.mapping(ref)
        if m is None or not m.prot & PROT_WRITE:
            return
        self.fills += 1
        for at in range(0, self.span(m), self.page):
            tag = f"{ref.proc}.{ref.map_id}.{at // self.page}.{self.fills}".encode()
            if self.step(o.Store(ref.proc, ref.map_id, at, tag)) is None or self.mapping(ref) is None:
                return

    # observations (the machine's invariants) -------------------------------------------------
    def observe(self) -> None:
        """The observations after a step, in order, then a fresh start for the next step."""
        self.check_fd_tables()
        self.check_release()
        self.check_pins()
        self.check_data()
        self.data_dirty = self.full_check = False
        self.released = set()

    def _released_while_mapped(self, rid: int) -> bool:
        region = self.h.model.regions.get(rid)  # still there: something maps it
        return region is not None and region.fd_refs == 0 and not region.untracked

    def check_release(self) -> None:
        """After the last fd of a mapped region went (a close, a dup's close, an exit): fill its
        mappings with fresh data, purge everything that can be purged, then look at every page. A
        released region's memory is no longer purgeable (its unpinned ranges went with the last
        fd), however it was unpinned, so that data must all still be there."""
        if not self.released or not self.can(Capability.PRIVILEGED):
            return
        for proc in self.live_procs():
            for map_id, m in sorted(self.h.model.procs[proc].maps.items()):
                if m.rid in self.released and m.shared:
                    self.fill(MapRef(proc, map_id))
        privileged = [p for p in self.live_procs() if self.h.model.procs[p].privileged]
        for proc in privileged:
            holder = next((FdRef(proc, fd) for fd, e in sorted(self.h.model.procs[proc].fds.items())
                           if e.rid in self.h.model.regions), None)
            if holder is not None:
                self.step(o.PurgeAllCaches(holder.proc, holder.fd))
                return
        if privileged:  # PURGE_ALL_CACHES needs some ashmem fd: a region of one page for the purpose
            for made in self.new_fds(o.CreateRegion(privileged[0], b"purge", self.page)).values:
                self.step(o.PurgeAllCaches(made.proc, made.fd))
                self.step(o.Close(made.proc, made.fd))

    def check_fd_tables(self) -> None:
        """Compare the fd table of every process whose table may have changed with the model."""
        for proc in sorted(self.changed_tables):
            if self.alive(proc):
                self.step(o.ListFds(proc))
        self.changed_tables.clear()

    def check_pins(self) -> None:
        """Ask GET_PIN_STATUS of every page (up to PIN_CHECK_PAGES) of the regions touched since the
        last check, through an fd some usable process holds, within the step's budget."""
        budget = FULL_CHECK_LIMIT if self.full_check else self.adapter.checks_per_step
        touched, self.touched = sorted(self.touched), set()
        for rid in touched:
            region = self.h.model.regions.get(rid)
            holder = self._holder(rid)
            if region is None or region.untracked or not region.materialized or holder is None:
                continue
            for page in range(min(region.npages_file(self.page), PIN_CHECK_PAGES)):
                if budget <= 0:
                    return
                budget -= 1
                self.step(o.GetPinStatus(holder.proc, holder.fd, page * self.page, self.page))

    def fds_of(self, proc: int, rid: int) -> list[FdRef]:
        """The fds of region `rid` that `proc` holds, lowest first."""
        if not self.alive(proc):
            return []
        return [FdRef(proc, fd) for fd, e in sorted(self.h.model.procs[proc].fds.items()) if e.rid == rid]

    def _holders(self, rid: int) -> list[FdRef]:
        """The lowest fd of region `rid` in each usable process that holds one."""
        return [fds[0] for proc in self.live_procs() if (fds := self.fds_of(proc, rid))]

    def _holder(self, rid: int) -> FdRef | None:
        holders = self._holders(rid)
        return holders[0] if holders else None

    def check_data(self) -> None:
        """Load mapped pages and let the spec judge their bytes: after a purge or an exit every
        readable page of every live mapping (up to FULL_CHECK_LIMIT), after other steps that may
        change data a few pages (the adapter's `checks_per_step`), in turn, so that over a test
        case every page is seen."""
        if not self.data_dirty:
            return
        pages = self._readable_pages()
        budget = FULL_CHECK_LIMIT if self.full_check else self.adapter.checks_per_step
        if not pages:
            return
        start = self.cursor % len(pages)
        chosen = (pages[start:] + pages[:start])[:budget]
        self.cursor = start + len(chosen)
        for ref, offset in chosen:
            m = self.mapping(ref)
            if m is not None:  # an earlier load may have set the region aside
                self.step(o.Load(ref.proc, ref.map_id, offset, min(self.page, self.span(m) - offset)))

    def _readable_pages(self) -> list[tuple[MapRef, int]]:
        out = []
        for proc in sorted(self.h.model.procs):
            if not self.alive(proc):
                continue
            for map_id, m in sorted(self.h.model.procs[proc].maps.items()):
                region = self.h.model.regions.get(m.rid)
                if m.prot & PROT_READ and region is not None and not region.untracked:
                    out += [(MapRef(proc, map_id), at) for at in range(0, self.span(m), self.page)]
        return out
