"""The `sim` adapter: the reference simulator (ashcheck.reference), in-process.

Each operation becomes one call on a `Kernel`, through a table with one small method per
operation type. After every operation the simulator's seeded memory-pressure policy may run the
shrinker (`spontaneous_purge`), as a real device may purge unpinned memory at any moment; the
same seed and the same operations purge the same ranges, so failures replay exactly.

Quiet stretches: where the shrinker may purge at any moment, a purge explains any zeros in
unpinned memory and any PURGE_ALL_CACHES count down to 0, so a bug that zeroes or miscounts unpinned
ranges looks like pressure. So each UNPIN starts a stretch of calls with or without memory pressure
(one in QUIET_SHARE without), and the spec, told so (`spontaneous_purge`, read after each call),
expects in a quiet stretch what the driver does without a shrinker, as on a VM. Which is decided
from the UNPIN and the number of calls before it: the same program has the same pressure every
time it is replayed.

Options: `seed=<int>` (default 0) seeds the memory pressure; `pressure=mixed|on|off` (default mixed:
the quiet stretches above); `ram=<bytes>` is the machine's RAM + swap (default 1 GiB, as a small
device): the first mmap of a larger region fails with ENOMEM; `ram=-1` makes it unlimited.
An exception out of `perform` is a harness bug (an operation naming a process or mapping the
model never created): it is raised, never turned into an outcome.
"""

from __future__ import annotations

import functools
import itertools
import zlib
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

from ashcheck.adapters.base import Adapter, Capability, Timed
from ashcheck.reference import Kernel
from ashcheck.reference.sched import Scheduler, point
from ashcheck.spec import ops as o
from ashcheck.spec.constants import AshmemIoctl, ashmem_io
from ashcheck.spec.outcome import Outcome

RECLAIM_PASSES = 4  # shrinker passes of the reclaim task in a concurrent run
QUIET_SHARE = 3  # one stretch in this many has no memory pressure (pressure=mixed)


