"""Self-tests of the native executor (adapters/executor.c), its build cache (adapters/build.py) and
its Python clients (adapters/channel.py), on this host: memfd regions, faults, fd transfer by
SCM_RIGHTS, hostile input, process lifetime, cross builds and the hub. Binder needs a binder device
and is exercised in the VM (the kernel adapter); here only its error paths run.

No test may leave an executor process or an fd behind: `no_leftovers` checks /proc after each test
(and the module fixture once more at the end). Executors are recognised by a marker in their
environment, so executors of other tests running in the same pytest-xdist worker do not count.
"""

from __future__ import annotations

import contextlib
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

import pytest

from ashcheck.adapters import build
from ashcheck.adapters.channel import Executor, ExecutorError, Hub, Reply

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


def test_sendfds_needs_a_socket(exe: Path) -> None:
    done = subprocess.run([exe], input=b"sendfds 0\nping\n", capture_output=True, timeout=10)
    assert done.stdout == f"err {ENOTSOCK}\nok\n".encode(), "over pipes everything but fd passing works"
    assert done.returncode == 0, "exit(0) on EOF"


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


@needs_zig
@pytest.mark.parametrize(("target", "bits", "machine"), [("x86_64", 64, EM_X86_64), ("x86", 32, EM_386)])
def test_static_x86_builds_run_here(target: str, bits: int, machine: int) -> None:
    """The VM's executor (x86_64), and a 32-bit one (x86) that exercises the ILP32 code paths."""
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

    for line in (b"garbage", b" ping", b"* ", b"* bogus", b"* spawn", b"* spawn p0 x", b"* ping\0", b"* xfer p0"):
        assert say(line).startswith(b"* bad "), line
    assert say(b"p3 ping").startswith(b"p3 bad ")
    assert say(b"* ping " + b"x" * (2 << 20)).startswith(b"* bad ")
    assert say(b"* ping") == b"* ok\n"


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


# ---- binder, in the kernel adapter's VM (Linux 5.10 with binder_linux) ----------------------------
@needs_zig
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
