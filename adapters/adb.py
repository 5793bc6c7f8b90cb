"""The `adb` adapter: an Android device or emulator, driven over `adb shell`.

`start` picks the device (option `serial=`, else the only one attached), reads its ABI, cross-builds
the static executor for it (ziglang), pushes it to /data/local/tmp, and runs its hub under
`adb shell`, whose stdin/stdout carry the hub protocol. One executor process per modelled process
runs on the device as the shell user (or root after `adb root`).

Profile: `profile=ashmem|memfd` (default: ashmem when the shell can open /dev/ashmem, else memfd,
as libcutils would choose on a device without the ashmem driver). fds travel by SCM_RIGHTS inside
the hub with binder's rules applied: the device's /dev/binder belongs to its servicemanager, so
the executor cannot become context manager there. Capabilities are probed on the device.

Options: serial=, profile=, adb=PATH (the adb tool), timeout=SECONDS (default 30).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

from ashcheck.adapters.base import AdapterUnavailable, Capability
from ashcheck.adapters.executor_adapter import ExecutorAdapter
from ashcheck.adapters.executor_ops import AshmemRegions, MemfdRegions, first_int, outcome
from ashcheck.adapters.hub import HubTransport

REMOTE = "/data/local/tmp/ashcheck-exec"
ABIS = {"arm64-v8a": "aarch64", "armeabi-v7a": "armv7", "x86_64": "x86_64", "x86": "x86"}


class AdbAdapter(ExecutorAdapter):
    name: ClassVar[str] = "adb"
    profile: ClassVar[str] = "ashmem"  # replaced per instance by the probe or the option

    def __init__(self, **options: str) -> None:
        self.adb = options.pop("adb", None) or shutil.which("adb") or "adb"
        self.serial = options.pop("serial", None)
        self.wanted_profile = options.pop("profile", None)
        self.timeout = float(options.pop("timeout", "30"))
        if self.wanted_profile not in (None, "ashmem", "memfd"):
            raise ValueError(f"profile must be ashmem or memfd, not {self.wanted_profile!r}")
        super().__init__(**options)
        self.shell: subprocess.Popen[bytes] | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if shutil.which("adb") is None:
            return "the `adb` tool is not on PATH (Debian: apt install adb; or pass adapter option adb=PATH)"
        return None

    def _adb(self, *args: str, check: bool = True) -> str:
        serial = ["-s", self.serial] if self.serial else []
        done = subprocess.run([self.adb, *serial, *args], capture_output=True, timeout=120)
        if check and done.returncode != 0:
            raise AdapterUnavailable(f"`adb {' '.join(args)}` failed: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout.decode(errors="replace")

    def _device(self) -> None:
        listed = [line.split("\t") for line in self._adb("devices").splitlines()[1:] if "\t" in line]
        ready = [serial for serial, state in listed if state == "device"]
        if self.serial is None:
            if len(ready) != 1:
                raise AdapterUnavailable(f"need exactly one attached device, found {len(ready)} "
                                         f"({listed or 'none'}); pass adapter option serial=…")
            self.serial = ready[0]
        elif self.serial not in ready:
            raise AdapterUnavailable(f"device {self.serial} is not attached and ready ({listed})")

    def start(self) -> None:
        from ashcheck.adapters.build import executor_path
        from ashcheck.adapters.channel import Hub

        self._device()
        abi = self._adb("shell", "getprop", "ro.product.cpu.abi").strip()
        if abi not in ABIS:
            raise AdapterUnavailable(f"unknown device ABI {abi!r}; known: {', '.join(ABIS)}")
        binary = Path(executor_path(ABIS[abi]))
        self._adb("push", str(binary), REMOTE)
        self._adb("shell", "chmod", "755", REMOTE)
        serial = ["-s", self.serial] if self.serial else []
        self.shell = subprocess.Popen([self.adb, *serial, "shell", REMOTE, "hub"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.shell.stdin is not None and self.shell.stdout is not None
        self.transport = HubTransport(Hub(self.shell.stdout, self.shell.stdin), self.timeout)
        self._probe()

    def _probe(self) -> None:
        t = self.transport
        assert isinstance(t, HubTransport)
        t.spawn(-1, None)
        try:
            ashmem = outcome(t.request(-1, f"open {b'/dev/ashmem'.hex()} 2"), first_int)
            if ashmem.succeeded:
                t.request(-1, f"close {ashmem.value}")
            uid = outcome(t.request(-1, "info"), lambda f: int(f[1])).value
        finally:
            t.kill(-1)
        profile = self.wanted_profile or ("ashmem" if ashmem.succeeded else "memfd")
        self.profile = profile  # type: ignore[misc]
        self.regions = AshmemRegions() if profile == "ashmem" else MemfdRegions()
        caps = {Capability.MULTI_PROCESS, Capability.FD_TRANSFER, Capability.MAPS_NAME}
        caps |= {Capability.PRIVILEGED, Capability.UNPRIVILEGED} if uid == 0 else {Capability.UNPRIVILEGED}
        if profile == "ashmem" and ashmem.succeeded:
            caps.add(Capability.ASHMEM_DEVICE)
        self.capabilities = frozenset(caps)

    def close(self) -> None:
        super().close()
        shell, self.shell = self.shell, None
        if shell is not None:
            if shell.stdin:
                shell.stdin.close()
            try:
                shell.wait(timeout=5)
            except subprocess.TimeoutExpired:
                shell.kill()
                shell.wait()
