"""A transport that keeps failing does not fail a run: one executor killed every second during a
memfd `ci` run makes the outcomes it touched unknown, counted in the report, and the run judges the
rest (exit 0), or says plainly that too much was lost (exit 2), never exit 1 and never a crash."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ashcheck.conformance.selftest.test_lifecycle import executors_tagged, gone_within, start_run


def test_killing_an_executor_every_second_loses_outcomes_not_the_run(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    report = tmp_path / "report"
    run = start_run("memfd", report, "ci", tag)
    kills = 0
    try:
        while run.poll() is None:
            time.sleep(1)
            victims = executors_tagged(tag)
            if victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victims[kills % len(victims)], signal.SIGKILL)
                    kills += 1
        out, _ = run.communicate(timeout=60)  # stderr goes to stdout: start_run
    finally:
        if run.poll() is None:
            run.kill()
    data = json.loads((report / "report.json").read_text())
    lost = data["totals"]["lost"]
    assert kills >= 5 and lost >= 1, (kills, data["totals"])
    failed = [(r["rule"], r.get("message"), r.get("reproducer")) for r in data["results"] if r["status"] == "fail"]
    assert not failed, (failed, out[-4000:])
    assert run.returncode in (0, 2), out[-4000:]
    assert any(r["lost"] for r in data["results"]), "lost outcomes are counted per rule in the report"
    if run.returncode == 2:
        assert "lost" in out, "a run that lost too much says so"
    assert gone_within(tag, 5) == []


def test_an_adapter_that_cannot_start_says_why_once_and_exits_2(tmp_path: Path) -> None:
    """The executor cache cannot be made (XDG_CACHE_HOME is a file: even root cannot make a folder
    under it): one reason, exit 2, not one error per test."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = dict(os.environ, XDG_CACHE_HOME=str(blocker))
    command = [sys.executable, "-m", "ashcheck.conformance.cli", "run", "--adapter", "memfd", "--profile", "quick",
               "--report", str(tmp_path / "report")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    said = done.stdout + done.stderr
    assert done.returncode == 2, said[-2000:]
    assert "cache" in said and said.count("cannot be written") <= 2, said[-2000:]
