"""PIN, UNPIN, GET_PIN_STATUS and PURGE_ALL_CACHES.

Rules (drivers/staging/android/ashmem.c ashmem_pin_unpin / ashmem_pin / ashmem_unpin /
ashmem_get_pin_status / ashmem_shrink_scan, Linux 5.10; ashmem.md §3; the range algebra itself
is in spec/pins.py):

- The struct ashmem_pin is copied first: a NULL pointer is EFAULT, even before the first mmap
  (5.10; 4.x checked "materialized" first).
- Arguments are then checked in this order: the area must be materialized (else EINVAL); len 0 means
  "to the end", computed as PAGE_ALIGN(size) - offset in a __u32; offset and len must be
  page-aligned; offset + len must not overflow 32 bits; and must not pass PAGE_ALIGN(size).
  All of these are EINVAL and change nothing.
- PIN returns WAS_PURGED if any unpinned range it overlaps was purged, else NOT_PURGED;
  afterwards the pages are pinned either way. UNPIN returns 0. GET_PIN_STATUS returns IS_UNPINNED
  if any unpinned range overlaps, purged or not.
- The shrinker may purge an unpinned, unpurged range at any time, whole (see spec/state.py): of one
  region's ranges, the one that went on the LRU first (lru_add puts a range at the tail,
  ashmem_shrink_scan walks from the head; a range PIN only shrinks keeps its place, a new one or
  the right part of a split goes last).
- PURGE_ALL_CACHES needs CAP_SYS_ADMIN (EPERM otherwise), returns the number of pages that were on
  the LRU before it purged them all: at least those of this test's regions, since the LRU is
  system-wide. Released regions (no fd left) are no longer on it.
- ... when no other call holds ashmem_mutex. ashmem_shrink_scan takes it with mutex_trylock, drops
  it to punch each range, and gives up when the trylock after a punch fails (PIN, UNPIN and
  GET_PIN_STATUS hold it while they wait for punches in flight): a PURGE_ALL_CACHES that meets
  other calls purges the ranges of the LRU up to some point, maybe none, and returns the same
  count (5.10; observed on 5.10.223 with 2 vCPUs: a PIN during it, then three of four ranges left).
  A concurrent history so searches it in steps (`in_steps`): the count, then, until it returns,
  any range purged at any moment (check.Spec.steps).
- memfd mode: pinning is a no-op (libcutils returns 0; the shim says NOT_PURGED / IS_PINNED), and
  nothing is ever purged.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import replace

from ashcheck.spec import pins
from ashcheck.spec.branch import Branch, ebadf, fails
from ashcheck.spec.constants import (
    ASHMEM_IS_PINNED,
    ASHMEM_IS_UNPINNED,
    ASHMEM_NOT_PURGED,
    ASHMEM_WAS_PURGED,
    SIZE_MAX,
    page_align,
)
from ashcheck.spec.ops import GetPinStatus, IoctlNullArg, Pin, PurgeAllCaches, Unpin
from ashcheck.spec.outcome import Kind, Outcome, ok
from ashcheck.spec.rules import Rule, declare
from ashcheck.spec.state import Kernel, Mem, Region, relabel_lru

C = "drivers/staging/android/ashmem.c"
OBS = "K510-OBS §2 (Debian 5.10.0-46)"
A = ("ashmem",)

declare(
    Rule("ashmem.pin.null-arg", "PIN, UNPIN and GET_PIN_STATUS with a NULL argument are EFAULT, even before the "
         "first mmap: the struct is copied before any other check", C + " ashmem_pin_unpin (copy_from_user "
         "first), 5.10; K510-OBS §2 (PIN with a NULL pointer: EFAULT)", profiles=A),
    Rule("ashmem.pin.not-mapped", "PIN/UNPIN/GET_PIN_STATUS before the first mmap fail with EINVAL",
         C + " ashmem_pin_unpin (!asma->file), 5.10; " + OBS, profiles=A),
    Rule("ashmem.pin.unaligned", "an offset or len that is not page-aligned is EINVAL",
         C + " ashmem_pin_unpin, 5.10; " + OBS, profiles=A),
    Rule("ashmem.pin.overflow", "offset + len overflowing 32 bits is EINVAL",
         C + " ashmem_pin_unpin, 5.10; " + OBS, profiles=A),
    Rule("ashmem.pin.beyond-size", "a range past PAGE_ALIGN(size) is EINVAL",
         C + " ashmem_pin_unpin, 5.10; " + OBS, profiles=A),
    Rule("ashmem.pin.len-zero", "len 0 means from offset to the end of the region",
         C + " ashmem_pin_unpin ('per custom'), 5.10; " + OBS, profiles=A),
    Rule("ashmem.pin.not-purged", "PIN returns NOT_PURGED when no overlapped unpinned range was purged",
         C + " ashmem_pin, 5.10; " + OBS, profiles=A),
    Rule("ashmem.pin.was-purged", "PIN returns WAS_PURGED when any overlapped unpinned range was "
         "purged (whole ranges, not pages)", C + " ashmem_pin, 5.10; " + OBS, profiles=A),
    Rule("ashmem.pin.split", "PIN inside an unpinned range splits it; both parts keep its purged flag",
         C + " ashmem_pin case 4, 5.10", profiles=A),
    Rule("ashmem.unpin.contained", "UNPIN of pages one unpinned range already covers changes nothing "
         "(the range keeps its purged flag)", C + " ashmem_unpin, 5.10", profiles=A),
    Rule("ashmem.unpin.merges-overlapping", "UNPIN absorbs overlapping unpinned ranges and inherits "
         "their purged flag; adjacent ranges stay separate", C + " ashmem_unpin, 5.10", profiles=A),
    Rule("ashmem.unpin.new-range", "UNPIN of pinned pages adds one unpinned range",
         C + " ashmem_unpin, 5.10", profiles=A),
    Rule("ashmem.get-pin-status.value", "GET_PIN_STATUS is IS_UNPINNED iff an unpinned range (purged "
         "or not) overlaps", C + " ashmem_get_pin_status, 5.10; " + OBS, profiles=A),
    Rule("memfd.pin.no-op", "memfd mode: PIN says NOT_PURGED, UNPIN 0, GET_PIN_STATUS IS_PINNED, for any "
         "arguments; nothing is ever purged", "libcutils ashmem_pin_region memfd path; SHIM",
         profiles=("memfd",)),
    Rule("ashmem.purge.eperm", "PURGE_ALL_CACHES without CAP_SYS_ADMIN fails with EPERM",
         C + " ashmem_ioctl, 5.10; SHIM; " + OBS, needs=("unprivileged",)),
    Rule("ashmem.purge.count", "PURGE_ALL_CACHES returns the pages on the LRU before purging (at least "
         "this test's unpinned, unpurged pages), then every unpinned range is purged",
         C + " ashmem_ioctl / ashmem_shrink_count, 5.10; " + OBS, needs=("privileged",)),
)

U32 = 0xFFFFFFFF


def _range(k: Kernel, region: Region, offset: int, length: int) -> tuple[int, int] | list[Branch]:
    """ashmem_pin_unpin()'s argument checks, in kernel order: the page range or the failure.
    struct ashmem_pin holds two __u32: what the caller passes arrives cut to 32 bits."""
    offset, length = offset & U32, length & U32
    if not region.materialized:
        return fails("ashmem.pin.not-mapped", errno.EINVAL)
    aligned_size = page_align(region.size, k.page)
    if length == 0:
        length = (aligned_size - offset) & U32
    if (offset | length) % k.page:
        return fails("ashmem.pin.unaligned", errno.EINVAL)
    if U32 - offset < length:
        return fails("ashmem.pin.overflow", errno.EINVAL)
    if aligned_size < offset + length:
        return fails("ashmem.pin.beyond-size", errno.EINVAL)
    first = offset // k.page
    return first, (first + length // k.page - 1) & SIZE_MAX  # size_t: len 0 after the u32 cut is [0, SIZE_MAX]


def _by_outcome(region: Region, step: Callable[[Mem], tuple[Outcome, Mem]],
                rule_of: Callable[[Outcome], str], lru: tuple[pins.Ranges, pins.Range | None] | None = None,
                ) -> list[Branch]:
    """One branch per distinct outcome over the possible worlds; taking a branch keeps only the
    worlds that give that outcome, advanced by `step`, and (`lru`: the ranges after, and the one
    made) moves the ranges' LRU places with them."""
    groups: dict[Outcome, list[Mem]] = {}
    for world in region.worlds:
        outcome, after = step(world)
        groups.setdefault(outcome, []).append(after)

    def keep(worlds: list[Mem]) -> Callable[[Outcome], None]:
        def effect(_: Outcome) -> None:
            region.worlds = list(dict.fromkeys(worlds))
            if lru is not None:
                relabel_lru(region, *lru)
        return effect

    return [Branch(rule_of(o), o, keep(ws)) for o, ws in groups.items()]


