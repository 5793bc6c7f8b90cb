"""Self-tests of the native executor (adapters/executor.c), its build cache (adapters/build.py) and
its Python clients (adapters/channel.py, hub.py), on this host: memfd regions, faults, fd transfer
by SCM_RIGHTS, hostile input, the framed protocol (ids, protocol errors), placement hints, process
lifetime, the build (toolchains, the checked cache, cross builds), the hub, the verb tables against
the Python encoders, and a short fuzzing run. Binder needs a binder device and is exercised in the
VM (the kernel adapter); here only its error paths run.

No test may leave an executor process or an fd behind: `no_leftovers` checks /proc after each test
(and the module fixture once more at the end). Executors are recognised by a marker in their
environment, so executors of other tests running in the same pytest-xdist worker do not count.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import platform
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import tty
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from ashcheck.adapters import build, fuzz
from ashcheck.adapters.base import AdapterUnavailable, Capability
from ashcheck.adapters.channel import Executor, ExecutorError, Hub, ProcessLost, Reply, Ticket
from ashcheck.adapters.executor_adapter import ExecutorAdapter, TransportLost
from ashcheck.adapters.hub import HubTransport
from ashcheck.adapters.memfd import HostTransport
from ashcheck.spec import ops as o

MARKER = "ASHCHECK_SELFTEST_MARKER"
MODULE_RUN = uuid.uuid4().hex
O_PATH, O_RDONLY, O_WRONLY, O_NONBLOCK = 0o10000000, 0, 1, 0o4000
F_GETFD, F_GETFL, F_ADD_SEALS, F_GET_SEALS = 1, 3, 1033, 1034
F_SEAL_SHRINK, F_SEAL_GROW = 2, 4
PROT_NONE, PROT_READ, PROT_RW = 0, 1, 3
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 1, 2, 0x20
FIONREAD, FIONBIO, FIONCLEX, FIOCLEX = 0x541B, 0x5421, 0x5450, 0x5451
SIGBUS, SIGSEGV = 7, 11
EPERM, ENOENT, EBADF, EFAULT, EEXIST, EINVAL, ENOTTY, ENOTSOCK = 1, 2, 9, 14, 17, 22, 25, 88
NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")


def h(data: bytes) -> str:
    return data.hex() or "-"


# ---- leftovers -------------------------------------------------------------------------------------
def _marked_executors(prefix: str) -> list[str]:
    """Live ashcheck-exec processes whose environment carries our marker."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() != "ashcheck-exec":
                continue
            env = Path(f"/proc/{pid}/environ").read_bytes()
            if f"{MARKER}={prefix}".encode() in env:
                found.append(f"pid {pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()!r}")
    return found


def _our_zombies() -> list[str]:
    zombies = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if name == "ashcheck-exec" and rest[0] == "Z" and int(rest[1]) == os.getpid():
                zombies.append(pid)
    return zombies


def _open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


