"""Broken adapters: the sim with exactly one behaviour broken, each in a different area.

The suite proves it can fail by catching every one of them under the `ci` profile
(test_mutants.py). Each mutant names the rule the suite must report (`breaks`).

The first group lies about one answer. The second group (STATE_MUTANTS) breaks what the
implementation *does*, inside the simulator, the way real driver bugs and porting mistakes do:
the answer to the call is right, and only what happens later shows it. Those must be caught by
the exploration alone, with the scenario rules switched off.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator, Sequence
from typing import ClassVar
from unittest import mock

from ashcheck.adapters.base import Timed
from ashcheck.adapters.sim import SimAdapter
from ashcheck.reference import ashmem, ashmem_ioctl, binder, kernel, mm, ranges, shmem, shrinker, vfs
from ashcheck.reference.cint import PAGE_SIZE
from ashcheck.reference.errors import SyscallError
from ashcheck.reference.sched import point
from ashcheck.spec import ops as o
from ashcheck.spec.constants import ASHMEM_NOT_PURGED, ASHMEM_WAS_PURGED, AshmemIoctl
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


class FallocateFileFirst(Mutant):
    """fallocate: the file type judged before the arguments (ENODEV where the VFS says EINVAL or
    EOPNOTSUPP first)."""
    name = "mutant-fallocate-order"
    breaks = "fd.fallocate.args"

    def perform(self, op: o.Op) -> Outcome:
        out = super().perform(op)
        refused = (err(errno.EINVAL), err(errno.EOPNOTSUPP))
        return err(errno.ENODEV) if isinstance(op, o.Fallocate) and out in refused else out


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
        super().fresh()
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
            if size == ok(0):  # a mapping claimed, none made: touching it faults, as nothing is there
                self.kernel._proc(op.proc).unmapped.add(op.map_id)
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


class PurgeStopsAtOneRange(Mutant):
    """purge: PURGE_ALL_CACHES asks the shrinker for one range instead of all of them: with one
    range on the LRU it is right, with several the younger ones keep their data."""
    name = "mutant-purge-one-range"
    breaks = "ashmem.purge.zero-fill"
    spontaneous_purge = False

    def perform(self, op: o.Op) -> Outcome:
        if not isinstance(op, o.PurgeAllCaches):
            return super().perform(op)
        with mock.patch.object(ashmem_ioctl, "shrink_scan", lambda lru, nr: shrinker.shrink_scan(lru, 1)):
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
        super().fresh()
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
        super().fresh()
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


Patches = tuple[tuple[object, str, object], ...]  # (owner, attribute, replacement)


class Patched(Mutant):
    """A mutant that runs every operation with some of the simulator's code replaced. Concurrent
    branches run under one patching for the whole run (tasks switch inside operations: patching
    per operation would unpatch under a task that is still in one)."""
    patches: ClassVar[Patches] = ()
    _patched_now = False

    def perform(self, op: o.Op) -> Outcome:
        if self._patched_now:
            return super().perform(op)
        with self._patched():
            return super().perform(op)

    def perform_concurrently(self, branches: Sequence[Sequence[o.Op]], schedule: Sequence[int]) -> list[list[Timed]]:
        with self._patched():
            self._patched_now = True
            try:
                return super().perform_concurrently(branches, schedule)
            finally:
                self._patched_now = False

    @contextlib.contextmanager
    def _patched(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for owner, attribute, replacement in self.patches:
                stack.enter_context(mock.patch.object(owner, attribute, replacement))
            yield


def _pin_split_forgets_purged(self: ranges.UnpinnedList, file: shmem.ShmemFile, pgstart: int, pgend: int) -> int:
    """ashmem_pin whose hole case (4) gives the upper part a fresh, unpurged range."""
    for r in list(self.ranges):
        if r.pgstart < pgstart and r.pgend > pgend:
            was = r.purged
            self._alloc(r, file, False, pgend + 1, r.pgend)
            self._shrink(r, r.pgstart, pgstart - 1)
            return ASHMEM_WAS_PURGED if was else ASHMEM_NOT_PURGED
    return ORIGINAL_PIN(self, file, pgstart, pgend)


ORIGINAL_PIN = ranges.UnpinnedList.pin
ORIGINAL_PUNCH = shmem.ShmemFile.punch_hole
ORIGINAL_DEL = ranges.UnpinnedList._del
ORIGINAL_OVERLAPS = ranges._overlaps
ORIGINAL_CLOSE = vfs.FdTable.close
ORIGINAL_STORE = mm.store


class PinSplitForgetsPurged(Patched):
    """pin algebra: a PIN inside a purged unpinned range splits it, and the upper part forgets it
    was purged (so pinning it later says NOT_PURGED over zeroed memory)."""
    name = "mutant-split-forgets-purge"
    breaks = "ashmem.pin.was-purged"
    patches: ClassVar[Patches] = ((ranges.UnpinnedList, "pin", _pin_split_forgets_purged),)


class PurgeOverreaches(Patched):
    """purge exactness: the shrinker's hole punch runs one page past the range, into pinned memory."""
    name = "mutant-purge-overreach"
    breaks = "mem.load.shared"
    patches: ClassVar[Patches] = ((shmem.ShmemFile, "punch_hole",
                lambda self, offset, length: ORIGINAL_PUNCH(self, offset, length + (4096 if length > 0 else 0))),)


