"""The `memfd` adapter: real processes on this Linux host, regions as libcutils' memfd mode makes
them, fds passed by SCM_RIGHTS with binder's rules applied by the receiving side.

One executor process per modelled process, each on its own socketpair (channel.Executor), so a
round trip is one write and one read. There is no binder device on the host, so fd transfer
emulates what binder guarantees: the sender refuses fds that are not open or are O_PATH, the
receiver installs them lowest-free with FD_CLOEXEC (MSG_CMSG_CLOEXEC), same open file description.
The binder-only behaviours (node flags, failed replies) are checked against the real driver by
the `kernel` adapter; here acceptance is applied by the adapter from the Spawn flag.

Capabilities are probed in `start`: memfd_create, sealing, and F_SEAL_FUTURE_WRITE (Linux ≥ 5.1),
which libcutils requires before it uses memfd mode at all. The executor is built with the system C
compiler (build.py, target `host`), and every executor started proves its version first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from ashcheck.adapters.base import AdapterUnavailable, Capability
from ashcheck.adapters.channel import Executor, ExecutorError, HandshakeError
from ashcheck.adapters.executor_adapter import ExecutorAdapter, TransportLost
from ashcheck.adapters.executor_ops import first_int, ints, outcome
from ashcheck.adapters.reply import Reply, hexed
from ashcheck.spec.constants import F_ADD_SEALS, F_SEAL_FUTURE_WRITE
from ashcheck.spec.outcome import Outcome, ok


class HostTransport:
    """A Transport to executors on this host, one socketpair each (channel.Executor).

    `version`: every executor started must first answer it to `version` (the check of the cached
    binary). If one does not, the binary is checked and rebuilt (build.executor_path(`target`)),
    once per transport, and the start is tried again."""

    def __init__(self, binary: Path, timeout: float, *, version: str | None = None, target: str = "host") -> None:
        self.binary, self.timeout = binary, timeout
        self.version, self.target = version, target
        self._execs: dict[int, Executor] = {}
        self._rebuilt = False
        self.broken: str | None = None  # one executor per process: each is lost alone, never all

    def executor(self, proc: int) -> Executor:
        """The executor of modelled process `proc`. Raises TransportLost if it has none."""
        e = self._execs.get(proc)
        if e is None:
            raise TransportLost(f"process {proc} has no executor")
        return e

    def spawn(self, proc: int, uid: int | None) -> None:
        try:
            self._execs[proc] = self._start(uid)
        except ExecutorError as exc:
            raise TransportLost(str(exc)) from exc

    def _start(self, uid: int | None) -> Executor:
        try:
            return Executor(self.binary, uid=uid, timeout=self.timeout, version=self.version)
        except HandshakeError as exc:
            if self._rebuilt:
                raise
            self._rebuilt = True
            from ashcheck.adapters.build import BuildError, executor_path

            try:
                self.binary = executor_path(self.target)
            except BuildError as build:
                raise HandshakeError(f"{exc}; and it could not be rebuilt: {build}") from exc
            return Executor(self.binary, uid=uid, timeout=self.timeout, version=self.version)

    def kill(self, proc: int) -> None:
        e = self._execs.pop(proc, None)
        if e is not None:
            e.close()

    def request(self, proc: int, line: str) -> Reply:
        try:  # every operation passes here: the lookup inline, executor() only to raise
            return (self._execs.get(proc) or self.executor(proc)).request(line)
        except ExecutorError as exc:
            raise TransportLost(str(exc)) from exc

    def relay_fds(self, src: int, dst: int, fds: tuple[int, ...]) -> Outcome:
        if not fds:
            return ok(())
        try:
            reply, received = self.executor(src).request_recv_fds("sendfds " + " ".join(map(str, fds)))
            try:
                got = outcome(reply)
                if not got.succeeded:
                    return got
                return outcome(self.executor(dst).request("recvfds", fds=received), ints)
            finally:
                for fd in received:
                    os.close(fd)
        except ExecutorError as exc:
            raise TransportLost(str(exc)) from exc

    def close(self) -> None:
        for proc in list(self._execs):
            self.kill(proc)


class MemfdAdapter(ExecutorAdapter):
    name: ClassVar[str] = "memfd"
    profile: ClassVar[str] = "memfd"

    def __init__(self, **options: str) -> None:
        self.timeout = float(options.pop("timeout", "10"))
        super().__init__(**options)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if not hasattr(os, "memfd_create"):
            return "this platform has no memfd_create"
        from ashcheck.adapters.build import unavailable_reason

        return unavailable_reason("host")

    def start(self) -> None:
        """Build (or take from the cache, checked) the host executor and probe the kernel. Raises
        AdapterUnavailable (build.BuildError among them) with one reason."""
        from ashcheck.adapters.build import executor_path, version

        self.transport = HostTransport(executor_path("host"), self.timeout, version=version())
        try:
            probed = self._probe()
        except TransportLost as exc:
            raise AdapterUnavailable(f"the executor does not run here: {exc}") from exc
        self.capabilities = frozenset(
            {Capability.MULTI_PROCESS, Capability.FD_TRANSFER, Capability.MAPS_NAME, Capability.CONCURRENT} | probed)

    def _probe(self) -> set[Capability]:
        """Can this kernel do what libcutils' memfd mode needs, and can we drop privileges?"""
        found: set[Capability] = set()
        t = self.transport
        try:
            t.spawn(-1, None)
            fd = outcome(t.request(-1, f"memfd_region {hexed(b'probe')} 4096"), first_int)
            if not fd.succeeded:
                raise AdapterUnavailable(f"memfd_create with sealing failed here: {fd}")
            sealed = outcome(t.request(-1, f"fcntl {fd.value} {F_ADD_SEALS} {F_SEAL_FUTURE_WRITE}"), first_int)
            if not sealed.succeeded:
                raise AdapterUnavailable("F_SEAL_FUTURE_WRITE is not supported (Linux < 5.1): "
                                         "libcutils would not use memfd mode on this kernel")
            uid = outcome(t.request(-1, "info"), lambda f: int(f[1]))
            if uid.value == 0:
                found |= {Capability.PRIVILEGED, Capability.UNPRIVILEGED}
            else:
                found.add(Capability.UNPRIVILEGED)
        finally:
            t.kill(-1)
        return found
