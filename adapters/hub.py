"""A Transport over an executor hub: one byte stream (a VM's virtio-serial port, `adb shell`)
multiplexing the executors of every modelled process. Used by the kernel and adb adapters. In a
VM, a process is reached on a port of its own when one is free (channel.Hub's `ports`).

Processes are tagged `p<N>` on the wire. fd relays (`* xfer`) happen inside the hub, on the far
side, so fds never cross the stream. A process that dies, or does not answer in time (it is then
killed), is lost alone: its requests raise TransportLost and the others go on. An error of the
stream itself (EOF, a reply that answers nothing, garbage) loses the whole transport: every later
request says so, and the adapter turns that into indeterminate outcomes.
"""

from __future__ import annotations

import contextlib

from ashcheck.adapters.channel import ExecutorError, Hub, HubTimeout, ProcessLost, Ticket
from ashcheck.adapters.executor_adapter import TransportLost
from ashcheck.adapters.executor_ops import ints, outcome
from ashcheck.adapters.reply import Reply
from ashcheck.spec.outcome import Outcome, ok


class HubTransport:
    """Transport and BlockingTransport over `hub`, a channel.Hub connected to a running
    `ashcheck-exec hub`.

    The first exchange (check_version, done before the first request if not called before) asks
    the hub its version: anything but `version` (default: the version of this ashcheck's
    executor.c, build.version()) loses the transport, since the binary on the far side is then not
    the one this code speaks to."""

    def __init__(self, hub: Hub, timeout: float, *, version: str | None = None) -> None:
        self.hub: Hub = hub
        self.timeout = timeout
        self.broken: str | None = None
        self._version = version
        self._checked = False

    def check_version(self) -> None:
        """Ask the hub its version. Raises TransportLost if it does not answer, or answers another."""
        from ashcheck.adapters import build

        self._checked = True
        expected = build.version() if self._version is None else self._version
        reply = self.wait(self._submit("*", "version"))
        if reply != Reply("ok", (expected,)):
            self.broken = (f"the executor hub answers `version` with {str(reply)[:100]!r}, not 'ok {expected}': the "
                           "binary on the far side was not built from this ashcheck's executor.c (a stale or "
                           "corrupt copy)")
            raise TransportLost(self.broken)

    def _submit(self, tag: str, line: str) -> Ticket:
        if not self._checked:
            self.check_version()
        if self.broken:
            raise TransportLost(self.broken)
        try:
            return self.hub.submit(tag, line, self.timeout)
        except ExecutorError as exc:
            raise self._break(exc) from exc

    def _break(self, exc: ExecutorError) -> TransportLost:
        self.broken = f"the hub channel failed: {exc}"
        return TransportLost(self.broken)

    def wait(self, ticket: Ticket) -> Reply:
        """The reply to a submitted request. Raises TransportLost."""
        if self.broken:
            raise TransportLost(self.broken)
        try:
            return self.hub.wait(ticket, self.timeout)
        except ProcessLost as exc:
            raise TransportLost(str(exc)) from exc
        except HubTimeout as exc:
            self._give_up(ticket)
            raise TransportLost(f"{exc}; it was killed" if not self.broken else self.broken) from exc
        except ExecutorError as exc:
            raise self._break(exc) from exc

    def _give_up(self, ticket: Ticket) -> None:
        """A request was not answered in time: kill its process, so that nothing it says later is
        taken for an answer (a hung hub instead breaks the transport)."""
        self.hub.abandon(ticket)
        if ticket.proc == "*":
            self.broken = "the executor hub itself did not answer in time"
            return
        try:
            self.hub.request("*", f"kill {ticket.proc}", self.timeout)
        except ExecutorError as exc:
            self._break(exc)
        self.hub.abandon_all(ticket.proc)

    def hub_request(self, line: str) -> Reply:
        """A request to the hub itself (`*`). Raises TransportLost."""
        return self.wait(self._submit("*", line))

    def spawn(self, proc: int, uid: int | None) -> None:
        reply = self.hub_request(f"spawn p{proc} {-1 if uid is None else uid}")
        if reply.status != "ok":
            raise TransportLost(f"the hub could not start process {proc}: {reply}")

    def kill(self, proc: int) -> None:
        self.hub_request(f"kill p{proc}")
        self.hub.abandon_all(f"p{proc}")

    def request(self, proc: int, line: str) -> Reply:
        return self.wait(self._submit(f"p{proc}", line))

    def submit(self, proc: int, line: str) -> Ticket:
        """Send a request that may block (binder_recv) without waiting; wait() takes its reply."""
        return self._submit(f"p{proc}", line)

    def relay_fds(self, src: int, dst: int, fds: tuple[int, ...]) -> Outcome:
        if not fds:
            return ok(())
        return outcome(self.hub_request(" ".join(["xfer", f"p{src}", f"p{dst}", *map(str, fds)])), ints)

    def close(self) -> None:
        if self.broken is None:
            with contextlib.suppress(TransportLost):
                self.hub_request("exit")
