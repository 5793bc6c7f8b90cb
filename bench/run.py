"""Benchmarks: `python bench/run.py [--json] [--only GROUP,...]`; groups: sim, memfd, kernel, fuzz,
selftest, ci, mutation, concurrency (all by default). `--json` prints one flat object.

Figures are measured in the same run so that ratios survive a noisy machine:
- floor_steps_per_s: a RuleBasedStateMachine with the exploration's shape (one rule drawing the same
  integers per step, one invariant) whose bodies do nothing: Hypothesis's own cost per step;
  sim_steps_per_s: the exploration (machines.Conformance) on the sim adapter, observations included;
  sim_ratio = sim / floor (target ≥ 0.5).
- memfd_steps_per_s, memfd_op_us (median round trip of one operation through an executor),
  pipe_rtt_us (a bare Python pipe round trip to a child process), memfd_ratio = op / pipe (≤ 2),
  sampled in turns, block by block (round_trips_us); memfd_raw_rtt_us, a bare round trip to an
  executor without the channel (a C child on a socketpair: about the pipe's, so the pipe is a fair
  floor).
- vm_boot_s, kernel_op_us, vport_rtt_us (a bare `* ping` over the same virtio-serial channel),
  kernel_ratio = op / vport (≤ 2). The vport ping is answered by the guest's hub, bare (no
  channel); an operation goes to the modelled process on its own port and through the channel, so
  kernel_child_ping_us (a ping answered by that process, through the channel) is printed too:
  kernel_op_us / kernel_child_ping_us is the cost of the op itself (kernel_op_child_ratio, target
  ≤ 1.2), kernel_child_ratio = child ping / vport (target ≤ 2; 4 when processes were reached
  through the hub, whose switches to them each flush TCG's software TLB).
  memfd_child_ping_us likewise.
- fuzz: 10,000 seeded malformed request lines to one executor (fuzz_executor_*), and 10,000
  malformed reply lines through the executor's and the hub's reply readers (fuzz_reply_*,
  fuzz_hub_reply_*): crashes, hangs, desyncs (a reply taken for another request) and accepted
  (a malformed line taken as valid, or a valid one refused), all expected 0, and lines per second.
  reply_40mib_read_s: reading one 40 MiB reply line from a stand-in executor (linear time).
- selftest: selftest_kill_ci, the self-test mutants (conformance/selftest/mutants.py) the `ci`
  profile catches, as "k/n" (each return-value mutant as the rule it breaks, with scenarios; each
  state mutant as any violation, scenarios off: test_mutants.py's criteria); and
  median_time_to_kill_ci_s, the median CPU seconds from the start of the run to the first report
  over the caught ones (target ≤ 3 s on the sim, 2 cores).
- ci: ci_sim_s (as issue 13 names it), the wall time of `ashcheck run --adapter sim --profile ci` (one process, as
  `tox -e sim` runs it; target ≤ 45 s); sim_ci_cpu_s, the CPU seconds of the same suite in-process
  (catching.violated_rules); quick_sim_s and quick_memfd_s, whole `--profile quick` runs (≤ 10 s).
- mutation: mutation_score = killed ÷ (mutants − equivalent − unjudged) of reference/'s mutants
  (target ≥ 0.95; unjudged: the change is real but no rule of the spec judges it), mutation_score_all
  (unjudged counted as survivors), mutation_mutants, _killed, _survived, _equivalent, _unjudged, _open
  and mutation_run_s, from the last
  full run recorded in the survivors file (conformance/selftest/mutation_survivors.toml; its
  equivalent marks as they are now); `--mutation-run` (or no recorded run) runs it first
  (`tox -e mutation`, 89 min on 2 cores shared with other jobs).
- concurrency: linearize_histories_per_s, concurrent histories of 3 branches of 8 operations (the
  look after included) checked per second against the spec, run on the sim (target ≥ 200);
  race_<mutant>_seeds, the seeds (of 10, or --race-seeds N) in which the concurrency profile on the
  sim catches each race mutant (target ≥ 9 of 10), and race_seed_s, seconds per seed and mutant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from ashcheck.conformance import session
from ashcheck.conformance import strategies as S
from ashcheck.conformance.machines import Conformance
from ashcheck.conformance.observe import Watch
from ashcheck.spec import ops as o

SETTINGS = settings(max_examples=60, stateful_step_count=50, derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck))
GROUPS = ("sim", "memfd", "kernel", "fuzz", "selftest", "ci", "mutation", "concurrency")
STEPS = [0]


class FloorMachine(RuleBasedStateMachine):
    """The exploration's shape with nothing in it: what Hypothesis costs per step."""

    @initialize()
    def start(self) -> None:
        pass

    @rule(choices=S.STEP)
    def step(self, choices: list[int]) -> None:
        pass

    @invariant()
    def observe(self) -> None:
        STEPS[0] += 1


