"""Broken adapters: the sim with exactly one behaviour broken, each in a different area.

The suite proves it can fail by catching every one of them under the `ci` profile
(test_mutants.py). Each mutant names the rule the suite must report (`breaks`). Most lie about one
answer; a few break what they do (unmapping on close, ignoring a flag), so that the suite must
notice from what happens later, as it would with a real bug.
"""

from __future__ import annotations

import errno
from typing import ClassVar
from unittest import mock

from ashcheck.adapters.sim import SimAdapter
from ashcheck.reference import ashmem_ioctl
from ashcheck.spec import ops as o
from ashcheck.spec.constants import ASHMEM_NOT_PURGED
from ashcheck.spec.outcome import SIGSEGV, Kind, Outcome, err, fault, ok


class Mutant(SimAdapter):
    breaks: ClassVar[str]  # the rule the suite must report as failed

    def reset(self) -> None:
        super().reset()
        self.fresh()

    def fresh(self) -> None:
        """Per-test-case state of the mutant itself."""


class SetSizeAfterMmap(Mutant):
    """sizes: SET_SIZE on a mapped region claims success."""
    name = "mutant-set-size"
    breaks = "ashmem.set-size.mapped"

    def perform(self, op: o.Op) -> Outcome:
        out = super().perform(op)
        return ok(0) if isinstance(op, o.SetSize) and out == err(errno.EINVAL) else out


class DefaultNameSlash(Mutant):
    """names: an unnamed region reports "dev/ashmem/" instead of "dev/ashmem"."""
    name = "mutant-default-name"
    breaks = "ashmem.get-name.value"

    def perform(self, op: o.Op) -> Outcome:
        out = super().perform(op)
        return ok(b"dev/ashmem/") if isinstance(op, o.GetName) and out == ok(b"dev/ashmem") else out


class NameKeeps256(Mutant):
    """names: SET_NAME keeps 256 bytes instead of truncating to 255."""
    name = "mutant-name-length"
    breaks = "ashmem.get-name.value"

    def fresh(self) -> None:
        self.long_names: dict[tuple[int, int], bytes] = {}

    def perform(self, op: o.Op) -> Outcome:
        out = super().perform(op)
        if isinstance(op, o.SetName) and op.name and out == ok(0):
            name = op.name.split(b"\0")[0]
            self.long_names[(op.proc, op.fd)] = name[:256] if len(name) > 255 else b""
        if isinstance(op, o.Close | o.CreateRegion | o.OpenAshmem | o.Dup) and out.succeeded:
            self.long_names.pop((op.proc, out.value if isinstance(op, o.CreateRegion | o.OpenAshmem | o.Dup)
                                 else op.fd), None)
        if isinstance(op, o.GetName) and out.succeeded and self.long_names.get((op.proc, op.fd)):
            return ok(self.long_names[(op.proc, op.fd)])
        return out


class ProtMaskCanGrow(Mutant):
    """prot mask: SET_PROT_MASK adding a bit claims success."""
    name = "mutant-prot-grow"
    breaks = "ashmem.set-prot-mask.add"

    def perform(self, op: o.Op) -> Outcome:
        out = super().perform(op)
        return ok(0) if isinstance(op, o.SetProtMask) and out == err(errno.EINVAL) else out


class MmapSizeZero(Mutant):
    """mmap: mapping a size-0 region claims success."""
    name = "mutant-mmap-size-zero"
    breaks = "ashmem.mmap.size-zero"

    def perform(self, op: o.Op) -> Outcome:
        if isinstance(op, o.Mmap):
            size = super().perform(o.GetSize(op.proc, op.fd))
            if size == ok(0):
                return ok(None)
        return super().perform(op)


class MmapTooLong(Mutant):
    """mmap: a mapping longer than the region is accepted (the pre-2018 driver did this)."""
    name = "mutant-mmap-too-long"
    breaks = "ashmem.mmap.too-long"

    def perform(self, op: o.Op) -> Outcome:
        out = super().perform(op)
        if isinstance(op, o.Mmap) and out == err(errno.EINVAL) and op.length > 0 and op.offset % 4096 == 0:
            size = super().perform(o.GetSize(op.proc, op.fd))
            if isinstance(size.value, int) and size.value > 0:
                return super().perform(o.Mmap(op.proc, op.fd, op.map_id, 4096, op.prot, op.shared, op.offset))
        return out


class PrivateIsShared(Mutant):
    """mmap: MAP_PRIVATE shares the region's pages instead of being anonymous zero memory."""
    name = "mutant-private-shared"
    breaks = "ashmem.mmap.private-anonymous"

    def perform(self, op: o.Op) -> Outcome:
        if isinstance(op, o.Mmap) and not op.shared:
            op = o.Mmap(op.proc, op.fd, op.map_id, op.length, op.prot, True, op.offset)
        return super().perform(op)


class PinForgetsPurge(Mutant):
    """pin algebra: PIN never reports WAS_PURGED."""
    name = "mutant-pin-purged"
    breaks = "ashmem.pin.was-purged"

    def perform(self, op: o.Op) -> Outcome:
        out = super().perform(op)
        return ok(ASHMEM_NOT_PURGED) if isinstance(op, o.Pin) and out.kind is Kind.VALUE else out


