"""What callers do, checked: the few flows through which real code uses ashmem, each an explicit
program that runs in every run on every adapter with the capabilities it needs, and is reported
under its own name beside the rules its steps were judged by.

The exploration (machines.py) reaches the same operations in every order; a flow pins down the
order real callers use, so that a report can say "your callers' flow works" in their words. Every
step is judged by the spec like any other (a flow asserts nothing of its own), and after the last
step the suite's usual looks (observe.py: fd tables, pins, data) are made once more.

Each flow is a function of a Driver; its docstring says whose flow it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ashcheck.adapters.base import Adapter, Capability
from ashcheck.conformance.driver import Driver
from ashcheck.conformance.handles import FdRef
from ashcheck.conformance.results import FlowResult
from ashcheck.spec import ops as o
from ashcheck.spec.constants import PROT_READ, PROT_WRITE, SEEK_SET

RW = PROT_READ | PROT_WRITE
TWO = (Capability.MULTI_PROCESS, Capability.FD_TRANSFER)


@dataclass(frozen=True)
class Flow:
    name: str
    title: str
    needs: tuple[Capability, ...]
    run: Callable[[Driver], None]

    @property
    def doc(self) -> str:
        return " ".join((self.run.__doc__ or "").split())


FLOWS: dict[str, Flow] = {}


def flow(name: str, title: str, *, needs: tuple[Capability, ...] = ()) -> Callable[[Callable[[Driver], None]],
                                                                                   Callable[[Driver], None]]:
    def register(run: Callable[[Driver], None]) -> Callable[[Driver], None]:
        FLOWS[name] = Flow(name, title, needs, run)
        return run
    return register


def _second(d: Driver, accepts_fds: bool = True) -> int:
    d.first_process()
    return d.spawn(d.can(Capability.PRIVILEGED), accepts_fds)


@flow("binder-share", "create, pin, map, write, send over binder; the receiver maps and reads", needs=TWO)
def binder_share(d: Driver) -> None:
    """The AndroidIPC sample: `ashmem_create_region(name, size)`, `ashmem_pin_region(fd, 0, 0)`, mmap
    shared, write; the fd goes over binder (`writeFileDescriptor`), and the service maps the fd it
    read (`readFileDescriptor`), asks its size and reads the bytes of both pages."""
    client, service = d.first_process(), _second(d)
    for fd in d.new_fds(o.CreateRegion(client, b"AndroidIPC", 2 * d.page)).values:
        d.on_fd(fd, lambda p, f: o.Pin(p, f, 0, 0))
        for m in d.mmap(fd, 2 * d.page, RW, True, 0).values:
            d.step(o.Store(client, m.map_id, 0, b"hello from the client"))
            d.step(o.Store(client, m.map_id, d.page, b"page two"))
        for got in d.transfer(client, service, (fd.fd,)).values:
            d.on_fd(got, o.GetSize)
            for view in d.mmap(got, 2 * d.page, PROT_READ, True, 0).values:
                d.step(o.Load(service, view.map_id, 0, 21))
                d.step(o.Load(service, view.map_id, d.page, 8))


@flow("open-name-size-map", "open /dev/ashmem, SET_NAME, SET_SIZE, mmap",
      needs=(Capability.ASHMEM_DEVICE,))
def open_name_size_map(d: Driver) -> None:
    """MMKV's fallback where `ASharedMemory_create` is missing: `open("/dev/ashmem",
    O_RDWR|O_CLOEXEC)`, ASHMEM_SET_NAME, ASHMEM_SET_SIZE, then mmap and use; the name and size read
    back, and `write()` on the fd, which callers try and which fails."""
    p = d.first_process()
    for fd in d.new_fds(o.OpenAshmem(p)).values:
        d.on_fd(fd, o.GetFdFlags)
        d.on_fd(fd, lambda p, f: o.SetName(p, f, b"mmkv.default"))
        d.on_fd(fd, lambda p, f: o.SetSize(p, f, 4 * d.page))
        d.on_fd(fd, o.GetSize)
        for m in d.mmap(fd, 4 * d.page, RW, True, 0).values:
            d.step(o.Store(p, m.map_id, 3 * d.page, b"MMKV"))
            d.step(o.Load(p, m.map_id, 3 * d.page, 4))
        d.on_fd(fd, o.GetName)
        d.on_fd(fd, lambda p, f: o.Write(p, f, b"data"))


@flow("cache-unpin-pin", "a cache: write, unpin, (purge), pin, check WAS_PURGED before trusting the bytes")
def cache_unpin_pin(d: Driver) -> None:
    """MemoryFile-style caching: fill the region, `allowPurging(true)` (UNPIN of all of it), memory
    pressure (PURGE_ALL_CACHES, which needs CAP_SYS_ADMIN), `allowPurging(false)` (PIN: was it
    purged?) and read; then one entry released and taken back with nothing in between."""
    p = d.first_process()
    for fd in d.new_fds(o.CreateRegion(p, b"MemoryFile", 3 * d.page)).values:
        for m in d.mmap(fd, 3 * d.page, RW, True, 0).values:
            d.fill(m)
            d.on_fd(fd, lambda p, f: o.Unpin(p, f, 0, 0))
            d.on_fd(fd, lambda p, f: o.GetPinStatus(p, f, 0, 0))
            d.on_fd(fd, o.PurgeAllCaches)
            d.on_fd(fd, lambda p, f: o.Pin(p, f, 0, 0))
            d.step(o.Load(p, m.map_id, 0, d.page))
            d.fill(m)
            d.on_fd(fd, lambda p, f: o.Unpin(p, f, d.page, d.page))
            d.on_fd(fd, lambda p, f: o.GetPinStatus(p, f, d.page, d.page))
            d.on_fd(fd, lambda p, f: o.Pin(p, f, d.page, d.page))
            d.step(o.Load(p, m.map_id, d.page, d.page))


@flow("service-hands-out-dups", "a service sends a dup of its region's fd to each client, which reads it",
      needs=TWO)
def service_hands_out_dups(d: Driver) -> None:
    """A service keeps one region and gives each client a `dup` of its fd over binder, closing the
    dup once sent; each client maps and reads it, reads it with `read()` from offset 0 (one file
    position for every fd: the dups share it), and tries `write()`, which fails."""
    service = d.first_process()
    clients = [_second(d) for _ in range(d.MAX_PROCS - 1) if d.can_spawn()]
    for fd in d.new_fds(o.CreateRegion(service, b"service", d.page)).values:
        for m in d.mmap(fd, d.page, RW, True, 0).values:
            d.step(o.Store(service, m.map_id, 0, b"service data"))
        for client in clients:
            for dup in d.new_fds(o.Dup(service, fd.fd)).values:
                received: list[FdRef] = list(d.transfer(service, client, (dup.fd,)).values)
                d.step(o.Close(service, dup.fd))
                for got in received:
                    for view in d.mmap(got, d.page, PROT_READ, True, 0).values:
                        d.step(o.Load(client, view.map_id, 0, 12))
                    d.on_fd(got, lambda p, f: o.Lseek(p, f, 0, SEEK_SET))
                    d.on_fd(got, lambda p, f: o.Read(p, f, 7))
                    d.on_fd(got, lambda p, f: o.Write(p, f, b"client"))
        d.on_fd(fd, lambda p, f: o.Read(p, f, 5))  # where the clients left the shared position


@flow("same-name-twice", "two processes create regions of one name: two regions, not one")
def same_name_twice(d: Driver) -> None:
    """Two processes (one, where the adapter has only one) each create a region under the same
    name, as code that picks a constant name does, map it and write their own bytes: each reads
    back its own, and both report the name. The name is a label, not a key like shm_open's."""
    procs = [d.first_process()]
    procs.append(_second(d) if d.can(Capability.MULTI_PROCESS) else procs[0])
    maps = []
    for i, p in enumerate(procs):
        for fd in d.new_fds(o.CreateRegion(p, b"com.example.cache", d.page)).values:
            for m in d.mmap(fd, d.page, RW, True, 0).values:
                d.step(o.Store(p, m.map_id, 0, f"written by {i}".encode()))
                maps.append((fd, m))
    for fd, m in maps:
        d.step(o.Load(m.proc, m.map_id, 0, 12))
        d.on_fd(fd, o.GetName)
        if d.can(Capability.MAPS_NAME):
            d.step(o.MapsName(m.proc, m.map_id))


def run(adapter: Adapter, name: str) -> FlowResult:
    """Run flow `name` from a fresh start; its result (also what the recorder keeps)."""
    chosen = FLOWS[name]
    missing = [c.value for c in chosen.needs if c not in adapter.capabilities]
    if missing:
        return FlowResult("skip", f"needs capability {', '.join(missing)}")
    d = Driver(adapter)
    chosen.run(d)
    d.watch.look()
    h = d.h
    result = FlowResult("pass", "", dict(h.judged), list(h.violated), h.program())
    if h.violated:
        result.status, result.reason = "fail", "violates " + ", ".join(h.violated)
    elif h.lost:
        result.status, result.reason = "lost", f"the transport was lost on {h.lost} step(s)"
    elif h.deviated:
        result.status, result.reason = "known deviation", "meets declared deviations: " + ", ".join(h.deviated)
        if h.not_performed:
            result.reason += f" ({h.not_performed} later step(s) on what they set aside not performed)"
    elif h.not_performed:
        result.status, result.reason = "incomplete", f"{h.not_performed} step(s) could not be performed"
    return result
