"""The looks after every step: what the exploration checks besides the answers to its own calls.

A bug that changes state without changing the answer of the call that caused it (a range
forgotten, a page purged too eagerly, an fd left open) shows here, at the next step, rather than
by luck much later. After each step, in this order:

1. fd tables: every process whose table a step may have changed is listed (ListFds);
2. release: after the last fd of a mapped region went (a close, a dup's close, an exit), its
   mappings are filled with fresh data, everything purgeable is purged, and every page is looked
   at: a released region's memory is no longer purgeable, however it was unpinned;
3. pins: GET_PIN_STATUS of every page of the regions a step touched;
4. new mappings: the first page of each mapping a step made is loaded at once: a mapping must show
   the region's data from its first load (not another region's pages, not stale or shifted ones);
5. data: loads of mapped pages, judged against what the spec knows (the bytes, or zero where
   purged): a few pages after a step that may change data (the adapter's `checks_per_step`, in
   turn, so that over a test case every page is seen), every page after a purge or an exit.

Every look is an operation like any other: performed through the harness, judged by the spec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ashcheck.adapters.base import Capability
from ashcheck.conformance.handles import FdRef, MapRef
from ashcheck.spec import ops as o
from ashcheck.spec.constants import PROT_READ
from ashcheck.spec.outcome import Outcome

if TYPE_CHECKING:
    from ashcheck.conformance.driver import Driver

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

    def note(self, op: o.Op, regions: set[int], out: Outcome) -> None:
        """`op` was performed; `regions` are those it named (taken before it ran)."""
        model = self.d.h.model
        if isinstance(op, o.Close | o.Exit):
            self.released |= {rid for rid in regions if self._released_while_mapped(rid)}
        if isinstance(op, o.Mmap) and out.succeeded:
            self.new_maps.append(MapRef(op.proc, op.map_id))
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
        self.release()
        self.pins()
        self.first_pages()
        self.data()
        self.data_dirty = self.full_check = False
        self.released = set()

    def _released_while_mapped(self, rid: int) -> bool:
        region = self.d.h.model.regions.get(rid)  # still there: something maps it
        return region is not None and region.fd_refs == 0 and not region.untracked

    def fd_tables(self) -> None:
        """Compare the fd table of every process whose table may have changed with the model."""
        for proc in sorted(self.changed_tables):
            if self.d.alive(proc):
                self.d.step(o.ListFds(proc))
        self.changed_tables.clear()

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
        budget = FULL_CHECK_LIMIT if self.full_check else d.adapter.checks_per_step
        touched, self.touched = sorted(self.touched), set()
        for rid in touched:
            region = d.h.model.regions.get(rid)
            holder = d.holder(rid)
            if region is None or region.untracked or not region.materialized or holder is None:
                continue
            for page in range(min(region.npages_file(d.page), PIN_CHECK_PAGES)):
                if budget <= 0:
                    return
                budget -= 1
                d.step(o.GetPinStatus(holder.proc, holder.fd, page * d.page, d.page))

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
        budget = FULL_CHECK_LIMIT if self.full_check else d.adapter.checks_per_step
        if not pages:
            return
        start = self.cursor % len(pages)
        chosen = (pages[start:] + pages[:start])[:budget]
        self.cursor = start + len(chosen)
        for ref, offset in chosen:
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
