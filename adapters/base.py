"""The adapter contract: how the suite reaches an implementation.

An adapter is a small class with documented attributes. The suite never imports a concrete
adapter and never asks which one runs: it reads `profile`, `capabilities` and `deviations`, and
sends operations (ashcheck.spec.ops) through `perform`, which returns one Outcome per call.

- Kernel errors are outcomes (`err(EINVAL)`); a signal caught while touching memory is
  `fault(SIGBUS)`; a lost transport is `indeterminate(...)`. An exception escaping `perform` is a
  harness bug and is reported as one.
- A missing capability turns the operations that need it into skipped rules, with the reason.
- A declared deviation (rule id → why) turns that rule into a strict expected failure: if the
  implementation stops deviating, the run says the declaration is stale.
- A declared unsupported operation (op type → why) is never sent; the rules that only that
  operation can reach are skipped with the reason. An adapter that meets an operation it does not
  know (one added to the suite after it was written) raises UnsupportedOperation from `perform`:
  that operation type is then unsupported for the rest of the run, and the report says so.
- An answer the adapter computed itself rather than observed is marked `emulated(...)`: reports
  keep it apart, and it never counts as confirmed on the implementation.

Third-party adapters subclass `Adapter` in their own package and register it under the
entry-point group `ashcheck.adapters`, or are named on the command line as `module:Class`.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ashcheck.spec.ops import Op
from ashcheck.spec.outcome import Outcome


class Capability(enum.Enum):
    """What an implementation can be asked to do. Rules that need a missing one are skipped."""

    ASHMEM_DEVICE = "ashmem-device"    # open("/dev/ashmem") and the raw ioctls on a fresh area
    PRIVILEGED = "privileged"          # processes with CAP_SYS_ADMIN (PURGE_ALL_CACHES works)
    UNPRIVILEGED = "unprivileged"      # processes without it (PURGE_ALL_CACHES must say EPERM)
    MULTI_PROCESS = "multi-process"    # more than one process at a time
    FD_TRANSFER = "fd-transfer"        # binder transactions carrying fds between processes
    MAPS_NAME = "maps-name"            # /proc/self/maps can be read
    CONCURRENT = "concurrent"          # several processes' operations at the same time (perform_concurrently)


@dataclass(frozen=True)
class Timed:
    """An outcome of a concurrent branch, with when its call was invoked and completed: nanoseconds
    of one clock common to all branches (a logical clock will do where the adapter schedules)."""

    outcome: Outcome
    invoked: int
    completed: int


class UnsupportedOperation(Exception):
    """`perform` met an operation type this adapter does not provide; the message says why (by
    default: which operation). The suite stops sending it and skips the rules only it reaches."""

    def __init__(self, op: Op, why: str | None = None) -> None:
        super().__init__(why or f"the adapter has no {type(op).__name__} ({op.call})")
        self.op_type = type(op)


class AdapterUnavailable(Exception):
    """The backend cannot run here (no device, no qemu, …). The message says what is missing."""


class Adapter(abc.ABC):
    """Base class of every adapter.

    Attributes:
        name: the short name used with `--adapter`.
        profile: which profile of the spec applies: "ashmem" (the C driver) or "memfd".
        capabilities: what this backend supports (may be narrowed by probing in `start`).
        deviations: rule id → reason, for rules this backend knowingly breaks.
        unsupported: operation type (an `ashcheck.spec.ops` class) → reason, for operations the
            implementation does not provide (no GET_NAME call, say); they are never performed.
        page_size: the backend's page size in bytes.
        long_bits: width of `long` in the executing ABI (GET_SIZE returns a long).
        spontaneous_purge: True if the backend may purge unpinned memory on its own at any time
            (memory pressure); False if only PURGE_ALL_CACHES purges (a quiet machine). Read after
            reset() and after every call, so an adapter may change it between calls (the simulator
            has stretches without pressure): the spec follows what it says after each call.
        memory_bytes: RAM + swap of the machine that runs the implementation (MemTotal + SwapTotal),
            which bounds the first mmap of a region (shmem's overcommit check); None if unknown,
            and then large first mmaps may succeed or fail with ENOMEM.
        max_file_offset: the largest offset lseek accepts on a region's file (its filesystem's
            s_maxbytes), for an emulation whose regions are not shmem files; None: shmem's
            MAX_LFS_FILESIZE, as for the drivers and memfd.
        max_workers: how many test processes may use this backend at once (None: as many as there
            are CPUs); one device shared by two would see the other's purges.
        concurrent_transfers: whether a concurrent branch may hold binder transactions (which involve
            a second process, busy with its own branch); else branches hold one process's calls only.
        replays_schedule: whether perform_concurrently interleaves the branches exactly as `schedule`
            says (the simulator), so that a history replays the same; a real kernel schedules itself,
            and a failing history is then tried several times.
        checks_per_step: how many observations the suite may add after each step that changed
            something: loads of mapped pages (does every live mapping still show what the spec
            says?) and pin-status queries of the regions touched. Each is one round trip: keep it
            small where a round trip is slow. After a purge or an exit everything is checked.
        restarts: how many times reset() had to restart the backend because the channel to it was
            gone (a VM's hub stream failed, say); the harness counts them in the run's totals.
    """

    name: ClassVar[str]
    profile: ClassVar[str]
    capabilities: frozenset[Capability] = frozenset()
    deviations: Mapping[str, str] = {}
    unsupported: Mapping[type[Op], str] = {}
    page_size: int = 4096
    long_bits: int = 64
    spontaneous_purge: bool = False
    memory_bytes: int | None = None
    max_file_offset: int | None = None
    checks_per_step: int = 4
    restarts: int = 0
    max_workers: int | None = None
    concurrent_transfers: bool = False
    replays_schedule: bool = False

    def __init__(self, **options: str) -> None:
        """`options` come from `--adapter-option key=value`; unknown keys must raise ValueError."""
        if options:
            raise ValueError(f"unknown option(s) {sorted(options)} for adapter {self.name!r}")

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """A cheap check before `start`: None if this adapter can run here, else why not."""
        return None

    def why_unavailable(self) -> str | None:
        """unavailable_reason, in the light of this instance's options (e.g. a tool's path)."""
        return self.unavailable_reason()

    def start(self) -> None:
        """Acquire long-lived resources (build the executor, boot a VM, …).
        Raises AdapterUnavailable with a reason if the backend cannot run."""

    @abc.abstractmethod
    def reset(self) -> None:
        """End every process of the previous test case: the next operation starts from nothing."""

    @abc.abstractmethod
    def perform(self, op: Op) -> Outcome:
        """Carry out one operation and return what the implementation answered."""

    def perform_concurrently(self, branches: Sequence[Sequence[Op]], schedule: Sequence[int]) -> list[list[Timed]]:
        """With Capability.CONCURRENT: run the branches at the same time, each branch's operations in
        order in its own process (every op of branches[k] names the same process), and return each
        branch's outcomes with their times. `schedule` is for adapters that interleave the branches
        themselves (the simulator): which branch runs at each switch; real backends ignore it."""
        raise NotImplementedError(f"adapter {self.name!r} does not declare Capability.CONCURRENT")

    def identity(self) -> dict[str, str]:
        """What exactly runs, for the report: kernel release, library version, device properties…
        (called after `start`)."""
        return {}

    def close(self) -> None:
        """Release everything `start` acquired. Must be safe to call twice."""
