"""Python clients of the native executor's line protocol (see the header of executor.c).

- `Executor`: one `ashcheck-exec` child process on this host, on a socketpair that is both its
  stdin and its stdout, so fds travel with requests and replies (SCM_RIGHTS).
- `Hub`: the hub protocol (`<proc> <request>` → `<proc> <reply>`) over any byte stream: a VM's
  virtio-serial port, `adb shell`'s pipes, a socket. Several requests to different processes may
  be outstanding (a binder receiver blocks while the sender runs).

Harness failures (timeout, a dead executor, garbage on the wire) raise ExecutorError; what the
executor answers (ok, err, fault, bad) is a Reply.
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
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Protocol, Self

STATUSES = frozenset({"ok", "err", "fault", "bad"})
_FDS_SPACE = socket.CMSG_SPACE(253 * 4)  # SCM_MAX_FD fds of 4 bytes
MAX_REPLY = 64 << 20  # a reply is at most ~2 MiB (a 1 MiB read, in hex): more is garbage
_CLOSE_GRACE = 1.0  # seconds for an executor to exit on EOF before it is killed


class ExecutorError(Exception):
    """The harness lost an executor: timeout, death, or garbage on the wire."""


class Reply(NamedTuple):
    """One reply line: `status` (ok, err, fault, bad) and the fields after it. (A NamedTuple: one
    is made per request, and a frozen dataclass costs a microsecond more to build.)"""

    status: str
    fields: tuple[str, ...] = ()

    @classmethod
    def parse(cls, line: str) -> Reply:
        status, *fields = line.split(" ")
        if status not in STATUSES:
            raise ValueError(f"not a reply: {line[:200]!r}")
        return cls(status, tuple(fields))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def int(self, i: builtins.int = 0) -> builtins.int:
        """Field i as an integer (decimal or 0x hex)."""
        return builtins.int(self.fields[i], 0)

    def bytes(self, i: builtins.int = 0) -> builtins.bytes:
        """Field i decoded from hex (`-` is empty)."""
        return b"" if self.fields[i] == "-" else builtins.bytes.fromhex(self.fields[i])

    def message(self) -> str:
        """The human message of a `bad` (or a hub's `lost`) reply."""
        try:
            return self.bytes(0).decode(errors="replace")
        except (IndexError, ValueError):
            return " ".join(self.fields)

    def __str__(self) -> str:
        return " ".join((self.status, *self.fields))


def _encode(line: str | builtins.bytes) -> builtins.bytes:
    data = line.encode() if isinstance(line, str) else line
    if b"\n" in data:
        raise ValueError("a request is one line: it may not contain a newline")
    return data + b"\n"


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
    default seconds a request may take. The executor dies with this thread (PR_SET_PDEATHSIG is
    tied to the thread that forked it) and on close().
    """

    def __init__(self, binary: Path, *, uid: int | None = None, timeout: float = 10.0) -> None:
        self.binary, self.timeout = Path(binary), timeout
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, ASHCHECK_PARENT=str(os.getpid()))  # the executor checks it is ours
        try:
            self._proc = subprocess.Popen([str(binary)], stdin=theirs.fileno(), stdout=theirs.fileno(),
                                          stderr=subprocess.PIPE, start_new_session=True, env=env)
        except OSError as exc:
            ours.close()
            raise ExecutorError(f"cannot start the executor {binary}: {exc}") from exc
        finally:
            theirs.close()
        self._sock = ours
        self._limit = 0.0  # the socket's SO_RCVTIMEO/SO_SNDTIMEO, in seconds (see _until)
        self._buffer = bytearray()
        self._dead: str | None = None
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, ours, _CLOSE_GRACE)
        if uid is not None:
            reply = self.request(f"setuid {uid}")
            if not reply.ok:
                self.close()
                raise ExecutorError(f"executor pid {self.pid} could not drop to uid {uid}: {reply}")

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process is reaped (negative: killed by that signal)."""
        return self._proc.poll()

    def request(self, line: str | builtins.bytes, *, fds: Sequence[int] = (), timeout: float | None = None) -> Reply:
        """Send one request (with `fds` attached by SCM_RIGHTS) and return its reply. fds that come
        back with the reply are closed (use request_recv_fds for `sendfds`)."""
        reply, received = self._call(line, fds, timeout)
        _close_fds(received)
        return reply

    def request_recv_fds(self, line: str | builtins.bytes, *, fds: Sequence[int] = (),
                         timeout: float | None = None) -> tuple[Reply, list[int]]:
        """Like request, and also return the fds that came with the reply: the caller owns them."""
        return self._call(line, fds, timeout)

    def _call(self, line: str | builtins.bytes, fds: Sequence[int], timeout: float | None) -> tuple[Reply, list[int]]:
        data = _encode(line)
        if self._dead is not None:
            raise ExecutorError(f"executor pid {self.pid} is gone: {self._dead}")
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        received: list[int] = []
        try:
            self._send(data, fds, deadline)
            raw = self._read_line(deadline, received)
            text = raw.decode("ascii")
            return Reply.parse(text), received
        except BaseException as exc:
            _close_fds(received)
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
        if isinstance(exc, (UnicodeDecodeError, ValueError)):
            return f"sent garbage ({exc})"
        if isinstance(exc, OSError):
            return f"failed on the socket ({exc})"
        return f"was abandoned ({type(exc).__name__})"  # e.g. KeyboardInterrupt: state unknown

    def _send(self, data: builtins.bytes, fds: Sequence[int], deadline: float) -> None:
        view = memoryview(data)
        while view:
            self._until(deadline)
            try:
                sent = socket.send_fds(self._sock, [view], list(fds)) if fds else self._sock.send(view)
            except BlockingIOError:  # SO_SNDTIMEO expired: _until decides whether the deadline passed
                continue
            fds = ()  # attached to the first bytes only
            view = view[sent:]

    def _read_line(self, deadline: float, received: list[int]) -> builtins.bytes:
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > MAX_REPLY:
                raise ValueError(f"a reply longer than {MAX_REPLY} bytes")
            self._until(deadline)
            try:  # 64 KiB at a time: Python allocates the whole buffer on every call
                data, ancillary, _, _ = self._sock.recvmsg(1 << 16, _FDS_SPACE, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:  # SO_RCVTIMEO expired: _until decides whether the deadline passed
                continue
            for level, kind, payload in ancillary:  # what socket.recv_fds does, without its per-call setup
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
            if not data:
                raise EOFError
            self._buffer += data
        line = builtins.bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        return line

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
    serial: int


class Hub:
    """A client of `ashcheck-exec --hub` over a byte stream.

    `Hub(sock)` for one connected socket, or `Hub(read, write)` for two ends (fds or objects with
    fileno(): a pipe pair, `adb shell`'s stdout and stdin). The Hub does not own the stream.
    Replies are matched to requests by proc tag, in order, so requests to different procs may be
    outstanding at once (submit/wait). A reply `lost` (the proc died) raises ExecutorError.
    """

    def __init__(self, read: Stream, write: Stream | None = None, *, timeout: float = 10.0) -> None:
        self._rfd = read if isinstance(read, int) else read.fileno()
        self._wfd = self._rfd if write is None else write if isinstance(write, int) else write.fileno()
        self.timeout = timeout
        self._buffer = bytearray()
        self._serials = itertools.count()
        self._pending: dict[str, deque[Ticket]] = {}
        self._replies: dict[Ticket, builtins.bytes] = {}
        self._broken: str | None = None

    def request(self, proc: str, line: str, timeout: float | None = None) -> Reply:
        """Send one request to `proc` (`*`: the hub itself) and wait for its reply."""
        return self.wait(self.submit(proc, line, timeout), timeout)

    def submit(self, proc: str, line: str, timeout: float | None = None) -> Ticket:
        """Send a request without waiting for the reply."""
        if not proc or " " in proc or "\n" in proc:
            raise ValueError(f"a proc tag is a short token without spaces, not {proc!r}")
        self._check()
        ticket = Ticket(proc, next(self._serials))
        self._pending.setdefault(proc, deque()).append(ticket)
        self._write(proc.encode() + b" " + _encode(line), self._deadline(timeout))
        return ticket

    def wait(self, ticket: Ticket, timeout: float | None = None) -> Reply:
        """The reply to a submitted request. A timeout leaves the ticket pending: its reply, should
        it come later, stays matched to it."""
        deadline = self._deadline(timeout)
        while ticket not in self._replies:
            self._check()
            if ticket not in self._pending.get(ticket.proc, ()):
                raise ValueError(f"{ticket} was not submitted here, or was already waited for")
            self._read_some(deadline, ticket)
        text = self._replies.pop(ticket).decode("ascii", errors="replace")
        status, _, rest = text.partition(" ")
        if status == "lost":
            raise ExecutorError(f"hub process {ticket.proc} is lost: {Reply('lost', (rest,)).message()}")
        try:
            return Reply.parse(text)
        except ValueError as exc:
            self._broken = f"garbage from the hub for {ticket.proc}: {text[:200]!r}"
            raise ExecutorError(self._broken) from exc

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _check(self) -> None:
        if self._broken is not None:
            raise ExecutorError(self._broken)

    def _write(self, data: builtins.bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            if not select.select([], [self._wfd], [], max(deadline - time.monotonic(), 0))[1]:
                raise ExecutorError(f"the hub does not take requests (stream full for {self.timeout} s)")
            try:
                view = view[os.write(self._wfd, view[:4096]):]  # ≤ PIPE_BUF: never blocks once writable
            except OSError as exc:
                self._broken = f"writing to the hub failed: {exc}"
                raise ExecutorError(self._broken) from exc

    def _read_some(self, deadline: float, waiting: Ticket) -> None:
        """Read what is there (waiting at most until deadline) and file complete reply lines."""
        left = deadline - time.monotonic()
        if not select.select([self._rfd], [], [], max(left, 0))[0]:
            raise ExecutorError(f"hub process {waiting.proc} did not answer within the timeout")
        try:
            data = os.read(self._rfd, 1 << 20)
        except OSError as exc:
            data, error = b"", f": {exc}"
        else:
            error = ""
        if not data:
            self._broken = f"the hub closed the stream{error}"
            raise ExecutorError(self._broken)
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = builtins.bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            tag, _, reply = line.partition(b" ")
            queue = self._pending.get(tag.decode(errors="replace"))
            if not queue:
                self._broken = f"the hub sent a line nobody asked for: {line[:200]!r}"
                raise ExecutorError(self._broken)
            self._replies[queue.popleft()] = reply
        if len(self._buffer) > MAX_REPLY:
            self._broken = "the hub sent a line longer than any reply"
            raise ExecutorError(self._broken)


__all__ = ["Executor", "ExecutorError", "Hub", "Reply", "Ticket"]