class ReleaseKeepsRanges(Patched):
    """lifetime: closing the last fd leaves the area's unpinned ranges on the LRU, so the memory
    a live mapping still holds gets purged."""
    name = "mutant-release-keeps-ranges"
    breaks = "ashmem.lifetime.mapping-outlives-close"
    patches: ClassVar[Patches] = ((ashmem.AshmemDriver, "release", lambda self, file: None),)


def _close_releases_every_time(self: vfs.FdTable, fd: int) -> None:
    """close() that calls f_op->release on every close, not on the last reference."""
    file = self.get_raw(fd).file
    ORIGINAL_CLOSE(self, fd)
    if file.refs > 0:
        file.fops.release(file)


class CloseOfDupReleases(Patched):
    """lifetime: closing one of several fds of a region releases it (a reference-count bug): its
    unpinned ranges vanish while other fds still hold it."""
    name = "mutant-close-releases"
    breaks = "ashmem.get-pin-status.value"
    patches: ClassVar[Patches] = ((vfs.FdTable, "close", _close_releases_every_time),)


def _transfer_new_file(src: vfs.FdTable, dst: vfs.FdTable, fds: object, allowed: bool) -> tuple[int, ...]:
    """binder_translate_fd that opens a new struct file on the same area instead of passing the
    sender's file: same memory, but a position of its own."""
    got = ORIGINAL_TRANSFER(src, dst, fds, allowed)  # type: ignore[arg-type]
    for fd in got:
        entry = dst.entries[fd]
        entry.file.refs -= 1
        entry.file = vfs.File(entry.file.fops, entry.file.private_data, entry.file.o_path, entry.file.pos, 1)
    return got


ORIGINAL_TRANSFER = binder.transfer_fds


class BinderNewFile(Patched):
    """binder translation: the receiver gets a new open file description for the same region
    (its own file position) instead of the sender's."""
    name = "mutant-binder-new-file"
    breaks = "binder.fd.same-file"
    patches: ClassVar[Patches] = ((binder, "transfer_fds", _transfer_new_file),)


def _transfer_keeps_partial(src: vfs.FdTable, dst: vfs.FdTable, fds: Sequence[int], allowed: bool) -> tuple[int, ...]:
    """binder_apply_fd_fixups without its error path: the fds installed before the receiver ran out
    stay in it, though the transaction fails."""
    files = []
    for fd in fds:
        if not allowed:
            raise SyscallError(errno.EPERM)
        files.append(src.get(fd))
    return tuple(dst.install(file, cloexec=True) for file in files)


class BinderKeepsPartial(Patched):
    """binder fd limit: a transaction the receiver cannot take whole (RLIMIT_NOFILE) fails, but the
    fds installed before the limit stay in the receiver."""
    name = "mutant-binder-keeps-partial"
    breaks = "binder.fd.emfile"
    patches: ClassVar[Patches] = ((binder, "transfer_fds", _transfer_keeps_partial),)


def _exit_keeps_fds(self: kernel.Kernel, pid: int) -> Outcome:
    """exit that unmaps but forgets to close the process's fds (their files are never released)."""
    p = self._proc(pid)
    p.maps.clear()
    del self.procs[pid]
    return ok(None)


class ExitLeaksFds(Patched):
    """lifetime: an exiting process's fds are never closed, so a region it held is never
    released and stays purgeable after every other fd is closed."""
    name = "mutant-exit-leaks-fds"
    breaks = "ashmem.lifetime.mapping-outlives-close"
    patches: ClassVar[Patches] = ((kernel.Kernel, "exit", _exit_keeps_fds),)


