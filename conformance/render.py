"""report.md and report.html of one run (report.py builds the data): the summary, then failures with
their steps inline and a link to their reproducer, the callers' flows, declared deviations seen, lost
outcomes per rule, every rule, the run's settings, and the full citation of every source tag the
rules use."""

from __future__ import annotations

import html as h
from typing import Any

from ashcheck.conformance.report import LABELS, label, ordered, steps_as_lines
from ashcheck.conformance.results import lost_share

MARK = {"fail": "❌", "known deviation": "⚠️", "not exercised": "❔", "skip": "⏭", "pass, emulated": "☑️",
        "pass": "✅", "not applicable": "—", "lost": "🔌", "incomplete": "❔"}
COLOR = {"fail": "#ffd0d0", "known deviation": "#fff2c0", "not exercised": "#e0e8ff", "skip": "#e8e8e8",
         "pass, emulated": "#e6f7d4", "pass": "#d4f7d4", "not applicable": "#ffffff", "lost": "#e0e8ff",
         "incomplete": "#e0e8ff"}
FLOWS_INTRO = ("What your callers do, checked: each flow is the order of calls real code uses, run in every "
               "run; its steps are judged by the rules listed.")
STYLE = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #999;padding:4px;vertical-align:top;text-align:left}"
         "pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em}.warn{background:#fff2c0;padding:.5em}")


def title(report: dict[str, Any]) -> str:
    profile = f" ({report['profile']} profile)" if report.get("profile") else ""
    return f"ashcheck report: {report['adapter']}{profile}"


def headline(report: dict[str, Any]) -> str:
    """One line: the counts per label and how the run ended."""
    counts = report["counts"]
    run = report["run"]
    return (", ".join(f"{counts[name]} {name}" for name in LABELS if counts[name] or name == "fail")
            + f"; exit {run['exit_code']}: {run['exit_reason']}")


def lost_line(report: dict[str, Any]) -> str:
    t = report["totals"]
    restarts = t.get("restarts", 0)
    return (f"{t.get('lost', 0):,} of {t.get('steps', 0):,} operations, in {t.get('lossy', 0):,} of "
            f"{t.get('examples', 0):,} test cases ({lost_share(t):.2%}; a run that loses more than "
            f"{report['run']['lost_limit']:.0%} exits 2)"
            + (f"; the adapter was restarted {restarts} time(s): its transport was gone" if restarts else ""))


def lost_reasons(report: dict[str, Any]) -> list[str]:
    """Why outcomes were lost, commonest first: `12 × the hub channel failed: …`."""
    return [f"{n:,} × {why}" for why, n in (report["run"].get("lost_reasons") or {}).items()]


def settings_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    run, search = report["run"], report["run"]["search"]
    hyp = search["hypothesis"]
    seeds = ", ".join(hex(s) for s in search["seeds"]) if search["seeds"] else "random (a new seed every run)"
    rows = [
        ("ashcheck", f"{run['ashcheck_version']} (Hypothesis {run['hypothesis_version']}, Python {run['python']})"),
        ("adapter", f"{report['adapter']} (name {report['name']})"),
        ("adapter options", ", ".join(f"{k}={v}" for k, v in sorted(report["options"].items())) or "none"),
        ("implementation", "; ".join(f"{k}: {v}" for k, v in report["identity"].items()) or "the adapter names none"),
        ("spec profile", str(report.get("profile"))),
        ("search profile", (f"{search['profile']}: {search['examples']} examples of up to {search['steps']} steps "
                            f"per shard, " if search.get("sequential", True) else f"{search['profile']}: ")
         + f"{search.get('histories', 0)} concurrent histories per shard, {search['shards']} shards, seeds {seeds}; "
         f"shrinking: up to {search['shrink_replays']} replays per failing rule"),
        ("Hypothesis settings", ", ".join(f"{k}={v}" for k, v in hyp.items())),
        ("test processes", f"{run['workers']} pytest-xdist workers" if run["workers"] else "1 (in-process, -n 0)"),
        ("host", run["host"]),
        ("started", run["started"]),
        ("duration", f"{run['duration_s']:.1f} s"),
        ("interrupted", f"yes: {run['interrupted']}" if run["interrupted"] else "no"),
    ]
    if report.get("capabilities") is not None:
        rows.append(("capabilities", ", ".join(report.get("capabilities", [])) or "none"))
    if report.get("unsupported"):
        rows.append(("unsupported operations", "; ".join(f"{op}: {why}" for op, why in report["unsupported"].items())))
    return rows