class UnpinIgnoresLenZero(Mutant):
    """pin algebra: UNPIN with len 0 does nothing instead of unpinning to the end."""
    name = "mutant-unpin-len-zero"
    breaks = "ashmem.get-pin-status.value"

    def perform(self, op: o.Op) -> Outcome:
        if isinstance(op, o.Unpin) and op.length == 0:
            # GET_PIN_STATUS checks the same arguments: errors still come out right
            probe = super().perform(o.GetPinStatus(op.proc, op.fd, op.offset, 0))
            return ok(0) if probe.kind is Kind.VALUE else probe
        return super().perform(op)


class PurgeSkipsWork(Mutant):
    """purge: PURGE_ALL_CACHES checks its caller and returns the count, but its scan frees nothing."""
    name = "mutant-purge-nothing"
    breaks = "ashmem.purge.zero-fill"
    spontaneous_purge = False  # so that unpinned memory keeps its bytes unless really purged

    def perform(self, op: o.Op) -> Outcome:
        if not isinstance(op, o.PurgeAllCaches):
            return super().perform(op)
        with mock.patch.object(ashmem_ioctl, "shrink_scan", lambda lru, nr: 0):
            return super().perform(op)


class PurgeWithoutCapability(Mutant):
    """purge: an unprivileged process may purge."""
    name = "mutant-purge-eperm"
    breaks = "ashmem.purge.eperm"

    def perform(self, op: o.Op) -> Outcome:
        out = super().perform(op)
        return ok(0) if isinstance(op, o.PurgeAllCaches) and out == err(errno.EPERM) else out


class CloseUnmaps(Mutant):
    """lifetime: closing the fd a mapping was made through kills the mapping."""
    name = "mutant-close-unmaps"
    breaks = "ashmem.lifetime.mapping-outlives-close"

    def fresh(self) -> None:
        self.made_through: dict[tuple[int, int], list[int]] = {}
        self.dead: set[tuple[int, int]] = set()

    def perform(self, op: o.Op) -> Outcome:
        if isinstance(op, o.Load | o.Store) and (op.proc, op.map_id) in self.dead:
            return fault(SIGSEGV)
        if isinstance(op, o.Munmap) and (op.proc, op.map_id) in self.dead:
            return ok(None)
        out = super().perform(op)
        if isinstance(op, o.Mmap) and out.kind is Kind.VALUE:
            self.made_through.setdefault((op.proc, op.fd), []).append(op.map_id)
        if isinstance(op, o.Close) and out == ok(None):
            for map_id in self.made_through.pop((op.proc, op.fd), []):
                super().perform(o.Munmap(op.proc, map_id))
                self.dead.add((op.proc, map_id))
        return out


class ReceivedWithoutCloexec(Mutant):
    """binder translation: fds received over binder lack FD_CLOEXEC."""
    name = "mutant-binder-cloexec"
    breaks = "binder.fd.cloexec"

    def fresh(self) -> None:
        self.received: set[tuple[int, int]] = set()

    def perform(self, op: o.Op) -> Outcome:
        out = super().perform(op)
        if isinstance(op, o.BinderSend) and isinstance(out.value, tuple):
            self.received |= {(op.dst, fd) for fd in out.value}
        if isinstance(op, o.Close | o.Exit):
            self.received = {r for r in self.received if r[0] != op.proc or (isinstance(op, o.Close) and r[1] != op.fd)}
        if isinstance(op, o.GetFdFlags) and (op.proc, op.fd) in self.received and out == ok(1):
            return ok(0)
        return out


class IgnoresAcceptFds(Mutant):
    """binder translation: fds reach a node that did not ask for them."""
    name = "mutant-binder-accept"
    breaks = "binder.fd.target-rejects"

    def perform(self, op: o.Op) -> Outcome:
        if isinstance(op, o.Spawn):
            op = o.Spawn(op.proc, op.privileged, True)
        return super().perform(op)


class ReceivedNotLowest(Mutant):
    """binder translation: the receiver's fds are not the lowest free ones."""
    name = "mutant-binder-lowest"
    breaks = "binder.fd.lowest-free"

    def perform(self, op: o.Op) -> Outcome:
        if isinstance(op, o.BinderSend) and op.fds:
            placeholder = super().perform(o.OpenPath(op.dst))
            out = super().perform(op)
            super().perform(o.Close(op.dst, placeholder.value))
            return out
        return super().perform(op)


MUTANTS: list[type[Mutant]] = [
    SetSizeAfterMmap, DefaultNameSlash, NameKeeps256, ProtMaskCanGrow, MmapSizeZero, MmapTooLong,
    PrivateIsShared, PinForgetsPurge, UnpinIgnoresLenZero, PurgeSkipsWork, PurgeWithoutCapability,
    CloseUnmaps, ReceivedWithoutCloexec, IgnoresAcceptFds, ReceivedNotLowest,
]
