"""What `ashcheck run` prints: a progress line while the tests run, a few lines at the end.

On a terminal the progress line is redrawn in place (rich); elsewhere (a CI log, a pipe) a plain
line is printed every `EVERY` seconds. Both go to stderr; the end goes to stdout:

    FAIL mem.load.shared: p0: load(0, 4096, 4096) → b'\\x00…' (allowed: b'0.0.1.1…'); reproducer: r/rep…/….py
    known deviations seen: ashmem.get-name.value
    lost outcomes: 12 of 31,240 operations, in 5 of 400 test cases (1.25%; …); in 5 rules
    ashcheck: sim (ashmem), ci: 1 fail, 0 known deviation, … 77 pass in 41 s: exit 1, a rule failed; report: r/report.md
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ashcheck.conformance import progress
from ashcheck.conformance.render import lost_line, lost_reasons
from ashcheck.conformance.report import LABELS
from ashcheck.conformance.results import FLOW_ORDER

EVERY = 5.0      # seconds between plain progress lines
SHORT = 100      # characters kept of an observed or allowed value on the console


def progress_line(snap: progress.Snapshot, elapsed: float, what: str) -> str:
    if snap.profile is None and not snap.examples:
        return f"ashcheck {what}: starting the adapter, {_clock(elapsed)}"
    rules = f"{snap.exercised}/{snap.rules}" if snap.rules else f"{snap.exercised}"
    failing = f", {snap.failing} failing" if snap.failing else ""
    lost = f", {snap.lost:,} lost in {snap.lossy:,} examples" if snap.lost else ""
    return (f"ashcheck {what}: {rules} rules exercised{failing}, {snap.examples:,} examples, "
            f"{snap.steps:,} steps{lost}, {_clock(elapsed)}")


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    return f"{minutes}:{s:02d}"


class Progress:
    """Shows the run's progress from the evidence files, on every `tick`."""

    def __init__(self, evidence: Path, what: str, *, live: bool | None = None, stream: TextIO | None = None,
                 every: float = EVERY) -> None:
        self.evidence, self.what, self.every = evidence, what, every
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._start = time.monotonic()
        self._printed = self._start
        self._display: Live | None = None
        self._last_read = 0.0
        self._line = ""

    def __enter__(self) -> Progress:
        if self.live:
            self._display = Live(Text(""), console=Console(file=self.stream), transient=True,
                                 refresh_per_second=4, redirect_stdout=False, redirect_stderr=False)
            self._display.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._display is not None:
            self._display.stop()
            self._display = None

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last_read >= 0.5:
            self._last_read = now
            self._line = progress_line(progress.read(self.evidence), now - self._start, self.what)
        if self._display is not None:
            self._display.update(Text(self._line))
        elif now - self._printed >= self.every:
            self._printed = now
            print(self._line, file=self.stream, flush=True)


def _short(text: str) -> str:
    return text if len(text) <= SHORT else text[:SHORT - 1] + "…"


def final_lines(report: dict[str, Any], report_dir: Path) -> list[str]:
    """The end of a run: one line per failing rule, the known deviations seen, the lost outcomes,
    the callers' flows, problems of the run, and the summary."""
    out = []
    for r in sorted(report["results"], key=lambda r: r["rule"]):
        if r["status"] != "fail":
            continue
        if r.get("step"):
            allowed = "; ".join(_short(a) for a in r.get("allowed", [])) or "nothing"
            line = f"FAIL {r['rule']}: {r['step']} → {_short(r['observed'])} (allowed: {allowed})"
        else:
            line = f"FAIL {r['rule']}: {r.get('reason', '')}"
        if r.get("reproducer"):
            line += f"; reproducer: {report_dir / r['reproducer']}"
        out.append(line)
    seen = sorted(r["rule"] for r in report["results"] if r["status"] == "xfail")
    if seen:
        out.append(f"known deviations seen ({len(seen)}): {', '.join(seen)}")
    totals = report["totals"]
    if totals.get("lost") or totals.get("restarts"):
        out.append(f"lost outcomes: {lost_line(report)}; in {len(report['lost_by_rule'])} rules (see the report)")
        out += [f"  {why}" for why in lost_reasons(report)[:2]]
    flows = report.get("flows", [])
    if flows:
        by: dict[str, list[str]] = {}
        for f in flows:
            by.setdefault(f["status"], []).append(f["flow"])
        out.append("callers' flows: " + "; ".join(
            f"{len(names)} {status}" + ("" if status == "pass" else f" ({', '.join(names)})")
            for status, names in sorted(by.items(), key=lambda kv: FLOW_ORDER.index(kv[0]))))
    run = report["run"]
    if run["interrupted"]:
        out.append(f"interrupted ({run['interrupted']}): the report covers the part of the run before it")
    out += run.get("problems", [])
    counts = ", ".join(f"{report['counts'][name]} {name}" for name in LABELS
                       if report["counts"][name] or name == "fail")
    out.append(f"ashcheck: {report['adapter']} ({report['profile']}), {run['search']['profile']}: {counts}; "
               f"{totals.get('examples', 0):,} examples, {totals.get('steps', 0):,} steps in "
               f"{run['duration_s']:.0f} s: exit {run['exit_code']}, {run['exit_reason']}; "
               f"report: {report_dir / 'report.md'}")
    return out
