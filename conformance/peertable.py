"""The agreement table of the peer suites (docs/peers.md): for each implementation, every failure of a
peer and the ashcheck rule that reports the same behaviour there, and what ashcheck reports that
the peers do not.

A peer failure is *reported by ashcheck* when a rule that checks the same behaviour (SITES, TESTS)
fails or is a declared deviation on the same implementation in docs/differences.json (the
matrix). A failure with no such rule, or whose rule passes there, is *missed*: the goal is none.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ashcheck.conformance.peers import PeerRun

REPORTED = ("fail", "known deviation")

# ashmem_test.cpp of android-platform-tools 29.0.6 (Android 10): each assertion site → the rules
# that check what it asserts; () where ashcheck has no rule yet (issue 15's list).
SITES: dict[str, dict[int, tuple[str, ...]]] = {"29.0.6": {
    34: ("ashmem.create.fd",), 35: (), 36: ("ashmem.get-size.value",), 37: ("ashmem.set-prot-mask.remove",),
    41: ("ashmem.create.fd",), 42: (), 44: ("ashmem.mmap.ok",), 48: ("ashmem.create.fd",), 49: (),
    50: ("ashmem.mmap.prot-outside-mask",), 54: ("ashmem.create.fd",), 55: (), 56: ("ashmem.get-prot-mask.value",),
    77: ("mem.load.shared",), 79: ("mem.munmap.ok",), 83: ("mem.load.shared",), 84: ("mem.munmap.ok",),
    99: ("mem.load.shared",), 100: ("mem.munmap.ok",), 102: (), 123: ("mem.load.shared",), 124: ("mem.munmap.ok",),
    167: (), 169: ("fd.lseek.position", "fd.lseek.hole-data"), 177: ("fd.read.data",), 178: ("fd.read.data",),
    182: ("mem.munmap.ok",), 194: ("mem.munmap.ok",), 200: ("mem.munmap.ok",), 204: ("ashmem.set-prot-mask.remove",),
    206: ("ashmem.set-prot-mask.add",), 208: ("ashmem.set-prot-mask.add",), 220: (), 247: ("mem.load.shared",),
    248: ("mem.munmap.ok",), 251: (), 274: ("mem.load.shared",), 275: ("mem.munmap.ok",),
}}
# what the sites without a rule assert
NO_RULE = {35: "ashmem_valid()", 42: "ashmem_valid()", 49: "ashmem_valid()", 55: "ashmem_valid()",
           167: "ashmem_valid()", 102: "fork(): the child maps the inherited fd and sees the data",
           220: "fork(): a mask narrowed in the child holds in the parent",
           251: "fork(): the child maps 16 inherited regions"}

# memfd_test's tests (as it prints them) → the rules that check the same; () none
TESTS: dict[str, tuple[str, ...]] = {
    "CREATE": ("ashmem.create.name-too-long",),  # memfd_create's name limit, among its flag checks
    "SEAL-FUTURE-WRITE": ("memfd.seal.write", "memfd.seal.mmap", "memfd.seal.mprotect", "memfd.fallocate.punch"),
    "SEAL-GROW": ("memfd.write.stores", "memfd.ftruncate.sealed", "memfd.fallocate.allocate"),
    "SEAL-SHRINK": ("memfd.ftruncate.sealed",), "SEAL-RESIZE": ("memfd.ftruncate.sealed",),
    "SHARE-DUP": ("fd.dup.lowest-free",), "SHARE-MMAP": ("mem.load.shared",),
}


@dataclass
class Row:
    implementation: str
    peer: str
    source: str
    tests: list[str]
    failed_tests: list[str]
    failures: list[dict[str, Any]]  # {"site", "count", "message", "rules", "reported", "why"}
    ashcheck_only: list[str]        # rules that fail or deviate there that no peer failure maps to
    error: str


def _cells(differences: dict[str, Any], run: PeerRun) -> dict[str, str]:
    """rule → its cell on the implementation of `run` in the matrix (empty if the matrix lacks it)."""
    want = (run.target.adapter, dict(run.target.options))
    header = next((i["header"] for i in differences["implementations"]
                   if (i["adapter"], i["options"]) == want), None)
    if header is None:
        return {}
    return {rule: cells[header]["cell"] for rule, cells in differences["rules"].items() if header in cells}


def _rules_of(run: PeerRun, site: str) -> tuple[tuple[str, ...] | None, str]:
    """The rules mapped to a failure site, or None if the version's sites are not mapped; and what
    the site asserts when no rule does."""
    if run.target.peer == "memfd_test":
        return TESTS.get(site, ()), ""
    version = run.source.split()[-1].split("-")[0] if run.source else ""
    sites = SITES.get(version)
    line = int(site.rsplit(":", 1)[-1]) if ":" in site else -1
    if sites is None:
        return None, ""
    return sites.get(line, ()), NO_RULE.get(line, "")


def rows(runs: list[PeerRun], differences: dict[str, Any]) -> list[Row]:
    out = []
    for run in runs:
        cells = _cells(differences, run)
        grouped: dict[str, dict[str, Any]] = {}
        for f in run.failures:
            site = f.where or f.test
            entry = grouped.setdefault(site, {"site": site, "count": 0, "message": _stable(f.message), "tests": []})
            entry["count"] += 1
            if f.test not in entry["tests"]:
                entry["tests"].append(f.test)
        mapped: set[str] = set()
        for entry in grouped.values():
            rules, asserts = _rules_of(run, entry["site"])
            entry["rules"] = {r: cells.get(r, "not in the matrix") for r in rules or ()}
            mapped |= set(entry["rules"])
            entry["reported"] = any(c in REPORTED for c in entry["rules"].values())
            entry["why"] = ("" if entry["reported"] else "this version's sites are not mapped" if rules is None
                            else f"no ashcheck rule for {asserts or 'what it asserts'}" if not rules
                            else "the rule passes there")
        only = sorted(r for r, c in cells.items() if c in REPORTED and r not in mapped)
        failed_tests = list(dict.fromkeys(f.test for f in run.failures))
        out.append(Row(run.target.name, run.target.peer, run.source, list(run.tests), failed_tests,
                       list(grouped.values()), only, run.error))
    return out


def _stable(message: str) -> str:
    """A failure message without what changes from run to run (addresses)."""
    return re.sub(r"0x[0-9a-f]{6,}", "0x…", message)[:240]


def missed(table: list[Row]) -> int:
    return sum(1 for row in table for f in row.failures if not f["reported"])


def render(table: list[Row]) -> str:
    failures = sum(len(r.failures) for r in table)
    lost = missed(table)
    errors = [r for r in table if r.error]
    lines = ["# The peer suites against the same implementations", "",
             "Generated by `ashcheck peers` (conformance/peers.py, peertable.py); do not edit. AOSP's",
             "`libcutils/ashmem_test.cpp` and the kernel's `tools/testing/selftests/memfd/memfd_test.c`, built from",
             "Debian's sources, run against the implementations of the matrix (docs/differences.md). A peer",
             "failure is **reported by ashcheck** when a rule that checks the same behaviour fails or is a declared",
             "deviation on the same implementation there.", "",
             f"**{failures} distinct peer failure site(s); {failures - lost} reported by ashcheck, {lost} missed"
             + (f"; {len(errors)} run(s) could not be made" if errors else "") + ".**", "",
             "| implementation | peer (source) | tests | failed | every failure → the ashcheck rule there | "
             "ashcheck reports, the peer does not |",
             "|---|---|---|---|---|---|"]
    for r in table:
        if r.error:
            lines.append(f"| {r.implementation} | {r.peer} ({r.source or '?'}) | — | — | could not run: "
                         f"{_cell(r.error)} | — |")
            continue
        shown = "<br>".join(
            f"{'✅' if f['reported'] else '❌'} `{f['site']}` ×{f['count']}: "
            + (", ".join(f"`{rule}` ({cell})" for rule, cell in f["rules"].items()) or "—")
            + ("" if f["reported"] else f" — missed: {f['why']}") for f in r.failures) or "none"
        only = ", ".join(f"`{rule}`" for rule in r.ashcheck_only) or "—"
        lines.append(f"| {r.implementation} | {r.peer} ({r.source}) | {len(r.tests)} | "
                     f"{', '.join(r.failed_tests) or '—'} | {shown} | {len(r.ashcheck_only)}: {only} |")
    lines += ["", "## What the peers assert that no ashcheck rule checks yet", ""]
    versions = {r.source.split()[-1].split("-")[0] for r in table if r.peer == "ashmem_test" and r.source}
    for version in sorted(versions & set(SITES)):
        gaps = sorted({what for line, what in NO_RULE.items() if not SITES[version].get(line)})
        lines.append(f"- ashmem_test ({version}): {'; '.join(gaps)}")
    run_tests = dict.fromkeys(t for r in table if r.peer == "memfd_test" for t in r.tests)
    unmapped = [t for t in run_tests if t not in TESTS]
    if unmapped:
        lines.append(f"- memfd_test: {', '.join(unmapped)}")
    lines += ["", "## The failures as the peers said them", ""]
    for r in table:
        for f in r.failures:
            lines.append(f"- {r.implementation}, {r.peer} `{f['site']}` ({', '.join(f['tests'])}): {f['message']}")
    if not any(r.failures for r in table):
        lines.append("None.")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:300]


def write(table: list[Row], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps([r.__dict__ for r in table], indent=1, ensure_ascii=False) + "\n")
    page = out / "peers.md"
    page.write_text(render(table))
    return page
