"""The `adb` adapter without a device: a fake `adb` that runs the "device" on this host.

The fake (FAKE_ADB below) lists FAKE_ADB_DEVICES devices in state FAKE_ADB_STATE, reports ABI
FAKE_ADB_ABI, and maps the device's /data/local/tmp onto FAKE_ADB_ROOT: `push` copies there,
`shell chmod` is ignored if FAKE_ADB_NOEXEC is set, and `shell` runs the command locally with sh
on adb's own stdin/stdout, in a child process (as on a device, killing `adb` does not kill what it
started). So a run pushes the x86_64 executor, chmods it and speaks the hub protocol to it over
`adb shell`, as on a device. Every call is logged to FAKE_ADB_LOG.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ashcheck.adapters.adb import AdbAdapter
from ashcheck.spec import ops as o

FAKE_ADB = '''
import os, shutil, subprocess, sys

env, args = os.environ, sys.argv[1:]
with open(env["FAKE_ADB_LOG"], "a") as log:
    print(*args, file=log)
serials = [f"emulator-{5554 + 2 * i}" for i in range(int(env.get("FAKE_ADB_DEVICES", "1")))]
state = env.get("FAKE_ADB_STATE", "device")
if args == ["devices"]:
    print("List of devices attached", *(f"{s}\\t{state}" for s in serials), sep="\\n")
    sys.exit(0)
if args[:1] == ["-s"]:
    if args[1] not in serials:
        sys.exit(f"adb: device '{args[1]}' not found")
    args = args[2:]
elif len(serials) != 1:
    sys.exit("adb: more than one device/emulator" if serials else "adb: no devices/emulators found")
if state != "device":
    sys.exit(f"adb: device {state}")
here = lambda path: path.replace("/data/local/tmp", env["FAKE_ADB_ROOT"])
if args[0] == "push":
    shutil.copyfile(args[1], here(args[2]))
    print(f"{args[1]}: 1 file pushed")
elif args[:3] == ["shell", "getprop", "ro.product.cpu.abi"]:
    print(env.get("FAKE_ADB_ABI", "x86_64"), end="\\r\\n")
elif args[:2] == ["shell", "chmod"] and env.get("FAKE_ADB_NOEXEC"):
    pass  # as on a noexec mount: the executor cannot run
elif args[0] == "shell":  # a child, not exec: killing adb does not kill what runs on the device
    command = args[2:] if args[1:2] == ["-T"] else args[1:]
    sys.exit(subprocess.call(["sh", "-c", here(" ".join(command))]))
else:
    sys.exit(f"fake adb: {args} is not implemented")
'''


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """The fake device's /data/local/tmp."""
    (tmp_path / "device").mkdir()
    return tmp_path / "device"


@pytest.fixture
def fake_adb(tmp_path: Path, device: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`adb` in tmp_path/bin, first on PATH (the CLI checks PATH before it reads options)."""
    (tmp_path / "bin").mkdir()
    adb = tmp_path / "bin" / "adb"
    adb.write_text(f"#!{sys.executable}{FAKE_ADB}")
    adb.chmod(0o755)
    monkeypatch.setenv("PATH", f"{adb.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(device))
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    return adb


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
