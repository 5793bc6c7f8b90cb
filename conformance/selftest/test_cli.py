"""The `ashcheck` command as a user runs it: exit codes, report files, reproducers, deviations.

Each test runs the real command in a subprocess (a conformance run is a pytest session of its
own, which must not nest inside this one).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from ashcheck.adapters.sim import SimAdapter
from ashcheck.conformance.selftest.mutants import DefaultNameSlash

HERE = "ashcheck.conformance.selftest.test_cli"
STATUSES = {"pass", "fail", "xfail", "skip", "unknown"}


class DeclaresItsNameBug(DefaultNameSlash):
    """A backend that knows it reports the wrong default name, and says so."""
    deviations = MappingProxyType({"ashmem.get-name.value": "reports dev/ashmem/ (known bug 123)"})


class StaleDeclaration(SimAdapter):
    """A backend that declares a deviation it no longer has."""
    deviations = MappingProxyType({"ashmem.get-name.value": "used to report dev/ashmem/"})


def ashcheck(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ashcheck.conformance.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


def run(adapter: str, report: Path, profile: str = "quick") -> tuple[int, dict[str, Any], str]:
    done = ashcheck("run", "--adapter", adapter, "--profile", profile, "--report", str(report))
    data = json.loads((report / "report.json").read_text()) if (report / "report.json").exists() else {}
    return done.returncode, data, done.stdout + done.stderr


def by_rule(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["rule"]: r for r in report["results"]}


def test_rules_json_lists_every_rule_with_a_source() -> None:
    done = ashcheck("rules", "--format", "json")
    assert done.returncode == 0
    rules = json.loads(done.stdout)
    assert len(rules) >= 60
    ids = [r["id"] for r in rules]
    assert len(ids) == len(set(ids))
    for r in rules:
        assert re.fullmatch(r"[a-z]+(\.[a-z0-9-]+)+", r["id"]), r["id"]
        assert r["summary"].strip() and r["source"].strip(), r["id"]


def test_adapters_says_which_can_run() -> None:
    done = ashcheck("adapters")
    assert done.returncode == 0
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert set(lines) >= {"sim", "memfd", "kernel", "adb"}
    assert "available" in lines["sim"] and "unavailable" not in lines["sim"]


@pytest.mark.parametrize("args, says", [
    ([], "required"),
    (["run"], "--adapter"),
    (["run", "--adapter", "no-such-adapter"], "no adapter named"),
    (["run", "--adapter", "no.such.module:Adapter"], "no.such.module"),
    (["run", "--adapter", "sim", "--profile", "forever"], "invalid choice"),
    (["run", "--adapter", "sim", "--adapter-option", "seed"], "KEY=VALUE"),
    (["run", "--adapter", "sim", "--adapter-option", "colour=blue"], "unknown option"),
    (["run", "--adapter", "sim", "-n", "many"], "number of worker processes"),
    (["run", "--adapter", "sim", "--max-lost", "5%"], "fraction between 0 and 1"),
    (["merge", "somewhere"], "--out DIR, --check FILE"),
])
def test_usage_errors_exit_2_with_a_reason(args: list[str], says: str, tmp_path: Path) -> None:
    done = ashcheck(*args, *(["--report", str(tmp_path)] if args[:1] == ["run"] else []))
    assert done.returncode == 2
    assert says in done.stderr
    assert not (tmp_path / "report.json").exists()


def test_a_conforming_run_exits_0_and_writes_its_reports(tmp_path: Path) -> None:
    code, report, output = run("sim", tmp_path)
    assert code == 0, output
    assert report["adapter"] == "sim" and report["profile"] == "ashmem"
    statuses = [r["status"] for r in report["results"]]
    assert set(statuses) <= STATUSES and "fail" not in statuses
    assert statuses.count("pass") >= 50
    assert report["run"]["search"]["profile"] == "quick" and report["run"]["interrupted"] is None
    assert report["run"]["exit_code"] == 0 and report["totals"]["steps"] > 0
    assert "ashmem.get-name.value" in (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "ashmem.get-name.value" in html
    junit = (tmp_path / "junit.xml").read_text()
    assert 'name="ashmem.get-name.value"' in junit and 'failures="0"' in junit
    assert any(line.startswith("ashcheck: sim (ashmem), quick: 0 fail") for line in output.splitlines())


def test_a_failing_run_exits_1_with_a_reproducer_that_replays(tmp_path: Path) -> None:
    code, report, output = run(f"{DefaultNameSlash.__module__}:{DefaultNameSlash.__name__}", tmp_path)
    assert code == 1, output
    failed = by_rule(report)["ashmem.get-name.value"]
    assert failed["status"] == "fail"
    assert f"FAIL ashmem.get-name.value: {failed['step']} → " in output
    assert str(tmp_path / failed["reproducer"]) in output
    script = tmp_path / failed["reproducer"]
    assert script.exists()
    again = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "ashmem.get-name.value" in again.stdout and "dev/ashmem/" in again.stdout
    # the same steps against the reference implementation are all allowed
    fixed = subprocess.run([sys.executable, str(script), "--adapter", "sim"], capture_output=True, text=True,
                           timeout=120)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    # any other rule that failed (a concurrent history) failed on the mutant's answer
    others = [r for r in report["results"] if r["status"] == "fail" and r["rule"] != "ashmem.get-name.value"]
    assert all("dev/ashmem/" in str(r["observed"]) for r in others), others


def test_a_declared_deviation_is_an_expected_failure(tmp_path: Path) -> None:
    code, report, output = run(f"{HERE}:DeclaresItsNameBug", tmp_path)
    assert code == 0, output
    assert by_rule(report)["ashmem.get-name.value"]["status"] == "xfail"
    assert by_rule(report)["ashmem.get-name.value"]["label"] == "known deviation"
    assert "known deviations seen (1): ashmem.get-name.value" in output


def test_a_stale_deviation_fails_the_run(tmp_path: Path) -> None:
    code, report, output = run(f"{HERE}:StaleDeclaration", tmp_path)
    assert code == 1, output
    result = by_rule(report)["ashmem.get-name.value"]
    assert result["status"] == "fail" and "stale" in result["reason"]


def test_merge_builds_the_difference_table_and_reruns_into_its_own_folder(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    assert run("sim", reports / "a")[0] == 0
    assert run(f"{HERE}:DeclaresItsNameBug", reports / "b")[0] == 0
    for _ in range(2):  # the output folder is among the inputs the second time, as with reports/*
        inputs = sorted(str(p) for p in reports.iterdir())
        done = ashcheck("merge", *inputs, "--out", str(reports / "table"))
        assert done.returncode == 0, done.stderr
    table = (reports / "table" / "differences.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| `ashmem.get-name.value`"))
    assert "pass" in row and "known deviation[^1]" in row
    assert "[^1]: mutant-default-name (ashmem): reports dev/ashmem/ (known bug 123)" in table
    assert {"differences.html", "differences.json"} <= {p.name for p in (reports / "table").iterdir()}
    checked_in = str(reports / "table" / "differences.md")
    check = ashcheck("merge", str(reports / "a"), str(reports / "b"), "--check", checked_in)
    assert check.returncode == 0, check.stderr
    stale = ashcheck("merge", str(reports / "a"), "--check", checked_in)
    assert stale.returncode == 1 and "out of date" in stale.stderr
    assert ashcheck("merge", str(tmp_path / "missing"), "--out", str(tmp_path / "g2")).returncode == 2
