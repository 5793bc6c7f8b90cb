"""Figures of the kernel adapter's VM: `python bench/vm_figures.py [-n N] [--executor PATH | --standin]`
prints JSON.

- vm_boot_s: median of 3 boots, from starting qemu to the hub's first `* ok` (Vm.boot_seconds);
- vport_rtt_us: median round trip of a bare `* ping` over the virtio-serial port, the floor under
  every operation the kernel adapter sends (bench/run.py divides kernel_op_us by it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from ashcheck.adapters.vm import image
from ashcheck.adapters.vm.fetch import fetch
from ashcheck.adapters.vm.qemu import Vm

BOOTS = 3


def measure(n: int = 300, executor: Path | None = None) -> dict[str, float]:
    """Boot BOOTS times and ping `n` times on the last guest. `executor`: the hub binary (default: the
    project's executor). Raises VmError when the VM cannot be prepared or booted."""
    assets = fetch()
    boots, rtts = [], []
    for i in range(BOOTS):
        with Vm.boot(assets, executor=executor) as vm:
            boots.append(vm.boot_seconds)
            if i == BOOTS - 1:
                vm.ping()  # the first answer may still wait on the guest's page cache
                rtts = [vm.ping() for _ in range(n)]
    return {"vm_boot_s": statistics.median(boots), "vport_rtt_us": statistics.median(rtts) * 1e6}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=300, help="pings")
    parser.add_argument("--executor", type=Path, help="this static x86_64 executor instead of the project's build")
    parser.add_argument("--standin", action="store_true", help="the shell stand-in hub instead of the executor")
    args = parser.parse_args(argv)
    figures = measure(args.n, image.standin_executor() if args.standin else args.executor)
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
