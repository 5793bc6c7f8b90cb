"""Binder fd transfer.

Rules (drivers/android/binder.c binder_translate_fd / binder_apply_fd_fixups, Linux 5.10.89;
../shared/semantics/binder-fd.md; K510-OBS §3, identical on 6.12 and 7.2):

- A transaction carrying BINDER_TYPE_FD objects reaches the target only if the target node
  accepts fds (FLAT_BINDER_FLAG_ACCEPTS_FDS; the legacy BINDER_SET_CONTEXT_MGR node does not).
  For a reply, the caller's TF_ACCEPT_FDS decides instead.
- An fd that is not open in the sender, or is O_PATH (fget refuses it), fails the transaction.
- A failed transaction delivers nothing: the sender reads BR_FAILED_REPLY and no fd appears in the
  target. A failed *reply* is reported to the caller; the replier just sees
  BR_TRANSACTION_COMPLETE.
- On success each object becomes a new fd in the receiver: the lowest free at delivery, with
  FD_CLOEXEC set, for the same open file description (offset, data, mask, pins shared). The same
  fd twice gives two fds. The receiver owns them: they stay open after BC_FREE_BUFFER.
- The sender's fds are unaffected.
- If the receiver cannot get a new fd for every object (its soft RLIMIT_NOFILE), the transaction
  fails when it is read: binder_apply_fd_fixups fails, binder_cleanup_transaction sends
  BR_FAILED_REPLY to the caller, and the receiver keeps none (5.10 closes the fds it had installed,
  binder_deferred_fd_close; 6.1 and later reserve them all before installing any). For a reply the
  caller gets BR_FAILED_REPLY; the replier has had its BR_TRANSACTION_COMPLETE.
"""

from __future__ import annotations

from ashcheck.spec.branch import Branch
from ashcheck.spec.ops import BinderReply, BinderSend
from ashcheck.spec.outcome import BR_FAILED_REPLY, BR_TRANSACTION_COMPLETE, Outcome, ok
from ashcheck.spec.rules import Rule, declare
from ashcheck.spec.state import Fd, FdKind, Kernel

SRC = "drivers/android/binder.c binder_translate_fd, 5.10.89"
OBS = "K510-OBS §3 (Debian 5.10.0-46)"
NEEDS = ("fd-transfer",)

declare(
    Rule("binder.fd.lowest-free", "each received fd is the lowest free one in the receiver",
         "binder_apply_fd_fixups → get_unused_fd_flags, 5.10.89; " + OBS, NEEDS),
    Rule("binder.fd.cloexec", "a received fd has FD_CLOEXEC set, whatever the sender's flag",
         "binder_apply_fd_fixups (O_CLOEXEC), 5.10.89; " + OBS, NEEDS),
    Rule("binder.fd.same-file", "a received fd is the same open file description: shared offset and data",
         SRC + " (fget / fd_install of the same struct file); " + OBS, NEEDS),
    Rule("binder.fd.twice", "the same fd sent twice arrives as two different fds", OBS, NEEDS),
    Rule("binder.fd.no-objects", "a transaction without fd objects is delivered whatever the target "
         "accepts", SRC, NEEDS),
    Rule("binder.fd.target-rejects", "fds sent to a node without ACCEPTS_FDS fail with BR_FAILED_REPLY "
         "and deliver nothing", SRC + " ('target does not allow fds'); " + OBS, NEEDS),
    Rule("binder.fd.invalid", "a transaction naming an fd that is not open fails with BR_FAILED_REPLY "
         "and delivers nothing", SRC + " (fget → EBADF); " + OBS, NEEDS),
    Rule("binder.fd.opath", "an O_PATH fd fails the transaction with BR_FAILED_REPLY", SRC + "; " + OBS, NEEDS),
    Rule("binder.fd.sender-keeps", "the sender's fd table is unchanged by sending", OBS, NEEDS),
    Rule("binder.reply.delivers-fds", "a reply carrying fds to a caller that set TF_ACCEPT_FDS delivers "
         "them (lowest free, FD_CLOEXEC)", SRC + "; " + OBS, NEEDS),
    Rule("binder.reply.needs-accept-fds", "a reply carrying fds to a caller without TF_ACCEPT_FDS fails "
         "for the caller (BR_FAILED_REPLY) while the replier sees BR_TRANSACTION_COMPLETE",
         "binder_transaction err path (in_reply_to), 5.10.89; " + OBS, NEEDS),
    Rule("binder.fd.emfile", "a transaction whose fds the receiver cannot all get below its RLIMIT_NOFILE "
         "fails with BR_FAILED_REPLY and leaves no fd in the receiver",
         "binder_apply_fd_fixups → binder_cleanup_transaction(BR_FAILED_REPLY), 5.10.89 and 6.1", NEEDS),
    Rule("binder.reply.emfile", "a reply whose fds the caller cannot all get below its RLIMIT_NOFILE fails "
         "for the caller (BR_FAILED_REPLY, no fd kept); the replier sees BR_TRANSACTION_COMPLETE",
         "binder_thread_read (BR_REPLY → BR_FAILED_REPLY on failed fd fixups), 5.10.89 and 6.1", NEEDS),
    Rule("binder.reply.invalid-fd", "a reply naming a bad fd fails for the caller; the replier sees "
         "BR_TRANSACTION_COMPLETE", "binder_transaction err path (in_reply_to), 5.10.89", NEEDS),
)


