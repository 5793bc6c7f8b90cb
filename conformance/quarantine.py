"""Setting aside what a surprise made uncertain, so that one run goes on and finds every difference.

When an implementation answers what the spec does not allow (a violation, or a declared
deviation), or the transport is lost, the model no longer knows part of the implementation's
state. Ending the test case there would hide every later difference behind the first one; judging
on would report the first difference again and again under other names. So the harness sets aside
exactly what the surprise touched and goes on with the rest:

- a process whose fd table is in doubt (an fd-creating or fd-closing call, a binder delivery, an
  fd listing went wrong, or its executor was lost): nothing more is asked of it; a lost process
  also puts in doubt every region it held an fd or a mapping of, since its death closed them (a
  writable mapping gone lets a seal succeed, a last fd gone releases the unpinned ranges);
- a region whose state is in doubt (an ioctl, mmap, read, lseek, write, load or store on it went
  wrong, or its purge histories grew beyond tracking): nothing more is asked about it, through any
  fd or mapping, in any process; fd-level calls on its fds (dup, close, F_GETFD, sending it over
  binder) still are, since they do not depend on its state;
- a region whose name alone is in doubt (GET_NAME went wrong: nothing else in ashmem or memfd
  depends on the name): its name is not asked again, and everything else goes on, so an
  implementation that keeps no names (libcutils' host build) is still judged on all the rest;
- one fd whose close-on-exec flag is in doubt: until it is closed;
- the fd table of a process in which an fd was not what the model says (EBADF for an fd the model
  has open, an answer for one it has closed): what closed that fd, or kept it, may have done the
  same to others, and every later fd number there would be a surprise under another rule.

A set-aside operation is not performed at all. A declared deviation is set aside exactly like a
violation, so declaring a difference never changes what the rest of the run explores.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from ashcheck.spec import ops as o
from ashcheck.spec.branch import EBADF_RULE, Branch
from ashcheck.spec.outcome import Outcome, err
from ashcheck.spec.state import FdKind, Kernel, Region

# Operations whose outcome is a matter of the fd table, not of the region behind the fd.
FD_LEVEL = (o.Dup, o.Close, o.GetFdFlags, o.BinderSend, o.BinderReply, o.ListFds, o.Spawn, o.Exit, o.Munmap)
# A surprise in GET_NAME puts only the name in doubt, and only GET_NAME reads it (SET_NAME's answer
# does not depend on the name it replaces).
NAME_QUERY = o.GetName
# Operations after whose surprise the fd table of the acting process is in doubt.
FD_TABLE = (o.Spawn, o.ListFds, o.Dup, o.Close, o.CreateRegion, o.OpenAshmem, o.OpenPath)


@dataclass
class Involved:
    procs: set[int] = field(default_factory=set)
    regions: set[int] = field(default_factory=set)      # region ids
    fds: set[tuple[int, int]] = field(default_factory=set)  # (proc, fd)


def involved(k: Kernel, op: o.Op) -> Involved:
    """The processes, regions and fds `op` touches in the model's current state."""
    inv = Involved({op.proc})
    named: list[tuple[int, int]] = []
    if isinstance(op, o.BinderSend):
        inv.procs.add(op.dst)
        named = [(op.proc, fd) for fd in op.fds]
    elif isinstance(op, o.BinderReply):
        inv.procs.add(op.replier)
        named = [(op.replier, fd) for fd in op.fds]
    elif (fd := getattr(op, "fd", None)) is not None:
        named = [(op.proc, fd)]
    for proc, fd in named:
        inv.fds.add((proc, fd))
        region = _region(k, proc, fd)
        if region is not None:
            inv.regions.add(region.rid)
    map_id = getattr(op, "map_id", None)
    if map_id is not None and not isinstance(op, o.Mmap):
        p = k.procs.get(op.proc)
        m = None if p is None else p.maps.get(map_id)
        if m is not None:
            inv.regions.add(m.rid)
    return inv


def _region(k: Kernel, proc: int, fd: int) -> Region | None:
    p = k.procs.get(proc)
    entry = None if p is None else p.fds.get(fd)
    if entry is None or entry.kind is not FdKind.REGION:
        return None
    return k.regions.get(entry.rid)


def fd_surprise(branches: list[Branch], observed: Outcome) -> bool:
    """Whether a violation was about an fd being open at all: EBADF where the spec has it open, or
    an answer where the spec allows only EBADF (it has the fd closed)."""
    if observed == err(errno.EBADF):
        return True
    return bool(branches) and all(b.rule == EBADF_RULE for b in branches)


@dataclass
class Quarantine:
    procs: set[int] = field(default_factory=set)
    fds: set[tuple[int, int]] = field(default_factory=set)

    def blocks(self, k: Kernel, op: o.Op) -> bool:
        """Whether `op` touches something set aside (so it must not be performed)."""
        inv = involved(k, op)
        if inv.procs & self.procs:
            return True
        if isinstance(op, o.Close):
            return False  # closing an fd in doubt is how it leaves doubt (see forget)
        if inv.fds & self.fds:
            return True
        if isinstance(op, FD_LEVEL):
            return False
        regions = [k.regions[rid] for rid in inv.regions if rid in k.regions]
        return any(r.untracked or (r.name_unknown and isinstance(op, NAME_QUERY)) for r in regions)

    def forget(self, op: o.Op) -> None:
        """After `op` was performed: an fd closed is no longer in doubt, nor are a dead process's."""
        if isinstance(op, o.Close):
            self.fds.discard((op.proc, op.fd))
        elif isinstance(op, o.Exit):
            self.fds = {f for f in self.fds if f[0] != op.proc}

    def set_aside(self, k: Kernel, op: o.Op, lost: bool = False, fds_in_doubt: bool = False) -> None:
        """What a violation, a declared deviation or (`lost`) a lost transport of `op` put in doubt;
        `fds_in_doubt`: the surprise was about an fd being open at all (EBADF where the model has it
        open, or an answer where it has it closed), which puts the fd tables of the processes that
        named fds in doubt too: whatever closed or kept it will show again under other names."""
        inv = involved(k, op)
        if fds_in_doubt:
            self.procs |= {proc for proc, _ in inv.fds}
        if lost:
            self.procs |= inv.procs
        elif isinstance(op, FD_TABLE):
            self.procs.add(op.proc)
        elif isinstance(op, o.BinderSend):
            self.procs.add(op.dst)
        elif isinstance(op, o.BinderReply):
            self.procs.add(op.proc)
        elif isinstance(op, o.GetFdFlags):
            self.fds |= inv.fds
            return
        elif isinstance(op, NAME_QUERY):
            for rid in inv.regions & k.regions.keys():
                k.regions[rid].name_unknown = True
            return
        regions = set(inv.regions)
        if lost:  # a lost process's fds and mappings are gone with it, or may be: what it held is in doubt
            regions |= {rid for proc in inv.procs if (p := k.procs.get(proc)) is not None
                        for rid in [e.rid for e in p.fds.values() if e.kind is FdKind.REGION]
                        + [m.rid for m in p.maps.values()]}
        if isinstance(op, o.PurgeAllCaches | o.Exit):  # their effect reaches beyond the named fd
            regions |= {rid for rid, r in k.regions.items() if any(w.ranges for w in r.worlds)}
        for rid in regions:
            if rid in k.regions:
                k.regions[rid].untracked = True