def _settle(prefix: str = MODULE_RUN) -> list[str]:
    """Executors exit asynchronously after EOF: give them a few seconds."""
    deadline = time.monotonic() + 5
    while (left := _marked_executors(prefix) + _our_zombies()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


@pytest.fixture(scope="module", autouse=True)
def no_executor_left_in_module() -> Iterator[None]:
    yield
    assert not _settle(), f"executors left behind by this module: {_settle()}"


@pytest.fixture(autouse=True)
def no_leftovers(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[None]:
    marker = f"{MODULE_RUN}:{request.node.name}"
    monkeypatch.setenv(MARKER, marker)
    before = _open_fds()
    yield
    left = _settle(prefix=marker)
    assert not left, f"executor processes left behind: {left}"
    leaked = {fd: target for fd, target in _open_fds().items() if before.get(fd) != target}
    assert not leaked, f"fds left open: {leaked}"


@pytest.fixture(scope="module")
def exe() -> Path:
    return build.executor_path()


def _run_until_exit(proc: subprocess.Popen[bytes], seconds: float = 5) -> int:
    try:
        return proc.wait(seconds)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- child mode ----------------------------------------------------------------------------------
def test_ping_and_info(exe: Path) -> None:
    with Executor(exe) as ex:
        assert ex.request("ping") == Reply("ok")
        info = ex.request("info")
        assert info.ok and info.int(0) == ex.pid and info.int(1) == os.getuid()
        assert info.int(2) == os.sysconf("SC_PAGESIZE") and info.int(3) == 64
        assert ex.request("fds") == Reply("ok", ("0", "1", "2")), "only stdio may be open between requests"


def test_every_operation_on_a_memfd(exe: Path) -> None:
    with Executor(exe) as ex:
        def ok(line: str) -> Reply:
            reply = ex.request(line)
            assert reply.ok, f"{line}: {reply}"
            return reply

        fd = ok(f"memfd_region {h(b'region')} 8192").int()
        assert fd == 3 and ok("fds").fields == ("0", "1", "2", "3")
        assert ok(f"fcntl {fd} {F_GETFD} 0").int() == 1, "libcutils creates memfds with MFD_CLOEXEC"
        assert ok(f"fcntl {fd} {F_GET_SEALS} 0").int() == F_SEAL_GROW | F_SEAL_SHRINK
        assert ex.request(f"ftruncate {fd} 4096") == Reply("err", (str(EPERM),)), "the size is sealed"
        ok(f"ftruncate {fd} 8192")  # the same size is no change
        mode, size = ok(f"fstat {fd}").fields[:2]
        assert int(mode) & 0o170000 == 0o100000 and int(size) == 8192
        assert ok(f"readlink {h(f'/proc/self/fd/{fd}'.encode())}").bytes() == b"/memfd:region (deleted)"

        assert ok(f"write {fd} {h(b'hello')}").int() == 5
        assert ok(f"lseek {fd} 0 1").int() == 5
        assert ok(f"lseek {fd} 1 0").int() == 1
        assert ok(f"read {fd} 4").bytes() == b"ello"
        assert ok(f"read {fd} 0").fields == ("-",)
        assert ok(f"write {fd} -").int() == 0
        dup = ok(f"dup {fd}").int()
        assert dup == 4 and ok(f"fcntl {dup} {F_GETFD} 0").int() == 0, "dup clears FD_CLOEXEC"
        assert ok(f"lseek {dup} 0 1").int() == 5, "a dup shares the file offset"
        ok(f"close {dup}")
        assert ex.request(f"close {dup}") == Reply("err", (str(EBADF),))

        ok(f"mmap 0 {fd} 8192 {PROT_RW} {MAP_SHARED} 0")
        assert ok("load 0 0 5").bytes() == b"hello"
        ok(f"store 0 4096 {h(b'page two')}")
        ok(f"lseek {fd} 4096 0")
        assert ok(f"read {fd} 8").bytes() == b"page two", "a shared mapping writes the file"
        assert ok("load 0 0 0").fields == ("-",)
        assert ok("maps_name 0").bytes() == b"/memfd:region (deleted)"
        assert ex.request(f"mmap 0 {fd} 4096 {PROT_READ} {MAP_SHARED} 0").status == "bad", "id 0 is in use"
        assert ex.request("load 0 8190 3").status == "bad", "past the end of the mapping"
        assert ex.request("store 0 8192 00").status == "bad"
        ok(f"mprotect 0 {PROT_READ}")
        assert ex.request("store 0 0 00") == Reply("fault", (str(SIGSEGV),))
        ok("munmap 0")
        assert ex.request("load 0 0 1").status == "bad", "the id was forgotten"
        ok(f"mmap 1 {fd} 4096 {PROT_RW} {MAP_PRIVATE} 4096")
        ok("store 1 0 00")
        assert ok("load 1 0 2").bytes() == b"\0a", "a private mapping copies on write"
        assert ok("load 1 0 0").fields == ("-",)
        ok("munmap 1")
        ok(f"mmap 2 {fd} 1 {PROT_READ} {MAP_SHARED} 0")
        assert ok("load 2 0 5").bytes() == b"hello", "a 1-byte mapping maps a whole page"
        assert ex.request("load 2 4095 2").status == "bad", "but not the next one"
        ok("munmap 2")
        # two private mappings that the kernel merges into one /proc/self/maps line
        ok(f"mmap 3 {fd} 4096 {PROT_RW} {MAP_PRIVATE} 4096")
        ok(f"mmap 4 {fd} 4096 {PROT_RW} {MAP_PRIVATE} 0")
        assert ok("maps_name 3").bytes() == ok("maps_name 4").bytes() == b"/memfd:region (deleted)"
        ok("munmap 3")
        ok("munmap 4")

        # ioctl: the VFS answers these for any fd, so they run on the host
        ok(f"ioctl {fd} {FIONCLEX} int 0")
        assert ok(f"fcntl {fd} {F_GETFD} 0").int() == 0
        ok(f"ioctl {fd} {FIOCLEX} null")
        assert ok(f"fcntl {fd} {F_GETFD} 0").int() == 1
        assert ok(f"ioctl {fd} {FIONBIO} in 01000000").int() == 0
        assert ok(f"fcntl {fd} {F_GETFL} 0").int() & O_NONBLOCK
        assert ok(f"ioctl 0 {FIONREAD} inout ffffffff").fields == ("0", "00000000"), "the buffer comes back"
        assert ex.request(f"ioctl 0 {FIONREAD} null") == Reply("err", (str(EFAULT),))
        assert ex.request(f"ioctl 99 {FIONREAD} null") == Reply("err", (str(EBADF),))

        # open, and libcutils' ashmem mode failing on a device that is not ashmem: no fd stays
        root = ok(f"open {h(b'/')} {O_PATH}").int()
        assert root == 4 and ex.request(f"read {root} 1") == Reply("err", (str(EBADF),))
        ok(f"close {root}")
        assert ex.request(f"open {h(b'/nonexistent')} 0") == Reply("err", (str(ENOENT),))
        assert ex.request(f"ashmem_region {h(b'/dev/null')} {h(b'x')} 4096") == Reply("err", (str(ENOTTY),))
        assert ex.request(f"ashmem_region {h(b'/nonexistent')} - 4096") == Reply("err", (str(ENOENT),))
        assert ok("fds").fields == ("0", "1", "2", "3")

        assert ex.request("exit") == Reply("ok")
        deadline = time.monotonic() + 5
        while ex.returncode is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ex.returncode == 0
        with pytest.raises(ExecutorError, match="died"):
            ex.request("ping")


@root_only
def test_setuid_drops_privileges(exe: Path) -> None:
    with Executor(exe, uid=NOBODY) as ex:
        assert ex.request("info").int(1) == NOBODY
        assert ex.request("setuid 0") == Reply("err", (str(EPERM),)), "privileges are gone for good"
    with Executor(exe) as ex:
        assert ex.request(f"setuid {NOBODY}").ok and ex.request("info").int(1) == NOBODY


def test_memfd_region_failures_close_the_fd(exe: Path) -> None:
    with Executor(exe) as ex:
        assert ex.request(f"memfd_region {h(b'x' * 250)} 4096") == Reply("err", (str(EINVAL),))
        assert ex.request(f"memfd_region {h(b'x')} -1") == Reply("err", (str(EINVAL),)), "ftruncate fails"
        assert ex.request("fds").fields == ("0", "1", "2")


@pytest.mark.parametrize("long_bits", [64, 32])
def test_the_memfd_shims_size_is_the_callers_long(exe: Path, long_bits: int) -> None:
    """GET_SIZE of the memfd shim is a `long`: found by the armv7 stand-in, a 32-bit caller's 2 GiB
    region is -2^31 (what the spec says), where fstat's st_size (64 bits in musl) is 2^31."""
    from ashcheck.adapters.executor_ops import MemfdRegions
    from ashcheck.spec import ops as o

    with Executor(exe) as ex:
        regions = MemfdRegions(long_bits=long_bits)
        fd = regions.perform(lambda _, line: ex.request(line), o.CreateRegion(0, b"r", 2**31)).value
        size = regions.perform(lambda _, line: ex.request(line), o.GetSize(0, fd))
        assert size.value == (2**31 if long_bits == 64 else -2**31) and size.emulated


NAMES = [b"a\0b", b"new\nline", b"sp ace", b"\xff\xfe\x80", b"", b"-", b"back\\slash", b"x" * 249, b"x" * 250,
         b"x" * 300]


@pytest.mark.parametrize("name", NAMES, ids=lambda n: repr(n[:12]) + f"[{len(n)}]")
def test_hostile_names_round_trip(exe: Path, name: bytes) -> None:
    as_c_string = name.split(b"\0")[0]  # the kernel reads the name up to its NUL
    with Executor(exe) as ex:
        created = ex.request(f"memfd_region {h(name)} 4096")
        if len(as_c_string) > 249:  # MFD_NAME_MAX_LEN
            assert created == Reply("err", (str(EINVAL),))
            return
        fd = created.int()
        link = ex.request(f"readlink {h(f'/proc/self/fd/{fd}'.encode())}").bytes()
        assert link == b"/memfd:" + as_c_string + b" (deleted)"
        assert ex.request(f"mmap 7 {fd} 4096 {PROT_READ} {MAP_SHARED} 0").ok
        maps = ex.request("maps_name 7").bytes()
        assert maps == b"/memfd:" + as_c_string.replace(b"\n", b"\\012") + b" (deleted)"


_garbage = random.Random(0)
MALFORMED = {
    "empty line": b"",
    "unknown op": b"bogus",
    "missing args": b"read",
    "missing arg": b"read 3",
    "extra arg": b"ping extra",
    "non-hex": b"write 3 zz",
    "odd hex": b"write 3 abc",
    "uppercase hex": b"write 3 ABCD",
    "huge decimal": b"read 3 99999999999999999999999",
    "huge hex": b"lseek 3 0x10000000000000000 0",
    "too negative": b"lseek 3 -9223372036854775809 0",
    "fd beyond 32 bits": b"close 4294967296",
    "bare 0x": b"close 0x",
    "bare minus": b"close -",
    "map id out of range": b"mmap 4096 3 4096 1 1 0",
    "unknown map id": b"load 7 0 1",
    "read too big": b"read 0 1048577",
    "bad argkind": b"ioctl 0 21531 bogus 1",
    "int without value": b"ioctl 0 21531 int",
    "null with value": b"ioctl 0 21531 null 5",
    "bad bool": b"binder_open 2f 2 0",
    "leading space": b" ping",
    "trailing space": b"ping ",
    "double space": b"ping  ping",
    "NUL inside": b"ping\0",
    "carriage return": b"ping\r",
    "tab": b"ping\t",
    "1 MB token": b"x" * 1_000_000,
    "over 1 MiB": b"ping " + b"a" * (2 << 20),
    "all bytes": bytes(b for b in range(256) if b != 10),
    "random binary": bytes(b for b in _garbage.randbytes(4096) if b != 10),
}


@pytest.mark.parametrize("line", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_lines_are_bad_and_harmless(exe: Path, line: bytes) -> None:
    with Executor(exe) as ex:
        reply = ex.request(line)
        assert reply.status == "bad" and reply.message(), reply
        assert ex.request("ping") == Reply("ok"), "the executor carries on"
        assert ex.request("fds").fields == ("0", "1", "2")


def test_faults_are_caught_and_survived(exe: Path) -> None:
    with Executor(exe) as ex:
        assert ex.request(f"mmap 0 -1 8192 {PROT_NONE} {MAP_PRIVATE | MAP_ANONYMOUS} 0").ok
        assert ex.request("load 0 0 1") == Reply("fault", (str(SIGSEGV),))
        assert ex.request("store 0 100 0102") == Reply("fault", (str(SIGSEGV),))
        fd = ex.request(f"memfd_region {h(b'short')} 4096").int()
        assert ex.request(f"mmap 1 {fd} 8192 {PROT_RW} {MAP_SHARED} 0").ok
        assert ex.request("load 1 4096 1") == Reply("fault", (str(SIGBUS),)), "beyond EOF of the memfd"
        assert ex.request("store 1 4095 0102") == Reply("fault", (str(SIGBUS),))
        assert ex.request("load 1 4095 1").bytes() == b"\x01", "the bytes before the fault are stored"
        for _ in range(3):  # the handler stays armed after a siglongjmp
            assert ex.request("load 0 4096 4").status == "fault"
        assert ex.request("ping") == Reply("ok")


def test_fd_transfer_between_executors(exe: Path) -> None:
    with Executor(exe) as src, Executor(exe) as dst:
        fd = src.request(f"memfd_region {h(b'shared')} 4096").int()
        assert src.request(f"write {fd} {h(b'abcdef')}").ok
        assert dst.request(f"open {h(b'/')} {O_PATH}").int() == 3  # fd 3 is taken: 4 and 5 are lowest free

        reply, fds = src.request_recv_fds(f"sendfds {fd} {fd}")
        try:
            assert reply == Reply("ok") and len(fds) == 2
            got = dst.request("recvfds", fds=fds)
        finally:
            for f in fds:
                os.close(f)
        assert got == Reply("ok", ("4", "5"))
        for new in (4, 5):
            assert dst.request(f"fcntl {new} {F_GETFD} 0").int() == 1, "installed with FD_CLOEXEC"
        assert dst.request("lseek 4 2 0").int() == 2
        assert src.request(f"lseek {fd} 0 1").int() == 2, "the same open file description"
        assert dst.request("read 5 3").bytes() == b"cde"
        assert src.request(f"fstat {fd}").fields[4] == dst.request("fstat 5").fields[4]

        # binder's rules: a closed or O_PATH fd refuses the whole transfer
        path_fd = src.request(f"open {h(b'/')} {O_PATH}").int()
        for refused in (f"sendfds 99 {fd}", f"sendfds {fd} {path_fd}"):
            reply, fds = src.request_recv_fds(refused)
            assert (reply, fds) == (Reply("err", (str(EBADF),)), []), refused

        # fds that arrive with any other request are closed before it runs
        spare = os.open("/", os.O_RDONLY)
        try:
            assert dst.request("fds", fds=[spare, spare]).fields == ("0", "1", "2", "3", "4", "5")
        finally:
            os.close(spare)
        assert dst.request("recvfds") == Reply("ok"), "nothing came with this line"


def test_fd_limit_meets_the_modelled_calls_only(exe: Path) -> None:
    """setrlimit: new fds at or above the soft limit are EMFILE; the executor's own listing and
    maps still work; fds that arrive beyond the limit are all refused (binder keeps none)."""
    with Executor(exe) as src, Executor(exe) as dst:
        fd = src.request(f"memfd_region {h(b'x')} 4096").int()
        assert dst.request("setrlimit 4") == Reply("ok")
        assert dst.request(f"open {h(b'/')} {O_PATH}").int() == 3
        assert dst.request(f"open {h(b'/')} {O_PATH}") == Reply("err", (str(errno.EMFILE),))
        assert dst.request("dup 3") == Reply("err", (str(errno.EMFILE),))
        assert dst.request("fds").fields == ("0", "1", "2", "3"), "its own listing is not limited"
        reply, fds = src.request_recv_fds(f"sendfds {fd}")
        try:
            assert reply == Reply("ok") and len(fds) == 1
            assert dst.request("recvfds", fds=fds) == Reply("err", (str(errno.EMFILE),))
            assert dst.request("setrlimit 6") == Reply("ok")
            assert dst.request("recvfds", fds=fds + fds + fds) == Reply("err", (str(errno.EMFILE),))
            assert dst.request("fds").fields == ("0", "1", "2", "3"), "none of a partial set is kept"
            assert dst.request("recvfds", fds=fds + fds) == Reply("ok", ("4", "5"))
        finally:
            for f in fds:
                os.close(f)
        assert dst.request("setrlimit 0") == Reply("ok") and dst.request("fds").fields[-1] == "5", "nothing closed"


def test_sendfds_needs_a_socket(exe: Path) -> None:
    done = subprocess.run([exe], input=b"sendfds 0\nping\n", capture_output=True, timeout=10)
    assert done.stdout == f"err {ENOTSOCK}\nok\n".encode(), "over pipes everything but fd passing works"
    assert done.returncode == 0, "exit(0) on EOF"


# ---- framing: every reply names its request -----------------------------------------------------
def test_every_reply_names_its_request(exe: Path) -> None:
    """Over pipes, line by line: the id comes back; without one the reply has none; a malformed id
    is answered under `-`; an overlong line still under its id."""
    lines = [b"7 ping", b"ping", b"12a ping", b"8", b"9 ping " + b"a" * (2 << 20), b"1234567890123456789 version",
             b"12345678901234567890 ping", b"10\tping", b"11 ping\r"]
    done = subprocess.run([exe], input=b"".join(line + b"\n" for line in lines), capture_output=True, timeout=30)
    replies = done.stdout.split(b"\n")
    assert replies[-1] == b"" and len(replies) == len(lines) + 1, replies
    assert replies[0] == b"7 ok" and replies[1] == b"ok"
    assert replies[5] == b"1234567890123456789 ok " + build.version().encode(), "the longest id, and the version"
    expected = [b"7 ok", b"ok", b"- bad ", b"8 bad ", b"9 bad ", b"1234567890123456789 ok ", b"- bad ", b"- bad ",
                b"11 bad "]
    for line, reply, start in zip(lines, replies, expected, strict=False):
        assert reply.startswith(start), (line[:40], reply)
        first = reply.decode().split(" ", 1)[0]
        assert ("" if first in ("ok", "bad") else first) == fuzz.expected_id(line), "the fuzzer's rule too"


FORGED = {"a second reply with the same id": b"1 ok\n", "another id": b"5 ok\n", "no id": b"ok\n",
          "a carriage return": b"1 ok\r\n", "an empty field": b"1 ok  3\n", "garbage": b"\xff\x00 \n"}


@pytest.mark.parametrize("forged", FORGED.values(), ids=FORGED.keys())
def test_a_reply_out_of_turn_loses_the_executor_never_the_request(exe: Path, forged: bytes) -> None:
    """`write 1 <line>` makes the executor write a forged line before its own reply (to request 1,
    the first): the channel must fail, at the latest on the next request, and never hand the
    executor's real reply (`ok <count>`) to another request."""
    with Executor(exe) as ex:
        got: list[Reply] = []
        with pytest.raises(ExecutorError, match="broke the protocol"):
            got.append(ex.request(f"write 1 {h(forged)}"))
            got.append(ex.request("ping"))
        assert got in ([], [Reply("ok")]), "only a forgery that is itself the reply to request 1 may pass"
        assert ex.returncode is not None, "the executor is killed"
        with pytest.raises(ExecutorError, match="is gone"):
            ex.request("ping")


@pytest.mark.parametrize(("answer", "says"), [
    (b"p1 2 ok\n", "answers no request"),
    (b"p2 1 ok\n", "answers no request"),
    (b"p1 1 ok\r\n", "broke the protocol"),
    (b"p1 1 ok\np1 1 ok\n", "answers no request"),
    (b"p1 1 okay\n", "broke the protocol"),
    (b"garbage\n", "answers no request"),
])
def test_the_hub_client_refuses_what_answers_no_request(answer: bytes, says: str) -> None:
    """The far side is played by the test: a line that is not the reply to an outstanding request
    breaks the Hub for good (it cannot tell which later line answers what)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        c = Hub(ours, timeout=5)
        ticket = c.submit("p1", "ping")
        assert theirs.recv(100) == b"p1 1 ping\n", "the request carries its id"
        theirs.sendall(answer)
        with pytest.raises(ExecutorError, match=says):
            c.wait(ticket)
        with pytest.raises(ExecutorError, match=says):
            c.request("p1", "ping")


def test_the_hub_client_matches_replies_by_id_in_any_order() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        c = Hub(ours, timeout=5)
        first, second = c.submit("p1", "ping"), c.submit("p2", "ping")
        theirs.sendall(b"p2 2 ok 2\np1 1 lost 676f6e65\n")
        assert c.wait(second) == Reply("ok", ("2",))
        with pytest.raises(ProcessLost, match="p1 is lost: gone"):
            c.wait(first)
        abandoned = c.submit("p1", "ping")
        c.abandon(abandoned)
        theirs.sendall(b"p1 3 lost 676f6e65\n")  # dropped: nobody waits for it
        last = c.submit("p3", "ping")
        theirs.sendall(b"p3 4 ok\n")
        assert c.wait(last) == Reply("ok")


# ---- placement hints --------------------------------------------------------------------------------
def _addr(ex: Executor, map_id: int) -> tuple[int, int]:
    reply = ex.request(f"map_addr {map_id}")
    assert reply.ok, reply
    return reply.int(0), reply.int(1)


def test_mmap_hints_place_a_mapping_next_to_another(exe: Path) -> None:
    anon = f"{PROT_RW} {MAP_PRIVATE | MAP_ANONYMOUS} 0"
    with Executor(exe) as ex:
        assert ex.request(f"mmap 0 -1 8192 {anon}").ok
        base, length = _addr(ex, 0)
        assert length == 8192
        assert ex.request(f"mmap 1 -1 4096 {anon} 0 1").ok
        assert _addr(ex, 1) == (base + 8192, 4096), "right after its end"
        assert ex.request(f"mmap 2 -1 12288 {anon} 0 -1").ok
        assert _addr(ex, 2) == (base - 12288, 12288), "right below its start"
        assert ex.request(f"mmap 3 -1 4096 {anon} 0 1").ok, "an occupied hint still gives a mapping"
        taken = _addr(ex, 3)[0]
        assert not base - 12288 <= taken < base + 8192 + 4096, "elsewhere: the kernel ignored the hint"
        assert ex.request(f"mmap 4 -1 4096 {anon} 99 1").ok, "a hint naming no mapping is ignored"
        # the arena: mappings without a hint keep free pages on both sides (so `above` is free)
        assert ex.request(f"mmap 5 -1 4096 {anon}").ok and ex.request(f"mmap 6 -1 4096 {anon}").ok
        (five, _), (six, _) = _addr(ex, 5), _addr(ex, 6)
        assert abs(six - five) >= 3 * 4096, (hex(five), hex(six))
        assert ex.request(f"mmap 7 -1 4096 {anon} 5 1").ok and _addr(ex, 7)[0] == five + 4096
        assert ex.request("munmap 5").ok and ex.request(f"mmap 5 -1 4096 {anon}").ok
        assert _addr(ex, 5)[0] == five, "a mapping id keeps its place"
        # a shared file mapping placed after its neighbour merges with it (one /proc/self/maps line)
        fd = ex.request(f"memfd_region {h(b'hint')} 8192").int()
        assert ex.request(f"mmap 8 {fd} 4096 {PROT_RW} {MAP_SHARED} 0").ok
        assert ex.request(f"mmap 9 {fd} 4096 {PROT_RW} {MAP_SHARED} 4096 8 1").ok
        start = _addr(ex, 8)[0]
        merged = f"{start:x}-{start + 8192:x} "
        assert any(line.startswith(merged) for line in Path(f"/proc/{ex.pid}/maps").read_text().splitlines())
        for wrong in ("0 2", "0", "4096 1", "x 1", "0 1 1"):
            assert ex.request(f"mmap 10 -1 4096 {anon} {wrong}").status == "bad", wrong
        assert ex.request("fds").fields == ("0", "1", "2", "3")


# ---- lifetime ------------------------------------------------------------------------------------
def test_exits_when_the_socket_closes(exe: Path) -> None:
    ex = Executor(exe)
    assert ex.request("ping").ok
    start = time.monotonic()
    ex.close()
    assert ex.returncode == 0, "EOF is a clean exit, not a kill"
    assert time.monotonic() - start < 1
    ex.close()  # idempotent


def test_a_hung_request_times_out_and_kills(exe: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with Executor(exe, timeout=0.3) as ex:
        with pytest.raises(ExecutorError, match="did not answer in time"):
            ex.request(f"open {h(bytes(fifo))} {O_RDONLY}")  # blocks: no writer
        assert ex.returncode == -9
        with pytest.raises(ExecutorError, match="is gone"):
            ex.request("ping")


def test_dies_when_its_parent_is_killed(exe: Path) -> None:
    # An intermediate Python starts the executor on a socket whose other end stays here: so when
    # the intermediate is SIGKILLed, no EOF reaches the executor; only PR_SET_PDEATHSIG can end it.
    script = ("import os, subprocess, sys\n"
              "fd = int(sys.argv[2])\n"
              "p = subprocess.Popen([sys.argv[1]], stdin=fd, stdout=fd, pass_fds=(fd,),\n"
              "                     env=dict(os.environ, ASHCHECK_PARENT=str(os.getpid())))\n"
              "print(p.pid, flush=True)\n"
              "sys.stdin.read()\n")
    ours, theirs = socket.socketpair()
    with ours:
        middle = subprocess.Popen([sys.executable, "-c", script, str(exe), str(theirs.fileno())],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(theirs.fileno(),))
        theirs.close()
        try:
            assert middle.stdout is not None
            pid = int(middle.stdout.readline())
            ours.sendall(b"ping\n")
            ours.settimeout(5)
            assert ours.recv(100) == b"ok\n"
            middle.kill()
        finally:
            middle.kill()
            middle.wait()
            for pipe in (middle.stdin, middle.stdout):
                if pipe is not None:
                    pipe.close()
        assert ours.recv(100) == b"", "the executor died with its parent"
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                break  # dead, waiting for its new parent (init) to reap it
        time.sleep(0.02)
    else:
        assert not Path(f"/proc/{pid}").exists(), f"executor {pid} outlived its parent"


def test_exits_if_its_parent_is_already_gone(exe: Path) -> None:
    ours, theirs = socket.socketpair()
    with ours:
        proc = subprocess.Popen([exe], stdin=theirs.fileno(), stdout=theirs.fileno(),
                                env=dict(os.environ, ASHCHECK_PARENT="1"))
        theirs.close()
        assert _run_until_exit(proc) == 0
        ours.settimeout(5)
        assert ours.recv(100) == b"", "it exits at once, without reading a request"


# ---- build ---------------------------------------------------------------------------------------
def _fresh_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty executor cache. zig keeps its own cache under XDG_CACHE_HOME too: point it at the
    usual one, so that a host without cc (zig fallback) does not rebuild musl (≈1 min)."""
    zig_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zig"
    monkeypatch.setenv("ZIG_GLOBAL_CACHE_DIR", os.environ.get("ZIG_GLOBAL_CACHE_DIR") or str(zig_cache))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_second_build_is_a_cache_hit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     record_property: Callable[[str, object], None]) -> None:
    _fresh_cache(monkeypatch, tmp_path)
    start = time.perf_counter()
    first = build.executor_path()
    cold = time.perf_counter() - start
    start = time.perf_counter()
    second = build.executor_path()
    warm = time.perf_counter() - start
    assert first == second and first.is_relative_to(tmp_path / "cache" / "ashcheck" / "executor")
    assert first.parent.name.endswith("-host") and len(first.parent.name.split("-")[0]) == 16
    record_property("build_cold_s", round(cold, 3))
    record_property("build_hit_s", round(warm, 4))
    print(f"executor build: cold {cold:.3f} s, cache hit {warm * 1000:.2f} ms, ratio {cold / warm:.0f}x")


def test_cache_key_follows_the_source() -> None:
    source = build.SOURCE.read_bytes()
    key = build.cache_key(source, None)
    assert key == build.cache_key(source, None) and len(key) == 16
    assert build.cache_key(source + b"\n/* changed */\n", None) != key


def test_racing_builds_end_with_one_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fresh_cache(monkeypatch, tmp_path)
    results: list[Path | BaseException] = []

    def one() -> None:
        try:
            results.append(build.executor_path())
        except BaseException as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and isinstance(results[0], Path), results
    root = tmp_path / "cache" / "ashcheck" / "executor"
    assert [p.name for p in root.iterdir()] == [results[0].parent.name], "no temporary build dirs left"
    with Executor(results[0]) as ex:
        assert ex.request("ping").ok


def test_build_errors_carry_the_compiler_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fresh_cache(monkeypatch, tmp_path)
    broken = tmp_path / "executor.c"
    broken.write_text("int main(void) { return syntax error; }\n")
    monkeypatch.setattr(build, "SOURCE", broken)
    with pytest.raises(build.BuildError, match=r"(?s)failed with status.*error"):
        build.executor_path()
    with pytest.raises(build.BuildError, match="unknown target"):
        build.executor_path("mips")


def test_cli_prints_the_path(capsys: pytest.CaptureFixture[str], tmp_path: Path, exe: Path) -> None:
    assert build.main_build(["--target", "host", "--out", str(tmp_path)]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == tmp_path / "ashcheck-exec" and printed.read_bytes() == exe.read_bytes()
    assert os.access(printed, os.X_OK)
    done = subprocess.run([sys.executable, "-m", "ashcheck.adapters.build", "--target", "host"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and Path(done.stdout.strip()) == exe


def _fake_cc(folder: Path, *, static: bool) -> Path:
    """A "C compiler" that writes garbage as the binary; with `static`, it claims a static libc
    (itself: any existing file will do)."""
    script = folder / "fakecc"
    libc = script if static else "libc.a"
    script.write_text(f"""#!/bin/sh
case "$1" in --version) echo fakecc 1.0; exit 0;; -print-file-name=libc.a) echo {libc}; exit 0;; esac
while [ $# -gt 0 ]; do if [ "$1" = -o ]; then printf 'not an executable' > "$2"; chmod 755 "$2"; fi; shift; done
""")
    script.chmod(0o755)
    return script


def test_the_host_and_the_vm_executor_need_no_ziglang(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system C compiler builds both, static (CI installs gcc and libc6-dev); only the
    Android targets need ziglang."""
    if platform.machine() != "x86_64":
        pytest.skip("the VM's executor is built natively on an x86_64 host only")
    monkeypatch.setattr(build, "_zig", lambda: None)
    for target in ("host", "x86_64"):
        assert build.unavailable_reason(target) is None
        chain = build.toolchain(target)
        assert chain.static and "-static" in chain.flags and "ziglang" not in chain.command, chain
    for android in ("aarch64", "armv7", "x86", "android-x86_64", "android-aarch64"):
        assert "ziglang" in (build.unavailable_reason(android) or ""), android
    assert "unknown target" in (build.unavailable_reason("mips") or "")


def test_without_a_compiler_or_a_static_libc_the_reasons_say_what_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(build, "_zig", lambda: None)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, no musl-gcc
    for target in ("host", "x86_64"):
        reason = build.unavailable_reason(target) or ""
        assert "C compiler" in reason or "ziglang" in reason, reason
    with pytest.raises(build.BuildError, match="C compiler"):
        build.executor_path()
    monkeypatch.setenv("CC", str(_fake_cc(tmp_path, static=False)))
    assert build.unavailable_reason("host") is None, "without a static libc the host build is dynamic"
    assert not build.toolchain("host").static
    if platform.machine() == "x86_64":
        assert "libc6-dev" in (build.unavailable_reason("x86_64") or ""), "but the VM's executor must be static"


@pytest.mark.parametrize("target", ["host", "x86_64"])
def test_a_fresh_build_that_fails_the_check_blames_the_build(target: str, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    _fresh_cache(monkeypatch, tmp_path)
    monkeypatch.setenv("CC", str(_fake_cc(tmp_path, static=True)))
    if target == "x86_64" and platform.machine() != "x86_64":
        pytest.skip("the VM's executor is built natively on an x86_64 host only")
    with pytest.raises(build.BuildError) as caught:
        build.executor_path(target)
    message = str(caught.value)
    assert isinstance(caught.value, AdapterUnavailable), "an adapter that needs it cannot start: one reason"
    assert "just built by" in message and "not an ELF binary" in message and "not the cache nor your setup" in message
    assert "must be a static" not in message


def test_an_unwritable_cache_is_one_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert "cannot be written" in (build.unavailable_reason("host") or "")
    with pytest.raises(build.BuildError, match=r"cannot be written.*XDG_CACHE_HOME"):
        build.executor_path()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, bytes]]:
    """A cache holding the host and x86_64 executors (target → (cache folder, the bytes of the
    same executor built from another version of the source))."""
    built: dict[str, tuple[Path, bytes]] = {}
    with pytest.MonkeyPatch.context() as patch:
        for target in ("host", "x86_64"):
            if build.unavailable_reason(target):
                continue
            other = tmp_path_factory.mktemp("other")
            (other / "executor.c").write_bytes(build.SOURCE.read_bytes() + b"/* another version */\n")
            patch.setenv("XDG_CACHE_HOME", str(other / "cache"))
            with patch.context() as source:
                source.setattr(build, "SOURCE", other / "executor.c")
                other_bytes = build.executor_path(target).read_bytes()
            cache = tmp_path_factory.mktemp("pristine") / "cache"
            patch.setenv("XDG_CACHE_HOME", str(cache))
            build.executor_path(target)
            built[target] = (cache, other_bytes)
    return built


def _code_overwritten(data: bytes) -> bytes:
    """The ELF64 binary with the 4 KiB at its entry point zeroed: it crashes at once."""
    entry, phoff = struct.unpack_from("<QQ", data, 24)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        p_type, _, offset, vaddr, _, filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1 and vaddr <= entry < vaddr + filesz:
            at = entry - vaddr + offset
            return data[:at] + bytes(4096) + data[at + 4096:]
    raise AssertionError("no segment holds the entry point")


CORRUPTIONS: dict[str, Callable[[bytes, bytes], bytes]] = {
    "truncated": lambda data, other: data[:len(data) * 2 // 3],
    "random bytes": lambda data, other: random.Random(7).randbytes(len(data)),
    "a shell script": lambda data, other: b"#!/bin/sh\nexec cat\n",
    "code overwritten": lambda data, other: _code_overwritten(data),
    "another version": lambda data, other: other,
}


@pytest.mark.parametrize("target", ["host", "x86_64"])
@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_corrupt_cached_executor_is_rebuilt_once(how: str, target: str, pristine: dict[str, tuple[Path, bytes]],
                                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if target not in pristine:
        pytest.skip(f"no {target} executor here: {build.unavailable_reason(target)}")
    cache, other = pristine[target]
    shutil.copytree(cache, tmp_path / "cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    said: list[str] = []
    binary = build.executor_path(target, say=said.append)
    assert said == [], "the copy of a good cache is used as it is"
    good = binary.read_bytes()
    binary.write_bytes(CORRUPTIONS[how](good, other))
    assert build.executor_path(target, say=said.append) == binary
    assert len(said) == 1 and "unusable" in said[0] and "rebuilding" in said[0], said
    assert binary.read_bytes() == good, "rebuilt (builds are reproducible)"
    assert build.executor_path(target, say=said.append) == binary and len(said) == 1, "and then used as it is"


def _elf(path: Path) -> tuple[int, int, set[int]]:
    """(bits, e_machine, program header types) of an ELF file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF", f"{path} is not ELF"
    bits = 64 if data[4] == 2 else 32
    machine = struct.unpack_from("<H", data, 18)[0]
    if bits == 64:
        phoff, = struct.unpack_from("<Q", data, 32)
        phentsize, phnum = struct.unpack_from("<HH", data, 54)
    else:
        phoff, = struct.unpack_from("<I", data, 28)
        phentsize, phnum = struct.unpack_from("<HH", data, 42)
    types = {struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)}
    return bits, machine, types


PT_DYNAMIC, PT_INTERP = 2, 3
EM_386, EM_ARM, EM_X86_64, EM_AARCH64 = 3, 40, 62, 183
needs_zig = pytest.mark.skipif(importlib.util.find_spec("ziglang") is None,
                               reason="ziglang is not installed (pip install 'ashcheck[cross]')")


@needs_zig
def test_cross_build_for_aarch64_is_static() -> None:
    binary = build.executor_path("aarch64")
    bits, machine, types = _elf(binary)
    assert (bits, machine) == (64, EM_AARCH64)
    assert not types & {PT_INTERP, PT_DYNAMIC}, "static: no interpreter, no dynamic section"
    if shutil.which("file"):
        described = subprocess.run(["file", "-b", binary], capture_output=True, text=True).stdout
        assert "aarch64" in described and "statically linked" in described, described


@pytest.mark.parametrize(("target", "bits", "machine"), [
    ("x86_64", 64, EM_X86_64), pytest.param("x86", 32, EM_386, marks=needs_zig)])
def test_static_x86_builds_run_here(target: str, bits: int, machine: int) -> None:
    """The VM's executor (x86_64: the system C compiler), and a 32-bit one (x86, ziglang) that
    exercises the ILP32 code paths (placement hints in a small arena among them)."""
    if platform.machine() != "x86_64":
        pytest.skip("needs an x86_64 host")
    binary = build.executor_path(target)
    assert _elf(binary)[:2] == (bits, machine) and not _elf(binary)[2] & {PT_INTERP, PT_DYNAMIC}
    try:
        ex = Executor(binary)
    except ExecutorError as exc:
        if target == "x86":
            pytest.skip(f"this kernel does not run 32-bit binaries: {exc}")
        raise
    with ex:
        assert ex.request("info").int(3) == bits
        fd = ex.request(f"memfd_region {h(b'static')} 4096").int()
        assert ex.request(f"mmap 0 {fd} 8192 {PROT_RW} {MAP_SHARED} 0").ok
        assert ex.request("store 0 0 2a").ok and ex.request("load 0 0 1").bytes() == b"*"
        assert ex.request("load 0 4096 1") == Reply("fault", (str(SIGBUS),))
        assert ex.request(f"lseek {fd} 0x7fffffffffffffff 0").int() == 2**63 - 1, "64-bit off_t"
        assert ex.request(f"fstat {fd}").fields[1] == "4096"
        assert ex.request(f"mmap 1 {fd} 4096 {PROT_RW} {MAP_SHARED} 0 0 1").ok
        assert _addr(ex, 1)[0] == _addr(ex, 0)[0] + 8192, "a placement hint"
        assert ex.request(f"mmap 4095 {fd} 4096 {PROT_RW} {MAP_SHARED} 0").ok, "an id beyond the arena's slots"


# ---- hub -----------------------------------------------------------------------------------------
class HubProcess:
    def __init__(self, exe: Path, *args: str) -> None:
        self.sock, theirs = socket.socketpair()
        with theirs:
            self.proc = subprocess.Popen([exe, *args], stdin=theirs.fileno(), stdout=theirs.fileno())
        self.hub = Hub(self.sock, timeout=10)

    def close(self) -> int:
        self.sock.close()
        return _run_until_exit(self.proc)


@pytest.fixture
def hub(exe: Path) -> Iterator[HubProcess]:
    running = HubProcess(exe, "hub")  # the spelling init.sh and adb.py use; --hub works too
    yield running
    running.close()


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_hub_spawns_and_relays_fds(hub: HubProcess) -> None:
    c = hub.hub
    assert c.request("*", "ping") == Reply("ok")
    assert c.request("*", "spawn p0 -1").int() > 0 and c.request("*", "spawn p1 -1").ok
    assert c.request("*", "spawn p0 -1") == Reply("err", (str(EEXIST),))
    fd = c.request("p0", f"memfd_region {h(b'hub')} 4096").int()
    assert c.request("p0", f"write {fd} {h(b'0123456789')}").ok
    assert c.request("p1", f"open {h(b'/')} {O_PATH}").int() == 3
    assert c.request("p1", "close 3").ok  # a hole: fd 3 is the lowest free again

    moved = c.request("*", f"xfer p0 p1 {fd}")
    assert moved == Reply("ok", ("3",)), "the lowest free fd in the receiver"
    assert c.request("p1", f"fcntl 3 {F_GETFD} 0").int() == 1, "with FD_CLOEXEC"
    assert c.request("p1", "lseek 3 7 0").int() == 7
    assert c.request("p0", f"lseek {fd} 0 1").int() == 7, "the same open file description"
    assert c.request("p1", "fds").fields == ("0", "1", "2", "3"), "the hub's copies are closed"

    assert c.request("*", "xfer p0 p1 99") == Reply("err", (str(EBADF),))
    assert c.request("p1", "fds").fields == ("0", "1", "2", "3"), "nothing delivered"
    assert c.request("*", "xfer p0 p9 3").status == "bad"
    assert c.request("p9", "ping").status == "bad", "no such process"


def test_hub_requests_to_different_procs_run_in_parallel(hub: HubProcess, tmp_path: Path) -> None:
    c = hub.hub
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert c.request("*", "spawn p0 -1").ok and c.request("*", "spawn p1 -1").ok
    blocked = c.submit("p1", f"open {h(bytes(fifo))} {O_RDONLY}")  # waits for a writer
    assert c.request("p0", "ping") == Reply("ok"), "p0 answers while p1 blocks"
    writer = c.request("p0", f"open {h(bytes(fifo))} {O_WRONLY}")
    assert writer.ok
    assert c.wait(blocked).ok, "the writer released the reader"


def test_hub_kill_and_death_of_children(hub: HubProcess, tmp_path: Path) -> None:
    c = hub.hub
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    pid0 = c.request("*", "spawn p0 -1").int()
    pid1 = c.request("*", "spawn p1 -1").int()
    blocked = c.submit("p1", f"open {h(bytes(fifo))} {O_RDONLY}")
    assert c.request("*", "kill p1") == Reply("ok")
    with pytest.raises(ExecutorError, match=r"p1 is lost.*killed"):
        c.wait(blocked)
    assert _gone(pid1), "killed and reaped"
    assert c.request("p1", "ping").status == "bad", "forgotten after kill"
    assert c.request("*", "kill p1") == Reply("err", ("3",))

    assert c.request("p0", "exit").ok
    with pytest.raises(ExecutorError, match=r"p0 is lost.*exited with status 0"):
        c.request("p0", "ping")
    assert _gone(pid0)
    assert c.request("*", "spawn p0 -1").ok, "a dead proc's tag can be spawned again"
    assert c.request("p0", "ping").ok


@root_only
def test_hub_spawns_unprivileged_children(hub: HubProcess) -> None:
    c = hub.hub
    assert c.request("*", f"spawn p0 {NOBODY}").ok
    assert c.request("p0", "info").int(1) == NOBODY
    assert c.request("*", "spawn p1 -1").ok and c.request("p1", "info").int(1) == 0


def test_hub_exits_on_eof_and_kills_its_children(exe: Path) -> None:
    running = HubProcess(exe, "--hub")
    pids = [running.hub.request("*", f"spawn p{i} -1").int() for i in range(3)]
    running.hub.submit("p2", "read 0 1")  # p2 is busy: it waits for input on its own channel
    assert running.close() == 0
    assert all(_gone(pid) for pid in pids), "children killed and reaped"


def test_hub_exit_request(exe: Path) -> None:
    running = HubProcess(exe, "--hub")
    pid = running.hub.request("*", "spawn p0 -1").int()
    assert running.hub.request("*", "exit") == Reply("ok")
    assert running.close() == 0 and _gone(pid)


def test_hub_rejects_garbage_and_carries_on(hub: HubProcess) -> None:
    sock = hub.sock
    sock.settimeout(10)

    def say(line: bytes) -> bytes:
        sock.sendall(line + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            answer += sock.recv(1 << 16)
        return answer

    for line in (b"garbage", b" ping", b"* ping\0"):
        assert say(line).startswith(b"* - bad "), line
    for line in (b"* ", b"* bogus", b"* spawn", b"* spawn p0 x", b"* xfer p0"):
        assert say(line).startswith(b"* bad "), line
        assert say(b"* 5 " + line[2:]).startswith(b"* 5 bad "), line
    assert say(b"p3 ping").startswith(b"p3 bad ") and say(b"p3 6 ping").startswith(b"p3 6 bad ")
    assert say(b"* 12a ping").startswith(b"* - bad ")
    assert say(b"* 7 ping " + b"x" * (2 << 20)).startswith(b"* 7 bad "), "an overlong line, under its id"
    assert say(b"* ping") == b"* ok\n" and say(b"* 8 ping") == b"* 8 ok\n"


def test_a_child_that_breaks_the_protocol_is_lost_alone(hub: HubProcess) -> None:
    """A child writes a line that answers nothing it was asked (`write 1`): the hub kills it and
    answers its request `lost`; the hub and the other children go on."""
    c = hub.hub
    pid0 = c.request("*", "spawn p0 -1").int()
    assert c.request("*", "spawn p1 -1").ok
    for forged in (b"99 ok\n", b"ok\n", b"\xff\n"):
        with pytest.raises(ProcessLost, match="broke the protocol"):
            c.request("p0", f"write 1 {h(forged)}")
        assert _gone(pid0), "killed and reaped"
        with pytest.raises(ProcessLost, match="broke the protocol"):
            c.request("p0", "ping")
        assert c.request("p1", "ping") == Reply("ok") and c.request("*", "ping") == Reply("ok")
        pid0 = c.request("*", "spawn p0 -1").int()


def test_the_hub_transport_checks_the_version_and_loses_processes_alone(hub: HubProcess, tmp_path: Path) -> None:
    stale = HubTransport(hub.hub, 5.0, version="0123456789abcdef")
    with pytest.raises(TransportLost, match="not built from this ashcheck"):
        stale.spawn(0, None)
    with pytest.raises(TransportLost, match="not built from this ashcheck"):
        stale.request(0, "ping")
    t = HubTransport(hub.hub, 0.5)  # the version of this source: the hub answers it
    t.check_version()
    t.spawn(0, None)
    t.spawn(1, None)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(TransportLost, match="did not answer within the timeout; it was killed"):
        t.request(1, f"open {h(bytes(fifo))} {O_RDONLY}")  # blocks: no writer
    assert t.request(0, "ping") == Reply("ok"), "the others go on"
    assert t.request(1, "ping").status == "bad", "the hub forgot the killed process"
    t.spawn(1, None)
    assert t.request(1, "ping") == Reply("ok")
    assert t.request(0, "exit") == Reply("ok")
    with pytest.raises(TransportLost, match="p0 is lost"):
        t.request(0, "ping")
    assert t.relay_fds(1, 1, ()).value == ()
    t.close()
    assert hub.close() == 0, "close() ended the hub"


def test_hub_on_a_tty(exe: Path) -> None:
    """Like a serial port: the hub opens the device itself and makes the line raw."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)  # raw before the hub runs: no echo of what we send first
        proc = subprocess.Popen([exe, "--hub", os.ttyname(slave)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL)
        try:
            c = Hub(master, timeout=10)
            assert c.request("*", "ping") == Reply("ok")
            assert c.request("*", "spawn p0 -1").ok
            assert c.request("p0", f"readlink {h(b'/proc/self/exe')}").bytes() == bytes(exe.resolve())
            assert c.request("*", "exit") == Reply("ok")
        finally:
            assert _run_until_exit(proc) == 0
    finally:
        os.close(master)
        os.close(slave)


def test_binder_error_paths_without_a_device(hub: HubProcess) -> None:
    if Path("/dev/binder").exists():
        pytest.skip("this host has a binder device: the kernel adapter tests binder")
    c = hub.hub
    assert c.request("*", f"servicemanager {h(b'/dev/binder')}") == Reply("err", (str(ENOENT),))
    assert c.request("*", "spawn p0 -1").ok
    assert c.request("p0", f"binder_open {h(b'/dev/binder')} 1 0") == Reply("err", (str(ENOENT),))
    assert c.request("p0", f"binder_open {h(b'/dev/null')} 1 0") == Reply("err", (str(ENOTTY),))
    for line in ("binder_send 1 0", "binder_send 1 1 3 4", "binder_recv", "binder_recv 3"):
        assert c.request("p0", line).status == "bad", line
    assert c.request("p0", "fds").fields == ("0", "1", "2"), "failed opens leave no fd"


# ---- one verb table: executor.c against the Python encoders ---------------------------------------
def test_the_executor_compiles_without_warnings(tmp_path: Path) -> None:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no host C compiler")
    for extra in ([], ["-DASHCHECK_EXEC_VERSION=\"0123456789abcdef\""]):
        done = subprocess.run([cc, "-Wall", "-Wextra", "-Werror", "-O2", *extra, "-c", "-o", str(tmp_path / "x.o"),
                               str(build.SOURCE)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr


SAMPLES: list[o.Op] = [
    o.Spawn(0), o.Spawn(0, privileged=False, accepts_fds=False), o.Exit(0), o.ListFds(0), o.SetFdLimit(0, 5),
    o.CreateRegion(0, b"region", 4096), o.OpenAshmem(0), o.OpenPath(0),
    o.SetName(0, 3, b"name"), o.SetName(0, 3, None), o.GetName(0, 3), o.SetSize(0, 3, 4096), o.GetSize(0, 3),
    o.SetProtMask(0, 3, PROT_READ), o.SetProtMask(0, 3, PROT_RW), o.GetProtMask(0, 3),
    o.Pin(0, 3, 0, 4096), o.Unpin(0, 3, 4096, 0), o.GetPinStatus(0, 3, 0, 4096),
    *(o.IoctlNullArg(0, 3, cmd) for cmd in ("PIN", "UNPIN", "GET_PIN_STATUS")), o.UnknownIoctl(0, 3, 11),
    o.PurgeAllCaches(0, 3),
    o.Mmap(0, 3, 1, 4096, PROT_RW, True), o.Mmap(0, 3, 2, 8192, PROT_READ, False, 4096, noreserve=True),
    o.Mmap(0, 3, 3, 4096, PROT_RW, True, near=1, above=True), o.Mmap(0, 3, 4, 4096, PROT_RW, True, near=1),
    o.Munmap(0, 1), o.Mprotect(0, 1, PROT_READ), o.Load(0, 1, 0, 16), o.Store(0, 1, 8, b"data"), o.MapsName(0, 1),
    o.Dup(0, 3), o.Close(0, 3), o.Lseek(0, 3, 0, 1), o.Read(0, 3, 8), o.Write(0, 3, b"x"), o.Write(0, 3, b""),
    o.GetFdFlags(0, 3), o.Ftruncate(0, 3, -1), o.Fallocate(0, 3, 3, 0, 4096),
    o.BinderSend(0, 1, (3, 4)), o.BinderSend(0, 1, ()), o.BinderReply(0, 1, (3,), True),
    o.BinderReply(0, 1, (), False),
]


def _plausible(line: str) -> Reply:
    """An answer to `line` that lets every encoder go its main way (a regular file, no seals...)."""
    verb = line.split(" ")[0]
    return {"fstat": Reply("ok", (str(0o100600), "4096", "0", "0", "1")), "fcntl": Reply("ok", ("0",)),
            "readlink": Reply("ok", (h(b"/memfd:region (deleted)"),)), "info": Reply("ok", ("1", "0", "4096", "64")),
            "ioctl": Reply("ok", ("0", "00" * 256)), "load": Reply("ok", ("-",)), "read": Reply("ok", ("-",)),
            "maps_name": Reply("ok", ("-",)), "binder_send": Reply("ok", ("reply",)),
            "binder_recv": Reply("ok", ("complete",)), "sendfds": Reply("ok"), "recvfds": Reply("ok", ("4",)),
            "fds": Reply("ok", ("0", "1", "2")), "version": Reply("ok", (build.version(),)),
            }.get(verb, Reply("ok", ("3",)))


class _Recorder:
    """Stands in for the executors: records each request line (with the table that must hold its
    verb) and answers it plausibly."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def answer(self, table: str, line: str) -> Reply:
        self.lines.append((table, line))
        return _plausible(line)


class _RecordingHub(Hub):
    def __init__(self, recorder: _Recorder) -> None:
        super().__init__(-1)  # never read or written
        self.recorder, self.answers = recorder, dict[str, Reply]()

    def submit(self, proc: str, line: str, timeout: float | None = None) -> Ticket:
        ticket = Ticket(proc, str(len(self.answers)))
        self.answers[ticket.id] = self.recorder.answer("hub_ops" if proc == "*" else "ops", line)
        return ticket

    def wait(self, ticket: Ticket, timeout: float | None = None) -> Reply:
        return self.answers[ticket.id]


class _RecordingExecutor:
    def __init__(self, recorder: _Recorder) -> None:
        self.recorder = recorder

    def request(self, line: str, *, fds: object = (), timeout: float | None = None) -> Reply:
        return self.recorder.answer("ops", line)

    def request_recv_fds(self, line: str, *, fds: object = (), timeout: float | None = None) -> tuple[Reply, list[int]]:
        return self.recorder.answer("ops", line), []


class _RecordingHost(HostTransport):
    def __init__(self, recorder: _Recorder) -> None:
        super().__init__(Path("/nonexistent"), 1.0)
        self.recorder = recorder

    def spawn(self, proc: int, uid: int | None) -> None:
        if uid is not None:
            self.recorder.answer("ops", f"setuid {uid}")

    def executor(self, proc: int) -> Executor:
        return cast(Executor, _RecordingExecutor(self.recorder))


class _AshmemBinder(ExecutorAdapter):
    name, profile = "recording-ashmem", "ashmem"


class _MemfdHost(ExecutorAdapter):
    name, profile = "recording-memfd", "memfd"


def _encoders(recorder: _Recorder) -> dict[str, ExecutorAdapter]:
    """Every way an operation becomes request lines: ashmem regions with the real binder (the VM),
    ashmem regions with fds relayed by the hub (a device), memfd regions on this host."""
    binder, relay, host = _AshmemBinder(), _AshmemBinder(), _MemfdHost()
    binder.transport, binder.binder_device = HubTransport(_RecordingHub(recorder), 1.0), b"/dev/binder"
    relay.transport = HubTransport(_RecordingHub(recorder), 1.0)
    host.transport = _RecordingHost(recorder)
    for adapter in (binder, relay, host):
        adapter.capabilities = frozenset({Capability.PRIVILEGED})
    return {"ashmem+binder": binder, "ashmem+hub relay": relay, "memfd+host": host}


def test_every_operation_encodes_to_verbs_the_executor_has() -> None:
    """Each operation type, through every encoder, gives request lines whose verb and argument
    count the executor's tables (ops[], hub_ops[] in executor.c) accept; and each is encodable by
    some backend. The one gap, by design: memfd mode has no /dev/ashmem to open."""
    tables = fuzz.verb_tables(build.SOURCE.read_text())
    assert {"ping", "version", "mmap", "map_addr", "binder_send"} <= set(tables["ops"])
    assert set(tables["hub_ops"]) == {"ping", "version", "spawn", "kill", "xfer", "servicemanager", "exit"}
    assert {type(op) for op in SAMPLES} == set(o.OPS.values()), "a sample of every operation type"
    gaps: dict[str, list[str]] = {}
    for op in SAMPLES:
        encoded_by = []
        for backend, adapter in _encoders(recorder := _Recorder()).items():
            for proc in (0, 1):  # the processes an operation may name
                adapter.perform(o.Spawn(proc))
            recorder.lines.clear()
            try:
                outcome = adapter.perform(op)
            except TypeError:
                continue  # this backend has no encoding for it
            assert outcome.kind.name != "INDETERMINATE", (backend, op, outcome)
            encoded_by.append(backend)
            # (an exit on this host closes the socket; an empty fd list needs no relay)
            assert recorder.lines or isinstance(op, o.Exit | o.BinderSend | o.BinderReply), (backend, op)
            for table, line in recorder.lines:
                verb, *args = line.split(" ")
                assert verb in tables[table], f"{backend}: {op} sends {line!r}: no verb {verb} in {table}[]"
                low, high = tables[table][verb]
                assert low <= len(args) and (high < 0 or len(args) <= high), f"{backend}: {op} sends {line!r}"
                assert all(args), f"{backend}: {op} sends an empty token: {line!r}"
        if len(encoded_by) < 3:
            gaps[type(op).__name__] = sorted(set(_encoders(_Recorder())) - set(encoded_by))
    assert gaps == {"OpenAshmem": ["memfd+host"]}


def test_mmap_hints_are_encoded() -> None:
    sent: list[str] = []

    def send(proc: int, line: str) -> Reply:
        sent.append(line)
        return Reply("ok")

    from ashcheck.adapters.executor_ops import common
    for near, above, tail in ((None, False, ""), (1, True, " 1 1"), (1, False, " 1 -1")):
        common(send, o.Mmap(0, 3, 2, 4096, PROT_RW, True, noreserve=True, near=near, above=above))
        assert sent.pop() == f"mmap 2 3 4096 {PROT_RW} {MAP_SHARED | 0x4000} 0{tail}"


# ---- fuzzing (short runs; bench/run.py --only fuzz runs 10,000 lines each) -------------------------
def test_fuzzing_the_executor_finds_nothing(exe: Path) -> None:
    figures = fuzz.fuzz_executor(exe, 400, seed=int(MODULE_RUN[:8], 16))
    assert figures.lines == 400 and figures.clean, figures.examples


def test_fuzzing_the_reply_readers_finds_nothing() -> None:
    for figures in fuzz.fuzz_replies(400, seed=int(MODULE_RUN[:8], 16)):
        assert figures.lines == 400 and figures.clean, figures.examples


STAND_INS = {
    "accepts everything": ("import sys\nfor l in sys.stdin: print(l.split(' ')[0], 'ok', flush=True)", "accepted"),
    "answers twice": ("import sys\nfor l in sys.stdin: print(l.split(' ')[0], 'bad -', flush=True); "
                      "print(l.split(' ')[0], 'bad -', flush=True)", "desyncs"),
    "drops ids": ("import sys\nfor l in sys.stdin: print('bad -', flush=True)", "desyncs"),
    "dies on a NUL": ("import sys\nfor l in sys.stdin.buffer:\n  if b'\\0' in l: sys.exit(1)\n"
                      "  print(l.split(b' ')[0].decode(), 'bad -', flush=True)", "crashes"),
    "hangs on a tab": ("import sys, time\nfor l in sys.stdin.buffer:\n  if b'\\t' in l: time.sleep(60)\n"
                       "  print(l.split(b' ')[0].decode(), 'bad -', flush=True)", "hangs"),
}


@pytest.mark.parametrize("stand_in", STAND_INS, ids=STAND_INS.keys())
def test_the_executor_fuzzer_catches_a_broken_executor(stand_in: str, tmp_path: Path) -> None:
    """The fuzzer's checks can fail: stand-ins that break the protocol in one way each."""
    code, finding = STAND_INS[stand_in]
    script = tmp_path / "stand-in"
    script.write_text(f"#!{sys.executable}\n{code}\n")
    script.chmod(0o755)
    figures = fuzz.fuzz_executor(script, 40, seed=1, timeout=0.3)
    assert getattr(figures, finding) > 0, figures


# ---- binder, in the kernel adapter's VM (Linux 5.10 with binder_linux) ----------------------------
@pytest.mark.skipif(build.unavailable_reason("x86_64") is not None, reason=str(build.unavailable_reason("x86_64")))
def test_binder_fd_transfer_in_the_vm() -> None:
    """The raw binder protocol against the real driver: the host has none. Skipped without qemu."""
    qemu = pytest.importorskip("ashcheck.adapters.vm.qemu")
    fetching = pytest.importorskip("ashcheck.adapters.vm.fetch")
    if reason := qemu.unavailable_reason():
        pytest.skip(reason)
    with qemu.Vm.boot(fetching.fetch(), executor=build.executor_path("x86_64")) as vm:
        if not vm.has_binder:
            pytest.skip(f"the guest has no /dev/binder: {vm.guest}")
        c = Hub(vm.socket, timeout=30)
        dev = h(b"/dev/binder")

        def transact(sender: str, send: str, receiver: str, recv: str) -> tuple[Reply, Reply]:
            waiting = c.submit(receiver, recv)  # the receiver blocks in binder_recv meanwhile
            sent = c.request(sender, send)
            return sent, c.wait(waiting)

        assert c.request("*", f"servicemanager {dev}") == Reply("ok")
        for proc, uid, accepts in (("p0", -1, 1), ("p1", -1, 1), ("p2", NOBODY, 0)):
            assert c.request("*", f"spawn {proc} {uid}").ok
            assert c.request(proc, f"binder_open {dev} {accepts} {proc[1]}") == Reply("ok")
            assert c.request(proc, "fds").fields == ("0", "1", "2", "3"), "only the binder fd is added"
        assert c.request("p0", f"binder_open {dev} 1 0").status == "bad", "one binder fd per process"
        fd = c.request("p0", f"memfd_region {h(b'binder')} 4096").int()

        # fds forward: lowest free in the receiver, FD_CLOEXEC, the same open file description
        assert transact("p0", f"binder_send 1 1 {fd} {fd}", "p1", "binder_recv") == \
            (Reply("ok", ("reply",)), Reply("ok", ("complete", "4", "5")))
        assert c.request("p1", f"fcntl 4 {F_GETFD} 0").int() == 1
        assert c.request("p1", "lseek 5 3 0").int() == 3 and c.request("p0", f"lseek {fd} 0 1").int() == 3
        # fds in the reply: only if the caller said TF_ACCEPT_FDS; the replier completes either way
        assert transact("p0", "binder_send 1 1", "p1", "binder_recv 4") == \
            (Reply("ok", ("reply", "5")), Reply("ok", ("complete",)))
        assert transact("p0", "binder_send 1 0", "p1", "binder_recv 4") == \
            (Reply("ok", ("failed",)), Reply("ok", ("complete",)))
        # refused before delivery: the receiver still waits, an empty transaction releases it
        path_fd = c.request("p0", f"open {h(b'/')} {O_PATH}").int()
        for refused, receiver in ((f"binder_send 2 1 {fd}", "p2"), ("binder_send 1 1 99", "p1"),
                                  (f"binder_send 1 1 {path_fd}", "p1")):
            waiting = c.submit(receiver, "binder_recv")
            assert c.request("p0", refused) == Reply("ok", ("failed",)), refused
            assert c.request("p0", f"binder_send {receiver[1]} 0") == Reply("ok", ("reply",))
            assert c.wait(waiting) == Reply("ok", ("complete",)), "nothing was delivered"
        assert transact("p2", "binder_send 1 1", "p1", "binder_recv") == \
            (Reply("ok", ("reply",)), Reply("ok", ("complete",))), "an unprivileged sender"
        assert c.request("p0", "binder_send 9 0") == Reply("err", (str(ENOENT),)), "never registered"
        assert c.request("p0", "binder_send 0 0") == Reply("err", (str(EINVAL),)), "itself"
        # a dead receiver; then a new process under the same id is found again
        assert c.request("*", "kill p1").ok
        assert c.request("p0", "binder_send 1 0") == Reply("ok", ("dead",))
        assert c.request("*", "spawn p1 -1").ok and c.request("p1", f"binder_open {dev} 1 1").ok
        assert transact("p0", f"binder_send 1 1 {fd}", "p1", "binder_recv") == \
            (Reply("ok", ("reply",)), Reply("ok", ("complete", "4")))
        assert c.request("*", "exit") == Reply("ok")
