"""What the state machines share: handles, and one method per operation family.

Machines compose a Driver (no inheritance between machines). Handles name what the model made:
`FdRef(proc, fd)` and `MapRef(proc, map_id)`. A handle may go stale (closed fd, exited
process); an operation through a stale fd is still a real call that must say EBADF, but one
through a dead process or a forgotten mapping is skipped, since there is nobody to ask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis.stateful import multiple

from ashcheck.adapters.base import Capability
from ashcheck.conformance import session
from ashcheck.conformance.harness import Harness
from ashcheck.spec import ops as o
from ashcheck.spec.outcome import Kind, Outcome
from ashcheck.spec.state import Mapping

WHOLE = -1  # a mmap length meaning "the region's size"
FD_CHANGING = (o.CreateRegion, o.OpenAshmem, o.OpenPath, o.Dup, o.Close, o.BinderSend, o.BinderReply,
               o.Spawn, o.Exit)


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

    def __init__(self) -> None:
        self.adapter = session.adapter()
        self.h = Harness(self.adapter)
        self.page = self.adapter.page_size
        self.next_proc = 0
        self.next_map = 0
        self.last_proc = 0
        self.fds_changed = False

    def can(self, capability: Capability) -> bool:
        return capability in self.adapter.capabilities

    def alive(self, proc: int) -> bool:
        return proc in self.h.kernel.procs

    def step(self, op: o.Op) -> Outcome:
        self.last_proc = op.proc
        self.fds_changed = self.fds_changed or isinstance(op, FD_CHANGING)
        return self.h.step(op)

    # processes -------------------------------------------------------------------------------
    def can_spawn(self) -> bool:
        return len(self.h.kernel.procs) < self.MAX_PROCS and (
            self.next_proc == 0 or self.can(Capability.MULTI_PROCESS))

    def spawn(self, privileged: bool, accepts_fds: bool = True) -> int:
        proc = self.next_proc
        self.next_proc += 1
        self.step(o.Spawn(proc, privileged, accepts_fds))
        return proc

    def first_process(self) -> int:
        return self.spawn(privileged=self.can(Capability.PRIVILEGED))

    # fds -------------------------------------------------------------------------------------
    def new_fds(self, op: o.Op) -> Any:
        """Perform an fd-creating op; the resulting handles (none on error) go to the bundle."""
        proc = op.proc
        if not self.alive(proc):
            return multiple()
        out = self.step(op)
        if out.kind is Kind.VALUE and isinstance(out.value, int):
            return multiple(FdRef(proc, out.value))
        return multiple()

    def on_fd(self, ref: FdRef, make: Callable[[int, int], o.Op]) -> Outcome | None:
        if not self.alive(ref.proc):
            return None
        return self.step(make(ref.proc, ref.fd))

    # mappings --------------------------------------------------------------------------------
    def mmap(self, ref: FdRef, length: int, prot: int, shared: bool, offset: int) -> Any:
        """`length` WHOLE maps the region's whole size as the model knows it (most real callers do
        that, and it keeps the machine in mapped states often enough to test what follows)."""
        if not self.alive(ref.proc):
            return multiple()
        if length == WHOLE:
            region = self.h.kernel.region_of(ref.proc, ref.fd)
            length = self.page if region is None or not 0 < region.size <= 16 * self.page else region.size
        map_id = self.next_map
        self.next_map += 1
        out = self.step(o.Mmap(ref.proc, ref.fd, map_id, length, prot, shared, offset))
        return multiple(MapRef(ref.proc, map_id)) if out.kind is Kind.VALUE else multiple()

    def mapping(self, ref: MapRef) -> Mapping | None:
        p = self.h.kernel.procs.get(ref.proc)
        return None if p is None else p.maps.get(ref.map_id)

    def on_map(self, ref: MapRef, make: Callable[[Mapping], o.Op]) -> Outcome | None:
        m = self.mapping(ref)
        return None if m is None else self.step(make(m))

    def fd_of(self, ref: MapRef) -> FdRef | None:
        """An fd of the mapping's region in the mapping's process (lowest), if one is still open."""
        m = self.mapping(ref)
        if m is None:
            return None
        fds = [fd for fd, e in self.h.kernel.procs[ref.proc].fds.items() if e.rid == m.rid]
        return FdRef(ref.proc, min(fds)) if fds else None

    def window(self, m: Mapping, at: int, length: int) -> tuple[int, int]:
        """Clamp a drawn position and length into the mapping (the executor refuses to touch
        memory outside its own mappings: that would be a harness bug, not a kernel outcome)."""
        span = ((m.length + self.page - 1) // self.page) * self.page
        at %= span
        return at, max(1, min(length, span - at))

    # observation -----------------------------------------------------------------------------
    def check_fd_table(self) -> None:
        """Compare the fd table of the process last acted on with the model, after any operation
        that may have changed an fd table."""
        if self.fds_changed and self.alive(self.last_proc):
            self.step(o.ListFds(self.last_proc))
        self.fds_changed = False
