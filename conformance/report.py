"""Reports: report.json for machines, report.md and report.html for people, one reproducer
script per failing rule, and the rule × adapter grid that merges several runs."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ashcheck.conformance.replay import script
from ashcheck.conformance.results import STATUSES

MARK = {"pass": "✅ pass", "fail": "❌ fail", "xfail": "⚠️ xfail", "skip": "⏭ skip", "unknown": "❔ unknown"}
COLOR = {"pass": "#d4f7d4", "fail": "#ffd0d0", "xfail": "#fff2c0", "skip": "#e8e8e8", "unknown": "#e0e8ff"}


def write(directory: Path, report: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    repro_dir = directory / "reproducers"
    for result in report["results"]:
        if result["status"] == "fail" and result.get("steps"):
            repro_dir.mkdir(exist_ok=True)
            path = repro_dir / f"{result['rule']}.py"
            path.write_text(script(result["rule"], result["summary"], report["adapter"], report["profile"],
                                   report.get("options", {}), result["steps"], path.name))
            result["reproducer"] = str(path.relative_to(directory))  # the script; "steps" has the data
    (directory / "report.json").write_text(json.dumps(report, indent=1))
    (directory / "report.md").write_text(markdown(report))
    (directory / "report.html").write_text(page(f"ashcheck: {report['adapter']} ({report['profile']})",
                                                 _html_table(report)))


def counts(report: dict[str, Any]) -> dict[str, int]:
    return {s: sum(r["status"] == s for r in report["results"]) for s in STATUSES}


def markdown(report: dict[str, Any]) -> str:
    c = counts(report)
    lines = [f"# ashcheck: adapter `{report['adapter']}`, profile `{report['profile']}`", "",
             f"Hypothesis profile `{report['hypothesis_profile']}`. " +
             ", ".join(f"{n} {s}" for s, n in c.items()), "",
             "| rule | status | confirmed | note |", "|---|---|---|---|"]
    for r in report["results"]:
        note = r.get("reason", "").splitlines()[0] if r.get("reason") else ""
        if r.get("reproducer"):
            note = f"reproducer: `{r['reproducer']}` — {note}"
        lines.append(f"| `{r['rule']}` | {MARK[r['status']]} | {r['confirmed']} | {note} |")
    return "\n".join(lines) + "\n"


def _html_table(report: dict[str, Any]) -> str:
    rows = []
    for r in report["results"]:
        detail = html.escape(r.get("reason", ""))
        if r["status"] == "fail" and r.get("reason"):
            detail = f"<details><summary>why</summary><pre>{detail}</pre></details>"
        rows.append(f"<tr style='background:{COLOR[r['status']]}'><td><code>{html.escape(r['rule'])}</code>"
                    f"<br><small>{html.escape(r['summary'])}</small></td><td>{r['status']}</td>"
                    f"<td>{r['confirmed']}</td><td>{detail}<br><small>{html.escape(r['source'])}</small></td></tr>")
    head = "<tr><th>rule</th><th>status</th><th>confirmed</th><th>detail / source</th></tr>"
    return f"<p>{html.escape(str(counts(report)))}</p><table>{head}{''.join(rows)}</table>"


def page(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #999;padding:4px;vertical-align:top}pre{white-space:pre-wrap}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def grid(reports: list[dict[str, Any]], out: Path) -> None:
    """Merge several runs into one rule × adapter grid (JSON, Markdown, HTML)."""
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{r['adapter']} ({r['profile']})" for r in reports]
    rules = sorted({res["rule"] for r in reports for res in r["results"]})
    table = {rule: {n: next((x["status"] for x in r["results"] if x["rule"] == rule), "n/a")
                    for n, r in zip(names, reports, strict=True)} for rule in rules}
    (out / "grid.json").write_text(json.dumps({"adapters": names, "rules": table}, indent=1))
    md = ["| rule | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    md += [f"| `{rule}` | " + " | ".join(MARK.get(table[rule][n], "n/a") for n in names) + " |" for rule in rules]
    (out / "grid.md").write_text("\n".join(md) + "\n")
    cells = "".join(
        f"<tr><td><code>{html.escape(rule)}</code></td>" + "".join(
            f"<td style='background:{COLOR.get(table[rule][n], '#fff')}'>{table[rule][n]}</td>" for n in names)
        + "</tr>" for rule in rules)
    head = "<tr><th>rule</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
    (out / "grid.html").write_text(page("ashcheck conformance grid", f"<table>{head}{cells}</table>"))
