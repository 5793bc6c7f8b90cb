"""The `kernel` adapter: the real binder driver, and the real C ashmem driver where the kernel has
one, in a small qemu VM running a Debian kernel (kernels.py) or a kernel of your own.

`start` fetches and prepares the VM on first use (`ashcheck vm fetch` does the same ahead of time),
boots one guest per test process (so per pytest-xdist worker), and starts a servicemanager on
/dev/binder (a context manager set with BINDER_SET_CONTEXT_MGR_EXT and ACCEPTS_FDS: the 5.10
driver delivers fds only to nodes that accept them). Executors run as root, and as uid 65534 for
unprivileged processes. Capabilities are probed from what the guest offers: a kernel without
ashmem (6.x has binder only), or a 5.10 guest told `regions=memfd`, runs the `memfd` profile, with
regions from memfd_create as libcutils makes them there, and fd transfer through the real binder.

The guest reports its `uname -r` and `uname -v`: `identity()` gives them to the report, and the
known bugs of that exact release (known_bugs.py) become the run's declared deviations, so a report
says "known bug of <release>" and a release that newly shows one fails.

Options:
  kernel=5.10|6.1|6.12  a Debian kernel by name (default 5.10: bullseye, with ashmem_linux), or
  kernel=PATH           a vmlinux or bzImage of your own (an Android common kernel, say), with
  modules=DIR           its .ko files;
  regions=auto|ashmem|memfd  where regions come from: the ashmem driver when the guest has one
                        (auto), required (ashmem), or memfd with ashmem_linux not even loaded;
  abi=x86_64|x86         the executor's ABI (default x86_64). x86: a static 32-bit executor runs
                        every process through the kernel's IA32 emulation, as Android's 32-bit
                        apps do on a 64-bit kernel: ASHMEM_SET_SIZE and SET_PROT_MASK go through
                        the driver's compat_ioctl with their 32-bit numbers, binder through its
                        32-bit entry, and the spec judges with 32-bit longs. Built with ziglang
                        (pip install 'ashcheck[cross]').
  cpus=N                guest vCPUs (default 1; 2 for concurrent histories: multi-threaded TCG,
                        so the guest's processes run truly in parallel).
  timeout=SECONDS       per request (default 30).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ashcheck.adapters.base import AdapterUnavailable, Capability
from ashcheck.adapters.executor_adapter import ExecutorAdapter
from ashcheck.adapters.executor_ops import AshmemRegions, MemfdRegions, outcome
from ashcheck.adapters.hub import HubTransport

REGIONS = ("auto", "ashmem", "memfd")
ABIS = {"x86_64": "x86_64", "x86": "x86"}  # abi option → executor build target
ASHMEM_MODULE = "ashmem_linux"


class KernelAdapter(ExecutorAdapter):
    name: ClassVar[str] = "kernel"
    profile: ClassVar[str] = "ashmem"

    def __init__(self, **options: str) -> None:
        from ashcheck.adapters.vm.fetch import kernel_choice

        self.kernel_option = options.pop("kernel", None)
        self.modules_path = options.pop("modules", None)
        self.regions_option = options.pop("regions", "auto")
        self.timeout = float(options.pop("timeout", "30"))
        self.abi = options.pop("abi", "x86_64")
        cpus = options.pop("cpus", "1")
        self.cpus = int(cpus) if cpus.isdigit() and 1 <= int(cpus) <= 8 else 0
        super().__init__(**options)
        if not self.cpus:
            raise ValueError(f"cpus={cpus!r}: expected a number of vCPUs from 1 to 8")
        if self.regions_option not in REGIONS:
            raise ValueError(f"regions={self.regions_option!r}: expected one of {', '.join(REGIONS)}")
        if self.abi not in ABIS:
            raise ValueError(f"abi={self.abi!r}: expected one of {', '.join(ABIS)}")
        self.choice = kernel_choice(self.kernel_option, self.modules_path)  # ValueError: a usage error
        self.vm: object | None = None
        self._identity: dict[str, str] = {}

    @classmethod
    def unavailable_reason(cls) -> str | None:
        from ashcheck.adapters.vm.qemu import unavailable_reason

        return unavailable_reason()

    def start(self) -> None:
        from ashcheck.adapters.build import executor_path
        from ashcheck.adapters.channel import Hub
        from ashcheck.adapters.vm import known_bugs
        from ashcheck.adapters.vm.assets import VmError
        from ashcheck.adapters.vm.fetch import prepare
        from ashcheck.adapters.vm.qemu import Vm, port_name, without_modules

        try:
            assets = prepare(self.choice, self.modules_path, progress=print)
            if self.regions_option == "memfd" and any(m.name == f"{ASHMEM_MODULE}.ko" for m in assets.modules):
                assets = without_modules(assets, [ASHMEM_MODULE])
            vm = Vm.boot(assets, executor=Path(executor_path(ABIS[self.abi])), cpus=self.cpus)
        except VmError as exc:
            raise AdapterUnavailable(str(exc)) from exc
        self.vm = vm
        if self.regions_option == "ashmem" and not vm.has_ashmem:
            self.close()
            raise AdapterUnavailable(f"regions=ashmem, but the guest of {assets.origin} has no /dev/ashmem "
                                     f"(kernel {vm.guest.get('release')}: ashmem left Linux in 5.18)")
        self.memory_bytes = vm.memory_bytes
        ports = {port_name(i): sock for i, sock in enumerate(vm.ports)}  # a process's requests skip the hub
        self.transport = HubTransport(Hub(vm.socket, ports=ports), self.timeout)
        self.page_size, self.long_bits = self._abi_of_processes()
        caps = {Capability.MULTI_PROCESS, Capability.MAPS_NAME, Capability.PRIVILEGED, Capability.UNPRIVILEGED,
                Capability.CONCURRENT}
        if vm.has_ashmem:
            caps.add(Capability.ASHMEM_DEVICE)
            self.regions = AshmemRegions(long_bits=self.long_bits)
        else:  # binder only (6.x, or regions=memfd): regions as libcutils makes them there, from memfd
            self.profile = "memfd"  # type: ignore[misc]
            self.regions = MemfdRegions(long_bits=self.long_bits)
        if vm.has_binder:
            reply = self.transport.hub_request(f"servicemanager {b'/dev/binder'.hex()}")
            if reply.status == "ok":
                self.binder_device = b"/dev/binder"
                caps.add(Capability.FD_TRANSFER)
        self.capabilities = frozenset(caps)
        release = vm.guest.get("release", "")
        self.deviations = known_bugs.deviations(release, self.profile)
        self._identity = _identity(assets.origin, assets.package, vm.guest, self.profile)

    def _abi_of_processes(self) -> tuple[int, int]:
        """(page size, bits of a long) as a process of the guest reports them (`info`)."""
        t = self.transport
        assert isinstance(t, HubTransport)
        t.spawn(-1, None)
        try:
            got = outcome(t.request(-1, "info"), lambda f: (int(f[2]), int(f[3])))
        finally:
            t.kill(-1)
        if not got.succeeded or not isinstance(got.value, tuple):
            self.close()
            raise AdapterUnavailable(f"the guest's executor does not say its ABI: {got}")
        return got.value

    def identity(self) -> dict[str, str]:
        """The guest's kernel: `release` (uname -r), `version` (uname -v, which names the Debian
        package version of Debian's kernels), `package` (the image package and version, when the
        kernel came from Debian), `kernel` (where it came from), `regions` (ashmem driver or memfd),
        and `known_bugs` (the rule ids the release is known to break, declared as deviations)."""
        abi = {"abi": f"{self.abi} ({self.long_bits}-bit long)"} if self.abi != "x86_64" else {}
        return dict(self._identity, **abi, known_bugs=" ".join(sorted(self.deviations)))

    def close(self) -> None:
        super().close()
        vm, self.vm = self.vm, None
        if vm is not None:
            vm.close()  # type: ignore[attr-defined]


def _identity(origin: str, package: str, guest: dict[str, str], profile: str) -> dict[str, str]:
    found = {"kernel": origin, "release": guest.get("release", ""), "version": guest.get("version", ""),
             "package": package, "regions": "ashmem driver" if profile == "ashmem" else "memfd"}
    return {key: value for key, value in found.items() if value}

