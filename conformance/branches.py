"""The operations of concurrent branches: drawn before any of them runs, from the model as the
sequential prefix left it.

One branch per process. A branch's operations name what its process has (its fds, its mappings)
and what it may have by the time the call runs: the next fd numbers (another branch's dup, a
transaction's delivery, a close may make them), and an fd closed under it. Each history enables
a random subset of the kinds below (swarm testing, as in machines.py), so that some histories
hammer one pair of calls and others mix many. Arguments come from the exploration's domains
(strategies.py): the same edges, the same spans around unpinned ranges.

No operation of a branch uses a mapping its own branch made: whether that mmap succeeded is
known only after the run (the after-look loads what was made).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ashcheck.conformance import strategies as S
from ashcheck.conformance.driver import WHOLE, Driver
from ashcheck.conformance.handles import FdRef
from ashcheck.spec import ops as o
from ashcheck.spec.state import FdKind

Draws = S.Draws


@dataclass
class View:
    """What one branch's process has, as the branch is drawn."""

    proc: int
    fds: list[int]     # its region fds, then the next free numbers, then a closed one
    held: int          # how many of `fds` are its region fds
    maps: list[int]    # its mappings after the prefix
    others: list[int]  # the other branches' processes (binder destinations)


Maker = Callable[[Driver, View, Draws], o.Op | list[o.Op]]


FOCUS = (0, 0, 0, 0, 0, 1, 1, 2)  # which of the region fds, the most recently used region's first


