"""The `adb` adapter without a device: a fake `adb` that runs the "device" on this host
(fake_adb.py). A run pushes the executor of the ABI the device reports, chmods it and speaks the
hub protocol to it over `adb shell`, as on a device; for arm64-v8a and armeabi-v7a the Android
binaries themselves run, under qemu-user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ashcheck.adapters.adb import AdbAdapter
from ashcheck.conformance.selftest.fake_adb import QEMU, install
from ashcheck.spec import ops as o


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """The fake device's /data/local/tmp."""
    (tmp_path / "device").mkdir()
    return tmp_path / "device"


@pytest.fixture
def fake_adb(tmp_path: Path, device: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`adb` in tmp_path/bin, first on PATH (the CLI checks PATH before it reads options)."""
    for key, value in install(tmp_path).items():
        monkeypatch.setenv(key, value)
    return tmp_path / "bin" / "adb"


def ashcheck(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ashcheck.conformance.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


def run(report: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return ashcheck("run", "--adapter", "adb", "--profile", "quick", "--report", str(report),
                    *(x for opt in options for x in ("--adapter-option", opt)))


def executors_under(root: Path) -> list[int]:
    """Live processes whose executable lies under root (the pushed executor and its children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "exe").startswith(str(root)):
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or a kernel thread
            pass
    return pids


def test_without_adb_the_adapter_says_which_tool_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory
    reason = AdbAdapter.unavailable_reason()
    assert reason is not None and "`adb`" in reason
    done = run(tmp_path / "report")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "adb" in done.stderr and "not on PATH" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "report" / "report.json").exists()