def steps_per_second(factory: Callable[[], RuleBasedStateMachine]) -> float:
    STEPS[0] = 0
    start = time.perf_counter()
    run_state_machine_as_test(factory, settings=SETTINGS)  # type: ignore[arg-type,unused-ignore]
    return STEPS[0] / (time.perf_counter() - start)


def _count_driver_steps() -> None:
    """Count the exploration's steps where the floor counts its own: once per invariant run."""
    original = Watch.look

    def counting(self: Watch) -> None:
        STEPS[0] += 1
        original(self)

    Watch.look = counting  # type: ignore[method-assign]


def machine_rate(adapter: str) -> float:
    session.shutdown()
    session.configure(adapter, {})
    try:
        a = session.adapter()
        seeds = iter(range(1 << 30))
        return steps_per_second(lambda: Conformance(a, swarm_seed=next(seeds)))
    finally:
        session.shutdown()


def round_trips_us(adapter: str, n: int = 2000, *, floors: bool = False) -> dict[str, float]:
    """Median times, in µs, of `op`: GET_SIZE through the adapter, after a region exists; and `ping`:
    a bare `ping` answered by the same executor process (the channel to the modelled process,
    without the op); the two alternate in one loop. With `floors`, also `pipe`: a bare line round
    trip to a Python child over pipes (the floor for any executor), and `raw`: the same to an
    executor over its socketpair, written and read by hand (the floor for this executor, without
    the channel), each in a loop of its own. The loops take turns (_medians_us)."""
    session.shutdown()
    session.configure(adapter, {})
    try:
        a = session.adapter()
        a.reset()
        a.perform(o.Spawn(0))
        fd = a.perform(o.CreateRegion(0, b"bench", 4096)).value
        ping = a.transport.request  # type: ignore[attr-defined]
        loops: list[dict[str, Callable[[], object]]] = [{"op": lambda: a.perform(o.GetSize(0, fd)),
                                                         "ping": lambda: ping(0, "ping")}]
        with contextlib.ExitStack() as stack:
            if floors:
                loops.append({"pipe": stack.enter_context(PipeChild()).round_trip})
                loops.append({"raw": stack.enter_context(RawExecutor()).round_trip})
            return _medians_us(loops, n)
    finally:
        session.shutdown()


def _medians_us(loops: list[dict[str, Callable[[], object]]], n: int, block: int = 50) -> dict[str, float]:
    """n samples of every trip. Each loop runs as a loop of its own would (its trips in turn, `block`
    rounds at a time: the same caches and scheduling), and the loops take turns block by block, in
    an order shuffled per block: so every figure spans the same minutes of the shared machine's
    changing load, and a ratio of two compares like with like."""
    samples: dict[str, list[float]] = {name: [] for loop in loops for name in loop}
    order, rng = list(loops), random.Random(0)
    for _ in range(0, n, block):
        rng.shuffle(order)
        for loop in order:
            for _ in range(block):
                for name, trip in loop.items():
                    t = time.perf_counter()
                    trip()
                    samples[name].append(time.perf_counter() - t)
    return {name: statistics.median(times) * 1e6 for name, times in samples.items()}