def _pin_like(k: Kernel, proc: int, fd: int, offset: int, length: int,
              ) -> tuple[Region, tuple[int, int]] | list[Branch]:
    region = k.region_of(proc, fd)
    if region is None:
        return ebadf()
    if not k.profile.pinning:
        return [Branch("memfd.pin.no-op", None)]  # filled in by the caller
    pages = _range(k, region, offset, length)
    if isinstance(pages, list):
        return pages
    return region, pages


def pin(k: Kernel, op: Pin) -> list[Branch]:
    got = _pin_like(k, op.proc, op.fd, op.offset, op.length)
    if isinstance(got, list):
        return _no_op(got, ASHMEM_NOT_PURGED)
    region, (s, e) = got

    def step(world: Mem) -> tuple[Outcome, Mem]:
        ranges, purged, _ = pins.pin(world.ranges, s, e)
        return ok(ASHMEM_WAS_PURGED if purged else ASHMEM_NOT_PURGED), replace(world, ranges=ranges)

    split = any(r[0] < s and r[1] > e for r in region.worlds[0].ranges)
    after, _, created = pins.pin(region.worlds[0].ranges, s, e)  # the geometry: the same in every world

    def rule_of(o: Outcome) -> str:
        if o.value == ASHMEM_WAS_PURGED:
            return "ashmem.pin.was-purged"
        return ("ashmem.pin.split" if split else "ashmem.pin.len-zero" if op.length & U32 == 0
                else "ashmem.pin.not-purged")

    return _by_outcome(region, step, rule_of, (after, created))