def _del_keeps_lru(self: ranges.UnpinnedList, r: ranges.Range) -> None:
    """range_del that unlinks the range from the area but leaves it on the LRU."""
    self.ranges.remove(r)


class PinLeavesLru(Patched):
    """pin algebra: PIN removes a covered range from the area but not from the LRU, so the shrinker
    later purges memory that is pinned again (and written after the PIN)."""
    name = "mutant-pin-leaves-lru"
    breaks = "mem.load.shared"
    patches: ClassVar[Patches] = ((ranges.UnpinnedList, "_del", _del_keeps_lru),)


def _overlaps_or_touches(r: ranges.Range, start: int, end: int) -> bool:
    return ORIGINAL_OVERLAPS(r, start, end) or r.pgend + 1 == start or r.pgstart == end + 1


class UnpinMergesAdjacent(Patched):
    """pin algebra: UNPIN absorbs adjacent ranges too (the C driver merges only overlapping ones),
    so a purged neighbour's flag spreads to pages that were never purged."""
    name = "mutant-unpin-merges-adjacent"
    breaks = "ashmem.pin.not-purged"
    patches: ClassVar[Patches] = ((ranges, "_overlaps", _overlaps_or_touches),)


def _set_size_even_when_mapped(asma: object, cmd: int, arg: object, lru: object, cred: object) -> object:
    """ashmem_ioctl whose SET_SIZE refuses a mapped area but stores the size anyway."""
    if cmd == AshmemIoctl.SET_SIZE and getattr(asma, "file", None) is not None and isinstance(arg, int):
        asma.size = arg  # type: ignore[attr-defined]
    return ORIGINAL_IOCTL(asma, cmd, arg, lru, cred)  # type: ignore[arg-type]


ORIGINAL_IOCTL = ashmem_ioctl.ashmem_ioctl


class SetSizeTakesWhenMapped(Patched):
    """sizes: SET_SIZE on a mapped region says EINVAL, as it should, but changes the size."""
    name = "mutant-set-size-takes"
    breaks = "ashmem.get-size.value"
    patches: ClassVar[Patches] = ((ashmem, "ashmem_ioctl", _set_size_even_when_mapped),)


@kernel.syscall
def _dup_new_file(self: kernel.Kernel, pid: int, fd: int) -> Outcome:
    """dup that opens a new struct file on the same area (a position of its own)."""
    files = self._proc(pid).files
    old = files.get_raw(fd).file
    return ok(files.install(vfs.File(old.fops, old.private_data, old.o_path, old.pos), cloexec=False))


class DupSeparatePosition(Patched):
    """fds: dup gives an fd with a file position of its own."""
    name = "mutant-dup-own-position"
    breaks = "fd.read.data"
    patches: ClassVar[Patches] = ((kernel.Kernel, "dup", _dup_new_file),)


def _store_through(vma: mm.Vma, offset: int, data: bytes) -> None:
    """A store to a private mapping that also reaches the shared file."""
    ORIGINAL_STORE(vma, offset, data)
    if vma.anon is not None and vma.file is not None and vma.prot & 2:
        shared = mm.Vma(vma.length, vma.pgoff, vma.prot, vma.may, True, vma.noreserve, vma.file)
        with contextlib.suppress(Exception):
            ORIGINAL_STORE(shared, offset, data)


class PrivateWritesThrough(Patched):
    """mmap: a store through a MAP_PRIVATE mapping also changes the region's shared data."""
    name = "mutant-private-writes-through"
    breaks = "mem.load.shared"
    patches: ClassVar[Patches] = ((mm, "store", _store_through),)


def _scan_forgets_purged(lru: ranges.Lru, nr_to_scan: int) -> int:
    """ashmem_shrink_scan that frees the pages but neither marks the ranges purged nor takes them
    off the LRU (so they stay, unpurged as far as the area knows, over zeroed memory)."""
    before = list(lru.ranges)
    freed = ORIGINAL_SCAN(lru, nr_to_scan)
    for r in before:
        if r.purged:
            r.purged = False
            lru.add(r)
    return freed


ORIGINAL_SCAN = shrinker.shrink_scan


