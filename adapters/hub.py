"""A Transport over an executor hub: one byte stream (a VM's virtio-serial port, `adb shell`)
multiplexing the executors of every modelled process. Used by the kernel and adb adapters.

Processes are tagged `p<N>` on the wire. fd relays (`* xfer`) happen inside the hub, on the far
side, so fds never cross the stream. Any error of the stream (timeout, EOF) loses the transport:
every later request says so, and the adapter turns that into indeterminate outcomes.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ashcheck.adapters.executor_adapter import TransportLost
from ashcheck.adapters.executor_ops import Reply, ints, outcome
from ashcheck.spec.outcome import Outcome, ok


class HubTransport:
    def __init__(self, hub: Any, timeout: float) -> None:
        """`hub` is a channel.Hub connected to a running `ashcheck-exec hub`."""
        self.hub, self.timeout = hub, timeout
        self.broken: str | None = None

    def _call(self, fn: Any, *args: Any) -> Any:
        from ashcheck.adapters.channel import ExecutorError

        if self.broken:
            raise TransportLost(self.broken)
        try:
            return fn(*args)
        except ExecutorError as exc:
            self.broken = f"the hub channel failed: {exc}"
            raise TransportLost(self.broken) from exc

    def hub_request(self, line: str) -> Reply:
        reply: Reply = self._call(self.hub.request, "*", line, self.timeout)
        return reply

    def spawn(self, proc: int, uid: int | None) -> None:
        reply = self.hub_request(f"spawn p{proc} {-1 if uid is None else uid}")
        if reply.status != "ok":
            raise TransportLost(f"the hub could not start process {proc}: {reply.status} {reply.fields}")

    def kill(self, proc: int) -> None:
        self.hub_request(f"kill p{proc}")

    def request(self, proc: int, line: str) -> Reply:
        reply: Reply = self._call(self.hub.request, f"p{proc}", line, self.timeout)
        return reply

    def submit(self, proc: int, line: str) -> object:
        return self._call(self.hub.submit, f"p{proc}", line)

    def wait(self, ticket: object) -> Reply:
        reply: Reply = self._call(self.hub.wait, ticket, self.timeout)
        return reply

    def relay_fds(self, src: int, dst: int, fds: tuple[int, ...]) -> Outcome:
        if not fds:
            return ok(())
        return outcome(self.hub_request(" ".join(["xfer", f"p{src}", f"p{dst}", *map(str, fds)])), ints)

    def close(self) -> None:
        if self.broken is None:
            with contextlib.suppress(TransportLost):
                self.hub_request("exit")
