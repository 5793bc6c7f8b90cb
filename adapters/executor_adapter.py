"""The adapter shared by every backend that runs the native executor: one executor process per
modelled process, reached through a Transport (direct sockets on this host, a hub over a VM's
virtio-serial port or over `adb shell`).

What differs between backends is data: the region backend (ashmem ioctls or memfd mode), how
fds travel (binder through the real driver, or SCM_RIGHTS with binder's rules applied, where no
binder device exists), and the transport. A transport that dies, times out or breaks the protocol
makes the outcome *indeterminate* and the process lost; nothing is guessed.

`Transport` is what every backend offers; `BlockingTransport` adds submit/wait (a request left
outstanding while others run), which only the real binder path needs and only the hub provides.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ashcheck.adapters.base import Adapter, Capability, Timed
from ashcheck.adapters.channel import Ticket
from ashcheck.adapters.executor_ops import AshmemRegions, MemfdRegions, common, ints, outcome
from ashcheck.adapters.reply import Reply, hexed
from ashcheck.spec import ops as o
from ashcheck.spec.outcome import BR_FAILED_REPLY, BR_TRANSACTION_COMPLETE, Outcome, indeterminate, ok

UNPRIVILEGED_UID = 65534  # nobody: no CAP_SYS_ADMIN
# A broken transport (every executor unreachable) is replaced by a restart of the adapter at the
# next test case, at most this many times per test process: a backend that keeps breaking is then
# left broken, its outcomes lost, and the run says that too much was lost (exit 2).
MAX_RESTARTS = 3


class TransportLost(Exception):
    """The executor or its channel is gone (crash, kill, timeout, protocol error); what happened
    is unknown."""


class Transport(Protocol):
    """How an ExecutorAdapter reaches its executors: what every backend can do. Every call raises
    TransportLost when the process (or the channel) is lost.

    `broken`: why the channel to every executor is gone (a hub's stream failed), or None while
    only single processes can be lost; a broken transport is replaced by restarting the adapter."""

    broken: str | None

    def spawn(self, proc: int, uid: int | None) -> None:
        """Start the executor of modelled process `proc` (as `uid`; None: keep ours)."""
        ...

    def kill(self, proc: int) -> None:
        """End `proc`'s executor (nothing if it has none)."""
        ...

    def request(self, proc: int, line: str) -> Reply:
        """One request line to `proc`'s executor (the id framing is the channel's) and its reply."""
        ...

    def relay_fds(self, src: int, dst: int, fds: tuple[int, ...]) -> Outcome:
        """Move fds from src to dst over SCM_RIGHTS: ok(new fds in dst) or the sender's errno."""
        ...

    def close(self) -> None:
        """End every executor and the channel."""
        ...


@runtime_checkable
class BlockingTransport(Transport, Protocol):
    """A Transport that can leave a request outstanding while others run: what binder needs (the
    receiver blocks in binder_recv while the sender transacts). Only backends with a binder
    device (the hub: VM, device) provide it."""

    def submit(self, proc: int, line: str) -> Ticket:
        """Send a request that may block, without waiting; returns the ticket for wait()."""
        ...

    def wait(self, ticket: Ticket) -> Reply:
        """The reply to a submitted request."""
        ...


class ExecutorAdapter(Adapter):
    """Base of the executor-backed adapters. Subclasses set `profile`, build `self.transport` in
    `start`, and choose `binder_device` (None: fds travel by SCM_RIGHTS with binder's rules)."""

    binder_device: bytes | None = None
    transport: Transport

    def __init__(self, **options: str) -> None:
        super().__init__(**options)
        self.regions: AshmemRegions | MemfdRegions = MemfdRegions() if self.profile == "memfd" else AshmemRegions()
        self.procs: dict[int, bool] = {}  # live process → its node accepts fds
        self.lost: set[int] = set()

    def reset(self) -> None:
        transport: Transport | None = getattr(self, "transport", None)
        broken = transport.broken if transport is not None else None
        if broken and self.restarts < MAX_RESTARTS:
            self.restarts += 1
            print(f"ashcheck: {self.name}: {broken}; restarting the adapter (restart {self.restarts} of at most "
                  f"{MAX_RESTARTS})", file=sys.stderr, flush=True)
            self.close()
            self.start()  # AdapterUnavailable: the test case errs, and the run says why (exit 2)
        self._kill_all()

    def _kill_all(self) -> None:
        for proc in list(self.procs):
            self._kill(proc)
        self.lost.clear()

    def _kill(self, proc: int) -> None:
        self.procs.pop(proc, None)
        with contextlib.suppress(TransportLost):
            self.transport.kill(proc)

    def close(self) -> None:
        if getattr(self, "transport", None) is not None:
            self._kill_all()
            self.transport.close()
        self.procs.clear()

    def perform_concurrently(self, branches: Sequence[Sequence[o.Op]], schedule: Sequence[int]) -> list[list[Timed]]:
        """Each branch in a thread of its own, sending its calls to its process's executor: the
        executors run them truly at the same time (the threads only wait on sockets). A call's time
        spans from before its request is written to after its reply is read, so it contains the
        real call. `schedule` is ignored: the kernel schedules."""
        results: list[list[Timed]] = [[] for _ in branches]
        errors: list[BaseException] = []
        start = threading.Barrier(len(branches))

        def run(index: int) -> None:
            start.wait()  # every thread ready: the first calls go out together
            try:
                for op in branches[index]:
                    invoked = time.monotonic_ns()
                    outcome = self.perform(op)
                    results[index].append(Timed(outcome, invoked, time.monotonic_ns()))
            except BaseException as exc:  # a harness bug: raised below, in the caller
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(branches))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results

    def perform(self, op: o.Op) -> Outcome:
        try:
            if self.lost and self._involved(op) & self.lost:
                return indeterminate(f"process {sorted(self._involved(op) & self.lost)} was lost earlier "
                                     "in this test case")
            return self._perform(op)
        except TransportLost as exc:
            self.lost |= self._involved(op)
            return indeterminate(str(exc))

    @staticmethod
    def _involved(op: o.Op) -> set[int]:
        return {op.proc} | ({op.dst} if isinstance(op, o.BinderSend) else set()) | (
            {op.replier} if isinstance(op, o.BinderReply) else set())

    def _perform(self, op: o.Op) -> Outcome:
        send = self.transport.request
        match op:
            case o.Spawn(proc=p, privileged=privileged, accepts_fds=accepts):
                # without root there is no privilege to drop: every process is already unprivileged
                drop = not privileged and Capability.PRIVILEGED in self.capabilities
                self.transport.spawn(p, UNPRIVILEGED_UID if drop else None)
                self.procs[p] = accepts
                if self.binder_device is not None:
                    got = outcome(send(p, f"binder_open {hexed(self.binder_device)} {int(accepts)} {p}"))
                    if not got.succeeded or got.value is not None:
                        raise TransportLost(f"binder setup of process {p} failed: {got}")
                return outcome(send(p, "fds"), ints)
            case o.Exit(proc=p):
                self._kill(p)
                return ok(None)
            case o.BinderSend():
                return self._binder_send(op)
            case o.BinderReply():
                return self._binder_reply(op)
        return common(send, op) or self.regions.perform(send, op)

    # fds over binder ------------------------------------------------------------------------
    def _blocking(self) -> BlockingTransport:
        if not isinstance(self.transport, BlockingTransport):
            raise TypeError(f"{type(self).__name__} sets binder_device, but its transport "
                            f"{type(self.transport).__name__} cannot leave a request outstanding (submit/wait)")
        return self.transport

    def _binder_send(self, op: o.BinderSend) -> Outcome:
        if self.binder_device is None:
            t = self.transport
            if op.fds and not self.procs[op.dst]:
                return ok(BR_FAILED_REPLY)  # binder_translate_fd checks acceptance first
            moved = t.relay_fds(op.proc, op.dst, op.fds)
            return moved if moved.succeeded else ok(BR_FAILED_REPLY)
        t = self._blocking()
        waiting = t.submit(op.dst, "binder_recv")
        sent = t.request(op.proc, " ".join(["binder_send", str(op.dst), "0", *map(str, op.fds)]))
        if sent.fields[:1] == ("failed",):
            # nothing reached dst, which still waits: release it with an empty transaction
            t.request(op.proc, f"binder_send {op.dst} 0")
            t.wait(waiting)
            return ok(BR_FAILED_REPLY)
        if sent.fields[:1] != ("reply",):
            raise TransportLost(f"binder transaction {op.proc}→{op.dst} ended with {sent.status} {sent.fields}")
        return ok(ints(t.wait(waiting).fields[1:]))

    def _binder_reply(self, op: o.BinderReply) -> Outcome:
        if self.binder_device is None:
            if op.fds and not op.accept_fds:
                return ok((BR_FAILED_REPLY, BR_TRANSACTION_COMPLETE))
            moved = self.transport.relay_fds(op.replier, op.proc, op.fds)
            return ok((moved.value if moved.succeeded else BR_FAILED_REPLY, BR_TRANSACTION_COMPLETE))
        t = self._blocking()
        waiting = t.submit(op.replier, " ".join(["binder_recv", *map(str, op.fds)]))
        called = t.request(op.proc, f"binder_send {op.replier} {int(op.accept_fds)}")
        replied = t.wait(waiting)
        replier_saw = BR_TRANSACTION_COMPLETE if replied.fields[:1] == ("complete",) else BR_FAILED_REPLY
        if called.fields[:1] == ("reply",):
            return ok((ints(called.fields[1:]), replier_saw))
        return ok((BR_FAILED_REPLY, replier_saw))