class PurgeForgetsFlag(Patched):
    """purge: the shrinker punches the hole but leaves the range marked not purged, so PIN says
    NOT_PURGED over zeroed memory."""
    name = "mutant-purge-forgets-flag"
    breaks = "ashmem.pin.was-purged"
    spontaneous_purge = False
    patches: ClassVar[Patches] = ((ashmem_ioctl, "shrink_scan", _scan_forgets_purged),)


def _set_name_even_when_mapped(asma: object, arg: object) -> int:
    """set_name that refuses a mapped area (EINVAL) after it has stored the name."""
    if isinstance(arg, bytes) and getattr(asma, "file", None) is not None:
        asma.name = arg.split(b"\0", 1)[0][:255]  # type: ignore[attr-defined]
    return ORIGINAL_SET_NAME(asma, arg)  # type: ignore[arg-type]


ORIGINAL_SET_NAME = ashmem_ioctl.set_name


class NameChangesWhenMapped(Patched):
    """names: SET_NAME on a mapped region says EINVAL but the name changes all the same."""
    name = "mutant-name-changes-mapped"
    breaks = "ashmem.get-name.value"
    patches: ClassVar[Patches] = ((ashmem_ioctl, "set_name", _set_name_even_when_mapped),)


def _install_keeps_flag(src: vfs.FdTable, dst: vfs.FdTable, fds: object, allowed: bool) -> tuple[int, ...]:
    """binder_apply_fd_fixups that copies the sender's FD_CLOEXEC instead of setting it."""
    got = ORIGINAL_TRANSFER(src, dst, fds, allowed)  # type: ignore[arg-type]
    for sent, new in zip(fds, got, strict=True):  # type: ignore[call-overload]
        dst.entries[new].cloexec = src.entries[sent].cloexec
    return got


class BinderCopiesCloexec(Patched):
    """binder translation: the received fd inherits the sender's close-on-exec flag."""
    name = "mutant-binder-copies-cloexec"
    breaks = "binder.fd.cloexec"
    patches: ClassVar[Patches] = ((binder, "transfer_fds", _install_keeps_flag),)


class NamesAreKeys(Mutant):
    """names: the backing memory is found by the region's name, as an emulation over shm_open or
    /dev/shm/<name> would: the first mmap of a region whose name another region's memory already
    has gets those pages, so same-named regions (unnamed ones too) share their data."""
    name = "mutant-names-are-keys"
    breaks = "ashmem.name.not-an-identity"

    def fresh(self) -> None:
        super().fresh()
        self.by_name: dict[bytes, shmem.ShmemFile] = {}

    def perform(self, op: o.Op) -> Outcome:
        def setup(driver: ashmem.AshmemDriver, name: bytes, size: int, noreserve: bool) -> shmem.ShmemFile:
            if name not in self.by_name:
                self.by_name[name] = ORIGINAL_SETUP(driver, name, size, noreserve)
            return self.by_name[name]

        with mock.patch.object(ashmem.AshmemDriver, "_shmem_file_setup", setup):
            return super().perform(op)


ORIGINAL_SETUP = ashmem.AshmemDriver._shmem_file_setup


# --- races: each is invisible one call at a time, and shows only in concurrent histories ----------

def _set_size_unlocked(asma: object, cmd: int, arg: object, lru: object, cred: object) -> object:
    """SET_SIZE as before CVE-2017-13216's fix: it checks for the backing file and sets the size
    without ashmem_mutex, so a first mmap in between makes the file with the old size."""
    if cmd == AshmemIoctl.SET_SIZE and isinstance(arg, int) and getattr(asma, "file", None) is None:
        point()
        asma.size = arg % 2**64  # type: ignore[attr-defined]
        return 0
    return ORIGINAL_IOCTL(asma, cmd, arg, lru, cred)  # type: ignore[arg-type]


class SetSizeRacesMmap(Patched):
    """race: SET_SIZE is not serialized with the first mmap (CVE-2017-13216): the size changes after
    another process mapped the region."""
    name = "mutant-race-set-size"
    breaks = "concurrent.linearizable"
    patches: ClassVar[Patches] = ((ashmem, "ashmem_ioctl", _set_size_unlocked),)


