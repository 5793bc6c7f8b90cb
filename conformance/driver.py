"""What the state machine's rules share: handles, and one method per operation family.

The machine composes a Driver (no inheritance between machines). Handles name what the model
made: `FdRef(proc, fd)` and `MapRef(proc, map_id)`. A handle may go stale (closed fd, exited
process): an operation through a stale fd is still a real call that must say EBADF, but one
through a dead or set-aside process, or a forgotten mapping, is skipped, since there is nobody to
ask. Every method returns None (or no handles) for an operation that was not performed.

The driver also carries the two observations made after steps (the machine's invariants):
the fd tables of the processes whose table may have changed, and the data of live mappings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis.stateful import multiple

from ashcheck.adapters.base import Adapter, Capability
from ashcheck.conformance.harness import Harness
from ashcheck.conformance.strategies import Units
from ashcheck.spec import ops as o
from ashcheck.spec.constants import PROT_READ, PROT_WRITE, page_align
from ashcheck.spec.outcome import Kind, Outcome
from ashcheck.spec.state import Mapping

WHOLE = -1  # a mmap length meaning "the region's size"
FD_CHANGING = (o.CreateRegion, o.OpenAshmem, o.OpenPath, o.Dup, o.Close, o.BinderSend, o.BinderReply,
               o.Spawn, o.Exit)
# After these, every live mapping's data is checked, not just a few pages.
DATA_CHANGING = (o.PurgeAllCaches, o.Exit, o.Close, o.Unpin, o.Store, o.Write, o.Munmap, o.Pin, o.BinderSend)
FULL_CHECK = (o.PurgeAllCaches, o.Exit)
FULL_CHECK_LIMIT = 64  # pages loaded by one full check at most


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

    def bytes_of(self, units: Units, region_size: int = 0) -> int:
        """Pages, or a named edge (strategies.py), in bytes."""
        if isinstance(units, int):
            return units * self.page
        if units == "top":
            return 2**32 - self.page
        if units == "end":
            return page_align(region_size, self.page)
        return {"unaligned": 100, "byte": 1, "neg": -1}[units]

    def size_of(self, ref: FdRef) -> int:
        """The size of the region behind `ref` as the model knows it (0 if none)."""
        region = self.h.model.region_of(ref.proc, ref.fd) if self.alive(ref.proc) else None
        return 0 if region is None else region.size

    def can(self, capability: Capability) -> bool:
        return capability in self.adapter.capabilities

    def alive(self, proc: int) -> bool:
        return self.h.usable(proc)

    def step(self, op: o.Op) -> Outcome | None:
        out = self.h.step(op)
        if out is None:
            return None
        if isinstance(op, FD_CHANGING):
            self.changed_tables |= {op.proc} | ({op.dst} if isinstance(op, o.BinderSend) else set())
        self.data_dirty = self.data_dirty or isinstance(op, DATA_CHANGING)
        self.full_check = self.full_check or isinstance(op, FULL_CHECK)
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
        """Perform an fd-creating op; the resulting handles (none on error) go to the bundle."""
        if not self.alive(op.proc):
            return multiple()
        out = self.step(op)
        if out is not None and out.kind is Kind.VALUE and isinstance(out.value, int):
            return multiple(FdRef(op.proc, out.value))
        return multiple()

    def on_fd(self, ref: FdRef, make: Callable[[int, int], o.Op]) -> Outcome | None:
        if not self.alive(ref.proc):
            return None
        return self.step(make(ref.proc, ref.fd))

    def resolve(self, ref: FdRef | MapRef) -> FdRef | None:
        """An fd handle as it is; a mapping handle as an open fd of the mapping's region in its
        process (the lowest), so that an operation on a region meets one that is mapped."""
        if isinstance(ref, FdRef):
            return ref
        m = self.mapping(ref)
        if m is None:
            return None
        fds = [fd for fd, e in self.h.model.procs[ref.proc].fds.items() if e.rid == m.rid]
        return FdRef(ref.proc, min(fds)) if fds else None

    def on_region(self, ref: FdRef | MapRef, make: Callable[[int, int], o.Op]) -> Outcome | None:
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
        for fd in out.value:
            self.step(o.GetFdFlags(dst, fd))
        return multiple(*(FdRef(dst, fd) for fd in out.value))

    def reply(self, caller: int, replier: int, fds: tuple[int, ...], accept_fds: bool) -> Any:
        if caller == replier or not (self.alive(caller) and self.alive(replier)):
            return multiple()
        out = self.step(o.BinderReply(caller, replier, fds, accept_fds))
        got = out.value[0] if out is not None and isinstance(out.value, tuple) else None
        if not isinstance(got, tuple):
            return multiple()
        for fd in got:
            self.step(o.GetFdFlags(caller, fd))
        return multiple(*(FdRef(caller, fd) for fd in got))

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
        return multiple(MapRef(ref.proc, map_id)) if out is not None and out.succeeded else multiple()

    def mapping(self, ref: MapRef) -> Mapping | None:
        if not self.alive(ref.proc):
            return None
        return self.h.model.procs[ref.proc].maps.get(ref.map_id)

    def on_map(self, ref: MapRef, make: Callable[[Mapping], o.Op]) -> Outcome | None:
        m = self.mapping(ref)
        return None if m is None else self.step(make(m))

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
    def check_fd_tables(self) -> None:
        """Compare the fd table of every process whose table may have changed with the model."""
        for proc in sorted(self.changed_tables):
            if self.alive(proc):
                self.step(o.ListFds(proc))
        self.changed_tables.clear()

    def check_data(self) -> None:
        """Load mapped pages and let the spec judge their bytes: after a purge or an exit every
        readable page of every live mapping (up to FULL_CHECK_LIMIT), after other steps that may
        change data a few pages (the adapter's `data_check_pages`), in turn, so that over a test
        case every page is seen."""
        if not self.data_dirty:
            return
        pages = self._readable_pages()
        budget = FULL_CHECK_LIMIT if self.full_check else self.adapter.data_check_pages
        self.data_dirty = self.full_check = False
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
