"""The peer suites, run against the implementations ashcheck tests (issue 15).

Two suites that nobody here wrote check some of what ashcheck checks; where one fails, ashcheck
must report the same behaviour (peertable.py says which rule, docs/peers.md shows the outcome):

- AOSP's `libcutils/ashmem_test.cpp` (googletest), from Debian's source of `android-platform-tools`
  (the libcutils Debian builds: 29.0.6, Android 10). Linked with Debian's own `libcutils.so` it runs
  against the `libcutils-host` implementation; built static with libcutils' own `ashmem-dev.cpp` it
  runs in the 5.10 VM against the real ashmem driver (`kernel-5.10`). peer_support/ holds the few
  Android headers a glibc system lacks (peer_support/README.md).
- The kernel's `tools/testing/selftests/memfd/memfd_test.c`, each kernel's own version from Debian's
  `linux-source-X` package, static: in the VMs of 5.10, 6.1 and 6.12 (the kernels under the
  `kernel` adapter's memfd profile) and on this host (6.12's version: the newest Debian ships) under
  the `memfd` adapter's kernel.

Sources come through apt into the cache, with private state (as the VM kernels do); builds are
cached by a hash of what goes into them. Nothing of the peers is kept in this repository.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ashcheck.adapters.vm import debian, image
from ashcheck.adapters.vm.assets import VmError, cache_root, locked

Say = Callable[[str], None]
ANDROID_SOURCE = "android-platform-tools"
LIBCUTILS = "system/core/libcutils"
LIBCUTILS_SO = Path("/usr/lib/x86_64-linux-gnu/android")  # Debian's android-libcutils
MEMFD_DIR = "tools/testing/selftests/memfd"
# each kernel's Debian suite and source package; the host runs the newest's test
KERNEL_SOURCES = {"5.10": ("bullseye", "linux-source-5.10"), "6.1": ("bookworm", "linux-source-6.1"),
                  "6.12": ("trixie", "linux-source-6.12")}
HOST_MEMFD_TEST = "6.12"
RUN_TIMEOUT = 600  # seconds for one peer run (memfd_test forks and maps a lot; TCG is slow)


@dataclass(frozen=True)
class Target:
    """One peer run: `peer` against the implementation that the matrix calls `name` (its report in
    reports/NAME; in docs/differences.json the implementation of `adapter` with `options`)."""

    name: str
    peer: str            # "ashmem_test" | "memfd_test"
    adapter: str
    options: tuple[tuple[str, str], ...]
    kernel: str | None   # the VM's kernel; None: this host
    build: str           # which build of the peer: "host-libcutils", "static-libcutils", "memfd-<version>"


TARGETS = (
    Target("libcutils-host", "ashmem_test", "libcutils-host", (), None, "host-libcutils"),
    Target("kernel-5.10", "ashmem_test", "kernel", (("kernel", "5.10"),), "5.10", "static-libcutils"),
    Target("memfd", "memfd_test", "memfd", (), None, f"memfd-{HOST_MEMFD_TEST}"),
    Target("kernel-5.10-memfd", "memfd_test", "kernel", (("kernel", "5.10"), ("regions", "memfd")), "5.10",
           "memfd-5.10"),
    Target("kernel-6.1", "memfd_test", "kernel", (("kernel", "6.1"),), "6.1", "memfd-6.1"),
    Target("kernel-6.12", "memfd_test", "kernel", (("kernel", "6.12"),), "6.12", "memfd-6.12"),
)


@dataclass(frozen=True)
class Failure:
    test: str
    where: str    # "ashmem_test.cpp:56" (googletest), or "" (memfd_test aborts without saying where)
    message: str  # the first lines of what the peer printed about it


@dataclass
class PeerRun:
    target: Target
    source: str = ""  # the package and version the peer was built from
    tests: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    status: int | None = None
    error: str = ""   # why it could not run (then tests and failures are empty)


# sources -----------------------------------------------------------------------------------------
def _root() -> Path:
    return cache_root() / "peers"


def _unpacked(marker: Path, unpack: Callable[[Path], None]) -> Path:
    """marker.parent, filled once by `unpack(tmp)` (atomically: a directory renamed into place)."""
    target = marker.parent
    if marker.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
    try:
        unpack(tmp)
        (tmp / marker.name).write_text("ok\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def android_source(say: Say) -> tuple[Path, str]:
    """libcutils' folder of Debian's android-platform-tools source (of the host's release, so that the
    test matches the host's libcutils), and 'package version'."""
    suite = debian.host_codename() or "bookworm"
    with locked(_root()):
        got = sorted((_root() / f"android-{suite}").glob("*/.unpacked"))
        if got:
            return got[-1].parent / LIBCUTILS, got[-1].parent.name
        apt = debian.Apt(_root() / f"apt-{suite}", say, suite, sources=True)
        say(f"peers: fetching the source of {ANDROID_SOURCE} ({suite})")
        files = apt.source(ANDROID_SOURCE, _root() / "downloads")
        dsc = next(f for f in files if f.suffix == ".dsc")
        version = dsc.stem.split("_", 1)[1]
        orig = next(f for f in files if ".orig.tar" in f.name)
        wanted = ("ashmem_test.cpp", "ashmem-dev.cpp", "include/cutils/ashmem.h")

        def unpack(tmp: Path) -> None:
            with tarfile.open(orig) as tar:
                for member in tar:
                    inner = member.name.split("/", 1)[-1]
                    if member.isfile() and inner.startswith(LIBCUTILS + "/") and inner.endswith(wanted):
                        tar.extract(member, tmp / "x", filter="data")
            top = next((tmp / "x").iterdir())
            (tmp / LIBCUTILS).parent.mkdir(parents=True, exist_ok=True)
            (top / LIBCUTILS).rename(tmp / LIBCUTILS)
            shutil.rmtree(tmp / "x")

        folder = _unpacked(_root() / f"android-{suite}" / f"{ANDROID_SOURCE} {version}" / ".unpacked", unpack)
        for f in files:
            f.unlink(missing_ok=True)  # the 76 MB tarball: what is needed is unpacked
        return folder / LIBCUTILS, folder.name


def memfd_source(kernel: str, say: Say) -> tuple[Path, str]:
    """The memfd selftest folder of Debian's linux-source of `kernel` (and the tree's uapi memfd.h),
    and 'package version'."""
    suite, package = KERNEL_SOURCES[kernel]
    with locked(_root()):
        got = sorted((_root() / f"linux-{kernel}").glob("*/.unpacked"))
        if got:
            return got[-1].parent / MEMFD_DIR, got[-1].parent.name
        # the host's suite shares its apt state with android_source(), which needs source lists too
        apt = debian.Apt(_root() / f"apt-{suite}", say, suite, sources=suite == debian.host_codename())
        name, version = debian.newest(apt.versions(re.escape(package)))
        say(f"peers: fetching {name} {version} ({suite})")
        downloads = _root() / "downloads"
        deb = apt.download(name, version, downloads)

        def unpack(tmp: Path) -> None:  # tar's own extraction: Python's tarfile takes minutes on 1 GB of .xz
            top = f"linux-source-{kernel}"
            wanted = [f"{top}/{MEMFD_DIR}/{f}" for f in ("memfd_test.c", "common.c", "common.h")]
            wanted.append(f"{top}/include/uapi/linux/memfd.h")
            script = (f"dpkg-deb --fsys-tarfile \"$0\" | tar xOf - ./usr/src/{top}.tar.xz"
                      f" | tar xJf - -C \"$1\" --strip-components=1 {' '.join(wanted)}")
            done = subprocess.run(["sh", "-c", script, str(deb), str(tmp)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise VmError(f"unpacking {deb.name} failed: {done.stderr.strip()[-400:]}")

        folder = _unpacked(_root() / f"linux-{kernel}" / f"{name} {version}" / ".unpacked", unpack)
        deb.unlink(missing_ok=True)
        return folder / MEMFD_DIR, folder.name


# builds ------------------------------------------------------------------------------------------
def _support() -> Path:
    return Path(str(resources.files("ashcheck.conformance").joinpath("peer_support")))


def _compiler(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise VmError(f"`{tool}` not found: the peers are built with the host's compilers (apt install g++ "
                      "libgtest-dev android-libcutils-dev)")
    return path


def _cached_build(name: str, command: list[str], inputs: list[Path], say: Say) -> Path:
    """Run `command` (its output `-o OUT` appended) once per distinct inputs and command; the binary."""
    digest = hashlib.sha256(" ".join(command).encode())
    for path in inputs:
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                digest.update(f.name.encode() + f.read_bytes())
    version = subprocess.run([command[0], "--version"], capture_output=True, text=True, check=False).stdout
    digest.update(version.encode())
    out = _root() / "bin" / f"{name}-{digest.hexdigest()[:16]}"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    say(f"peers: building {name}")
    tmp = out.with_name(out.name + f".{os.getpid()}")
    done = subprocess.run([*command, "-o", str(tmp)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-12:])
        raise VmError(f"building {name} failed:\n{tail}")
    tmp.rename(out)
    return out


def build(which: str, say: Say) -> tuple[Path, str]:
    """The binary of one build of a peer (Target.build), and its source's 'package version'."""
    support = _support()
    if which in ("host-libcutils", "static-libcutils"):
        src, version = android_source(say)
        common = ["-std=c++17", "-O1", "-include", str(support / "prelude.h"), "-I", str(support),
                  "-I", str(src / "include"), "-I", "/usr/include/android"]
        if which == "host-libcutils":  # Debian's own libcutils.so: the libcutils-host implementation
            command = [_compiler("g++"), *common, str(src / "ashmem_test.cpp"), "-L", str(LIBCUTILS_SO), "-lcutils",
                       "-lgtest", "-lgtest_main", "-pthread", f"-Wl,-rpath,{LIBCUTILS_SO}"]
            inputs = [src / "ashmem_test.cpp", support, LIBCUTILS_SO / "libcutils.so.0"]
        else:  # libcutils' ashmem-dev.cpp, the device's code, static for the guest
            command = [_compiler("g++"), "-static", *common, str(src / "ashmem_test.cpp"), str(src / "ashmem-dev.cpp"),
                       "-lgtest", "-lgtest_main", "-pthread"]
            inputs = [src / "ashmem_test.cpp", src / "ashmem-dev.cpp", support]
        return _cached_build(f"ashmem_test-{which}", command, inputs, say), version
    kernel = which.removeprefix("memfd-")
    src, version = memfd_source(kernel, say)
    tree = src.parents[3]
    # 6.3+ tests use MFD_EXEC, newer than the host's headers: the tree's own uapi header gives it
    # (-I of the tree's include/uapi would pull in kernel-internal headers)
    newer = "MFD_EXEC" in (src / "memfd_test.c").read_text()
    uapi = ["-include", str(tree / "include/uapi/linux/memfd.h")] if newer else []
    command = [_compiler("gcc"), "-static", "-O2", "-D_FILE_OFFSET_BITS=64", *uapi,
               "-include", str(support / "line_buffered.h"), str(src / "memfd_test.c"), str(src / "common.c")]
    return _cached_build(f"memfd_test-{kernel}", command, [src, tree / "include", support], say), version


# runs --------------------------------------------------------------------------------------------
def run_host(binary: Path) -> tuple[int, str]:
    """Run a peer binary on this host (in a temp dir it may litter); its status and output."""
    with tempfile.TemporaryDirectory(prefix="ashcheck-peer-") as tmp:
        done = subprocess.run([str(binary)], cwd=tmp, capture_output=True, text=True, errors="replace",
                              timeout=RUN_TIMEOUT, check=False, env={**os.environ, "GTEST_COLOR": "no"})
    return done.returncode, done.stdout + done.stderr


def run_in_vm(kernel: str, binaries: dict[str, Path], say: Say) -> Iterator[tuple[str, int, str]]:
    """Boot `kernel`'s VM with the binaries as /peers/NAME and run each: (name, status, output)."""
    from ashcheck.adapters.vm.fetch import fetch
    from ashcheck.adapters.vm.qemu import Vm

    assets = fetch(say, kernel=kernel)
    hub = image.hub_script("peer-hub.sh", (_support() / "peer-hub.sh").read_bytes())
    extra = {f"peers/{name}": path.read_bytes() for name, path in binaries.items()}
    with Vm.boot(assets, executor=hub, extra=extra, memory_mb=1024) as vm:
        for name in binaries:
            say(f"peers: running {name} in the {kernel} VM")
            vm.socket.sendall(f"* run {name}\n".encode())
            lines = []
            while not (line := vm.readline(RUN_TIMEOUT)).startswith("* exit "):
                if not line.startswith("| "):
                    raise VmError(f"the peer hub said {line!r}")
                lines.append(line[2:])
            yield name, int(line.split()[2]), "\n".join(lines)


# what the output says ----------------------------------------------------------------------------
GTEST_RUN = re.compile(r"^\[ RUN      \] (\S+)")
GTEST_FAILURE = re.compile(r"^(?:.*/)?([^/\s]+:\d+): Failure$")
MEMFD_TEST = re.compile(r"^memfd(?:-hugetlb)?: (\S.*)$")


def parse_gtest(output: str) -> tuple[list[str], list[Failure]]:
    """googletest's text: the tests run, and each failed assertion (its site and first lines)."""
    tests: list[str] = []
    failures: list[Failure] = []
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if m := GTEST_RUN.match(line):
            tests.append(m.group(1))
        elif (m := GTEST_FAILURE.match(line)) and tests:
            body = []
            for more in lines[i + 1:]:
                if more.startswith("[") or GTEST_FAILURE.match(more):
                    break
                body.append(more.strip())
            failures.append(Failure(tests[-1], m.group(1), " ".join(body[:6])))
    return tests, failures


def parse_memfd(output: str, status: int) -> tuple[list[str], list[Failure]]:
    """memfd_test's text: one `memfd: NAME` line per test; it aborts at the first failure, so a
    non-zero status is a failure of the last test begun, said in the lines after its name."""
    tests: list[str] = []
    after: list[str] = []
    for line in output.splitlines():
        if m := MEMFD_TEST.match(line):
            name = m.group(1).strip()
            if name not in tests and name != "DONE":  # DONE: the end, not a test
                tests.append(name)
            after = []
        elif line.strip():
            after.append(line.strip())
    if status == 0:
        return tests, []
    return tests, [Failure(tests[-1] if tests else "(start)", "", " ".join(after[:6]) or f"exit status {status}")]


def run(targets: tuple[Target, ...] = TARGETS, say: Say = print) -> list[PeerRun]:
    """Fetch, build and run each target's peer. A target that cannot be built or run says why in
    its PeerRun.error; the others go on."""
    runs = {t.name: PeerRun(t) for t in targets}
    binaries: dict[str, tuple[Path, str]] = {}
    for t in targets:
        try:
            binaries[t.build] = binaries.get(t.build) or build(t.build, say)
            runs[t.name].source = binaries[t.build][1]
        except (VmError, OSError, StopIteration, subprocess.SubprocessError) as exc:
            runs[t.name].error = f"could not build {t.peer}: {exc}"

    def record(t: Target, status: int, output: str) -> None:
        parse = parse_gtest(output) if t.peer == "ashmem_test" else parse_memfd(output, status)
        runs[t.name].tests, runs[t.name].failures = parse
        runs[t.name].status = status
        if not runs[t.name].tests:
            runs[t.name].error = f"{t.peer} ran no test (status {status}): {output.strip()[-300:]}"

    ready = [t for t in targets if not runs[t.name].error]
    for t in (t for t in ready if t.kernel is None):
        say(f"peers: running {t.peer} on this host ({t.name})")
        try:
            record(t, *run_host(binaries[t.build][0]))
        except (OSError, subprocess.SubprocessError) as exc:
            runs[t.name].error = f"could not run {t.peer}: {exc}"
    for kernel in dict.fromkeys(t.kernel for t in ready if t.kernel is not None):
        here = {t.peer: t for t in ready if t.kernel == kernel}
        try:
            for name, status, output in run_in_vm(kernel, {p: binaries[t.build][0] for p, t in here.items()}, say):
                record(here[name], status, output)
        except (VmError, OSError) as exc:
            for t in here.values():
                runs[t.name].error = runs[t.name].error or f"could not run {t.peer} in the {kernel} VM: {exc}"
    return [runs[t.name] for t in targets]