def _scan_drops_lock(lru: ranges.Lru, nr_to_scan: int) -> int:
    """ashmem_shrink_scan that drops ashmem_mutex around each hole punch (as 5.10 does) while
    PIN does not wait for the punches in flight (5.10 makes it wait on ashmem_shrink_wait)."""
    freed = 0
    while (r := lru.head()) is not None:
        r.purged = True
        lru.delete(r)
        freed += ranges.range_size(r)
        point()  # mutex_unlock: a PIN may take the range back here, and its caller write to it
        r.file.punch_hole(r.pgstart * PAGE_SIZE, ranges.range_size(r) * PAGE_SIZE)
        nr_to_scan -= 1
        if nr_to_scan <= 0:
            break
    return freed


class PurgeDropsLock(Patched):
    """race: the shrinker punches with the lock dropped and PIN does not wait for it ("ashmem: Don't
    call fallocate() with ashmem_mutex held" needed ashmem_shrink_wait too): data written after PIN
    returned is zeroed by a purge that started before."""
    name = "mutant-race-pin-purge"
    breaks = "concurrent.linearizable"
    patches: ClassVar[Patches] = ((shrinker, "shrink_scan", _scan_drops_lock),
                                  (kernel, "shrink_scan", _scan_drops_lock),
                                  (ashmem_ioctl, "shrink_scan", _scan_drops_lock))


def _install_each_then_roll_back(src: vfs.FdTable, dst: vfs.FdTable, fds: Sequence[int],
                                 allowed: bool) -> tuple[int, ...]:
    """binder_translate_fd that installs each fd in the target as it translates it, and closes the
    ones installed when a later fd fails: for a moment the target holds fds of a transaction that
    will fail (what "binder: defer fd_install until after the transaction" ended)."""
    installed: list[int] = []
    try:
        for fd in fds:
            if not allowed:
                raise SyscallError(errno.EPERM)
            installed.append(dst.install(src.get(fd), cloexec=True))
            point()
    except SyscallError:
        for number in installed:
            dst.close(number)
        raise
    return tuple(installed)


class BinderInstallsEarly(Patched):
    """race: a transaction's fds are usable in the target before it is known to succeed, and a
    failure closes them again."""
    name = "mutant-race-binder-install"
    breaks = "concurrent.linearizable"
    patches: ClassVar[Patches] = ((binder, "transfer_fds", _install_each_then_roll_back),)


RACE_MUTANTS: list[type[Mutant]] = [SetSizeRacesMmap, PurgeDropsLock, BinderInstallsEarly]

STATE_MUTANTS: list[type[Mutant]] = [
    PinSplitForgetsPurged, PurgeOverreaches, ReleaseKeepsRanges, CloseOfDupReleases, BinderNewFile,
    ExitLeaksFds, PinLeavesLru, UnpinMergesAdjacent, SetSizeTakesWhenMapped, DupSeparatePosition,
    PrivateWritesThrough, PurgeForgetsFlag, NameChangesWhenMapped, BinderCopiesCloexec, NamesAreKeys,
    BinderKeepsPartial,
]

MUTANTS: list[type[Mutant]] = [
    SetSizeAfterMmap, DefaultNameSlash, NameKeeps256, ProtMaskCanGrow, MmapSizeZero, MmapTooLong,
    FallocateFileFirst, PrivateIsShared, PinForgetsPurge, UnpinIgnoresLenZero, PurgeSkipsWork, PurgeStopsAtOneRange,
    PurgeWithoutCapability,
    CloseUnmaps, ReceivedWithoutCloexec, IgnoresAcceptFds, ReceivedNotLowest, *STATE_MUTANTS,
]


class ManyBugs(SetSizeAfterMmap, DefaultNameSlash, ProtMaskCanGrow, MmapSizeZero, PrivateIsShared,
               PinForgetsPurge, PurgeWithoutCapability, CloseUnmaps, ReceivedWithoutCloexec, IgnoresAcceptFds,
               UnpinIgnoresLenZero, PurgeOverreaches):
    """Twelve independent bugs in twelve areas at once (each mutant's perform wraps the next): what a
    new implementation looks like on its first run, and what one run must report in full."""
    name = "mutant-many-bugs"
    breaks = "many"
    patches: ClassVar[Patches] = PurgeOverreaches.patches
    bugs: ClassVar[tuple[type[Mutant], ...]] = (
        SetSizeAfterMmap, DefaultNameSlash, ProtMaskCanGrow, MmapSizeZero, PrivateIsShared, PinForgetsPurge,
        PurgeWithoutCapability, CloseUnmaps, ReceivedWithoutCloexec, IgnoresAcceptFds, UnpinIgnoresLenZero,
        PurgeOverreaches)
