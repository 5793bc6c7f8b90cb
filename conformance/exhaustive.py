"""Small domains, exhausted: every region state × every operation, and every way a new mapping
can meet an older one of the same file.

Small domains first (STYLE §9): before the exploration wanders, each lifecycle state of a region
meets each operation once with canonical arguments. Every mapped state is there twice: with its
mapping shared, and private (whose pages of its own must survive what the file goes through). A
state is a setup program from a fresh process; a pair runs the setup, the operation, and a look at
the fd table, all judged by the spec.
The same table serves the spec's own totality test (selftest/test_spec.py).

Placements: an older shared mapping (each prot), then WRITE removed from the mask (memfd: the
F_SEAL_FUTURE_WRITE seal), then a new shared mapping asked right below or right above it, at a
file offset that continues it or not, read-only or writable; then mprotect to writable, a store,
and another writable mmap next to it. A kernel that merges the new mapping into the older one
before the driver or shmem checks it (5.10's mmap_region) shows here on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ashcheck.adapters.base import Adapter, Capability
from ashcheck.spec import ops as o
from ashcheck.spec.constants import PROT_READ, PROT_WRITE

P = 4096
RW = PROT_READ | PROT_WRITE
MakeOp = Callable[[int], o.Op]  # fd → operation of process 0


@dataclass(frozen=True)
class State:
    setup: tuple[MakeOp, ...]  # the first creates the region and returns its fd
    needs: tuple[Capability, ...] = ()
    mapped: bool = False       # mapping 0 exists


def _create(fd: int) -> o.Op:
    return o.CreateRegion(0, b"pair", 2 * P)


STATES: dict[str, State] = {
    "fresh": State((lambda fd: o.OpenAshmem(0),), (Capability.ASHMEM_DEVICE,)),
    "named-unsized": State((lambda fd: o.OpenAshmem(0), lambda fd: o.SetName(0, fd, b"n")),
                           (Capability.ASHMEM_DEVICE,)),
    "sized": State((_create,)),
    "masked-read": State((_create, lambda fd: o.SetProtMask(0, fd, PROT_READ))),
    "mapped": State((_create, lambda fd: o.Mmap(0, fd, 0, 2 * P, RW, True, 0)), mapped=True),
    "unmapped": State((_create, lambda fd: o.Mmap(0, fd, 0, P, RW, True, 0), lambda fd: o.Munmap(0, 0))),
    "mapped-then-masked": State((_create, lambda fd: o.Mmap(0, fd, 0, 2 * P, RW, True, 0),
                                 lambda fd: o.SetProtMask(0, fd, PROT_READ)), mapped=True),
    "unpinned": State((_create, lambda fd: o.Mmap(0, fd, 0, 2 * P, RW, True, 0),
                       lambda fd: o.Store(0, 0, P, b"keep"), lambda fd: o.Unpin(0, fd, P, P)), mapped=True),
    "purged": State((_create, lambda fd: o.Mmap(0, fd, 0, 2 * P, RW, True, 0),
                     lambda fd: o.Store(0, 0, P, b"gone"), lambda fd: o.Unpin(0, fd, P, P),
                     lambda fd: o.PurgeAllCaches(0, fd)), (Capability.PRIVILEGED,), mapped=True),
    "closed": State((_create, lambda fd: o.Mmap(0, fd, 0, 2 * P, RW, True, 0),
                     lambda fd: o.Store(0, 0, 0, b"live"), lambda fd: o.Close(0, fd)), mapped=True),
    "masked-then-mapped": State((_create, lambda fd: o.SetProtMask(0, fd, PROT_READ),
                                 lambda fd: o.Mmap(0, fd, 0, 2 * P, PROT_READ, True, 0)), mapped=True),
}


def _private(step: MakeOp) -> MakeOp:
    """`step`, with mapping 0 made MAP_PRIVATE if it is the mmap of mapping 0."""
    def make(fd: int) -> o.Op:
        op = step(fd)
        return replace(op, shared=False) if isinstance(op, o.Mmap) and op.map_id == 0 else op
    return make


# Every mapped state again with mapping 0 MAP_PRIVATE: a private mapping's own pages (copied on
# write) outlive what its file goes through (a purge, a punch, a release, a truncation), and the
# prot mask (memfd: the seal) cuts its rights as the driver (or shmem) says, not as a shared one's.
STATES |= {f"{name}-private": State(tuple(map(_private, state.setup)), state.needs, state.mapped)
           for name, state in list(STATES.items()) if state.mapped}
# and a private mapping made of a file that already holds data: ashmem's is anonymous (zeros), a
# memfd's or a plain file's is a copy-on-write view of the data
STATES["written-then-mapped-private"] = State((
    _create, lambda fd: o.Mmap(0, fd, 1, 2 * P, RW, True, 0), lambda fd: o.Store(0, 1, P, b"file"),
    lambda fd: o.Mmap(0, fd, 0, 2 * P, RW, False, 0)), mapped=True)

FD_OPS: dict[str, MakeOp] = {
    "SET_NAME": lambda fd: o.SetName(0, fd, b"x"),
    "SET_NAME-null": lambda fd: o.SetName(0, fd, None),
    "SET_NAME-long": lambda fd: o.SetName(0, fd, b"L" * 300),
    "GET_NAME": lambda fd: o.GetName(0, fd),
    "SET_SIZE": lambda fd: o.SetSize(0, fd, 3 * P),
    "GET_SIZE": lambda fd: o.GetSize(0, fd),
    "SET_PROT_MASK-read": lambda fd: o.SetProtMask(0, fd, PROT_READ),
    "SET_PROT_MASK-all": lambda fd: o.SetProtMask(0, fd, 7),
    "GET_PROT_MASK": lambda fd: o.GetProtMask(0, fd),
    "PIN-all": lambda fd: o.Pin(0, fd, 0, 0),
    "PIN-page1": lambda fd: o.Pin(0, fd, P, P),
    "PIN-unaligned": lambda fd: o.Pin(0, fd, 100, P),
    "PIN-beyond": lambda fd: o.Pin(0, fd, 2 * P, P),
    "UNPIN-page0": lambda fd: o.Unpin(0, fd, 0, P),
    "GET_PIN_STATUS-all": lambda fd: o.GetPinStatus(0, fd, 0, 0),
    "PURGE_ALL_CACHES": lambda fd: o.PurgeAllCaches(0, fd),
    "mmap-shared-rw": lambda fd: o.Mmap(0, fd, 1, P, RW, True, 0),
    "mmap-private-rw": lambda fd: o.Mmap(0, fd, 1, P, RW, False, 0),
    "mmap-too-long": lambda fd: o.Mmap(0, fd, 1, 3 * P, PROT_READ, True, 0),
    "read": lambda fd: o.Read(0, fd, 8),
    "lseek": lambda fd: o.Lseek(0, fd, 4, 0),
    "write": lambda fd: o.Write(0, fd, b"w"),
    "dup": lambda fd: o.Dup(0, fd),
    "close": lambda fd: o.Close(0, fd),
    "fcntl_getfd": lambda fd: o.GetFdFlags(0, fd),
    "ftruncate": lambda fd: o.Ftruncate(0, fd, 3 * P),
    "fallocate-punch": lambda fd: o.Fallocate(0, fd, 3, 0, P),
    "fallocate": lambda fd: o.Fallocate(0, fd, 0, 0, P),
}

MAP_OPS: dict[str, MakeOp] = {
    "load": lambda fd: o.Load(0, 0, P, 8),
    "store": lambda fd: o.Store(0, 0, 0, b"s"),
    "mprotect-rw": lambda fd: o.Mprotect(0, 0, RW),
    "mprotect-none": lambda fd: o.Mprotect(0, 0, 0),
    "maps_name": lambda fd: o.MapsName(0, 0),
    "munmap": lambda fd: o.Munmap(0, 0),
}

OP_NEEDS: dict[str, tuple[Capability, ...]] = {
    "PURGE_ALL_CACHES": (Capability.PRIVILEGED,), "maps_name": (Capability.MAPS_NAME,),
}


def pairs() -> list[tuple[str, str]]:
    out = [(s, op) for s in STATES for op in FD_OPS]
    out += [(s, op) for s, st in STATES.items() if st.mapped for op in MAP_OPS]
    return out


def make_op(name: str) -> MakeOp:
    return FD_OPS.get(name) or MAP_OPS[name]


Step = Callable[[int], o.Op | None]  # fd → operation, None to leave it out


def placement(old_prot: int, above: bool, contiguous: bool, new_prot: int) -> list[Step]:
    """One way a new mapping (map 1) meets an older one (map 0, one page at file page 1 of 4)."""
    new_offset = {(False, True): 0, (False, False): 2 * P, (True, True): 2 * P, (True, False): 0}[above, contiguous]
    return [
        lambda fd: o.CreateRegion(0, b"meet", 4 * P),
        lambda fd: o.Mmap(0, fd, 0, P, old_prot, True, P),
        lambda fd: o.SetProtMask(0, fd, PROT_READ),
        lambda fd: o.Mmap(0, fd, 1, P, new_prot, True, new_offset, near=0, above=above),
        lambda fd: o.Mprotect(0, 1, RW),
        lambda fd: o.Store(0, 1, 0, b"sealed?"),
        lambda fd: o.Load(0, 0, 0, 8),
        lambda fd: o.Read(0, fd, 8),
        lambda fd: o.Mmap(0, fd, 2, P, RW, True, new_offset, near=1, above=above),
        lambda fd: o.Store(0, 2, 0, b"again?"),
        lambda fd: o.ListFds(0),
    ]


PLACEMENTS = {f"old{old}-{'above' if above else 'below'}-{'contiguous' if cont else 'apart'}-new{new}":
              placement(old, above, cont, new)
              for old in (PROT_READ, RW, PROT_WRITE, 0) for above in (False, True)
              for cont in (True, False) for new in (PROT_READ, RW)}


def programs(adapter: Adapter) -> list[list[Step]]:
    """Every program of the tables that the adapter's capabilities allow, each from a fresh start:
    spawn process 0, then the steps (the first creates the region whose fd the others get)."""
    out: list[list[Step]] = []
    spawn: Step = lambda fd: o.Spawn(0, Capability.PRIVILEGED in adapter.capabilities, True)  # noqa: E731
    for state, op in pairs():
        needs = STATES[state].needs + OP_NEEDS.get(op, ())
        if all(c in adapter.capabilities for c in needs):
            out.append([spawn, *STATES[state].setup, make_op(op), lambda fd: o.ListFds(0)])
    out += [[spawn, *steps] for steps in PLACEMENTS.values()]
    if Capability.UNPRIVILEGED in adapter.capabilities:  # the same calls without CAP_SYS_ADMIN
        unprivileged: Step = lambda fd: o.Spawn(0, False, True)  # noqa: E731
        out += [[unprivileged, *STATES["unpinned"].setup, make_op(op), lambda fd: o.ListFds(0)] for op in FD_OPS]
    return out
