"""The kernel adapter's VM: the cache is checked, the guest boots and answers, the real drivers are
there, and no qemu is ever left behind — after a pass, an exception, a dropped reference, a boot
that fails, and a Python process that is interrupted or killed.

Skipped where qemu-system-x86_64 is missing. The first run downloads Debian's 5.10 kernel (≈55 MB)
into the user's cache; later runs reuse it.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ashcheck.adapters.vm import fetch as fetching
from ashcheck.adapters.vm import image, qemu
from ashcheck.adapters.vm.assets import VmAssets, VmError, cache_root, read_manifest

pytestmark = pytest.mark.skipif(qemu.unavailable_reason() is not None, reason=str(qemu.unavailable_reason()))


def qemu_processes(*, parent: int | None = None, session: int | None = None) -> list[int]:
    """pids of qemu-system processes with that parent or in that session. A zombie counts with
    its parent (which failed to wait for it), not by session: an orphan's zombie is init's to reap,
    and some container inits never do."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session …
        zombie = fields[0] == "Z"
        if comm.startswith("qemu-system") and (int(fields[1]) == parent or (int(fields[3]) == session and not zombie)):
            found.append(int(entry.name))
    return found


@pytest.fixture
def no_qemu_left() -> Iterator[None]:
    """The test leaves no qemu child behind (beyond those running before it: the shared `vm`)."""
    before = set(qemu_processes(parent=os.getpid()))
    yield
    assert set(qemu_processes(parent=os.getpid())) <= before


@pytest.fixture(scope="module")
def assets() -> VmAssets:
    return fetching.fetch()


@pytest.fixture(scope="module")
def executor() -> Path:
    """The executor when it can be built here; else the shell stand-in, which answers `* ping`."""
    try:
        from ashcheck.adapters.build import executor_path  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return image.standin_executor()
    return Path(executor_path("x86_64"))


@pytest.fixture(scope="module")
def vm(assets: VmAssets, executor: Path) -> Iterator[qemu.Vm]:
    with qemu.Vm.boot(assets, executor=executor) as booted:
        yield booted
    assert booted.proc.pid not in qemu_processes(parent=os.getpid())


