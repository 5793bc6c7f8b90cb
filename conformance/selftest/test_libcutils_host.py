"""libcutils-host (Debian's android-libcutils through the native-implementation API): every
declared deviation is shown by a short program, and a conformance run finds no other difference.

Together the two say "the declared deviations are the ones observed": the first proves each
declaration true of the library (a program whose last step breaks that rule), the second that a
run of the suite breaks no rule that is not declared.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ashcheck.adapters.libcutils_host import DEVIATIONS, LibcutilsHostAdapter
from ashcheck.adapters.sim import SimAdapter
from ashcheck.spec import Spec
from ashcheck.spec import ops as o
from ashcheck.spec.outcome import Kind, err, ok

pytestmark = pytest.mark.skipif(LibcutilsHostAdapter.unavailable_reason() is not None,
                                reason=str(LibcutilsHostAdapter.unavailable_reason()))

P = 4096
RW, R = 3, 1
START = (o.Spawn(0), o.CreateRegion(0, b"r", P))          # fd 3: a one-page region
MAPPED = (*START, o.Mmap(0, 3, 0, P, RW, True))           # … mapped shared, read-write, as map 0

# rule → a program whose last step breaks it on libcutils-host
PROGRAMS: dict[str, tuple[o.Op, ...]] = {
    "ashmem.create.fd": (*START, o.GetFdFlags(0, 3)),
    "ashmem.maps.name": (*MAPPED, o.MapsName(0, 0)),
    "ashmem.get-name.value": (*START, o.GetName(0, 3)),
    "ashmem.set-name.c-string": (*START, o.SetName(0, 3, b"na\0me")),
    "ashmem.set-name.efault-first": (*START, o.SetName(0, 3, None)),
    "ashmem.set-name.empty-resets": (*START, o.SetName(0, 3, b"")),
    "ashmem.set-name.mapped": (*MAPPED, o.SetName(0, 3, b"x")),
    "ashmem.set-name.stores": (*START, o.SetName(0, 3, b"x")),
    "ashmem.set-name.truncates": (*START, o.SetName(0, 3, b"L" * 300)),
    "ashmem.set-size.any": (*START, o.SetSize(0, 3, 2 * P)),
    "ashmem.set-size.mapped": (*MAPPED, o.SetSize(0, 3, 2 * P)),
    "ashmem.get-prot-mask.value": (*START, o.GetProtMask(0, 3)),
    "ashmem.set-prot-mask.add": (*START, o.SetProtMask(0, 3, R), o.SetProtMask(0, 3, RW)),
    "ashmem.mmap.prot-outside-mask": (*START, o.SetProtMask(0, 3, R), o.Mmap(0, 3, 0, P, RW, True)),
    "ashmem.mprotect.beyond-mask": (*START, o.SetProtMask(0, 3, R), o.Mmap(0, 3, 0, P, R, True),
                                    o.Mprotect(0, 0, RW)),
    "ashmem.pin.unaligned": (*MAPPED, o.Pin(0, 3, 100, P)),
    "ashmem.pin.overflow": (*MAPPED, o.Pin(0, 3, 2**32 - P, 2 * P)),
    "ashmem.pin.beyond-size": (*MAPPED, o.Pin(0, 3, 2 * P, P)),
    "ashmem.pin.not-mapped": (*START, o.Pin(0, 3, 0, P)),
    "ashmem.pin.null-arg": (*START, o.IoctlNullArg(0, 3, "PIN")),
    "ashmem.get-pin-status.value": (*MAPPED, o.GetPinStatus(0, 3, 0, P)),
    "ashmem.purge.count": (*MAPPED, o.PurgeAllCaches(0, 3)),
    "ashmem.purge.eperm": (o.Spawn(0, privileged=False), o.CreateRegion(0, b"r", P), o.PurgeAllCaches(0, 3)),
    "fd.ebadf": (*START, o.Close(0, 3), o.Pin(0, 3, 0, P)),
    "ashmem.read.not-mapped": (*START, o.Read(0, 3, 8)),
    "ashmem.lseek.not-mapped": (*START, o.Lseek(0, 3, 0, 0)),
    "ashmem.lseek.size-zero": (o.Spawn(0), o.CreateRegion(0, b"", 0), o.Lseek(0, 3, 0, 0)),
    "ashmem.write.einval": (*START, o.Write(0, 3, b"w")),
    "ashmem.ftruncate.einval": (*START, o.Ftruncate(0, 3, 3 * P)),
    "ashmem.fallocate.enodev": (*START, o.Fallocate(0, 3, 3, 0, P)),
    "ashmem.mmap.too-long": (*START, o.Mmap(0, 3, 0, 2 * P, RW, True)),
    "ashmem.mmap.size-zero": (o.Spawn(0), o.CreateRegion(0, b"", 0), o.Mmap(0, 3, 0, P, RW, True)),
    "ashmem.mmap.private-anonymous": (*MAPPED, o.Store(0, 0, 0, b"data"), o.Mmap(0, 3, 1, P, RW, False),
                                      o.Load(0, 1, 0, 4)),
}


@pytest.fixture(scope="module")
def adapter() -> Iterator[LibcutilsHostAdapter]:
    a = LibcutilsHostAdapter()
    a.start()
    try:
        yield a
    finally:
        a.close()


def test_every_declaration_has_a_program() -> None:
    assert set(PROGRAMS) == set(DEVIATIONS)


@pytest.mark.parametrize("rule", sorted(PROGRAMS))
def test_the_program_conforms_on_the_simulator(rule: str) -> None:
    """The programs break nothing on a conforming implementation: only the library makes them fail."""
    sim = SimAdapter()
    sim.reset()
    spec = Spec(sim.profile, page_size=sim.page_size, long_bits=sim.long_bits)
    for op in PROGRAMS[rule]:
        got = sim.perform(op)
        assert spec.observe(op, got).ok, f"{op} → {got} on the simulator"


@pytest.mark.parametrize("rule", sorted(PROGRAMS))
def test_the_declared_deviation_is_real(adapter: LibcutilsHostAdapter, rule: str) -> None:
    if rule == "ashmem.purge.count" and os.geteuid() != 0:
        pytest.skip("a privileged process needs root")
    adapter.reset()
    spec = Spec(adapter.profile, page_size=adapter.page_size, long_bits=adapter.long_bits)
    *before, last = PROGRAMS[rule]
    for op in before:
        got = adapter.perform(op)
        assert got.kind is not Kind.INDETERMINATE and spec.observe(op, got).ok, f"{op} → {got}"
    got = adapter.perform(last)
    verdict = spec.observe(last, got)
    assert not verdict.ok, f"{last} → {got} is allowed: the library no longer deviates from {rule}"
    assert rule in verdict.rules, f"{last} → {got} breaks {verdict.rules}, not {rule}"


def test_a_conformance_run_breaks_only_declared_rules(tmp_path: Path) -> None:
    report = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "ashcheck.conformance.cli", "run", "--adapter", "libcutils-host",
                           "--profile", "quick", "--report", str(report)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert (report / "report.json").exists(), done.stdout[-3000:] + done.stderr[-3000:]
    results = {r["rule"]: r for r in json.loads((report / "report.json").read_text())["results"]}
    undeclared = {rule: r["reason"][:300] for rule, r in results.items()
                  if r["status"] == "fail" and rule not in DEVIATIONS}
    assert not undeclared, f"libcutils-host breaks rules it does not declare: {undeclared}"
    observed = {rule for rule, r in results.items() if r["status"] == "xfail"}
    assert observed <= set(DEVIATIONS)
    # A declaration the run did not reach is not a failure of the library (each one is shown real
    # above); today's engine still reports it as "not observed", the only failure allowed here.
    other = {rule: r["reason"][:200] for rule, r in results.items()
             if r["status"] == "fail" and rule in DEVIATIONS and "not observed" not in r["reason"]}
    assert not other, other
    assert len(observed) >= len(DEVIATIONS) // 2, f"the run observed only {sorted(observed)}"
    assert sum(r["status"] == "pass" for r in results.values()) >= 30


def test_lseek_stops_at_the_limit_of_the_file_system_under_tmp(adapter: LibcutilsHostAdapter) -> None:
    """The regions are files in /tmp: the spec is told their s_maxbytes, measured at start, and
    judges lseek by it (on ext4 16 TiB - 4 KiB, where shmem's is 2^63 - 1)."""
    limit = adapter.max_file_offset
    assert limit is not None and (limit % P == 0 or limit == 2**63 - 1)
    adapter.reset()
    spec = Spec(adapter.profile, page_size=adapter.page_size, max_offset=limit)
    shmem = Spec(adapter.profile, page_size=adapter.page_size)
    for op in MAPPED:
        got = adapter.perform(op)
        assert spec.observe(op, got).ok and shmem.observe(op, got).ok
    at, past = o.Lseek(0, 3, limit, 0), o.Lseek(0, 3, limit + 1, 0)
    assert adapter.perform(at) == ok(limit) and spec.observe(at, ok(limit)).ok
    refused = adapter.perform(past)
    assert refused == err(errno.EINVAL) and spec.observe(past, refused).ok
    if limit < 2**63 - 1:  # a shmem file would have taken it
        assert not shmem.observe(past, refused).ok