def _note(result: dict[str, Any]) -> str:
    """A result in one line: a failure's step and what came back, the first line of the reason, or
    the allowed variants a pass showed."""
    if result["status"] == "fail" and result.get("step"):
        return f"{result['step']} → {result['observed']}"
    reason = result.get("reason") or ""
    if not reason and result.get("variants"):  # which of the behaviours kernels differ in it showed
        return "allowed variants seen: " + "; ".join(f"{v} ({n})" for v, n in result["variants"].items())
    return reason.splitlines()[0] if reason else ""


def _warnings(report: dict[str, Any]) -> list[str]:
    run = report["run"]
    out = []
    if report.get("error"):
        out.append(f"No results: {report['error']}")
    if run["interrupted"]:
        out.append(f"Interrupted ({run['interrupted']}): this report covers the part of the run before the "
                   "interruption; rules not reached are 'not exercised'.")
    out += run.get("problems", [])
    return out


# Markdown ----------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    text = text.replace("\n", " ")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def markdown(report: dict[str, Any]) -> str:
    results = ordered(report["results"])
    out = [f"# {title(report)}", "", f"**{headline(report)}**", ""]
    out += [f"> ⚠️ {_cell(w)}" for w in _warnings(report)] + ([""] if _warnings(report) else [])
    out += ["## Summary", "", "| result | rules |", "|---|---|"]
    out += [f"| {MARK[name]} {name} | {report['counts'][name]} |" for name in LABELS]
    t, why = report["totals"], "; ".join(lost_reasons(report))
    out += [f"| lost outcomes | {lost_line(report)} |",
            *([f"| why lost | {_cell(why)} |"] if why else []),
            f"| examples, operations performed, set aside | {t.get('examples', 0):,}, {t.get('steps', 0):,}, "
            f"{t.get('set_aside', 0):,} |", ""]
    failures = [r for r in results if r["status"] == "fail"]
    if failures:
        out += ["## Failures", ""]
        for r in failures:
            out += _md_failure(r)
    out += _md_flows(report.get("flows", []))
    deviations = [r for r in results if r["status"] == "xfail"]
    if deviations:
        out += ["## Known deviations seen", "", "| rule | declared reason | violations seen |", "|---|---|---|"]
        out += [f"| `{r['rule']}` | {_cell(r['reason'])} | {r.get('deviated', 0)} |" for r in deviations]
        out.append("")
    if report["lost_by_rule"]:
        out += ["## Lost outcomes per rule", "", "Operations whose transport was lost while the rule was in play.",
                "", "| rule | lost |", "|---|---|"]
        out += [f"| `{rule}` | {n} |" for rule, n in sorted(report["lost_by_rule"].items())]
        out.append("")
    out += ["## Every rule", "", "| rule | result | confirmed | emulated | lost | note | sources |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        name = label(r)
        note = _note(r)
        if r.get("reproducer"):
            note = f"[reproducer]({r['reproducer']}) " + note
        out.append(f"| `{r['rule']}` | {MARK[name]} {name} | {r['confirmed']} | {r['emulated']} | {r['lost']} | "
                   f"{_cell(note)} | {_cell(r['source'])} |")
    out += ["", "## Run", "", "| setting | value |", "|---|---|"]
    out += [f"| {k} | {_cell(v)} |" for k, v in settings_rows(report)]
    if report["citations"]:
        out += ["", "## Sources", "", "| tag | citation |", "|---|---|"]
        out += [f"| {tag} | {_cell(text)} |" for tag, text in report["citations"].items()]
    return "\n".join(out) + "\n"


def _flow_note(f: dict[str, Any]) -> str:
    return str(f["reason"] or f["doc"])


def _md_flows(flows: list[dict[str, Any]]) -> list[str]:
    if not flows:
        return []
    out = ["## Callers' flows", "", FLOWS_INTRO, "", "| flow | result | rules its steps were judged by | note |",
           "|---|---|---|---|"]
    for f in flows:
        rules = ", ".join(f"`{r}`" for r in sorted({*f["rules"], *f["violated"]}))
        out.append(f"| **{f['flow']}**: {_cell(f['title'])} | {MARK[f['status']]} {f['status']} | {rules or '—'} | "
                   f"{_cell(_flow_note(f))} |")
    for f in flows:
        if f["status"] == "fail" and f.get("steps"):
            out += ["", f"Steps of the failing flow **{f['flow']}**:", "", "```text", *steps_as_lines(f["steps"]),
                    "```"]
    return [*out, ""]


def _md_failure(r: dict[str, Any]) -> list[str]:
    out = [f"### ❌ `{r['rule']}`", "", _cell(r["summary"]), ""]
    if r.get("step"):
        out += [f"- step: {_code(r['step'])}", f"- observed: {_code(r['observed'])}",
                "- allowed: " + (", ".join(_code(a) for a in r.get("allowed", [])) or "nothing")]
    else:
        out.append(f"- {_cell(r.get('reason', ''))}")
    if r.get("reproducer"):
        out.append(f"- reproducer: [{r['reproducer']}]({r['reproducer']}) "
                   f"(`python {r['reproducer']} [--adapter OTHER]`: exit 1 while it fails, 0 once fixed)")
    out.append(f"- source: {_cell(r['source'])}" + (f" ({', '.join(r['citations'])})" if r["citations"] else ""))
    out.append("")
    if r.get("steps"):
        shrunk = "shortest program found" if r.get("shrunk") else "as recorded, not shrunk"
        out += [f"{len(r['steps'])} steps ({shrunk}):", "", "```text", *steps_as_lines(r["steps"]), "```", ""]
    return out


# HTML --------------------------------------------------------------------------------------------

def _table(head: list[str], rows: list[list[str]], colors: list[str] | None = None) -> str:
    """`rows` hold HTML already escaped."""
    cells = "".join(
        (f"<tr style='background:{colors[i]}'>" if colors else "<tr>") + "".join(f"<td>{c}</td>" for c in row)
        + "</tr>" for i, row in enumerate(rows))
    return "<table><tr>" + "".join(f"<th>{h.escape(x)}</th>" for x in head) + f"</tr>{cells}</table>"


def page(heading: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{h.escape(heading)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{h.escape(heading)}</h1>{body}</body></html>\n")


def html(report: dict[str, Any]) -> str:
    results = ordered(report["results"])
    body = [f"<p><b>{h.escape(headline(report))}</b></p>"]
    body += [f"<p class='warn'>⚠️ {h.escape(w)}</p>" for w in _warnings(report)]
    t, why = report["totals"], "; ".join(lost_reasons(report))
    rows = [[f"{MARK[name]} {name}", str(report["counts"][name])] for name in LABELS]
    rows += [["lost outcomes", h.escape(lost_line(report))],
             *([["why lost", h.escape(why)]] if why else []),
             ["examples, operations performed, set aside",
              f"{t.get('examples', 0):,}, {t.get('steps', 0):,}, {t.get('set_aside', 0):,}"]]
    body += ["<h2>Summary</h2>", _table(["result", "rules"], rows,
                                        [COLOR[name] for name in LABELS] + ["#fff"] * (len(rows) - len(LABELS)))]
    failures = [r for r in results if r["status"] == "fail"]
    if failures:
        body.append("<h2>Failures</h2>")
        body += [_html_failure(r) for r in failures]
    flows = report.get("flows", [])
    if flows:
        body += ["<h2>Callers' flows</h2>", f"<p>{h.escape(FLOWS_INTRO)}</p>", _table(
            ["flow", "result", "rules its steps were judged by", "note"],
            [[f"<b>{h.escape(f['flow'])}</b>: {h.escape(f['title'])}", f"{MARK[f['status']]} {h.escape(f['status'])}",
              ", ".join(f"<code>{h.escape(r)}</code>" for r in sorted({*f["rules"], *f["violated"]})),
              h.escape(_flow_note(f))
              + (f"<pre>{h.escape(chr(10).join(steps_as_lines(f['steps'])))}</pre>"
                 if f["status"] == "fail" and f.get("steps") else "")] for f in flows],
            [COLOR[f["status"]] for f in flows])]
    deviations = [r for r in results if r["status"] == "xfail"]
    if deviations:
        body += ["<h2>Known deviations seen</h2>", _table(
            ["rule", "declared reason", "violations seen"],
            [[f"<code>{h.escape(r['rule'])}</code>", h.escape(r["reason"]), str(r.get("deviated", 0))]
             for r in deviations])]
    if report["lost_by_rule"]:
        lost = sorted(report["lost_by_rule"].items())
        body += ["<h2>Lost outcomes per rule</h2>",
                 _table(["rule", "lost"], [[f"<code>{h.escape(k)}</code>", str(v)] for k, v in lost])]
    rows, colors = [], []
    for r in results:
        name = label(r)
        note = h.escape(_note(r))
        if r.get("reproducer"):
            note = f"<a href='{h.escape(r['reproducer'])}'>reproducer</a> {note}"
        rows.append([f"<code>{h.escape(r['rule'])}</code><br><small>{h.escape(r['summary'])}</small>",
                     f"{MARK[name]} {name}", str(r["confirmed"]), str(r["emulated"]), str(r["lost"]), note,
                     f"<small>{h.escape(r['source'])}</small>"])
        colors.append(COLOR[name])
    body += ["<h2>Every rule</h2>",
             _table(["rule", "result", "confirmed", "emulated", "lost", "note", "sources"], rows, colors)]
    body += ["<h2>Run</h2>", _table(["setting", "value"], [[h.escape(k), h.escape(v)]
                                                         for k, v in settings_rows(report)])]
    if report["citations"]:
        body += ["<h2>Sources</h2>", _table(["tag", "citation"], [[h.escape(k), h.escape(v)]
                                                                  for k, v in report["citations"].items()])]
    return page(title(report), "".join(body))


def _html_failure(r: dict[str, Any]) -> str:
    parts = [f"<h3 id='{h.escape(r['rule'])}'>❌ <code>{h.escape(r['rule'])}</code></h3>",
             f"<p>{h.escape(r['summary'])}</p><ul>"]
    if r.get("step"):
        parts += [f"<li>step: <code>{h.escape(r['step'])}</code></li>",
                  f"<li>observed: <code>{h.escape(r['observed'])}</code></li>",
                  "<li>allowed: " + (", ".join(f"<code>{h.escape(a)}</code>" for a in r.get("allowed", []))
                                     or "nothing") + "</li>"]
    else:
        parts.append(f"<li>{h.escape(r.get('reason', ''))}</li>")
    if r.get("reproducer"):
        parts.append(f"<li>reproducer: <a href='{h.escape(r['reproducer'])}'>{h.escape(r['reproducer'])}</a> "
                     "(exit 1 while it fails, 0 once fixed)</li>")
    parts.append(f"<li>source: {h.escape(r['source'])} ({h.escape(', '.join(r['citations']))})</li></ul>")
    if r.get("steps"):
        parts.append(f"<pre>{h.escape(chr(10).join(steps_as_lines(r['steps'])))}</pre>")
    if r.get("reason") and r.get("step"):
        parts.append(f"<details><summary>full explanation</summary><pre>{h.escape(r['reason'])}</pre></details>")
    return "".join(parts)
