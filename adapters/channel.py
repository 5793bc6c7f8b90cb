"""Python clients of the native executor's line protocol (see the header of executor.c).

- `Executor`: one `ashcheck-exec` child process on this host, on a socketpair that is both its
  stdin and its stdout, so fds travel with requests and replies (SCM_RIGHTS).
- `Hub`: the hub protocol (`<proc> <id> <request>` → `<proc> <id> <reply>`) over any byte stream:
  a VM's virtio-serial port, `adb shell`'s pipes, a socket. Several requests to different
  processes may be outstanding (a binder receiver blocks while the sender runs).

Every request carries an id (a counter of the client) and its reply must carry it back; the reply
line is read strictly (reply.parse). A reply for another id, a second reply, a malformed line, a
timeout or a dead executor is a harness failure: ExecutorError, and that executor (or, for the
hub's own stream, the hub) is not used again, so a reply is never matched to the wrong request.
What the executor answers (ok, err, fault, bad) is a Reply. Lines are read in linear time: each
byte is searched for the end of line once.
"""

from __future__ import annotations

import array
import builtins
import contextlib
import itertools
import os
import select
import socket
import struct
import subprocess
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from ashcheck.adapters.reply import HUB_STATUSES, MalformedReply, Reply, parse

_FDS_SPACE = socket.CMSG_SPACE(253 * 4)  # SCM_MAX_FD fds of 4 bytes
MAX_REPLY = 64 << 20  # a reply is at most ~2 MiB (a 1 MiB read, in hex): more is garbage
_CLOSE_GRACE = 1.0  # seconds for an executor to exit on EOF before it is killed
_SHORT_CHUNK, _LONG_CHUNK = 1 << 16, 1 << 20  # bytes read at once: usually, and in a long reply


class ExecutorError(Exception):
    """The harness lost an executor: timeout, death, or a protocol error on the wire."""


class HandshakeError(ExecutorError):
    """A new executor did not answer `version` with the expected version: wrong or corrupt binary."""


class ProcessLost(ExecutorError):
    """A hub process died (or was killed); the hub and its other processes go on."""


class HubTimeout(ExecutorError):
    """A hub request was not answered in time; its ticket stays pending (see Hub.abandon)."""


def _line(line: str | builtins.bytes) -> builtins.bytes:
    data = line.encode() if isinstance(line, str) else line
    if b"\n" in data:
        raise ValueError("a request is one line: it may not contain a newline")
    return data + b"\n"


