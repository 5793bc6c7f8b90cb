"""The looks after every step: what the exploration checks besides the answers to its own calls.

A bug that changes state without changing the answer of the call that caused it (a range
forgotten, a page purged too eagerly, an fd left open) shows here, at the next step, rather than
by luck much later. After each step, in this order:

1. fd tables: every process whose table a step may have changed is listed (ListFds);
2. read-back: after a region was made, or its name, size or mask set (or refused), the getters of
   what changed are asked, through the fd some process holds first (another than the caller's, now
   and then): a setter is judged by what it left, not only by its answer;
3. release: after the last fd of a mapped region went (a close, a dup's close, an exit), its
   mappings are filled with fresh data, everything purgeable is purged, and every page is looked
   at: a released region's memory is no longer purgeable, however it was unpinned;
4. pins: GET_PIN_STATUS of every page of the regions a step touched;
5. page cache: after a step that may add pages to a region's file or take them out (a write, a read,
   fallocate, ftruncate, an unpin, a purge, a close), the region's file position is asked
   (SEEK_CUR), then it is walked with SEEK_DATA and SEEK_HOLE, its position put back after: before
   the data looks, whose loads fault pages in and would hide what the step left;
6. new mappings: the first page of each mapping a step made is loaded at once: a mapping must show
   the region's data from its first load (not another region's pages, not stale or shifted ones);
7. data: loads of mapped pages, judged against what the spec knows (the bytes, or zero where
   purged): a few pages after a step that may change data (the adapter's `checks_per_step`: half on
   the regions the step named, half in turn over every mapping, so that over a test case every page
   is seen), every page after a purge or an exit.

Every look is an operation like any other: performed through the harness, judged by the spec.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ashcheck.adapters.base import Capability
from ashcheck.conformance.handles import FdRef, MapRef
from ashcheck.spec import ops as o
from ashcheck.spec.constants import PROT_READ, SEEK_CUR, SEEK_DATA, SEEK_HOLE, SEEK_SET
from ashcheck.spec.outcome import Outcome

if TYPE_CHECKING:
    from ashcheck.conformance.driver import Driver
    from ashcheck.spec.state import Region

FD_CHANGING = (o.CreateRegion, o.OpenAshmem, o.OpenPath, o.Dup, o.Close, o.BinderSend, o.BinderReply,
               o.Spawn, o.Exit, o.SetFdLimit)  # (a lower limit must close nothing)
# After these, mapped data may have changed somewhere: some pages are loaded again.
DATA_CHANGING = (o.PurgeAllCaches, o.Exit, o.Close, o.Unpin, o.Store, o.Write, o.Munmap, o.Pin, o.BinderSend,
                 o.Fallocate, o.Ftruncate)
# After these, every live mapping's data and every region's pin state is checked, within FULL_CHECK_LIMIT.
FULL_CHECK = (o.PurgeAllCaches, o.Exit)
FULL_CHECK_LIMIT = 64  # looks made by one full check at most
# After these, the pin state of the regions they name may have changed (or gone with a release).
PIN_CHANGING = (o.Pin, o.Unpin, o.Close, o.Dup, o.BinderSend, o.BinderReply, o.Mmap)
PIN_CHECK_PAGES = 8  # pages of a region whose pin status is asked, at most
# After these, the regions they name are read back with the getters of what may have changed.
READ_BACK: dict[type[o.Op], tuple[type[o.GetName | o.GetSize | o.GetProtMask], ...]] = {
    o.CreateRegion: (o.GetName, o.GetSize), o.SetName: (o.GetName,), o.SetSize: (o.GetSize,),
    o.SetProtMask: (o.GetProtMask,)}
# After these, the pages the backing file holds may have changed: SEEK_DATA/SEEK_HOLE see them.
CACHE_CHANGING = (o.Write, o.Read, o.Fallocate, o.Ftruncate, o.Unpin, o.PurgeAllCaches, o.Close, o.Exit)


class Watch:
    """What changed since the last look (fed by Driver.step), and the looks themselves."""

    def __init__(self, d: Driver) -> None:
        self.d = d
        self.changed_tables: set[int] = set()
        self.data_dirty = False
        self.full_check = False
        self.touched: set[int] = set()   # regions whose pin state a step may have changed
        self.released: set[int] = set()  # regions a step released while a mapping still holds them
        self.cursor = 0  # where the next partial data check starts, over all mapped pages
        self.new_maps: list[MapRef] = []  # mappings made since the last look
        self.read_back: list[tuple[int, type[o.Op]]] = []  # (region, getter) to ask
        self.cache: set[int] = set()  # regions whose page cache a step may have changed
        self.named: set[int] = set()  # regions a data-changing step named: their pages are loaded first
        self.near = 0  # where the next look at the named regions' pages starts
        self.other_holder = 0  # turns the read-back's fd between holders

    def note(self, op: o.Op, regions: set[int], out: Outcome) -> None:
        """`op` was performed; `regions` are those it named (taken before it ran)."""
        model = self.d.h.model
        if isinstance(op, o.Close | o.Exit):
            self.released |= {rid for rid in regions if self._released_while_mapped(rid)}
        if isinstance(op, o.Mmap) and out.succeeded:
            self.new_maps.append(MapRef(op.proc, op.map_id))
        for getter in READ_BACK.get(type(op), ()):
            self.read_back += [(rid, getter) for rid in sorted(regions)]
        if isinstance(op, CACHE_CHANGING):
            self.cache |= set(model.regions) if isinstance(op, FULL_CHECK) else regions
        if isinstance(op, DATA_CHANGING):
            self.named |= regions
        if isinstance(op, FD_CHANGING):
            self.changed_tables |= {op.proc} | ({op.dst} if isinstance(op, o.BinderSend) else set())
        self.data_dirty = self.data_dirty or isinstance(op, DATA_CHANGING)
        self.full_check = self.full_check or isinstance(op, FULL_CHECK)
        if isinstance(op, FULL_CHECK):
            self.touched |= set(model.regions)
        elif isinstance(op, PIN_CHANGING):
            self.touched |= regions

    def look(self) -> None:
        """The looks after a step, in order, then a fresh start for the next step."""
        self.fd_tables()
        self.read_backs()
        self.release()
        self.pins()
        self.page_cache()
        self.first_pages()
        self.data()
        self.data_dirty = self.full_check = False
        self.released, self.named, self.cache, self.read_back = set(), set(), set(), []

    def _budget(self) -> int:
        """How many looks of a kind this step may make: many after a purge or an exit, else the
        adapter's checks_per_step."""
        return FULL_CHECK_LIMIT if self.full_check else self.d.adapter.checks_per_step

    def _held(self, rids: set[int]) -> Iterator[tuple[Region, FdRef]]:
        """The regions among `rids` still tracked, in order, each with an fd a usable process holds
        (looked up as its turn comes: an earlier look may have set it aside)."""
        for rid in sorted(rids):
            region = self.d.h.model.regions.get(rid)
            holder = self.d.holder(rid)
            if region is not None and not region.untracked and holder is not None:
                yield region, holder

    def _released_while_mapped(self, rid: int) -> bool:
        region = self.d.h.model.regions.get(rid)  # still there: something maps it
        return region is not None and region.fd_refs == 0 and not region.untracked

    def fd_tables(self) -> None:
        """Compare the fd table of every process whose table may have changed with the model."""
        for proc in sorted(self.changed_tables):
            if self.d.alive(proc):
                self.d.step(o.ListFds(proc))
        self.changed_tables.clear()

    def read_backs(self) -> None:
        """Ask the getters READ_BACK names of the regions a setter (or a creation) named."""
        d = self.d
        asks, self.read_back = self.read_back, []
        for rid, getter in dict.fromkeys(asks):
            holders = d.holders(rid)
            region = d.h.model.regions.get(rid)
            if holders and region is not None and not region.untracked and not (
                    region.name_unknown and getter is o.GetName):
                self.other_holder += 1
                ref = holders[self.other_holder % len(holders)]
                d.step(getter(ref.proc, ref.fd))  # type: ignore[call-arg]

    def release(self) -> None:
        """After a mapped region's last fd went: fill its mappings, purge, look at every page."""
        d = self.d
        if not self.released or not d.can(Capability.PRIVILEGED):
            return
        for proc in d.live_procs():
            for map_id, m in sorted(d.h.model.procs[proc].maps.items()):
                if m.rid in self.released and m.shared:
                    d.fill(MapRef(proc, map_id))
        privileged = [p for p in d.live_procs() if d.h.model.procs[p].privileged]
        for proc in privileged:
            holder = next((FdRef(proc, fd) for fd, e in sorted(d.h.model.procs[proc].fds.items())
                           if e.rid in d.h.model.regions), None)
            if holder is not None:
                d.step(o.PurgeAllCaches(holder.proc, holder.fd))
                return
        if privileged:  # PURGE_ALL_CACHES needs some ashmem fd: a region of one page for the purpose
            for made in d.new_fds(o.CreateRegion(privileged[0], b"purge", d.page)).values:
                d.step(o.PurgeAllCaches(made.proc, made.fd))
                d.step(o.Close(made.proc, made.fd))

    def pins(self) -> None:
        """GET_PIN_STATUS of every page (up to PIN_CHECK_PAGES) of the regions touched since the last
        look, through an fd some usable process holds, within the step's budget."""
        d = self.d
        budget = self._budget()
        touched, self.touched = self.touched, set()
        for region, holder in self._held(touched):
            if not region.materialized:
                continue
            for page in range(min(region.npages_file(d.page), PIN_CHECK_PAGES)):
                if budget <= 0:
                    return
                budget -= 1
                d.step(o.GetPinStatus(holder.proc, holder.fd, page * d.page, d.page))

    def page_cache(self) -> None:
        """Walk each region whose page cache a step may have changed, as a sparse copy does (SEEK_DATA
        from 0, SEEK_HOLE from the data found, ...), within the step's budget; then put its
        position back, so that the walk does not steer the reads and writes that follow."""
        d = self.d
        budget = self._budget()
        regions, self.cache = self.cache, set()
        for region, holder in self._held(regions):
            if region.size == 0 or (d.h.model.profile.fd_io_needs_mapping and not region.materialized):
                continue  # (lseek's own refusals are the lseek kind's to explore)
            # where the file position is, first: the walk moves it and puts the model's back, which
            # would otherwise overwrite a position the step left wrong before anything could see it
            if d.step(o.Lseek(holder.proc, holder.fd, 0, SEEK_CUR)) is None:
                continue
            was, pos, size = region.pos, 0, region.size
            for whence in (SEEK_DATA, SEEK_HOLE) * budget:
                if budget <= 0:
                    break
                budget -= 1
                out = d.step(o.Lseek(holder.proc, holder.fd, pos, whence))
                if out is None or not out.succeeded or not isinstance(out.value, int) or out.value >= size:
                    break
                pos = out.value
            after = d.h.model.regions.get(region.rid)
            if after is not None and not after.untracked and after.pos != was and d.alive(holder.proc):
                d.step(o.Lseek(holder.proc, holder.fd, was, SEEK_SET))
            if budget <= 0:
                return

    def first_pages(self) -> None:
        """Load the first page of every readable mapping made since the last look."""
        d = self.d
        made, self.new_maps = self.new_maps, []
        for ref in made:
            m = d.mapping(ref)
            region = None if m is None else d.h.model.regions.get(m.rid)
            if m is not None and m.prot & PROT_READ and region is not None and not region.untracked:
                d.step(o.Load(ref.proc, ref.map_id, 0, min(d.page, d.span(m))))

    def data(self) -> None:
        """Load mapped pages and let the spec judge their bytes (see the module doc)."""
        d = self.d
        if not self.data_dirty:
            return
        pages = self._readable_pages()
        budget = self._budget()
        if not pages:
            return
        near = [(ref, at) for ref, at in pages if (m := d.mapping(ref)) is not None and m.rid in self.named]
        chosen = []
        if near and not self.full_check:  # half the looks where the step acted, in turn over its pages
            start = self.near % len(near)
            chosen = (near[start:] + near[:start])[:(budget + 1) // 2]
            self.near = start + len(chosen)
        rest = [p for p in pages if p not in chosen]
        start = self.cursor % len(rest) if rest else 0
        more = (rest[start:] + rest[:start])[:budget - len(chosen)]
        self.cursor = start + len(more)
        for ref, offset in chosen + more:
            m = d.mapping(ref)
            if m is not None:  # an earlier load may have set the region aside
                d.step(o.Load(ref.proc, ref.map_id, offset, min(d.page, d.span(m) - offset)))

    def _readable_pages(self) -> list[tuple[MapRef, int]]:
        d = self.d
        out = []
        for proc in d.live_procs():
            for map_id, m in sorted(d.h.model.procs[proc].maps.items()):
                region = d.h.model.regions.get(m.rid)
                if m.prot & PROT_READ and region is not None and not region.untracked:
                    out += [(MapRef(proc, map_id), at) for at in range(0, d.span(m), d.page)]
        return out
