"""The report of one run: what `ashcheck run` writes into its `--report` folder.

    report.json      for machines: the run's settings, totals, and one result per rule
    report.md        for people (render.py), failures first, with their steps inline, then the
                     callers' flows (flows.py), each with the rules its steps were judged by
    report.html      the same as a page
    junit.xml        one test case per rule, for CI systems (junit.py)
    reproducers/     one standalone script per failing rule (replay.py)
    evidence/        what each test process recorded (results.py), and pytest.log: pytest's output

Each rule gets one label (`label`): pass, "pass, emulated" (every confirmation was an answer the
adapter computed rather than observed), fail, known deviation, skip, not exercised. report.json keeps
the status names of results.py (`status`) beside the label.

`files` in report.json lists every file the run wrote, so that the next run into the same folder
removes exactly those (reportdir.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ashcheck.conformance.replay import script
from ashcheck.spec.ops import Op
from ashcheck.spec.outcome import Outcome
from ashcheck.spec.sources import BY_TAG, cite

FORMAT = 2  # report.json's "ashcheck_report": the version of this layout (1 had no marker)

# the order in which reports show rules and counts: what needs attention first
LABELS = ("fail", "known deviation", "not exercised", "skip", "pass, emulated", "pass")
_BY_STATUS = {"fail": "fail", "xfail": "known deviation", "skip": "skip", "unknown": "not exercised"}


def label(result: dict[str, Any]) -> str:
    """The one word (or two) a report shows for a result of results.statuses."""
    if result["status"] == "pass":
        return "pass, emulated" if result.get("emulated_only") else "pass"
    return _BY_STATUS[result["status"]]


def counts(results: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Results per label, every label present, in LABELS order."""
    found = [label(r) for r in results]
    return {name: found.count(name) for name in LABELS}


def ordered(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failures first, then known deviations, not exercised, skips and passes; by rule id within each."""
    return sorted(results, key=lambda r: (LABELS.index(label(r)), r["rule"]))


def steps_as_lines(steps: list[dict[str, Any]]) -> list[str]:
    """A recorded program as strace-like lines: `p0: mmap(3, 0, 16384, 3, True)  →  None`; a step of a
    concurrent branch starts with the branch and its times: `b1 [12–15] p1: …` (`after`: the look after)."""
    lines = []
    for step in steps:
        try:
            at = step.get("at") or ["?", "?"]
            branch = "" if "branch" not in step else (
                f"{'after' if step['branch'] == 'after' else 'b' + str(step['branch'])} [{at[0]}–{at[1]}] ")
            lines.append(f"{branch}{Op.from_json(step['op'])}  →  {Outcome.from_json(step['outcome'])}")
        except (KeyError, TypeError, ValueError):  # a report of another version: show the data
            lines.append(json.dumps(step))
    return lines


def flow_rows(flows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The callers' flows (flows.py) as the report lists them, in their declared order: name, title,
    whose flow it is, status, the rules their steps were judged by, and the steps."""
    from ashcheck.conformance.flows import FLOWS

    return [{"flow": name, "title": f.title, "doc": f.doc, **flows[name]} for name, f in FLOWS.items()
            if name in flows]


def build(*, adapter: str, options: dict[str, str], meta: dict[str, Any], results: list[dict[str, Any]],
          totals: dict[str, int], run: dict[str, Any],
          flows: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The report as report.json holds it.

    adapter: as given with --adapter; options: its --adapter-option values; meta: the adapter's
    description written by the test processes (plugin.py: profile, capabilities, deviations,
    unsupported operations, identity); results: results.statuses(); totals: results.Totals as a
    dict; run: the run's settings and how it ended (cli.py); flows: flow name → results.FlowResult
    as a dict."""
    for result in results:
        result["label"] = label(result)
        result["citations"] = cite(result["source"])
    used = sorted({tag for r in results for tag in r["citations"]})
    return {"ashcheck_report": FORMAT, "adapter": adapter, "name": meta.get("name", adapter),
            "profile": meta.get("profile"), "hypothesis_profile": run["search"]["profile"],
            "options": options, "identity": meta.get("identity", {}),
            "capabilities": meta.get("capabilities", []), "deviations": meta.get("deviations", {}),
            "unsupported": meta.get("unsupported", {}), "run": run, "totals": totals,
            "counts": counts(results), "lost_by_rule": {r["rule"]: r["lost"] for r in results if r.get("lost")},
            "results": results, "flows": flow_rows(flows or {}),
            "citations": {tag: BY_TAG[tag].citation() for tag in used}}


def failed_to_start(*, adapter: str, options: dict[str, str], reason: str, run: dict[str, Any]) -> dict[str, Any]:
    """The report of a run whose adapter never started: no results, the reason."""
    return {"ashcheck_report": FORMAT, "adapter": adapter, "name": adapter, "profile": None,
            "hypothesis_profile": run["search"]["profile"], "options": options, "identity": {},
            "error": reason, "run": run, "totals": {}, "counts": counts([]), "lost_by_rule": {},
            "results": [], "flows": [], "citations": {}}


def write(directory: Path, report: dict[str, Any]) -> list[Path]:
    """Write the reproducers, report.json, report.md, report.html and junit.xml into `directory`;
    record in report["files"] every file of the folder this run wrote (the evidence included) and
    return them. Raises OSError."""
    from ashcheck.conformance import junit, render

    directory.mkdir(parents=True, exist_ok=True)
    written = [p for p in sorted((directory / "evidence").glob("*")) if p.is_file()]
    log = directory / "pytest.log"
    if log.exists():
        written.append(log)
    for result in report["results"]:
        if result["status"] == "fail" and result.get("steps"):
            path = directory / "reproducers" / f"{result['rule']}.py"
            path.parent.mkdir(exist_ok=True)
            path.write_text(script(result["rule"], result["summary"], report["adapter"], report["profile"],
                                   report.get("options", {}), result["steps"], path.name))
            result["reproducer"] = path.relative_to(directory).as_posix()
            written.append(path)
    outputs = {"report.md": render.markdown(report), "report.html": render.html(report),
               "junit.xml": junit.xml(report)}
    written += [directory / name for name in ("report.json", *outputs)]
    report["files"] = sorted(p.relative_to(directory).as_posix() for p in written)
    (directory / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    for name, text in outputs.items():
        (directory / name).write_text(text)
    return written
