"""Processes and file descriptors: spawn, exit, the fd table, dup, close, F_GETFD, O_PATH.

Rules (POSIX and fs/file.c; the executor's contract):
- Every new fd is the lowest free number (fs/file.c alloc_fd), whatever made it: open,
  memfd_create, dup, binder.
- dup() makes a new fd for the same open file description with FD_CLOEXEC clear.
- close() of an fd that is not open is EBADF; any call naming such an fd is EBADF.
- A spawned process starts with some fds of its own (stdio, the transport); the spec learns them
  from Spawn's result and never touches them. Exit closes everything and unmaps everything.
- RLIMIT_NOFILE: a call that needs a new fd when the lowest free one is at or above the soft limit
  fails with EMFILE and makes nothing (fs/file.c alloc_fd: `end = rlimit(RLIMIT_NOFILE)`, fd >=
  end → -EMFILE, checked before the file is made: do_sys_open, memfd_create and ksys_dup all take
  the fd first). setrlimit to a lower limit closes nothing (kernel/sys.c do_prlimit).
"""

from __future__ import annotations

import errno

from ashcheck.spec.branch import EBADF_RULE, Branch, ebadf, fails
from ashcheck.spec.ops import Close, Dup, Exit, GetFdFlags, ListFds, OpenPath, SetFdLimit, Spawn
from ashcheck.spec.outcome import Kind, Outcome, ok
from ashcheck.spec.rules import Rule, declare
from ashcheck.spec.state import Fd, FdKind, Kernel, Proc

EMFILE_RULE = "fd.emfile"

declare(
    Rule("proc.spawn", "a new process starts with only its own fds", "the adapter contract"),
    Rule("proc.exit", "exit closes every fd and unmaps every mapping of the process", "kernel/exit.c"),
    Rule("fd.table", "a process's open fds are exactly those the spec predicts", "fs/file.c"),
    Rule(EBADF_RULE, "any call on an fd that is not open (or is O_PATH, for ioctl/mmap/read) is EBADF",
         "fs/file.c fdget; fs/ioctl.c; mm/mmap.c ksys_mmap_pgoff"),
    Rule("fd.dup.lowest-free", "dup returns the lowest free fd, for the same open file description",
         "fs/file.c ksys_dup"),
    Rule("fd.dup.cloexec-clear", "an fd made by dup has FD_CLOEXEC clear", "fs/file.c ksys_dup"),
    Rule("fd.close.ok", "close of an open fd succeeds", "fs/open.c"),
    Rule("fd.cloexec.value", "F_GETFD reports FD_CLOEXEC as it was set", "fs/fcntl.c"),
    Rule("fd.open-path", "open(\"/\", O_PATH) returns the lowest free fd", "fs/open.c"),
    Rule("fd.limit.set", "setrlimit(RLIMIT_NOFILE) within the hard limit succeeds and closes no fd, even "
         "one at or above the new limit", "kernel/sys.c do_prlimit; fs/file.c"),
    Rule(EMFILE_RULE, "a call that needs a new fd when the lowest free one is at or above the soft "
         "RLIMIT_NOFILE fails with EMFILE and makes nothing (open, memfd_create, dup)",
         "fs/file.c alloc_fd (fd >= rlimit(RLIMIT_NOFILE) → -EMFILE); fs/open.c do_sys_openat2; "
         "mm/memfd.c memfd_create (get_unused_fd_flags first)"),
)


def spawn(k: Kernel, op: Spawn) -> list[Branch]:
    def accepts(o: Outcome) -> bool:
        return (o.kind is Kind.VALUE and isinstance(o.value, tuple)
                and all(isinstance(fd, int) and fd >= 0 for fd in o.value))

    def effect(o: Outcome) -> None:
        fds = {fd: Fd(FdKind.FOREIGN) for fd in o.value}
        k.procs[op.proc] = Proc(op.privileged, op.accepts_fds, fds)

    return [Branch("proc.spawn", None, effect, accepts, "a tuple of the fds it starts with")]


def exit_(k: Kernel, op: Exit) -> list[Branch]:
    def effect(_: Outcome) -> None:
        p = k.procs[op.proc]
        for fd in list(p.fds):
            k.drop_fd(op.proc, fd)
        rids = {m.rid for m in p.maps.values()}
        p.maps.clear()
        del k.procs[op.proc]
        for rid in rids:
            k.collect(rid)

    return [Branch("proc.exit", ok(None), effect)]


def set_fd_limit(k: Kernel, op: SetFdLimit) -> list[Branch]:
    def effect(_: Outcome) -> None:
        k.procs[op.proc].fd_limit = op.limit

    return [Branch("fd.limit.set", ok(0), effect)]


def emfile(k: Kernel, proc: int) -> list[Branch] | None:
    """EMFILE's branch if `proc` can make no new fd now, else None."""
    p = k.procs[proc]
    return fails(EMFILE_RULE, errno.EMFILE) if p.beyond_limit(p.lowest_free()) else None


def list_fds(k: Kernel, op: ListFds) -> list[Branch]:
    p = k.procs[op.proc]
    rule = "binder.fd.sender-keeps" if p.has_sent_fds else "fd.table"
    return [Branch(rule, ok(tuple(sorted(p.fds))))]


def dup(k: Kernel, op: Dup) -> list[Branch]:
    entry = k.procs[op.proc].fds.get(op.fd)
    if entry is None:
        return ebadf()
    if (full := emfile(k, op.proc)) is not None:
        return full
    new = k.procs[op.proc].lowest_free()

    def effect(_: Outcome) -> None:
        k.install(op.proc, Fd(entry.kind, entry.rid, cloexec=False, origin="dup"))

    return [Branch("fd.dup.lowest-free", ok(new), effect)]


def close(k: Kernel, op: Close) -> list[Branch]:
    if op.fd not in k.procs[op.proc].fds:
        return ebadf()

    def effect(_: Outcome) -> None:
        k.drop_fd(op.proc, op.fd)

    return [Branch("fd.close.ok", ok(None), effect)]


ORIGIN_RULES = {"binder": "binder.fd.cloexec", "dup": "fd.dup.cloexec-clear", "create": "ashmem.create.fd"}


def get_fd_flags(k: Kernel, op: GetFdFlags) -> list[Branch]:
    entry = k.procs[op.proc].fds.get(op.fd)
    if entry is None:
        return ebadf()
    rule = ORIGIN_RULES.get(entry.origin, "fd.cloexec.value")
    return [Branch(rule, ok(1 if entry.cloexec else 0))]


def open_path(k: Kernel, op: OpenPath) -> list[Branch]:
    if (full := emfile(k, op.proc)) is not None:
        return full
    fd = k.procs[op.proc].lowest_free()

    def effect(_: Outcome) -> None:
        k.install(op.proc, Fd(FdKind.OPATH))

    return [Branch("fd.open-path", ok(fd), effect)]
