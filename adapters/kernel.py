"""The `kernel` adapter: the real C ashmem driver and the real binder driver of Linux 5.10, in a
small qemu VM (Debian bullseye's 5.10 kernel with ashmem_linux and binder_linux).

`start` fetches and prepares the VM on first use (`ashcheck vm fetch` does the same ahead of time),
boots one guest per test process (so per pytest-xdist worker), and starts a servicemanager on
/dev/binder (a context manager set with BINDER_SET_CONTEXT_MGR_EXT and ACCEPTS_FDS: the 5.10
driver delivers fds only to nodes that accept them). Executors run as root, and as uid 65534 for
unprivileged processes. Capabilities are probed from what the guest offers: a kernel without
ashmem (a 6.x kernel has binder only) runs the `memfd` profile, with regions from memfd_create
as libcutils makes them there, and fd transfer through the real binder.

Options: `kernel=PATH` (a vmlinux or bzImage of your own, e.g. an Android common kernel),
`modules=DIR` (its .ko files), `timeout=SECONDS` per request (default 30).
"""

from __future__ import annotations

from typing import ClassVar

from ashcheck.adapters.base import AdapterUnavailable, Capability
from ashcheck.adapters.executor_adapter import ExecutorAdapter
from ashcheck.adapters.executor_ops import MemfdRegions
from ashcheck.adapters.hub import HubTransport


class KernelAdapter(ExecutorAdapter):
    name: ClassVar[str] = "kernel"
    profile: ClassVar[str] = "ashmem"

    def __init__(self, **options: str) -> None:
        self.kernel_path = options.pop("kernel", None)
        self.modules_path = options.pop("modules", None)
        self.timeout = float(options.pop("timeout", "30"))
        super().__init__(**options)
        self.vm: object | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        from ashcheck.adapters.vm.qemu import unavailable_reason

        return unavailable_reason()

    def start(self) -> None:
        from pathlib import Path

        from ashcheck.adapters.channel import Hub
        from ashcheck.adapters.vm.assets import VmError
        from ashcheck.adapters.vm.fetch import fetch, user_assets
        from ashcheck.adapters.vm.qemu import Vm

        try:
            if self.kernel_path:
                modules = Path(self.modules_path) if self.modules_path else None
                assets = user_assets(Path(self.kernel_path), modules, progress=print)
            else:
                assets = fetch(progress=print)
            vm = Vm.boot(assets)
        except VmError as exc:
            raise AdapterUnavailable(str(exc)) from exc
        self.vm = vm
        self.memory_bytes = vm.memory_bytes
        self.transport = HubTransport(Hub(vm.socket), self.timeout)
        caps = {Capability.MULTI_PROCESS, Capability.MAPS_NAME, Capability.PRIVILEGED, Capability.UNPRIVILEGED}
        if vm.has_ashmem:
            caps.add(Capability.ASHMEM_DEVICE)
        else:  # a kernel with binder only (6.x): regions as libcutils makes them there, from memfd
            self.profile = "memfd"  # type: ignore[misc]
            self.regions = MemfdRegions()
        if vm.has_binder:
            reply = self.transport.hub_request(f"servicemanager {b'/dev/binder'.hex()}")
            if reply.status == "ok":
                self.binder_device = b"/dev/binder"
                caps.add(Capability.FD_TRANSFER)
        self.capabilities = frozenset(caps)

    def close(self) -> None:
        super().close()
        vm, self.vm = self.vm, None
        if vm is not None:
            vm.close()  # type: ignore[attr-defined]
