"""`ashcheck run` as CI meets it: exit codes for interruptions, adapters that cannot start, failures
outside any rule and lost outcomes; the report folder reused; temporary folders; a quiet console;
the number of test processes; and no warnings from the suite's own code.

Each test runs the real command in a subprocess (a conformance run is a pytest session of its own)
from a temporary directory, with TMPDIR pointing into it, so that whatever the run leaves behind
shows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ashcheck.adapters.base import AdapterUnavailable
from ashcheck.adapters.sim import SimAdapter
from ashcheck.conformance.cli import default_workers
from ashcheck.conformance.runner import failures_outside_rules
from ashcheck.conformance.selftest.mutants import DefaultNameSlash
from ashcheck.conformance.settings import PROFILES
from ashcheck.spec import ops as o
from ashcheck.spec.outcome import Outcome, indeterminate

HERE = "ashcheck.conformance.selftest.test_run"


class CannotStart(SimAdapter):
    """An implementation whose device is gone by the time the run starts it."""
    name = "cannot-start"

    def start(self) -> None:
        raise AdapterUnavailable("the device went away")


class Crashes(SimAdapter):
    """An adapter with a bug of its own: it raises instead of returning an outcome."""
    name = "crashes"

    def perform(self, op: o.Op) -> Outcome:
        if isinstance(op, o.GetSize):
            raise RuntimeError("adapter bug: GetSize not wired")
        return super().perform(op)


class LosesGetSize(SimAdapter):
    """A transport that drops every GET_SIZE: those outcomes are lost, not failures."""
    name = "loses-get-size"

    def perform(self, op: o.Op) -> Outcome:
        if isinstance(op, o.GetSize):
            return indeterminate("test: the reply never came")
        return super().perform(op)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "tmp").mkdir()
    return tmp_path


def env(workdir: Path) -> dict[str, str]:
    return dict(os.environ, TMPDIR=str(workdir / "tmp"))


def ashcheck(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ashcheck.conformance.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=workdir, env=env(workdir))


def report_of(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "report.json").read_text())
    return data


def left_behind(workdir: Path) -> list[str]:
    """What the run left in the temporary directory or as `.hypothesis/` in the current one."""
    return sorted(p.name for p in (workdir / "tmp").iterdir()) + (
        [".hypothesis"] if (workdir / ".hypothesis").exists() else [])


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_run_keeps_a_report_that_says_so(workdir: Path, signum: int, code: int) -> None:
    report = workdir / "r"
    run = subprocess.Popen([sys.executable, "-m", "ashcheck.conformance.cli", "run", "--adapter", "sim",
                            "--profile", "deep", "--report", str(report)], cwd=workdir, env=env(workdir),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # a test process is at work with its adapter started (its .progress file comes before the
        # adapter does: a kill in between is "interrupted before the adapter started", no results)
        while not list((report / "evidence").glob("*.adapter")):
            assert run.poll() is None, run.communicate()[0]
            assert time.monotonic() < deadline, "no test process started within 120 s"
            time.sleep(0.1)
        time.sleep(1)
        os.kill(run.pid, signum)  # to the command only; it passes it on
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == code, output
    data = report_of(report)
    assert data["run"]["interrupted"].startswith(signal.Signals(signum).name)
    assert data["run"]["exit_code"] == code
    assert sum(data["counts"].values()) == len(data["results"]) > 0  # a partial report, every rule in it
    assert f"Interrupted ({signal.Signals(signum).name}" in (report / "report.md").read_text()
    assert "interrupted" in output
    assert left_behind(workdir) == []


def test_an_adapter_that_cannot_start_exits_2_and_says_why_once(workdir: Path) -> None:
    done = ashcheck(workdir, "run", "--adapter", f"{HERE}:CannotStart", "--report", "r")
    assert done.returncode == 2, done.stdout + done.stderr
    assert (done.stdout + done.stderr).count("the device went away") == 1
    data = report_of(workdir / "r")
    assert "the device went away" in data["error"] and data["results"] == []
    assert left_behind(workdir) == []
    again = ashcheck(workdir, "run", "--adapter", f"{HERE}:CannotStart", "--report", "r")  # its folder is reusable
    assert again.returncode == 2 and "not empty" not in again.stderr


def test_a_failure_outside_any_rule_exits_2_and_points_at_the_log(workdir: Path) -> None:
    done = ashcheck(workdir, "run", "--adapter", f"{HERE}:Crashes", "--report", "r")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "outside any rule" in done.stdout and "adapter bug: GetSize not wired" in done.stdout
    assert "adapter bug: GetSize not wired" in (workdir / "r" / "pytest.log").read_text()
    assert report_of(workdir / "r")["run"]["exit_code"] == 2


@pytest.mark.parametrize("limit, code", [("1", 0), ("0", 2)])
def test_lost_outcomes_are_counted_per_rule_and_too_many_exit_2(workdir: Path, limit: str, code: int) -> None:
    done = ashcheck(workdir, "run", "--adapter", f"{HERE}:LosesGetSize", "--report", "r", "--max-lost", limit)
    assert done.returncode == code, done.stdout + done.stderr
    data = report_of(workdir / "r")
    assert data["totals"]["lost"] > 0
    assert data["lost_by_rule"].get("ashmem.get-size.value", 0) > 0
    assert "lost outcomes: " in done.stdout
    md = (workdir / "r" / "report.md").read_text()
    assert "## Lost outcomes per rule" in md and "| `ashmem.get-size.value` |" in md
    if code == 2:
        assert "more than --max-lost 0%" in done.stdout


def test_a_reused_report_folder_holds_only_the_latest_run(workdir: Path) -> None:
    failing = f"{DefaultNameSlash.__module__}:{DefaultNameSlash.__name__}"
    assert ashcheck(workdir, "run", "--adapter", failing, "--report", "r").returncode == 1
    assert (workdir / "r" / "reproducers" / "ashmem.get-name.value.py").exists()
    (workdir / "r" / "my-notes.txt").write_text("not ashcheck's")
    again = ashcheck(workdir, "run", "--adapter", "sim", "--report", "r", "-n", "0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (workdir / "r" / "reproducers").exists()
    assert (workdir / "r" / "my-notes.txt").read_text() == "not ashcheck's"
    files = report_of(workdir / "r")["files"]
    on_disk = sorted(p.relative_to(workdir / "r").as_posix() for p in (workdir / "r").rglob("*") if p.is_file())
    assert on_disk == sorted([*files, "my-notes.txt"])
    assert all(name.startswith("evidence/main.") for name in files if name.startswith("evidence/"))  # -n 0


def test_a_folder_of_someone_else_is_refused(workdir: Path) -> None:
    (workdir / "r").mkdir()
    (workdir / "r" / "data.csv").write_text("1,2\n")
    done = ashcheck(workdir, "run", "--adapter", "sim", "--report", "r")
    assert done.returncode == 2 and "holds no earlier ashcheck report" in done.stderr
    assert sorted(p.name for p in (workdir / "r").iterdir()) == ["data.csv"]


def test_the_console_is_short_and_pytest_speaks_only_with_v(workdir: Path) -> None:
    failing = f"{DefaultNameSlash.__module__}:{DefaultNameSlash.__name__}"
    done = ashcheck(workdir, "run", "--adapter", failing, "--report", "r")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith("FAIL ashmem.get-name.value: ") and "reproducers/ashmem.get-name.value.py" in lines[0]
    # One line per failed rule (a concurrent history may meet the bug too), then the flows and the summary.
    failed = [line for line in lines if line.startswith("FAIL ")]
    assert lines[:len(failed)] == failed and len(lines) <= len(failed) + 2, done.stdout
    assert lines[-1].startswith(f"ashcheck: {failing} (ashmem), quick: {len(failed)} fail"), lines[-1]
    for noise in ("FAILED", "passed", "Hypothesis", "test_explore", "Traceback", "Warning"):
        assert noise not in done.stdout + done.stderr, noise
    verbose = ashcheck(workdir, "run", "--adapter", "sim", "--report", "v", "-v")
    assert verbose.returncode == 0
    assert "test_explore[0]" in verbose.stdout and "PASSED" in verbose.stdout
    workers = report_of(workdir / "v")["run"]["workers"]
    assert workers == default_workers(PROFILES["quick"].shards) == min(len(os.sched_getaffinity(0)), 2)
    assert left_behind(workdir) == []


def test_the_suite_itself_raises_no_warning(workdir: Path) -> None:
    """pytest with every warning an error, on an adapter with a bug, so that shrinking runs too."""
    failing = f"{DefaultNameSlash.__module__}:{DefaultNameSlash.__name__}"
    done = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "ashcheck.conformance",
                           "-p", "no:cacheprovider", "--rootdir", str(workdir), "--adapter", failing,
                           "--ashcheck-profile", "quick", "-W", "error",
                           "-W", "ignore::pytest.PytestAssertRewriteWarning",  # the adapter module, imported first
                           "--junitxml", str(workdir / "junit.xml"), "-q"],
                          capture_output=True, text=True, timeout=600, cwd=workdir,
                          env=dict(env(workdir), HYPOTHESIS_STORAGE_DIRECTORY=str(workdir / "tmp" / "h")))
    assert done.returncode == 1, done.stdout[-3000:]  # the mutant's rule, and nothing else
    assert failures_outside_rules(workdir / "junit.xml") == [], done.stdout[-3000:]
    assert "ashmem.get-name.value" in done.stdout