def unpin(k: Kernel, op: Unpin) -> list[Branch]:
    got = _pin_like(k, op.proc, op.fd, op.offset, op.length)
    if isinstance(got, list):
        return _no_op(got, 0)
    region, (s, e) = got
    before = region.worlds[0].ranges
    after, inserted = pins.unpin(before, s, e)
    rule = ("ashmem.unpin.contained" if inserted is None
            else "ashmem.unpin.merges-overlapping" if any(pins.overlaps(r, s, e) for r in before)
            else "ashmem.unpin.new-range")
    if op.length & U32 == 0 and rule == "ashmem.unpin.new-range":
        rule = "ashmem.pin.len-zero"

    def step(world: Mem) -> tuple[Outcome, Mem]:
        return ok(0), replace(world, ranges=pins.unpin(world.ranges, s, e)[0])

    return _by_outcome(region, step, lambda _: rule, None if inserted is None else (after, inserted))


def get_pin_status(k: Kernel, op: GetPinStatus) -> list[Branch]:
    got = _pin_like(k, op.proc, op.fd, op.offset, op.length)
    if isinstance(got, list):
        return _no_op(got, ASHMEM_IS_PINNED)
    region, (s, e) = got
    unpinned = pins.is_unpinned(region.worlds[0].ranges, s, e)
    return [Branch("ashmem.get-pin-status.value", ok(ASHMEM_IS_UNPINNED if unpinned else ASHMEM_IS_PINNED))]


NO_OP_ANSWER = {"PIN": ASHMEM_NOT_PURGED, "UNPIN": 0, "GET_PIN_STATUS": ASHMEM_IS_PINNED}


def null_arg(k: Kernel, op: IoctlNullArg) -> list[Branch]:
    if k.region_of(op.proc, op.fd) is None:
        return ebadf()
    if not k.profile.pinning:  # the shim ignores the argument, pointer included
        return [Branch("memfd.pin.no-op", ok(NO_OP_ANSWER[op.cmd]))]
    return fails("ashmem.pin.null-arg", errno.EFAULT)


def _no_op(branches: list[Branch], value: int) -> list[Branch]:
    """memfd mode answers without looking at the arguments; errors pass through unchanged."""
    if len(branches) == 1 and branches[0].rule == "memfd.pin.no-op":
        return [Branch("memfd.pin.no-op", ok(value))]
    return branches


def purge_all_caches(k: Kernel, op: PurgeAllCaches, *, in_steps: bool = False) -> list[Branch]:
    if k.region_of(op.proc, op.fd) is None:
        return ebadf()
    if not k.procs[op.proc].privileged:
        return fails("ashmem.purge.eperm", errno.EPERM)
    # Regions' worlds are independent, so the smallest possible count is the sum of minima. A region
    # set aside (untracked) adds an unknown count ≥ 0: leaving it out keeps the floor a floor.
    tracked = [region for region in k.regions.values() if not region.untracked]
    floor = sum(min(sum(pins.pages(r) for r in w.unpurged()) for w in region.worlds) for region in tracked)

    def accepts(o: Outcome) -> bool:
        return o.kind is Kind.VALUE and isinstance(o.value, int) and o.value >= floor

    def effect(_: Outcome) -> None:
        if in_steps:
            k.purges_in_flight += 1  # check.Spec: ranges may be purged until the call returns
            return
        for region in tracked:
            purged = []
            for world in region.worlds:
                for r in world.unpurged():
                    world = world.purge(r)
                purged.append(world)
            region.worlds = list(dict.fromkeys(purged))

    return [Branch("ashmem.purge.count", None, effect, accepts, f"a page count ≥ {floor}")]