# the cache ----------------------------------------------------------------------------------------
def test_fetch_again_only_verifies_checksums(assets: VmAssets) -> None:
    before = {p: p.stat().st_mtime_ns for p in (assets.kernel, assets.busybox, *assets.modules)}
    lines: list[str] = []
    again = fetching.fetch(lines.append)
    assert again == assets
    assert lines and all("cached, checksums verified" in line for line in lines), lines
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_a_corrupted_file_is_rebuilt(assets: VmAssets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A private copy of the cache, so other tests (other xdist workers) keep booting from the real one.
    copy = tmp_path / "ashcheck" / "vm"
    copy.mkdir(parents=True)
    for name in ("manifest.json", "busybox", "kernel"):
        source = cache_root() / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy / name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with open(copy / "busybox", "r+b") as handle:
        handle.seek(100)
        handle.write(b"corrupted")
    lines: list[str] = []
    rebuilt = fetching.fetch(lines.append)
    assert any("busybox is missing or corrupted; rebuilding" in line for line in lines), lines
    assert rebuilt.busybox.read_bytes() == assets.busybox.read_bytes()
    # The kernel stage detects the same way; its rebuild would download the package again, which
    # is not this test's business: record that it is asked for, and give the copy back.
    (copy / "kernel" / "vmlinux").write_bytes(b"not a kernel")
    asked: list[str] = []

    def rebuild_kernel(*args: object) -> dict[str, object]:
        asked.append("kernel")
        shutil.copy2(assets.kernel, copy / "kernel" / "vmlinux")
        return read_manifest(copy)["kernel"]  # type: ignore[no-any-return]

    monkeypatch.setattr(fetching, "_build_kernel", rebuild_kernel)
    fetching.fetch()
    assert asked == ["kernel"]


def test_initramfs_is_cached_by_its_inputs(assets: VmAssets, executor: Path, tmp_path: Path) -> None:
    first = image.build(assets, executor)
    assert image.build(assets, executor) == first
    other = tmp_path / "other-exec"
    other.write_bytes(executor.read_bytes() + b"\n# changed\n")
    assert image.build(assets, other) != first


def test_an_executor_the_guest_cannot_run_is_refused(assets: VmAssets) -> None:
    dynamic = Path(sys.executable).resolve()  # a dynamically linked program
    with pytest.raises(VmError, match="static x86_64"):
        image.build(assets, dynamic)


def test_newc_archive_lists_what_cpio_reads(tmp_path: Path) -> None:
    if shutil.which("cpio") is None:
        pytest.skip("cpio not installed: nothing to compare the archive with")
    archive = image.newc([image.Entry("bin", 0o40755), image.Entry("bin/hello", 0o100644, b"hi\n"),
                          image.Entry("bin/sh", 0o120777, b"busybox")])
    listed = subprocess.run(["cpio", "-it", "--quiet"], input=archive, capture_output=True, check=True)
    assert listed.stdout.decode().split() == ["bin", "bin/hello", "bin/sh"]


# booting -------------------------------------------------------------------------------------------
def test_boot_and_ping(vm: qemu.Vm) -> None:
    assert vm.alive
    assert 0 < vm.boot_seconds < 60
    assert vm.ping() < 1.0
    assert vm.guest["release"].startswith("5.10.0-")
    assert vm.guest["failed"] == "", f"modules that did not load: {vm.guest['failed']}"


def test_guest_has_the_real_drivers(vm: qemu.Vm) -> None:
    assert vm.has_ashmem, "no /dev/ashmem in the guest"
    assert vm.has_binder, "no /dev/binder in the guest"


def test_executors_in_the_guest_open_the_devices(vm: qemu.Vm, executor: Path) -> None:
    if executor == image.standin_executor():
        pytest.skip("the executor cannot be built here (no ashcheck.adapters.build): only the stand-in hub runs")
    # The hub protocol of executor.c, spoken directly: `* spawn`, then requests tagged with the process.
    for uid in (-1, 65534):  # root, and an unprivileged process (the guest sets Android's 0666 modes)
        spawned = vm.request(f"* spawn p0 {uid}")
        assert spawned.startswith("* ok "), f"spawn as uid {uid}: {spawned}\n{vm.console_tail()}"
        for device in (b"/dev/ashmem", b"/dev/binder"):
            opened = vm.request(f"p0 open {device.hex()} 2")  # O_RDWR
            assert opened.startswith("p0 ok "), f"uid {uid}, open {device.decode()}: {opened}"
        assert vm.request("* kill p0") == "* ok"


@pytest.mark.usefixtures("no_qemu_left")
def test_a_garbage_kernel_fails_with_the_console_tail(assets: VmAssets, executor: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "vmlinux"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(VmError, match="did not boot") as failure:
        qemu.Vm.boot(replace(assets, kernel=garbage), executor=executor, timeout=30)
    assert "qemu said" in str(failure.value) or "kernel console" in str(failure.value)


@pytest.mark.usefixtures("no_qemu_left")
def test_a_hung_boot_is_killed_after_the_timeout(assets: VmAssets, executor: Path) -> None:
    start = time.monotonic()
    with pytest.raises(VmError, match="qemu was killed"):
        qemu.Vm.boot(assets, executor=executor, timeout=0.5)
    assert time.monotonic() - start < 10


# no qemu outlives its owner ---------------------------------------------------------------------------
@pytest.mark.usefixtures("no_qemu_left")
def test_no_qemu_after_an_exception_midway(assets: VmAssets, executor: Path) -> None:
    workdir = None
    with pytest.raises(RuntimeError), qemu.Vm.boot(assets, executor=executor) as vm:
        workdir = vm.workdir
        raise RuntimeError("a test failing while the VM runs")
    assert workdir is not None and not workdir.exists()


def test_no_qemu_after_the_vm_is_dropped(assets: VmAssets, executor: Path) -> None:
    vm = qemu.Vm.boot(assets, executor=executor)
    pid = vm.proc.pid
    del vm
    gc.collect()
    assert pid not in qemu_processes(parent=os.getpid())


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ashcheck.adapters.vm.fetch import fetch
    from ashcheck.adapters.vm.qemu import Vm
    vm = Vm.boot(fetch(), executor=Path(sys.argv[1]))
    print(vm.proc.pid, vm.workdir, flush=True)
    time.sleep(120)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_no_qemu_after_the_owning_python_gets(sig: signal.Signals, assets: VmAssets, executor: Path) -> None:
    # SIGINT unwinds Python (the finalizer shuts qemu down); SIGTERM and SIGKILL end it at once
    # (the kernel kills qemu: PR_SET_PDEATHSIG). The child has its own session to look qemu up by.
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(executor)], stdout=subprocess.PIPE,
                             start_new_session=True)
    try:
        assert child.stdout is not None
        booted = child.stdout.readline().decode().split()  # qemu's pid, the VM's temp dir
        assert len(booted) == 2 and int(booted[0]) in qemu_processes(session=child.pid), "the child booted no VM"
        workdir = Path(booted[1])
        child.send_signal(sig)
        child.wait(30)
        deadline = time.monotonic() + 10
        while qemu_processes(session=child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert qemu_processes(session=child.pid) == []
        qemu._sweep_workdirs()  # what the next boot does first: the dead child's temp dir goes
        assert not workdir.exists()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


@pytest.fixture
def binder_only(assets: VmAssets, tmp_path: Path) -> Path:
    """The modules of the 5.10 guest without ashmem_linux.ko: a kernel with binder only."""
    modules = tmp_path / "modules"
    modules.mkdir()
    for ko in assets.modules:
        if "ashmem" not in ko.name:
            shutil.copy2(ko, modules / ko.name)
    return modules


def test_a_kernel_with_binder_only_runs_the_memfd_profile(assets: VmAssets, binder_only: Path,
                                                           tmp_path: Path) -> None:
    """A user's kernel without ashmem (as every 6.x kernel is): the adapter probes the guest, runs
    the memfd profile with fd transfer through the real binder, and the conformance passes."""
    modules = binder_only
    report = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "ashcheck.conformance.cli", "run", "--adapter", "kernel",
                           "--adapter-option", f"kernel={assets.kernel}", "--adapter-option", f"modules={modules}",
                           "--profile", "quick", "--report", str(report)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    meta = json.loads((report / "report.json").read_text())
    assert meta["profile"] == "memfd"
    assert "ashmem-device" not in meta["capabilities"] and "fd-transfer" in meta["capabilities"]
    passed = {r["rule"] for r in meta["results"] if r["status"] == "pass"}
    assert {"binder.fd.cloexec", "binder.fd.lowest-free", "memfd.mmap.private-cow"} <= passed, sorted(passed)


def test_5_10_lets_a_merged_mapping_past_the_future_write_seal(assets: VmAssets, binder_only: Path) -> None:
    """What the spec's memfd.seal.merge-bypass rule records, as Debian's 5.10.223 does it: a mapping
    made after F_SEAL_FUTURE_WRITE, placed next to an older one of the same prot and file-contiguous
    with it, is merged into it before shmem_mmap can check the seal, so it can be made writable,
    and a new writable one can be made."""
    from ashcheck.adapters.kernel import KernelAdapter
    from ashcheck.conformance.harness import Harness
    from ashcheck.spec import ops as o
    from ashcheck.spec.outcome import ok

    adapter = KernelAdapter(kernel=str(assets.kernel), modules=str(binder_only))
    adapter.start()
    try:
        assert adapter.profile == "memfd"
        h, page = Harness(adapter), 4096
        h.step(o.Spawn(0))
        # the sequence the suite found: a hole of 4 pages, filled by map 1; map 2 lands just below
        hole = h.step(o.CreateRegion(0, b"hole", 4 * page)).value
        h.step(o.Mmap(0, hole, 0, 4 * page, 3, True, 0))
        h.step(o.Munmap(0, 0))
        fd = h.step(o.CreateRegion(0, b"sealed", 4 * page)).value
        h.step(o.Mmap(0, fd, 1, 4 * page, 1, True, page))  # read-only, before the seal
        h.step(o.SetProtMask(0, fd, 1))  # F_SEAL_FUTURE_WRITE
        h.step(o.Mmap(0, fd, 2, page, 1, True, 0))  # file-contiguous with map 1
        assert h.step(o.Mprotect(0, 2, 3)) == ok(None), "the seal held: has this kernel been fixed?"
        assert h.step(o.Store(0, 2, 0, b"past the seal")) == ok(None)
        h.step(o.Spawn(1))
        fd = h.step(o.CreateRegion(1, b"sealed", 4 * page)).value
        h.step(o.Mmap(1, fd, 3, 3 * page, 3, True, page))  # writable, before the seal
        h.step(o.SetProtMask(1, fd, 1))
        assert h.step(o.Mmap(1, fd, 4, page, 3, True, 0)) == ok(None)  # writable, after it
    finally:
        adapter.close()
