"""The `adb` adapter: an Android device or emulator, driven over `adb shell`.

`start` picks the device (option `serial=`, else the only one attached and ready), reads its ABI,
cross-builds the static executor for it (ziglang), pushes it to /data/local/tmp under a name of its
own per test process (pytest-xdist workers share the device), and runs its hub under `adb shell -T`
(no pty: Android ≥ 7), whose stdin/stdout carry the hub protocol. One executor process per modelled
process runs on the device as the shell user (or root after `adb root`). `close` ends the hub and
removes the pushed binary.

Profile: `profile=ashmem|memfd` (default: ashmem when the shell can open /dev/ashmem, else memfd,
as libcutils would choose on a device without the ashmem driver). fds travel by SCM_RIGHTS inside
the hub with binder's rules applied: the device's /dev/binder belongs to its servicemanager, so
the executor cannot become context manager there. Capabilities are probed on the device.

Options: serial=, profile=, adb=PATH (the adb tool), timeout=SECONDS (default 30), and
stand_in=qemu-user for the self-tests' stand-in device, which runs Android binaries under qemu-user:
unknown ioctls and /proc/self/maps are then left out, and mmap's EINVAL for length 0 before EBADF is
declared (qemu answers these itself).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
from typing import IO, ClassVar

from ashcheck.adapters.base import AdapterUnavailable, Capability
from ashcheck.adapters.executor_adapter import ExecutorAdapter, TransportLost
from ashcheck.adapters.executor_ops import AshmemRegions, MemfdRegions, first_int, outcome
from ashcheck.adapters.hub import HubTransport
from ashcheck.spec import ops as o
from ashcheck.spec.constants import F_ADD_SEALS, F_SEAL_FUTURE_WRITE

REMOTE_DIR = "/data/local/tmp"
ABIS = {"arm64-v8a": "aarch64", "armeabi-v7a": "armv7", "x86_64": "x86_64", "x86": "x86"}


class AdbAdapter(ExecutorAdapter):
    name: ClassVar[str] = "adb"
    profile: ClassVar[str] = "ashmem"  # replaced per instance by the probe or the option
    max_workers = 1  # one device: a second test process would see the first one's purges
    spontaneous_purge = True  # a phone under memory pressure may purge unpinned memory at any time

    def __init__(self, **options: str) -> None:
        adb = options.pop("adb", "")
        if adb and shutil.which(adb) is None:
            raise ValueError(f"adapter option adb={adb!r}: no such executable")
        self.adb = adb or shutil.which("adb") or "adb"
        self.serial = options.pop("serial", "") or None
        self.wanted_profile = options.pop("profile", None)
        self.timeout = float(options.pop("timeout", "30"))
        self.stand_in = options.pop("stand_in", "")
        if self.wanted_profile not in (None, "ashmem", "memfd"):
            raise ValueError(f"profile must be ashmem or memfd, not {self.wanted_profile!r}")
        if self.stand_in not in ("", "qemu-user"):
            raise ValueError(f"stand_in must be qemu-user (or absent), not {self.stand_in!r}")
        if self.stand_in:  # the self-tests' stand-in device (conformance/selftest/fake_adb.py): what
            # qemu-user answers itself, before the kernel is asked
            self.unsupported = {o.UnknownIoctl: "the stand-in device runs the executor under qemu-user, which "
                                "answers an ioctl it does not know itself (ENOSYS) instead of asking the kernel",
                                o.MapsName: "the stand-in device runs the executor under qemu-user, which "
                                "makes /proc/self/maps itself from the host's: a W|X shared mapping placed right "
                                "above a file-contiguous RW one is missing from it (natively it is listed)"}
            self.deviations = {"fd.ebadf": "stand-in under qemu-user: its mmap refuses length 0 (EINVAL) "
                               "before the kernel looks the fd up (EBADF)"}
        super().__init__(**options)
        self.remote = f"{REMOTE_DIR}/ashcheck-exec.{os.getpid()}"
        self.pushed = False
        self.shell: subprocess.Popen[bytes] | None = None
        self.shell_stderr: IO[bytes] | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if shutil.which("adb") is None:
            return "the `adb` tool is not on PATH (Debian: apt install adb; or pass adapter option adb=PATH)"
        return None

    def why_unavailable(self) -> str | None:
        return None if shutil.which(self.adb) else self.unavailable_reason()

    def _adb(self, *args: str, check: bool = True, timeout: float = 120, device: bool = True) -> str:
        """Run `adb [-s SERIAL] ARGS` (device=False: without -s) and return its stdout."""
        command = [self.adb, *(["-s", self.serial] if self.serial and device else []), *args]
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AdapterUnavailable(f"`{shlex.join(command)}` could not run: {exc}") from exc
        if check and done.returncode != 0:
            said = (done.stderr or done.stdout).decode(errors="replace").strip()
            raise AdapterUnavailable(f"`{shlex.join(command)}` failed (status {done.returncode}): {said}")
        return done.stdout.decode(errors="replace")

    def _device(self) -> None:
        pairs = (line.split("\t", 1) for line in self._adb("devices", device=False).splitlines() if "\t" in line)
        states = {serial.strip(): state.strip() for serial, state in pairs}
        ready = [serial for serial, state in states.items() if state == "device"]
        listing = ", ".join(f"{serial} ({state})" for serial, state in states.items()) or "none"
        if self.serial is None:
            if not ready:
                raise AdapterUnavailable(f"no Android device is ready (adb devices: {listing})")
            if len(ready) > 1:
                raise AdapterUnavailable(f"{len(ready)} devices are attached ({listing}): "
                                         "choose one with adapter option serial=…")
            self.serial = ready[0]
        elif self.serial not in ready:
            raise AdapterUnavailable(f"device {self.serial} is not attached and ready (adb devices: {listing})")

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.close()  # a half-started adapter leaves no adb shell, hub or binary behind
            raise

    def _start(self) -> None:
        from ashcheck.adapters.build import BuildError, executor_path
        from ashcheck.adapters.channel import Hub

        self._device()
        abi = self._adb("shell", "getprop", "ro.product.cpu.abi").strip()
        if abi not in ABIS:
            raise AdapterUnavailable(f"unknown device ABI {abi!r} on {self.serial}; known: {', '.join(ABIS)}")
        model = self._adb("shell", "getprop", "ro.product.model", check=False).strip()
        kernel = self._adb("shell", "uname", "-r", check=False).strip()
        self._identity = {k: v for k, v in (("serial", str(self.serial)), ("abi", abi), ("model", model),
                                            ("kernel", kernel)) if v}
        try:
            binary = executor_path(ABIS[abi])
        except BuildError as exc:
            raise AdapterUnavailable(f"cannot build the executor for {abi}: {exc}") from exc
        self.pushed = True
        self._adb("push", str(binary), self.remote)
        self._adb("shell", "chmod", "755", self.remote)
        self.shell_stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close)
        self.shell = subprocess.Popen([self.adb, "-s", str(self.serial), "shell", "-T", self.remote, "hub"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.shell_stderr)
        assert self.shell.stdin is not None and self.shell.stdout is not None
        self.transport = HubTransport(Hub(self.shell.stdout, self.shell.stdin), self.timeout)
        try:
            self._probe()
        except TransportLost as exc:
            raise AdapterUnavailable(f"the executor hub does not run on {self.serial} ({abi}): {exc}"
                                     f"{self._stderr_tail()}") from exc

    def identity(self) -> dict[str, str]:
        """The device: serial, ABI (ro.product.cpu.abi), model (ro.product.model), kernel (uname -r)."""
        return dict(getattr(self, "_identity", {}))

    def _stderr_tail(self) -> str:
        if self.shell is not None and self.shell_stderr is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.shell.wait(1)
            self.shell_stderr.seek(0)
            text = self.shell_stderr.read().decode(errors="replace").strip()
            return f"; adb shell said: {text[-2000:]}" if text else ""
        return ""

    def _probe(self) -> None:
        t = self.transport
        assert isinstance(t, HubTransport)
        t.spawn(-1, None)
        try:
            ashmem = outcome(t.request(-1, f"open {b'/dev/ashmem'.hex()} 2"), first_int)
            if ashmem.succeeded:
                t.request(-1, f"close {ashmem.value}")
            profile = self.wanted_profile or ("ashmem" if ashmem.succeeded else "memfd")
            if profile == "ashmem" and not ashmem.succeeded:
                raise AdapterUnavailable(f"profile ashmem, but the shell cannot open /dev/ashmem: {ashmem}")
            if profile == "memfd":  # libcutils uses memfd only where F_SEAL_FUTURE_WRITE works
                fd = outcome(t.request(-1, f"memfd_region {b'probe'.hex()} 4096"), first_int)
                sealed = fd.succeeded and outcome(t.request(-1, f"fcntl {fd.value} {F_ADD_SEALS} "
                                                            f"{F_SEAL_FUTURE_WRITE}")).succeeded
                if not sealed:
                    raise AdapterUnavailable("the device has neither a usable /dev/ashmem nor memfd with "
                                             f"F_SEAL_FUTURE_WRITE (ashmem: {ashmem}, memfd: {fd})")
            uid, self.page_size, self.long_bits = outcome(
                t.request(-1, "info"), lambda f: (int(f[1]), int(f[2]), int(f[3]))).value
        finally:
            t.kill(-1)
        self.profile = profile  # type: ignore[misc]
        self.regions = (AshmemRegions(long_bits=self.long_bits) if profile == "ashmem"
                        else MemfdRegions(long_bits=self.long_bits))
        caps = {Capability.MULTI_PROCESS, Capability.FD_TRANSFER, Capability.MAPS_NAME, Capability.CONCURRENT}
        caps |= {Capability.PRIVILEGED, Capability.UNPRIVILEGED} if uid == 0 else {Capability.UNPRIVILEGED}
        if profile == "ashmem":
            caps.add(Capability.ASHMEM_DEVICE)
        self.capabilities = frozenset(caps)

    def close(self) -> None:
        super().close()
        vars(self).pop("transport", None)  # closed: a second close must not write to the stream again
        shell, self.shell = self.shell, None
        if shell is not None:
            if shell.stdin:
                shell.stdin.close()  # the hub kills its executors and exits when its input ends
            try:
                shell.wait(timeout=5)
            except subprocess.TimeoutExpired:
                shell.kill()
                shell.wait()
            if shell.stdout:
                shell.stdout.close()
        stderr, self.shell_stderr = self.shell_stderr, None
        if stderr is not None:
            stderr.close()
        if self.pushed:
            self.pushed = False
            with contextlib.suppress(AdapterUnavailable):
                self._adb("shell", "rm", "-f", self.remote, check=False, timeout=30)