def test_an_adb_option_naming_no_executable_is_a_usage_error(tmp_path: Path, fake_adb: Path) -> None:
    done = run(tmp_path / "report", f"adb={tmp_path / 'no-such-adb'}")
    assert done.returncode == 2 and "no-such-adb" in done.stderr, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("setting, options, says", [
    ({"FAKE_ADB_DEVICES": "0"}, [], "no Android device"),
    ({"FAKE_ADB_STATE": "offline"}, [], "offline"),
    ({"FAKE_ADB_DEVICES": "2"}, [], "serial="),
    ({"FAKE_ADB_DEVICES": "2"}, ["serial=emulator-9999"], "emulator-9999"),
    ({"FAKE_ADB_ABI": "mips"}, [], "ABI 'mips'"),
    ({"FAKE_ADB_NOEXEC": "1"}, [], "Permission denied"),
])
def test_a_device_that_cannot_run_exits_2_naming_the_problem(
        setting: dict[str, str], options: list[str], says: str, tmp_path: Path, fake_adb: Path,
        device: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in setting.items():
        monkeypatch.setenv(key, value)
    done = run(tmp_path / "report", f"adb={fake_adb}", *options)
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "could not start" in output and says in output
    assert output.count(says) <= 2, "the reason is said once, not once per test"
    assert list(device.iterdir()) == []  # nothing was pushed, or it was removed


def test_the_adb_option_suffices_without_adb_on_path(tmp_path: Path, fake_adb: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # sh for the fake, no adb
    monkeypatch.setenv("FAKE_ADB_DEVICES", "0")  # fails fast once the fake is reached
    done = run(tmp_path / "report", f"adb={fake_adb}")
    assert done.returncode == 2 and "no Android device is ready" in done.stdout + done.stderr, done


def test_a_run_through_the_fake_device_passes_and_leaves_nothing_behind(
        tmp_path: Path, fake_adb: Path, device: Path) -> None:
    done = run(tmp_path / "report", f"adb={fake_adb}", "profile=memfd")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["adapter"] == "adb" and report["profile"] == "memfd"
    assert {"fd-transfer", "multi-process", "maps-name"} <= set(report["capabilities"])
    statuses = [r["status"] for r in report["results"]]
    assert "fail" not in statuses and statuses.count("pass") >= 30, statuses
    # the whole adb path ran: the executor was pushed, made executable, and served the hub
    log = (tmp_path / "adb.log").read_text()
    remote = next(line.split()[-1] for line in log.splitlines() if line.startswith("-s emulator-5554 push "))
    for step in (f"shell chmod 755 {remote}", f"shell -T {remote} hub", f"shell rm -f {remote}"):
        assert f"-s emulator-5554 {step}\n" in log, log
    # no leaks: no executor runs any more, and the binary is gone from the device
    assert executors_under(device) == []
    assert list(device.iterdir()) == []


def test_close_ends_the_hub_and_its_executors_and_removes_the_binary(fake_adb: Path, device: Path) -> None:
    adapter = AdbAdapter(adb=str(fake_adb), profile="memfd")
    adapter.start()
    try:
        assert adapter.profile == "memfd"
        for proc in (1, 2):
            assert adapter.perform(o.Spawn(proc, privileged=False)).succeeded
        assert len(executors_under(device)) == 3  # the hub and one executor per process
    finally:
        adapter.close()
    adapter.close()  # a second close is harmless
    assert executors_under(device) == []
    assert list(device.iterdir()) == []


def test_a_hub_that_dies_is_started_again_for_the_next_test_case(fake_adb: Path, device: Path) -> None:
    """The device's hub killed (adb shell gone, the device rebooted): the call in flight is lost,
    the next test case starts a new `adb shell` hub and goes on; nothing is left behind."""
    import signal

    from ashcheck.spec.outcome import Kind

    adapter = AdbAdapter(adb=str(fake_adb), profile="memfd")
    adapter.start()
    try:
        assert adapter.perform(o.Spawn(1)).succeeded
        for pid in executors_under(device):
            os.kill(pid, signal.SIGKILL)
        assert adapter.perform(o.CreateRegion(1, b"x", 4096)).kind is Kind.INDETERMINATE
        adapter.reset()
        assert adapter.restarts == 1
        assert adapter.perform(o.Spawn(1)).succeeded
        assert adapter.perform(o.CreateRegion(1, b"x", 4096)).succeeded
    finally:
        adapter.close()
    assert executors_under(device) == []


def test_executors_under_finds_a_running_executor(device: Path) -> None:
    """The leak check above can fail: it sees an executor that runs from the device directory."""
    from ashcheck.adapters.build import executor_path

    exe = device / "ashcheck-exec"
    exe.write_bytes(executor_path("x86_64").read_bytes())
    exe.chmod(0o755)
    hub = subprocess.Popen([str(exe), "hub"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert executors_under(device) == [hub.pid]
    finally:
        hub.communicate(timeout=10)  # EOF: the hub exits
    assert executors_under(device) == []


@pytest.mark.parametrize("abi", sorted(QEMU))
def test_the_android_binaries_run_the_whole_path_under_emulation(
        abi: str, tmp_path: Path, fake_adb: Path, device: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The aarch64 and armv7 executors, as a device runs them (qemu-user here): handshake, the
    hub, spawned processes, memfd regions, fd passing; armv7 with 32-bit longs."""
    from ashcheck.adapters.build import unavailable_reason

    for key, value in install(tmp_path, abi).items():
        monkeypatch.setenv(key, value)
    if reason := unavailable_reason({"arm64-v8a": "aarch64", "armeabi-v7a": "armv7"}[abi]):
        pytest.skip(reason)
    adapter = AdbAdapter(adb=str(fake_adb), profile="memfd", stand_in="qemu-user")
    adapter.start()
    try:
        assert adapter.long_bits == (32 if abi == "armeabi-v7a" else 64) and adapter.page_size == 4096
        assert adapter.identity()["abi"] == abi and "stand-in" in adapter.identity()["model"]
        for proc in (0, 1):
            assert adapter.perform(o.Spawn(proc, privileged=False)).succeeded
        fd = adapter.perform(o.CreateRegion(0, b"emulated", 4096))
        assert fd.succeeded and isinstance(fd.value, int)
        assert adapter.perform(o.Mmap(0, fd.value, 0, 4096, 3, True, 0)).succeeded
        assert adapter.perform(o.Store(0, 0, 8, b"arm")).succeeded
        sent = adapter.perform(o.BinderSend(0, 1, (fd.value,)))
        assert sent.succeeded and isinstance(sent.value, tuple) and len(sent.value) == 1, sent
        assert adapter.perform(o.Mmap(1, sent.value[0], 1, 4096, 1, True, 0)).succeeded
        assert adapter.perform(o.Load(1, 1, 8, 3)).value == b"arm"
    finally:
        adapter.close()
    assert list(device.iterdir()) == []
