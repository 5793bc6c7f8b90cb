"""Benchmarks: `python bench/run.py [--json] [--only sim,memfd,kernel]`.

Figures are measured in the same run so that ratios survive a noisy machine:
- floor_steps_per_s: a trivial RuleBasedStateMachine with as many rules as AshmemMachine
  (Hypothesis's own cost per step); sim_steps_per_s: AshmemMachine on the sim adapter;
  sim_ratio = sim / floor (target ≥ 0.5).
- memfd_steps_per_s, memfd_op_us (median round trip of one operation through an executor),
  pipe_rtt_us (a bare Python pipe round trip to a child process), memfd_ratio = op / pipe (≤ 2).
- vm_boot_s, kernel_op_us, vport_rtt_us (a bare `* ping` over the same virtio-serial channel),
  kernel_ratio = op / vport (≤ 2). The vport ping is answered by the guest's hub; an operation
  also crosses to the modelled process and back, two more context switches that TCG makes
  expensive (each flushes its software TLB), so kernel_child_ping_us (a ping answered by that
  process) is printed too: kernel_op_us / kernel_child_ping_us is the cost of the op itself.
  memfd_child_ping_us likewise.
- fuzz: 10,000 seeded malformed request lines to one executor (fuzz_executor_*), and 10,000
  malformed reply lines through the executor's and the hub's reply readers (fuzz_reply_*,
  fuzz_hub_reply_*): crashes, hangs, desyncs (a reply taken for another request) and accepted
  (a malformed line taken as valid, or a valid one refused), all expected 0, and lines per second.
  reply_40mib_read_s: reading one 40 MiB reply line from a stand-in executor (linear time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis.stateful import RULE_MARKER, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ashcheck.conformance import session
from ashcheck.conformance.driver import Driver
from ashcheck.conformance.machines import AshmemMachine
from ashcheck.spec import ops as o

SETTINGS = settings(max_examples=60, stateful_step_count=50, derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck))


def _floor_machine(n_rules: int) -> type[RuleBasedStateMachine]:
    """A machine whose rules do nothing: what Hypothesis costs per step, with as many rules."""
    def make(i: int) -> Callable[[Any], None]:
        def body(self: Any) -> None:
            pass
        body.__name__ = f"noop_{i}"
        return rule()(body)

    namespace: dict[str, Any] = {f"noop_{i}": make(i) for i in range(n_rules)}
    namespace["count"] = invariant()(lambda self: STEPS.__setitem__(0, STEPS[0] + 1))
    return type("FloorMachine", (RuleBasedStateMachine,), namespace)


STEPS = [0]


def steps_per_second(machine: type[RuleBasedStateMachine]) -> float:
    STEPS[0] = 0
    start = time.perf_counter()
    run_state_machine_as_test(machine, settings=SETTINGS)  # type: ignore[no-untyped-call,unused-ignore]
    return STEPS[0] / (time.perf_counter() - start)


def _count_driver_steps() -> None:
    original = Driver.check_fd_table

    def counting(self: Driver) -> None:
        STEPS[0] += 1
        original(self)

    Driver.check_fd_table = counting  # type: ignore[method-assign]


def machine_rate(adapter: str) -> float:
    session.shutdown()
    session.configure(adapter, {})
    try:
        return steps_per_second(AshmemMachine)
    finally:
        session.shutdown()


def op_round_trip_us(adapter: str, n: int = 2000) -> tuple[float, float]:
    """Median time of GET_SIZE through the adapter, after a region exists; and of a bare `ping`
    answered by the same executor process (the channel to the modelled process, without the op)."""
    session.shutdown()
    session.configure(adapter, {})
    try:
        a = session.adapter()
        a.reset()
        a.perform(o.Spawn(0))
        fd = a.perform(o.CreateRegion(0, b"bench", 4096)).value
        ping = a.transport.request  # type: ignore[attr-defined]
        ops, pings = [], []
        for _ in range(n):
            t = time.perf_counter()
            a.perform(o.GetSize(0, fd))
            ops.append(time.perf_counter() - t)
            t = time.perf_counter()
            ping(0, "ping")
            pings.append(time.perf_counter() - t)
        return statistics.median(ops) * 1e6, statistics.median(pings) * 1e6
    finally:
        session.shutdown()


def pipe_rtt_us(n: int = 2000) -> float:
    """A bare line round trip to a child process over pipes (the floor for any executor)."""
    child = subprocess.Popen([sys.executable, "-c", "import sys\nfor l in sys.stdin: sys.stdout.write(l); "
                              "sys.stdout.flush()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert child.stdin is not None and child.stdout is not None
    samples = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            child.stdin.write(b"ping\n")
            child.stdout.readline()
            samples.append(time.perf_counter() - t)
    finally:
        child.stdin.close()
        child.wait()
    return statistics.median(samples) * 1e6


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", default="sim,memfd,kernel,fuzz", help="comma-separated: sim,memfd,kernel,fuzz")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    if unknown := parts - {"sim", "memfd", "kernel", "fuzz"}:
        parser.error(f"--only: unknown part(s) {sorted(unknown)}")
    figures: dict[str, float] = {}
    _count_driver_steps()
    if parts & {"sim", "memfd", "kernel"}:
        n_rules = sum(1 for name in dir(AshmemMachine) if hasattr(getattr(AshmemMachine, name), RULE_MARKER))
        figures["floor_steps_per_s"] = steps_per_second(_floor_machine(n_rules))
    if "sim" in parts:
        figures["sim_steps_per_s"] = machine_rate("sim")
        figures["sim_ratio"] = figures["sim_steps_per_s"] / figures["floor_steps_per_s"]
    if "memfd" in parts:
        figures["memfd_steps_per_s"] = machine_rate("memfd")
        figures["memfd_op_us"], figures["memfd_child_ping_us"] = op_round_trip_us("memfd")
        figures["pipe_rtt_us"] = pipe_rtt_us()
        figures["memfd_ratio"] = figures["memfd_op_us"] / figures["pipe_rtt_us"]
    if "kernel" in parts:
        figures.update(kernel_figures())
    if "fuzz" in parts:
        figures.update(fuzz_figures())
    rounded = {k: round(v, 3) for k, v in figures.items()}
    print(json.dumps(rounded) if args.json else "\n".join(f"{k:20} {v}" for k, v in rounded.items()))
    return 0


def kernel_figures() -> dict[str, float]:
    from vm_figures import measure  # bench/ is sys.path[0] when run as a script

    vm = measure()
    out = dict(vm)
    out["kernel_op_us"], out["kernel_child_ping_us"] = op_round_trip_us("kernel", n=500)
    out["kernel_ratio"] = out["kernel_op_us"] / out["vport_rtt_us"]
    return out


def fuzz_figures(n: int = 10_000, seed: int = 0) -> dict[str, float]:
    from ashcheck.adapters import build, fuzz

    out = fuzz.fuzz_executor(build.executor_path(), n, seed).summary("fuzz_executor")
    executor, hub = fuzz.fuzz_replies(n, seed)
    out |= executor.summary("fuzz_reply") | hub.summary("fuzz_hub_reply")
    out["reply_40mib_read_s"] = long_reply_seconds(40 << 20)
    return out


STAND_IN = """import os, sys
reply = b" ok " + b"ab" * (int(sys.argv[1]) // 2) + b"\\n"
for line in sys.stdin.buffer:
    rid, _, request = line.partition(b" ")
    os.writev(1, [rid, reply if request.startswith(b"big") else b" ok\\n"])
"""


def long_reply_seconds(size: int, tries: int = 3) -> float:
    """The best time of `tries` reads of one reply line of `size` bytes, from a stand-in executor
    that has it ready (so that only the reading is timed)."""
    from pathlib import Path

    from ashcheck.adapters.channel import Executor

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "stand-in"
        script.write_text(f"#!{sys.executable}\nimport sys; sys.argv.append({size!r})\n{STAND_IN}")
        script.chmod(0o755)
        with Executor(script, timeout=300) as ex:
            ex.request("ping")
            times = []
            for _ in range(tries):
                start = time.perf_counter()
                reply = ex.request("big")
                times.append(time.perf_counter() - start)
                assert len(reply.fields[0]) == size, "the stand-in's reply was cut"
    return min(times)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