def _fd(v: View, draws: Draws) -> int:
    """Mostly an fd of the region used last (the one the branches share), sometimes another it
    holds; one time in eight any (upcoming and closed numbers too)."""
    n = next(draws)
    return v.fds[FOCUS[n // 8 % len(FOCUS)] % v.held] if n % 8 and v.held else v.fds[n % len(v.fds)]


# Mostly placed on the region's unpinned ranges (the calls that change them and race with the
# shrinker); the argument edges (EINVAL before any lock) are the sequential exploration's job.
SPAN = S.mixed((1, lambda x: (S.PIN_OFFSETS(x), S.PIN_LENGTHS(x))),
               (5, lambda x: S.Around(S.AROUND[next(x) % 5], next(x))))  # the 5 that overlap the range


def _span(d: Driver, v: View, fd: int, draws: Draws) -> tuple[int, int]:
    return d.span_of(FdRef(v.proc, fd), SPAN(draws))


def _mmap(d: Driver, v: View, draws: Draws) -> o.Op:
    """Mostly the common call (the whole region, read-write, shared: races hide in calls that
    succeed), else with the exploration's edges."""
    fd = _fd(v, draws)
    size = d.size_of(FdRef(v.proc, fd))
    common = next(draws) % 4
    length = "whole" if common else S.MAP_LENGTHS(draws)
    n = WHOLE if length == "whole" else d.bytes_of(length, size)
    if n == WHOLE:
        n = d.page if not 0 < size <= 16 * d.page else size
    map_id = d.next_map
    d.next_map += 1
    if common:
        return o.Mmap(v.proc, fd, map_id, n, 3, True, 0)
    return o.Mmap(v.proc, fd, map_id, n, S.MAP_PROT(draws), S.SHARED(draws), d.bytes_of(S.MAP_OFFSETS(draws), size))


def _on_map(make: Callable[[Driver, View, int, Draws], o.Op]) -> Maker:
    return lambda d, v, draws: make(d, v, v.maps[next(draws) % len(v.maps)], draws)


def _window(d: Driver, v: View, map_id: int, draws: Draws, length: int) -> tuple[int, int]:
    m = d.h.model.procs[v.proc].maps[map_id]
    return d.window(m, S.POSITIONS(draws), length)


def _pin_like(make: type[o.Pin | o.Unpin | o.GetPinStatus]) -> Maker:
    def build(d: Driver, v: View, draws: Draws) -> o.Op:
        fd = _fd(v, draws)
        return make(v.proc, fd, *_span(d, v, fd, draws))
    return build


def _store(d: Driver, v: View, map_id: int, draws: Draws) -> o.Op:
    data = S.DATA(draws)
    at, n = _window(d, v, map_id, draws, len(data))
    return o.Store(v.proc, map_id, at, data[:n])


def _pin_and_refill(d: Driver, v: View, draws: Draws) -> list[o.Op]:
    """PIN a span, then write into its first page through a mapping of the same region, as a cache
    does with an entry it takes back (whether or not PIN said it was purged)."""
    fd = _fd(v, draws)
    offset, length = _span(d, v, fd, draws)
    pin: list[o.Op] = [o.Pin(v.proc, fd, offset, length)]
    region = d.h.model.region_of(v.proc, fd)
    mine = [m for m in v.maps if region is not None and d.h.model.procs[v.proc].maps[m].rid == region.rid]
    if not mine:
        return pin
    m = d.h.model.procs[v.proc].maps[mine[0]]
    at, n = d.window(m, max(0, offset - m.offset), 8)
    return [*pin, o.Store(v.proc, mine[0], at, S.fresh_bytes(8, 8)(draws)[:n])]


# kind → (what it needs: "fd", "map" or "peer", the maker); a maker may give a caller's idiom of
# several calls (a list)
KINDS: dict[str, tuple[str, Maker]] = {
    "set_name": ("fd", lambda d, v, x: o.SetName(v.proc, _fd(v, x), d.name(S.NAMES(x)))),
    "get_name": ("fd", lambda d, v, x: o.GetName(v.proc, _fd(v, x))),
    "set_size": ("fd", lambda d, v, x: o.SetSize(v.proc, _fd(v, x), (lambda s: s[0] * d.page + s[1])(
        S.mixed((3, S.SMALL_SIZES), (1, S.HUGE_SIZES))(x)))),
    "get_size": ("fd", lambda d, v, x: o.GetSize(v.proc, _fd(v, x))),
    "set_prot_mask": ("fd", lambda d, v, x: o.SetProtMask(v.proc, _fd(v, x), S.PROT_MASK_ARG(x))),
    "get_prot_mask": ("fd", lambda d, v, x: o.GetProtMask(v.proc, _fd(v, x))),
    "pin": ("fd", _pin_like(o.Pin)),
    "pin_and_refill": ("fd", _pin_and_refill),
    "unpin": ("fd", _pin_like(o.Unpin)),
    "get_pin_status": ("fd", _pin_like(o.GetPinStatus)),
    "purge_all_caches": ("fd", lambda d, v, x: o.PurgeAllCaches(v.proc, _fd(v, x))),
    "mmap": ("fd", _mmap),
    "dup": ("fd", lambda d, v, x: o.Dup(v.proc, _fd(v, x))),
    "close": ("fd", lambda d, v, x: o.Close(v.proc, _fd(v, x))),
    "lseek": ("fd", lambda d, v, x: o.Lseek(v.proc, (f := _fd(v, x)),
                                             d.bytes_of(S.SEEK_OFFSETS(x), d.size_of(FdRef(v.proc, f))), S.WHENCES(x))),
    "read": ("fd", lambda d, v, x: o.Read(v.proc, _fd(v, x), S.READ_COUNTS(x))),
    "write": ("fd", lambda d, v, x: o.Write(v.proc, _fd(v, x), S.DATA(x))),
    "fcntl_getfd": ("fd", lambda d, v, x: o.GetFdFlags(v.proc, _fd(v, x))),
    "create_region": ("fd", lambda d, v, x: o.CreateRegion(v.proc, d.name(S.NAMES(x)),
                                                           (lambda s: s[0] * d.page + s[1])(S.SMALL_SIZES(x)))),
    "munmap": ("map", _on_map(lambda d, v, m, x: o.Munmap(v.proc, m))),
    "mprotect": ("map", _on_map(lambda d, v, m, x: o.Mprotect(v.proc, m, S.PROT(x)))),
    "load": ("map", _on_map(lambda d, v, m, x: o.Load(v.proc, m, *_window(d, v, m, x, S.LOAD_LENGTHS(x))))),
    "store": ("map", _on_map(_store)),
    "binder_transaction": ("peer", lambda d, v, x: o.BinderSend(
        v.proc, v.others[next(x) % len(v.others)], tuple(_fd(v, x) for _ in range(1 + next(x) % 2)))),
}


def view(d: Driver, proc: int, others: list[int]) -> View:
    """`proc`'s fds (of the most recently used regions first) and mappings now, with the next two
    free fd numbers and a closed one."""
    p = d.h.model.procs[proc]
    recency = {rid: i for i, rid in enumerate(d.recent)}
    regions = sorted((fd for fd, e in p.fds.items() if e.kind is FdKind.REGION),
                     key=lambda fd: (recency.get(p.fds[fd].rid, len(recency)), fd))
    free = p.lowest_free()
    upcoming = [free, p.lowest_free({free})]
    closed = [ref.fd for ref in d.fd_handles if ref.proc == proc and ref.fd not in p.fds][:1]
    maps = [m for m in sorted(p.maps) if p.maps[m].rid in d.h.model.regions]
    return View(proc, regions + upcoming + closed, len(regions), maps, others)


OBSERVERS = {"get_name", "get_size", "get_prot_mask", "get_pin_status", "fcntl_getfd", "load"}


def swarm(rng: random.Random, transfers: bool) -> list[str]:
    """The kinds one history enables, each with a probability drawn for the history; the kinds that
    change state listed twice (a race needs a writer, and an observer can follow any state)."""
    usable = [k for k in KINDS if transfers or KINDS[k][0] != "peer"]
    share = rng.uniform(0.15, 0.7)
    enabled = [k for k in usable if rng.random() < share] or usable
    return [k for k in enabled for _ in range(1 if k in OBSERVERS else 2)]


def draw_branch(d: Driver, v: View, kinds: list[str], length: int, draws: Draws) -> list[o.Op]:
    """`length` operations of `v.proc`, each kind among `kinds` that `v` can do."""
    able = [k for k in kinds if KINDS[k][0] == "fd" or (KINDS[k][0] == "map" and v.maps)
            or (KINDS[k][0] == "peer" and v.others)] or ["get_size"]
    ops: list[o.Op] = []
    while len(ops) < length:
        kind = able[next(draws) % len(able)]
        if KINDS[kind][0] == "map" and not v.maps:
            kind = "get_size"
        made = KINDS[kind][1](d, v, draws)
        ops += made if isinstance(made, list) else [made]
        if isinstance(ops[-1], o.Munmap):  # the spec follows live mappings only: none of its calls after
            v.maps.remove(ops[-1].map_id)
    return ops
