"""A stand-in Android device: a fake `adb` that runs the "device" on this host, so that the adb
adapter's whole path (the ABI's executor built and pushed, the hub over `adb shell`, the protocol,
memfd and fd passing) runs without a device.

The fake (SCRIPT) lists FAKE_ADB_DEVICES devices in state FAKE_ADB_STATE, reports ABI FAKE_ADB_ABI
and model FAKE_ADB_MODEL, and maps the device's /data/local/tmp onto FAKE_ADB_ROOT: `push` copies
there, `shell chmod` is ignored if FAKE_ADB_NOEXEC is set, and `shell` runs the command locally
with sh on adb's own stdin/stdout, in a child process (as on a device, killing `adb` does not kill
what it started). With FAKE_ADB_QEMU (a qemu-user binary, e.g. qemu-aarch64-static) the pushed
executor runs under it, and so do the processes it spawns (ASHCHECK_EXEC_WRAPPER): the very
Android binaries a device would run, emulated. Every call is logged to FAKE_ADB_LOG.

What a stand-in cannot show: the device's kernel (here it is this host's, in memfd mode: no
/dev/ashmem, no binder fd transfer but the executor's own), SELinux, vendor changes.

    python -m ashcheck.conformance.selftest.fake_adb --abi arm64-v8a -- run --profile ci --report DIR

runs `ashcheck run --adapter adb` through the stand-in (the tox envs adb-aarch64 and adb-armv7).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPT = '''
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
root = env["FAKE_ADB_ROOT"]
here = lambda path: path.replace("/data/local/tmp", root)
if args[0] == "push":
    shutil.copyfile(args[1], here(args[2]))
    print(f"{args[1]}: 1 file pushed")
elif args[:3] == ["shell", "getprop", "ro.product.cpu.abi"]:
    print(env.get("FAKE_ADB_ABI", "x86_64"), end="\\r\\n")
elif args[:3] == ["shell", "getprop", "ro.product.model"]:
    print(env.get("FAKE_ADB_MODEL", "ashcheck stand-in (this host, through a fake adb)"), end="\\r\\n")
elif args[:2] == ["shell", "chmod"] and env.get("FAKE_ADB_NOEXEC"):
    pass  # as on a noexec mount: the executor cannot run
elif args[0] == "shell":  # a child, not exec: killing adb does not kill what runs on the device
    command = [here(word) for word in (args[2:] if args[1:2] == ["-T"] else args[1:])]
    qemu = env.get("FAKE_ADB_QEMU")
    if qemu and command[0].startswith(root):  # the executor: under user-mode emulation
        command = [qemu, *command]
        env = dict(env, ASHCHECK_EXEC_WRAPPER=qemu)
    sys.exit(subprocess.call(["sh", "-c", " ".join(command)], env=env))
else:
    sys.exit(f"fake adb: {args} is not implemented")
'''

QEMU = {"arm64-v8a": "qemu-aarch64-static", "armeabi-v7a": "qemu-arm-static"}  # ABIs this host cannot run


def install(directory: Path, abi: str = "x86_64", log: Path | None = None) -> dict[str, str]:
    """Write the fake `adb` into directory/bin and make directory/device its /data/local/tmp; the
    environment it needs (to be merged into os.environ). Raises LookupError when the ABI needs a
    qemu-user binary that is not on PATH."""
    (directory / "bin").mkdir(parents=True, exist_ok=True)
    (directory / "device").mkdir(exist_ok=True)
    adb = directory / "bin" / "adb"
    adb.write_text(f"#!{sys.executable}{SCRIPT}")
    adb.chmod(0o755)
    env = {"PATH": f"{adb.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "FAKE_ADB_ROOT": str(directory / "device"), "FAKE_ADB_LOG": str(log or directory / "adb.log"),
           "FAKE_ADB_ABI": abi}
    if abi in QEMU:
        qemu = shutil.which(QEMU[abi])
        if qemu is None:
            raise LookupError(f"{QEMU[abi]} is not on PATH (Debian: apt install qemu-user-static)")
        env["FAKE_ADB_QEMU"] = qemu
        env["FAKE_ADB_MODEL"] = f"ashcheck stand-in ({abi} binaries under {QEMU[abi]} on this host)"
    return env


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ashcheck.conformance.selftest.fake_adb",
                                     description="run `ashcheck ARGS... --adapter adb` through a stand-in device")
    parser.add_argument("--abi", default="x86_64",
                        help="the ABI the device reports (arm64-v8a, armeabi-v7a, x86_64, x86)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="ashcheck's arguments, after --")
    ns = parser.parse_args(argv)
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    if not args:
        parser.error("give ashcheck's arguments after --, e.g. -- run --profile ci --report DIR")
    with tempfile.TemporaryDirectory(prefix="ashcheck-fake-adb-") as tmp:
        try:
            env = install(Path(tmp), ns.abi)
        except LookupError as exc:
            print(f"fake_adb: {exc}", file=sys.stderr)
            return 2
        options = [f"adb={Path(tmp) / 'bin' / 'adb'}", *(["stand_in=qemu-user"] if ns.abi in QEMU else [])]
        command = [sys.executable, "-m", "ashcheck.conformance.cli", *args[:1], "--adapter", "adb",
                   *(x for option in options for x in ("--adapter-option", option)), *args[1:]]
        return subprocess.call(command, env=dict(os.environ, **env))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