class PipeChild:
    """A Python child that echoes lines over pipes: the bare round trip any executor is held to."""

    def __enter__(self) -> PipeChild:
        self.child = subprocess.Popen([sys.executable, "-c", "import sys\nfor l in sys.stdin: sys.stdout.write(l); "
                                       "sys.stdout.flush()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        assert self.child.stdin is not None and self.child.stdout is not None
        self.write, self.readline = self.child.stdin.write, self.child.stdout.readline
        return self

    def round_trip(self) -> None:
        self.write(b"ping\n")
        self.readline()

    def __exit__(self, *exc: object) -> None:
        assert self.child.stdin is not None
        self.child.stdin.close()
        self.child.wait()


class RawExecutor:
    """A host executor on a socketpair, a framed `ping` written and its reply read by hand: what
    a round trip to the executor costs without channel.Executor (C child, socket, one read)."""

    def __enter__(self) -> RawExecutor:
        from ashcheck.adapters import build

        self.sock, theirs = socket.socketpair()
        with theirs:
            env = dict(os.environ, ASHCHECK_PARENT=str(os.getpid()))
            self.proc = subprocess.Popen([str(build.executor_path("host"))], stdin=theirs.fileno(),
                                         stdout=theirs.fileno(), env=env)
        self.buffer = bytearray(1 << 16)
        self.round_trip()
        return self

    def round_trip(self) -> None:
        self.sock.send(b"1 ping\n")
        assert self.sock.recv_into(self.buffer) == 5, "one read brings `1 ok\\n`"

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        self.proc.wait()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated: {','.join(GROUPS)}")
    parser.add_argument("--mutation-run", action="store_true", help="run the full mutation run first")
    parser.add_argument("--race-seeds", type=int, default=10, help="seeds per race mutant (concurrency group)")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    if unknown := parts - set(GROUPS):
        parser.error(f"--only: unknown part(s) {sorted(unknown)}")
    figures: dict[str, float | str] = {}
    _count_driver_steps()
    if parts & {"sim", "memfd"}:
        floor = steps_per_second(FloorMachine)
        figures["floor_steps_per_s"] = floor
    if "sim" in parts:
        figures["sim_steps_per_s"] = machine_rate("sim")
        figures["sim_ratio"] = float(figures["sim_steps_per_s"]) / floor
    if "memfd" in parts:
        figures["memfd_steps_per_s"] = machine_rate("memfd")
        trips = round_trips_us("memfd", floors=True)
        figures["memfd_op_us"], figures["memfd_child_ping_us"] = trips["op"], trips["ping"]
        figures["pipe_rtt_us"], figures["memfd_raw_rtt_us"] = trips["pipe"], trips["raw"]
        figures["memfd_ratio"] = trips["op"] / trips["pipe"]
    if "kernel" in parts:
        figures.update(kernel_figures())
    if "fuzz" in parts:
        figures.update(fuzz_figures())
    if "selftest" in parts:
        figures.update(selftest_figures())
    if "ci" in parts:
        figures.update(ci_figures())
    if "mutation" in parts:
        figures.update(mutation_figures(args.mutation_run))
    if "concurrency" in parts:
        figures.update(concurrency_figures(args.race_seeds))
    rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
    print(json.dumps(rounded) if args.json else "\n".join(f"{k:28} {v}" for k, v in rounded.items()))
    return 0


def selftest_figures() -> dict[str, float | str]:
    """Each self-test mutant under the ci profile, as test_mutants.py judges it."""
    from ashcheck.conformance.selftest.catching import violated_rules
    from ashcheck.conformance.selftest.mutants import MUTANTS, STATE_MUTANTS

    times: list[float] = []
    for mutant in MUTANTS:
        state = mutant in STATE_MUTANTS
        caught = violated_rules(f"{mutant.__module__}:{mutant.__name__}", stop_at="*" if state else mutant.breaks,
                                scenarios=not state)
        if caught.seconds is not None and (state or mutant.breaks in caught.rules):
            times.append(caught.seconds)
    return {"selftest_kill_ci": f"{len(times)}/{len(MUTANTS)}",
            "median_time_to_kill_ci_s": statistics.median(times) if times else float("nan")}


def run_wall_s(adapter: str, profile: str) -> float:
    """The wall time of `ashcheck run --adapter ADAPTER --profile PROFILE` as a user runs it (a fresh
    process, its workers, its report)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from ashcheck.conformance.cli import main; raise SystemExit(main())",
                        "run", "--adapter", adapter, "--profile", profile, "--report", f"{tmp}/report"],
                       cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        return time.perf_counter() - start


def ci_figures() -> dict[str, float | str]:
    """The sim ci run as `tox -e sim` runs it, and in-process; whole quick runs on sim and memfd."""
    from ashcheck.conformance.selftest.catching import violated_rules

    figures: dict[str, float | str] = {"ci_sim_s": run_wall_s("sim", "ci")}
    start_cpu = time.process_time()
    violated_rules("sim")
    figures["sim_ci_cpu_s"] = time.process_time() - start_cpu
    figures["quick_sim_s"] = run_wall_s("sim", "quick")
    figures["quick_memfd_s"] = run_wall_s("memfd", "quick")
    return figures


def mutation_figures(run: bool) -> dict[str, float | str]:
    """The last full mutation run's figures (running it first when asked, or when none is recorded)."""
    from ashcheck.conformance.selftest import mutation

    survivors = Path(__file__).resolve().parent.parent / "conformance" / "selftest" / "mutation_survivors.toml"
    if run or not mutation.load_survivors(survivors).run:
        with tempfile.TemporaryDirectory() as tmp:
            mutation.full_run(2, survivors, Path(tmp))
    recorded = mutation.load_survivors(survivors)
    figures = mutation.figures(recorded)
    return {"mutation_score": figures["score"], **{f"mutation_{k}": figures[k] for k in
            ("score_all", "mutants", "killed", "survived", "equivalent", "unjudged", "open")},
            "mutation_run_s": float(recorded.run["seconds"])}


def concurrency_figures(seeds: int) -> dict[str, float | str]:
    """How fast histories are checked, and how reliably each race mutant is caught."""
    import dataclasses
    import random

    from ashcheck.adapters import load_adapter
    from ashcheck.conformance import branches, concurrent
    from ashcheck.conformance.results import RECORDER
    from ashcheck.conformance.selftest.mutants import RACE_MUTANTS
    from ashcheck.conformance.settings import PROFILES
    from ashcheck.spec import LINEARIZABLE, linearize

    adapter = load_adapter("sim")()
    rng = random.Random(0)
    checked, spent = 0, 0.0
    while spent < 5.0:  # histories drawn as the profile draws them, with 3 branches of 8 calls
        from ashcheck.conformance.driver import Driver

        d = Driver(adapter)
        for _ in range(3):
            d.spawn(True)
        for fd in d.new_fds(o.CreateRegion(0, b"r", 4 * 4096)).values:
            for m in d.mmap(fd, 4 * 4096, 3, True, 0).values:
                d.fill(m)
            for p in (1, 2):
                for got in d.transfer(0, p, (fd.fd,)).values:
                    d.mmap(got, 4 * 4096, 3, True, 0)
        draws = iter([rng.randrange(2**16) for _ in range(4096)])
        kinds = branches.swarm(rng, True)
        ops = [branches.draw_branch(d, branches.view(d, p, [q for q in range(3) if q != p]), kinds, 8, draws)[:8]
               for p in range(3)]
        timed = adapter.perform_concurrently(ops, [rng.randrange(16) for _ in range(64)])
        calls = concurrent.history_calls(ops, timed, concurrent.look_after(adapter, d.h, ops, timed))
        start = time.perf_counter()
        linearize(d.h.spec, calls)
        spent += time.perf_counter() - start
        checked += 1
    out: dict[str, float | str] = {"linearize_histories_per_s": checked / spent}
    profile = PROFILES["concurrency"]
    started = time.perf_counter()
    for mutant in RACE_MUTANTS:
        caught = 0
        for seed in range(seeds):
            racy = load_adapter(f"{mutant.__module__}:{mutant.__name__}")()
            RECORDER.clear()
            for shard in range(profile.shards):
                concurrent.concurrent(racy, dataclasses.replace(profile, seeded=True), 1000 * seed + shard,
                                      shrink=False)
                if RECORDER.get(LINEARIZABLE).violated:
                    caught += 1
                    break
        out[f"race_{mutant.name.removeprefix('mutant-race-')}_seeds"] = f"{caught}/{seeds}"
    out["race_seed_s"] = (time.perf_counter() - started) / max(1, seeds * len(RACE_MUTANTS))
    return out


def kernel_figures() -> dict[str, float]:
    from vm_figures import measure  # bench/ is sys.path[0] when run as a script

    vm = measure()
    out = dict(vm)
    trips = round_trips_us("kernel", n=500)
    out["kernel_op_us"], out["kernel_child_ping_us"] = trips["op"], trips["ping"]
    out["kernel_ratio"] = out["kernel_op_us"] / out["vport_rtt_us"]
    # issue 13's two targets: the hop to the modelled process (≤ 2: each process has a port of its
    # own; through the hub, each hub↔process switch flushed qemu's translation caches) and the op
    # itself (≤ 1.2)
    out["kernel_child_ratio"] = out["kernel_child_ping_us"] / out["vport_rtt_us"]
    out["kernel_op_child_ratio"] = out["kernel_op_us"] / out["kernel_child_ping_us"]
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