class LineBuffer:
    """Bytes received, cut into lines; each byte is searched for '\\n' once (linear time)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.scanned = 0  # data[:scanned] holds no '\n'

    def take(self) -> builtins.bytes | None:
        """The next complete line (without its '\\n'), or None."""
        end = self.data.find(b"\n", self.scanned)
        if end < 0:
            self.scanned = len(self.data)
            return None
        line = builtins.bytes(memoryview(self.data)[:end])  # one copy (a slice would be two)
        del self.data[:end + 1]  # O(1) from the front of a bytearray
        self.scanned = 0
        return line

    def take_reply(self, rid: str) -> Reply | None:
        """The reply to request `rid`, once its line is complete (None: not yet). An executor
        answers one request at a time, so nothing may follow the line. Raises MalformedReply."""
        line = self.take()
        if line is None:
            if len(self.data) > MAX_REPLY:
                raise MalformedReply(f"a reply longer than {MAX_REPLY} bytes")
            return None
        reply = parse(line, rid)
        if self.data:  # a second reply, or garbage
            raise MalformedReply(f"more after the reply to request {rid}: {builtins.bytes(self.data[:120])!r}")
        return reply

    def add_reply(self, chunk: bytearray, size: int, rid: str) -> Reply | None:
        """take_reply(rid) after appending chunk[:size], the bytes just read. The usual case, an
        empty buffer and a chunk that is exactly one line, is parsed without the buffer."""
        if not self.data:
            end = chunk.find(b"\n", 0, size)
            if end == size - 1:
                return parse(chunk[:end], rid)
            if end < 0:
                self.scanned = size  # searched once: take() goes on from there
        self.data += memoryview(chunk)[:size]
        return self.take_reply(rid)


def _close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _shutdown(proc: subprocess.Popen[builtins.bytes], sock: socket.socket, grace: float) -> None:
    """Hang up, give the executor `grace` seconds to exit on EOF, then kill it; always reap."""
    sock.close()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


class Executor:
    """One executor process on this host, in child mode. Use as a context manager, or close().

    `uid`: drop to this uid (setgroups, setresgid, setresuid) right after start. `timeout`: the
    default seconds a request may take. `version`: if given, the first exchange asks the executor
    its version, and anything but this answer raises HandshakeError (a corrupt or stale binary).
    The executor dies with this thread (PR_SET_PDEATHSIG is tied to the thread that forked it) and
    on close(). Raises ExecutorError if it cannot start.
    """

    def __init__(self, binary: Path, *, uid: int | None = None, timeout: float = 10.0,
                 version: str | None = None) -> None:
        self.binary, self.timeout = Path(binary), timeout
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, ASHCHECK_PARENT=str(os.getpid()))  # the executor checks it is ours
        try:
            self._proc = subprocess.Popen([str(binary)], stdin=theirs.fileno(), stdout=theirs.fileno(),
                                          stderr=subprocess.PIPE, start_new_session=True, env=env)
        except OSError as exc:
            ours.close()
            raise HandshakeError(f"cannot start the executor {binary}: {exc}") from exc
        finally:
            theirs.close()
        self._sock = ours
        self._limit = 0.0  # the socket's SO_RCVTIMEO/SO_SNDTIMEO, in seconds (see _until)
        self._lines = LineBuffer()
        self._chunk = bytearray(_SHORT_CHUNK)
        self._ids = itertools.count(1)
        self._dead: str | None = None
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, ours, _CLOSE_GRACE)
        if version is not None:
            self._handshake(version)
        if uid is not None:
            reply = self.request(f"setuid {uid}")
            if not reply.ok:
                self.close()
                raise ExecutorError(f"executor pid {self.pid} could not drop to uid {uid}: {reply}")

    def _handshake(self, version: str) -> None:
        try:
            reply = self.request("version")
        except ExecutorError as exc:
            self.close()
            raise HandshakeError(f"{self.binary} does not work as the executor: {exc}") from exc
        if reply != Reply("ok", (version,)):
            self.close()
            raise HandshakeError(f"{self.binary} is another executor: it answered `version` with "
                                 f"{str(reply)[:100]!r}, not 'ok {version}'")

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process is reaped (negative: killed by that signal)."""
        return self._proc.poll()

    def request(self, line: str | builtins.bytes, *, fds: Sequence[int] = (), timeout: float | None = None) -> Reply:
        """Send one request (with `fds` attached by SCM_RIGHTS) and return its reply. No fds are
        expected back: any that come are dropped (closed) by the kernel, never installed here (use
        request_recv_fds for `sendfds`). Raises ExecutorError."""
        return self._call(line, fds, timeout, None)

    def request_recv_fds(self, line: str | builtins.bytes, *, fds: Sequence[int] = (),
                         timeout: float | None = None) -> tuple[Reply, list[int]]:
        """Like request, and also return the fds that came with the reply: the caller owns them."""
        received: list[int] = []
        return self._call(line, fds, timeout, received), received

    def _call(self, line: str | builtins.bytes, fds: Sequence[int], timeout: float | None,
              received: list[int] | None) -> Reply:
        """One round trip. `received`: where the fds that come with the reply go (None: none wanted)."""
        rid = str(next(self._ids))
        data = f"{rid} {line}\n".encode() if isinstance(line, str) else rid.encode() + b" " + line + b"\n"
        if data.find(b"\n") != len(data) - 1:
            raise ValueError("a request is one line: it may not contain a newline")
        if self._dead is not None:
            raise ExecutorError(f"executor pid {self.pid} is gone: {self._dead}")
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            self._send(data, fds, deadline)
            return self._read_reply(rid, deadline, received)
        except BaseException as exc:
            if received:
                _close_fds(received)
                received.clear()
            what = self._describe(exc)
            self._fail(what)
            if not isinstance(exc, Exception):  # Ctrl-C, SIGTERM, exit: the run ends, not just this request
                raise
            request = data[:80].decode(errors="replace").rstrip("\n")
            raise ExecutorError(f"executor pid {self.pid} ({self.binary.name}) {what} while answering "
                                f"{request!r}{self._stderr_tail()}") from exc

    @staticmethod
    def _describe(exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return "did not answer in time and was killed"
        if isinstance(exc, (EOFError, BrokenPipeError, ConnectionResetError)):
            return "closed its end (it died)"
        if isinstance(exc, MalformedReply):
            return f"broke the protocol ({exc}) and was killed"
        if isinstance(exc, ValueError):
            return f"sent garbage ({exc})"
        if isinstance(exc, OSError):
            return f"failed on the socket ({exc})"
        return f"was abandoned ({type(exc).__name__})"  # e.g. KeyboardInterrupt: state unknown

    def _send(self, data: builtins.bytes, fds: Sequence[int], deadline: float) -> None:
        view: builtins.bytes | memoryview = data  # a memoryview only if a send stops short
        while True:
            self._until(deadline)
            try:
                sent = socket.send_fds(self._sock, [view], list(fds)) if fds else self._sock.send(view)
            except BlockingIOError:  # SO_SNDTIMEO expired: _until decides whether the deadline passed
                continue
            if sent == len(view):
                return
            fds = ()  # attached to the first bytes only
            view = memoryview(view)[sent:]

    def _read_reply(self, rid: str, deadline: float, received: list[int] | None) -> Reply:
        """Read until the reply to `rid` is complete. The buffer is empty here: the last reply was
        all there was (take_reply checks it). Without `received`, a plain recv: any fds that
        arrive are closed by the kernel (MSG_CTRUNC) and never take a number here."""
        lines, sock, chunk = self._lines, self._sock, self._chunk
        while True:
            self._until(deadline)
            try:  # into a buffer of our own: a fresh one per call costs more than the copy
                if received is None:
                    size = sock.recv_into(chunk)
                else:
                    size, ancillary, _, _ = sock.recvmsg_into([chunk], _FDS_SPACE, socket.MSG_CMSG_CLOEXEC)
                    for level, kind, payload in ancillary:  # as socket.recv_fds, without its per-call setup
                        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                            received.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
            except BlockingIOError:  # SO_RCVTIMEO expired: _until decides whether the deadline passed
                continue
            if not size:
                raise EOFError
            if (reply := lines.add_reply(chunk, size, rid)) is not None:
                return reply
            if len(lines.data) > len(chunk) and len(chunk) < _LONG_CHUNK:  # a long reply is coming
                chunk = self._chunk = bytearray(_LONG_CHUNK)

    def _until(self, deadline: float) -> None:
        """The next socket call may wait until deadline (then it raises TimeoutError).

        The socket stays blocking, with the kernel's SO_RCVTIMEO/SO_SNDTIMEO as the limit: Python's
        own timeout mode would add a poll() before, and an ioctl for every settimeout, each call. The
        limit is reset only when it would end more than 50 ms after the deadline or more than a second
        before it (an early expiry just comes back here). A zero limit means "wait forever": never."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        if not (self._limit > 0 and left - 1.0 < self._limit <= left + 0.05):
            limit = struct.pack("ll", int(left), max(1, int(left % 1 * 1e6)))
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
            self._limit = left

    def _fail(self, what: str) -> None:
        """After a failure the process is of no further use: kill it now and reap it."""
        self._dead = what
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        self._proc.wait()

    def _stderr_tail(self) -> str:
        stderr = self._proc.stderr
        if stderr is None:
            return ""
        with contextlib.suppress(OSError):
            text = stderr.read().decode(errors="replace").strip()  # the writer is dead: no block
            if text:
                return f"; its stderr:\n{text[-2000:]}"
        return ""

    def close(self) -> None:
        """Close the socket (the executor exits on EOF), wait briefly, kill if needed, reap."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


Stream = int | _HasFileno  # an fd, a socket, a file object


@dataclass(frozen=True)
class Ticket:
    """A submitted hub request; pass it to Hub.wait."""

    proc: str
    id: str
    port: str = ""  # the process port it went to ("": through the hub)


class _Port:
    """A process port: a stream of its own to one process of the hub (see Hub)."""

    def __init__(self, name: str, stream: Stream) -> None:
        self.name, self.fd = name, stream if isinstance(stream, int) else stream.fileno()
        self.lines = LineBuffer()
        self.owner: str | None = None  # the proc spawned (or being spawned) on it; None: free
        self.sync: builtins.bytes | None = None  # the line its new owner starts with; dropped till then


class Hub:
    """A client of `ashcheck-exec --hub` over a byte stream.

    `Hub(sock)` for one connected socket, or `Hub(read, write)` for two ends (fds or objects with
    fileno(): a pipe pair, `adb shell`'s stdout and stdin). The Hub does not own the stream.
    Each request carries an id; a reply is matched by it, so requests to different procs may be
    outstanding at once (submit/wait). A reply `lost` (the proc died) raises ProcessLost for that
    request only. Anything else that breaks the protocol (a reply for no outstanding request or for
    another proc, a malformed line, EOF) breaks the Hub: every later call raises ExecutorError.

    `ports`: process ports (a VM's extra virtio-serial ports), by their name in the guest. A
    `* spawn <proc> <uid>` gets a free one, if any, and from its `ok` on, `proc`'s requests go
    there as `<id> <request>` and its replies come back there, skipping the hub (executor.c's
    `spawn`). The hub's notice `<proc> - lost <hex>` (the process died or was killed) makes what it
    still owes there lost, frees the port, and sends its later requests through the hub again,
    which answers them `lost`.
    """

    def __init__(self, read: Stream, write: Stream | None = None, *, timeout: float = 10.0,
                 ports: Mapping[str, Stream] | None = None) -> None:
        self._rfd = read if isinstance(read, int) else read.fileno()
        self._wfd = self._rfd if write is None else write if isinstance(write, int) else write.fileno()
        self.timeout = timeout
        self._ports = [_Port(name, stream) for name, stream in (ports or {}).items()]
        self._route: dict[str, _Port] = {}  # proc → the port it was spawned on, while it lives
        self._spawning: dict[str, tuple[str, _Port]] = {}  # spawn request id → (proc, its port)
        self._lines = LineBuffer()
        self._ids = itertools.count(1)
        self._pending: dict[str, Ticket] = {}   # id → ticket: submitted, not yet waited for
        self._replies: dict[str, Reply] = {}     # id → its reply, arrived, not yet waited for
        self._abandoned: dict[str, str] = {}     # id → proc: its reply is dropped when it comes
        self._broken: str | None = None
        self._cond = threading.Condition()  # guards all of the above; `_reading`: a thread reads the stream
        self._reading = False

    def request(self, proc: str, line: str, timeout: float | None = None) -> Reply:
        """Send one request to `proc` (`*`: the hub itself) and wait for its reply."""
        return self.wait(self.submit(proc, line, timeout), timeout)

    def submit(self, proc: str, line: str, timeout: float | None = None) -> Ticket:
        """Send a request without waiting for the reply."""
        if not proc or " " in proc or "\n" in proc:
            raise ValueError(f"a proc tag is a short token without spaces, not {proc!r}")
        data = _line(line)
        with self._cond:
            self._check()
            rid, deadline = str(next(self._ids)), self._deadline(timeout)
            if (port := self._route.get(proc)) is not None:
                self._pending[rid] = ticket = Ticket(proc, rid, port.name)
                self._write(f"{rid} ".encode() + data, deadline, port.fd)
                return ticket
            if proc == "*" and data.startswith(b"spawn ") and data.count(b" ") == 2:
                data = self._give_port(rid, data, deadline)
            self._pending[rid] = ticket = Ticket(proc, rid)
            self._write(f"{proc} {rid} ".encode() + data, deadline)
        return ticket

    def _give_port(self, rid: str, spawn: builtins.bytes, deadline: float) -> builtins.bytes:
        """The spawn request `spawn` (`spawn <proc> <uid>\n`) with a free port, if any (the lock is held)."""
        port = next((p for p in self._ports if p.owner is None), None)
        if port is None:
            return spawn
        port.owner, port.sync = spawn.split(b" ")[1].decode(), f"{rid} sync".encode()
        self._spawning[rid] = (port.owner, port)
        self._write(port.sync + b"\n", deadline, port.fd)  # before anything else the new process reads
        return spawn[:-1] + f" {port.name}\n".encode()

    def wait(self, ticket: Ticket, timeout: float | None = None) -> Reply:
        """The reply to a submitted request. Raises ProcessLost if the proc is gone, HubTimeout if
        no reply came in time (the ticket stays pending: a later reply stays matched to it).
        Threads may wait at once (concurrent branches): one reads the stream for all, and files
        each reply for its waiter."""
        deadline = self._deadline(timeout)
        with self._cond:
            while ticket.id not in self._replies:
                self._check()
                if self._pending.get(ticket.id) != ticket:
                    raise ValueError(f"{ticket} was not submitted here, or was already waited for or abandoned")
                if self._reading:  # another thread reads: it files our reply too
                    if not self._cond.wait(max(deadline - time.monotonic(), 0)):
                        raise HubTimeout(f"hub process {ticket.proc} did not answer within the timeout")
                    continue
                self._reading = True
                self._cond.release()
                try:
                    data = self._receive(deadline, ticket)
                finally:
                    self._cond.acquire()
                    self._reading = False
                    self._cond.notify_all()
                self._take(data)
            del self._pending[ticket.id]
            reply = self._replies.pop(ticket.id)
        if reply.status == "lost":
            raise ProcessLost(f"hub process {ticket.proc} is lost: {reply.message()}")
        return reply

    def abandon(self, ticket: Ticket) -> None:
        """Nobody will wait for this ticket: drop its reply, now or when it comes."""
        with self._cond:
            if self._pending.pop(ticket.id, None) is not None and self._replies.pop(ticket.id, None) is None:
                self._abandoned[ticket.id] = ticket.proc

    def abandon_all(self, proc: str) -> None:
        """Abandon every ticket of `proc` (when it is killed, its replies say `lost`)."""
        with self._cond:
            tickets = [t for t in self._pending.values() if t.proc == proc]
        for ticket in tickets:
            self.abandon(ticket)

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _check(self) -> None:
        if self._broken is not None:
            raise ExecutorError(self._broken)

    def _break(self, why: str) -> ExecutorError:
        self._broken = why
        return ExecutorError(why)

    def _write(self, data: builtins.bytes, deadline: float, fd: int | None = None) -> None:
        fd = self._wfd if fd is None else fd
        view = memoryview(data)
        while view:
            if not select.select([], [fd], [], max(deadline - time.monotonic(), 0))[1]:
                raise self._break(f"the hub does not take requests (stream full for {self.timeout} s)")
            try:
                view = view[os.write(fd, view[:4096]):]  # ≤ PIPE_BUF: never blocks once writable
            except OSError as exc:
                raise self._break(f"writing to the hub failed: {exc}") from exc

    def _receive(self, deadline: float, waiting: Ticket) -> list[tuple[_Port | None, builtins.bytes]]:
        """Read what is there on the hub's stream (None) and the ports, waiting at most until
        deadline (without the lock: others may submit)."""
        left = deadline - time.monotonic()
        fds = [self._rfd, *(port.fd for port in self._ports)]
        ready = select.select(fds, [], [], max(left, 0))[0]
        if not ready:
            raise HubTimeout(f"hub process {waiting.proc} did not answer within the timeout")
        got = []
        for port in [None, *self._ports]:
            if (fd := self._rfd if port is None else port.fd) not in ready:
                continue
            lines = self._lines if port is None else port.lines
            try:  # a short read unless a long reply is coming: a 1 MiB buffer costs more than the read
                data = os.read(fd, _LONG_CHUNK if lines.data else _SHORT_CHUNK)
            except OSError as exc:
                data, error = b"", f": {exc}"
            else:
                error = ""
            if not data:
                raise self._break(f"the hub closed {'the stream' if port is None else f'port {port.name}'}{error}")
            got.append((port, data))
        return got

    def _take(self, received: list[tuple[_Port | None, builtins.bytes]]) -> None:
        """File the complete reply lines received (the lock is held)."""
        for port, data in received:
            lines = self._lines if port is None else port.lines
            lines.data += data
            while (line := lines.take()) is not None:
                if port is None:
                    self._file(line)
                else:
                    self._file_port(port, line)
            if len(lines.data) > MAX_REPLY:
                raise self._break("the hub sent a line longer than any reply")

    def _file(self, line: builtins.bytes) -> None:
        """Match one line from the hub to the request it answers, by id, or break the Hub."""
        tag, _, rest = line.partition(b" ")
        proc, rid = tag.decode(errors="replace"), rest.partition(b" ")[0].decode(errors="replace")
        if rid == "-" and rest.startswith(b"- lost "):
            self._lost(proc, rest)
            return
        spawned = self._spawning.pop(rid, None)
        if self._abandoned.get(rid) == proc:
            del self._abandoned[rid]
            if spawned:
                spawned[1].owner = None
            return
        ticket = self._pending.get(rid)
        if ticket is None or ticket.proc != proc or rid in self._replies:
            raise self._break(f"the hub sent a line that answers no request: {line[:200]!r}")
        try:
            self._replies[rid] = reply = parse(rest, rid, HUB_STATUSES)
        except MalformedReply as exc:
            raise self._break(f"the hub broke the protocol: {exc}") from exc
        if spawned and reply.ok:
            self._route[spawned[0]] = spawned[1]
        elif spawned:
            spawned[1].owner = None

    def _lost(self, proc: str, notice: builtins.bytes) -> None:
        """`<proc> - lost <hex>`: a process with a port of its own is gone (of one without, or of
        a spawn that failed, the notice says nothing new: dropped)."""
        try:
            reply = parse(notice, "-", HUB_STATUSES)
        except MalformedReply as exc:
            raise self._break(f"the hub broke the protocol: {exc}") from exc
        port = self._route.pop(proc, None)
        if port is None:
            return
        port.owner = None  # what it still sends there is dropped; the next owner starts with a sync line
        for ticket in self._pending.values():
            if ticket.port == port.name and ticket.proc == proc and ticket.id not in self._replies:
                self._replies[ticket.id] = reply

    def _file_port(self, port: _Port, line: builtins.bytes) -> None:
        """Match one line from a process port to the request it answers, by id, or break the Hub."""
        if port.sync is not None:  # what an earlier owner left, up to the new one's first line
            if line == port.sync:
                port.sync = None
            return
        rid = line.partition(b" ")[0].decode(errors="replace")
        if port.owner is None or self._abandoned.get(rid) == port.owner:  # from a dead or abandoned process
            self._abandoned.pop(rid, None)
            return
        ticket = self._pending.get(rid)
        if ticket is None or ticket.port != port.name or ticket.proc != port.owner or rid in self._replies:
            raise self._break(f"process port {port.name} sent a line that answers no request: {line[:200]!r}")
        try:
            self._replies[rid] = parse(line, rid)
        except MalformedReply as exc:
            raise self._break(f"process {port.owner} broke the protocol on its port: {exc}") from exc


__all__ = ["Executor", "ExecutorError", "HandshakeError", "Hub", "HubTimeout", "LineBuffer", "ProcessLost", "Reply",
           "Ticket"]
