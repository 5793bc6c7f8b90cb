"""One run shows every difference: an implementation with twelve independent bugs in twelve areas
gets all of them reported by one `ci` run, each with a reproducer that reproduces it; declaring
what that run reported makes the next run pass, since a declared deviation is set aside exactly
like a violation and so changes nothing the rest of the run explores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ashcheck.conformance.selftest.mutants import ManyBugs

MANY = "ashcheck.conformance.selftest.mutants:ManyBugs"


def ashcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ashcheck.conformance.cli", *args], capture_output=True,
                          text=True, timeout=1800, env=env)


def test_one_ci_run_reports_every_bug_and_declaring_them_passes(tmp_path: Path) -> None:
    first = ashcheck("run", "--adapter", MANY, "--profile", "ci", "--report", str(tmp_path / "first"))
    assert first.returncode == 1, first.stdout[-2000:] + first.stderr[-2000:]
    report = json.loads((tmp_path / "first" / "report.json").read_text())
    failed = {r["rule"]: r for r in report["results"] if r["status"] == "fail"}
    missing = [bug.name for bug in ManyBugs.bugs if bug.breaks not in failed]
    assert not missing, f"one run missed {missing}; it reported {sorted(failed)}"
    for bug in ManyBugs.bugs:  # each with a reproducer that still breaks the rule
        script = tmp_path / "first" / failed[bug.breaks]["reproducer"]
        replayed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
        assert replayed.returncode == 1, f"{bug.name}: {replayed.stdout[-1500:]}{replayed.stderr[-500:]}"

    package = tmp_path / "declared"
    package.mkdir()
    (package / "known.py").write_text(
        "from ashcheck.conformance.selftest.mutants import ManyBugs\n\n\n"
        "class KnownBugs(ManyBugs):\n"
        f"    deviations = {{rule: 'known' for rule in {sorted(failed)!r}}}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")])}
    second = ashcheck("run", "--adapter", "known:KnownBugs", "--profile", "ci", "--report", str(tmp_path / "second"),
                      env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    second_report = json.loads((tmp_path / "second" / "report.json").read_text())
    statuses = {r["rule"]: r["status"] for r in second_report["results"]}
    assert all(statuses[rule] == "xfail" for rule in failed), statuses