REFUSAL_RULES = {"target": "binder.fd.target-rejects", "invalid": "binder.fd.invalid", "opath": "binder.fd.opath"}


def _refusal(k: Kernel, sender: int, fds: tuple[int, ...], accepted: bool) -> str | None:
    """Why binder_translate_fd fails, checking in its order: acceptance first, then fget."""
    if not fds:
        return None
    if not accepted:
        return "target"
    table = k.procs[sender].fds
    for fd in fds:
        entry = table.get(fd)
        if entry is None:
            return "invalid"
        if entry.kind is FdKind.OPATH:
            return "opath"
    return None


def _deliver(k: Kernel, sender: int, receiver: int, fds: tuple[int, ...]) -> tuple[int, ...] | None:
    """The fd numbers the receiver will get, without changing anything; None if it cannot get
    them all (RLIMIT_NOFILE)."""
    taken: set[int] = set()
    out = []
    for _ in fds:
        fd = k.procs[receiver].lowest_free(taken)
        if k.procs[receiver].beyond_limit(fd):
            return None
        taken.add(fd)
        out.append(fd)
    return tuple(out)


def _install(k: Kernel, sender: int, receiver: int, fds: tuple[int, ...]) -> None:
    entries = [k.procs[sender].fds[fd] for fd in fds]
    for entry in entries:
        k.install(receiver, Fd(entry.kind, entry.rid, cloexec=True, origin="binder"))
    k.procs[sender].has_sent_fds = k.procs[sender].has_sent_fds or bool(fds)


def send(k: Kernel, op: BinderSend) -> list[Branch]:
    why = _refusal(k, op.proc, op.fds, k.procs[op.dst].accepts_fds)
    if why is not None:
        return [Branch(REFUSAL_RULES[why], ok(BR_FAILED_REPLY))]
    got = _deliver(k, op.proc, op.dst, op.fds)
    if got is None:
        return [Branch("binder.fd.emfile", ok(BR_FAILED_REPLY))]
    rule = ("binder.fd.no-objects" if not op.fds else "binder.fd.twice" if len(set(op.fds)) < len(op.fds)
            else "binder.fd.lowest-free")

    def effect(_: Outcome) -> None:
        _install(k, op.proc, op.dst, op.fds)

    return [Branch(rule, ok(got), effect)]


def reply(k: Kernel, op: BinderReply) -> list[Branch]:
    why = _refusal(k, op.replier, op.fds, op.accept_fds)
    if why is not None:
        rule = "binder.reply.needs-accept-fds" if why == "target" else "binder.reply.invalid-fd"
        return [Branch(rule, ok((BR_FAILED_REPLY, BR_TRANSACTION_COMPLETE)))]
    got = _deliver(k, op.replier, op.proc, op.fds)
    if got is None:
        return [Branch("binder.reply.emfile", ok((BR_FAILED_REPLY, BR_TRANSACTION_COMPLETE)))]

    def effect(_: Outcome) -> None:
        _install(k, op.replier, op.proc, op.fds)

    rule = "binder.reply.delivers-fds" if op.fds else "binder.fd.no-objects"
    return [Branch(rule, ok((got, BR_TRANSACTION_COMPLETE)), effect)]
