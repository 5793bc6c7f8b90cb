"""Every region state × every operation, each pair specified.

Small domains first (STYLE §9): before the stateful machines wander, each lifecycle state of a
region meets each operation once with canonical arguments. A state is a setup program from a
fresh process; a pair runs the setup, the operation, and a look at the fd table, all judged by
the spec. The same table serves the spec's own totality test (selftest/test_spec.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ashcheck.adapters.base import Capability
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
}

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