class SimAdapter(Adapter):
    name: ClassVar[str] = "sim"
    profile: ClassVar[str] = "ashmem"
    capabilities = frozenset(Capability)
    deviations: Mapping[str, str] = MappingProxyType({})  # none: it is the C driver as read
    page_size = 4096
    long_bits = 64
    spontaneous_purge = True
    checks_per_step = 8  # an observation costs microseconds here

    def __init__(self, **options: Any) -> None:
        self.seed = _int_option(options, "seed", 0)
        ram = _int_option(options, "ram", 1 << 30)
        self.memory_bytes = None if ram < 0 else ram
        self.pressure = str(options.pop("pressure", "mixed"))
        if self.pressure not in ("mixed", "on", "off"):
            raise ValueError(f"pressure={self.pressure!r}: expected mixed, on or off")
        super().__init__(**options)  # refuses whatever is left
        self.reset()

    def reset(self) -> None:
        self.kernel = Kernel(self.seed, ram=self.memory_bytes)
        self.spontaneous_purge = self.pressure != "off"
        self.calls = 0  # in this test case: with each UNPIN they decide the next stretch (mixed)

    concurrent_transfers = True  # one kernel object: a transaction needs nothing of the receiver's task
    replays_schedule = True

    def perform_concurrently(self, branches: Sequence[Sequence[o.Op]], schedule: Sequence[int]) -> list[list[Timed]]:
        """The branches as tasks of a deterministic scheduler (reference/sched.py): a task switch
        after every call and wherever the simulated driver drops its lock, the next task chosen by
        `schedule`. With memory pressure on, reclaim is one more task (kswapd's shrinker passes,
        concurrent with every call, as on a device). Times are ticks of a logical clock: only one
        task runs at a time."""
        clock = itertools.count()
        results: list[list[Timed]] = [[] for _ in branches]

        def task(index: int) -> None:
            for op in branches[index]:
                invoked = next(clock)
                outcome = self.perform(op)
                results[index].append(Timed(outcome, invoked, next(clock)))
                point(inside=False)

        def reclaim() -> None:
            for _ in range(RECLAIM_PASSES):
                self.kernel.shrink(1)
                point(inside=False)

        tasks = [functools.partial(task, i) for i in range(len(branches))]
        mixed, self.pressure = self.pressure, "on" if self.spontaneous_purge else "off"
        try:  # no new stretch inside a history: the spec judges all of it with or without pressure
            Scheduler(schedule).run(tasks + ([reclaim] if self.spontaneous_purge else []))
        finally:
            self.pressure = mixed
        return results

    def perform(self, op: o.Op) -> Outcome:
        handler = _HANDLERS.get(type(op))
        if handler is None:
            raise TypeError(f"the sim adapter has no handler for {type(op).__name__}")
        self.calls += 1
        if isinstance(op, o.Unpin) and self.pressure == "mixed":  # a stretch begins (module docstring)
            self.spontaneous_purge = zlib.crc32(repr((self.calls, op)).encode()) % QUIET_SHARE != 0
        outcome = handler(self, op)
        if self.spontaneous_purge:
            self.kernel.memory_pressure()
        return outcome

    # --- processes -----------------------------------------------------------------------------
    def _spawn(self, op: o.Spawn) -> Outcome:
        return self.kernel.spawn(op.proc, op.privileged, op.accepts_fds)

    def _exit(self, op: o.Exit) -> Outcome:
        return self.kernel.exit(op.proc)

    def _set_fd_limit(self, op: o.SetFdLimit) -> Outcome:
        return self.kernel.setrlimit_nofile(op.proc, op.limit)

    def _list_fds(self, op: o.ListFds) -> Outcome:
        return self.kernel.list_fds(op.proc)

    # --- creating regions ----------------------------------------------------------------------
    def _create_region(self, op: o.CreateRegion) -> Outcome:
        return self.kernel.ashmem_create_region(op.proc, op.name, op.size)

    def _open_ashmem(self, op: o.OpenAshmem) -> Outcome:
        return self.kernel.open_ashmem(op.proc)

    def _open_path(self, op: o.OpenPath) -> Outcome:
        return self.kernel.open_path(op.proc)

    # --- the ashmem ioctls ---------------------------------------------------------------------
    def _set_name(self, op: o.SetName) -> Outcome:
        return self.kernel.ioctl(op.proc, op.fd, AshmemIoctl.SET_NAME, op.name)

    def _get_name(self, op: o.GetName) -> Outcome:
        return self.kernel.ioctl(op.proc, op.fd, AshmemIoctl.GET_NAME)

    def _set_size(self, op: o.SetSize) -> Outcome:
        return self.kernel.ioctl(op.proc, op.fd, AshmemIoctl.SET_SIZE, op.size)

    def _get_size(self, op: o.GetSize) -> Outcome:
        return self.kernel.ioctl(op.proc, op.fd, AshmemIoctl.GET_SIZE)

    def _set_prot_mask(self, op: o.SetProtMask) -> Outcome:
        return self.kernel.ioctl(op.proc, op.fd, AshmemIoctl.SET_PROT_MASK, op.prot)

    def _get_prot_mask(self, op: o.GetProtMask) -> Outcome:
        return self.kernel.ioctl(op.proc, op.fd, AshmemIoctl.GET_PROT_MASK)

    def _pin(self, op: o.Pin) -> Outcome:
        return self.kernel.ioctl(op.proc, op.fd, AshmemIoctl.PIN, (op.offset, op.length))

    def _unpin(self, op: o.Unpin) -> Outcome:
        return self.kernel.ioctl(op.proc, op.fd, AshmemIoctl.UNPIN, (op.offset, op.length))

    def _get_pin_status(self, op: o.GetPinStatus) -> Outcome:
        return self.kernel.ioctl(op.proc, op.fd, AshmemIoctl.GET_PIN_STATUS, (op.offset, op.length))

    def _purge_all_caches(self, op: o.PurgeAllCaches) -> Outcome:
        return self.kernel.ioctl(op.proc, op.fd, AshmemIoctl.PURGE_ALL_CACHES)

    def _ioctl_null_arg(self, op: o.IoctlNullArg) -> Outcome:
        return self.kernel.ioctl(op.proc, op.fd, AshmemIoctl[op.cmd], None)

    def _unknown_ioctl(self, op: o.UnknownIoctl) -> Outcome:
        return self.kernel.ioctl(op.proc, op.fd, ashmem_io(op.nr))

    # --- memory --------------------------------------------------------------------------------
    def _mmap(self, op: o.Mmap) -> Outcome:
        return self.kernel.mmap(op.proc, op.map_id, op.fd, op.length, op.prot, op.shared, op.offset, op.noreserve)

    def _munmap(self, op: o.Munmap) -> Outcome:
        return self.kernel.munmap(op.proc, op.map_id)

    def _mprotect(self, op: o.Mprotect) -> Outcome:
        return self.kernel.mprotect(op.proc, op.map_id, op.prot)

    def _load(self, op: o.Load) -> Outcome:
        return self.kernel.load(op.proc, op.map_id, op.offset, op.length)

    def _store(self, op: o.Store) -> Outcome:
        return self.kernel.store(op.proc, op.map_id, op.offset, op.data)

    def _maps_name(self, op: o.MapsName) -> Outcome:
        return self.kernel.maps_name(op.proc, op.map_id)

    # --- file descriptors ----------------------------------------------------------------------
    def _dup(self, op: o.Dup) -> Outcome:
        return self.kernel.dup(op.proc, op.fd)

    def _close(self, op: o.Close) -> Outcome:
        return self.kernel.close(op.proc, op.fd)

    def _lseek(self, op: o.Lseek) -> Outcome:
        return self.kernel.lseek(op.proc, op.fd, op.offset, op.whence)

    def _read(self, op: o.Read) -> Outcome:
        return self.kernel.read(op.proc, op.fd, op.count)

    def _write(self, op: o.Write) -> Outcome:
        return self.kernel.write(op.proc, op.fd, op.data)

    def _ftruncate(self, op: o.Ftruncate) -> Outcome:
        return self.kernel.ftruncate(op.proc, op.fd, op.length)

    def _fallocate(self, op: o.Fallocate) -> Outcome:
        return self.kernel.fallocate(op.proc, op.fd, op.mode, op.offset, op.length)

    def _get_fd_flags(self, op: o.GetFdFlags) -> Outcome:
        return self.kernel.fcntl_getfd(op.proc, op.fd)

    # --- binder --------------------------------------------------------------------------------
    def _binder_send(self, op: o.BinderSend) -> Outcome:
        return self.kernel.binder_transaction(op.proc, op.dst, op.fds)

    def _binder_reply(self, op: o.BinderReply) -> Outcome:
        return self.kernel.binder_reply(op.proc, op.replier, op.fds, op.accept_fds)


def _handler(op: type[o.Op]) -> Callable[[SimAdapter, Any], Outcome]:
    """`SimAdapter._<snake name>`: the simulator's call for each declared operation."""
    method = getattr(SimAdapter, f"_{op.snake_name()}", None)
    if method is None:
        raise ImportError(f"the simulator has no SimAdapter._{op.snake_name()} for {op.__name__}")
    return method  # type: ignore[no-any-return]


_HANDLERS: dict[type[o.Op], Callable[[SimAdapter, Any], Outcome]] = {op: _handler(op) for op in o.OPS.values()}


def _int_option(options: dict[str, Any], key: str, default: int) -> int:
    value = options.pop(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"adapter 'sim': option {key}={value!r} is not an integer") from None
