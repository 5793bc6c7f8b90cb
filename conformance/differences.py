"""The difference table: `ashcheck merge` of several runs' reports, rules × implementations.

Each column is one report, headed by its adapter, the implementation's identity and the spec
profile it was judged by ("kernel 5.10.0-32-amd64 (ashmem)"). Each cell is one of

    pass, pass emulated (the adapter computed the answer), fail, known deviation (its declared
    reason in a footnote), skip, not exercised, not applicable (the rule is not in that profile)

with totals per column, and a "differences only" view: the rules on which the implementations
disagree, that is where one behaves as the spec says (pass) and another does not (fail or a known
deviation); cells that say nothing about the behaviour (not applicable, not exercised, skip) take
no part in that comparison.

The Markdown is deterministic (columns sorted by header, rules by id, no time or path in it), so a
checked-in copy (docs/differences.md) can be compared with a fresh merge: `ashcheck merge --check`.
"""

from __future__ import annotations

import difflib
import html as h
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ashcheck.conformance.render import COLOR, MARK, page
from ashcheck.conformance.report import label

NOT_APPLICABLE = "not applicable"
CELLS = ("pass", "pass, emulated", "fail", "known deviation", "skip", "not exercised", NOT_APPLICABLE)
CONFORMS, DIFFERS = {"pass", "pass, emulated"}, {"fail", "known deviation"}
# identity keys that name what ran, best first (kernel adapter: release; native libraries: implementation)
IDENTITY_KEYS = ("release", "implementation", "version", "model", "kernel")
FILES = ("differences.md", "differences.html", "differences.json")


class ReportError(Exception):
    """A report that cannot be merged; the message names it and says why."""


@dataclass(frozen=True)
class Cell:
    label: str
    reason: str = ""  # a known deviation's declared reason, a skip's reason
    variants: tuple[str, ...] = ()  # the allowed variants it showed (spec.branch.Branch.variant)


@dataclass
class Column:
    header: str
    adapter: str
    profile: str
    search: str
    identity: dict[str, str]
    options: dict[str, str]
    cells: dict[str, Cell] = field(default_factory=dict)  # rule → cell, for the rules of its report
    flows: dict[str, str] = field(default_factory=dict)  # callers' flow → its result in that report
    lost: int = 0  # operations whose outcome the run lost (see check)
    lost_why: str = ""  # the commonest reason


@dataclass
class Table:
    columns: list[Column]
    rules: list[str]
    flows: list[str] = field(default_factory=list)  # the callers' flows of any report, in their order

    def cell(self, rule: str, column: Column) -> Cell:
        return column.cells.get(rule, Cell(NOT_APPLICABLE))

    def differing(self) -> list[str]:
        """Rules where one implementation conforms and another fails or declares a deviation."""
        out = []
        for rule in self.rules:
            labels = {self.cell(rule, c).label for c in self.columns}
            if labels & CONFORMS and labels & DIFFERS:
                out.append(rule)
        return out

    def varying(self) -> list[str]:
        """Rules where some implementation showed one of the variants the spec allows."""
        return [rule for rule in self.rules if any(self.cell(rule, c).variants for c in self.columns)]

    def variants(self, rule: str, column: Column) -> str:
        """The variants `column` showed for `rule`, or its cell's label where it showed none."""
        return shown(self.cell(rule, column))

    def totals(self, column: Column) -> dict[str, int]:
        found = [self.cell(rule, column).label for rule in self.rules]
        return {name: found.count(name) for name in CELLS}


def shown(c: Cell) -> str:
    """A cell as the variants view shows it: its variants, or its label where it showed none."""
    return "; ".join(c.variants) if c.variants else f"{MARK[c.label]} {c.label}"


def header(report: dict[str, Any]) -> str:
    """`adapter identity (profile)`: what a column is, in a few words."""
    identity = report.get("identity") or {}
    what = next((str(identity[k]) for k in IDENTITY_KEYS if identity.get(k)), "")
    name = report.get("name") or report["adapter"]
    return f"{name}{' ' + what if what else ''} ({report['profile']})"


def load(paths: list[Path], skip: Path | None = None) -> Table:
    """Read reports (folders holding report.json, or the files). A folder that is `skip` (the merge's
    own output, as in `merge reports/* --out reports/table`) or holds an earlier merge's output is
    passed over. Raises ReportError."""
    reports = []
    for path in paths:
        if path.is_dir():
            if (skip is not None and path.resolve() == skip.resolve()) or (
                    not (path / "report.json").exists() and (path / FILES[2]).exists()):
                continue
            path = path / "report.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ReportError(f"no report at {path}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise ReportError(f"{path} is not an ashcheck report")
        if data.get("error") or not data["results"]:
            raise ReportError(f"{path} has no results ({data.get('error', 'empty')})")
        reports.append(data)
    if not reports:
        raise ReportError("no reports to merge")
    columns = []
    for data in reports:
        cells = {r["rule"]: Cell(label(r), r.get("reason", "") if r["status"] in ("xfail", "skip") else "",
                                 tuple(sorted(r.get("variants") or {})))
                 for r in data["results"]}
        flows = {f["flow"]: f["status"] for f in data.get("flows", [])}
        columns.append(Column(header(data), data["adapter"], data["profile"], data.get("hypothesis_profile", ""),
                              dict(data.get("identity") or {}), dict(data.get("options") or {}), cells, flows,
                              int((data.get("totals") or {}).get("lost", 0)),
                              next(iter((data.get("run") or {}).get("lost_reasons") or {}), "")))
    columns.sort(key=lambda c: (c.header, sorted(c.options.items()), c.search))
    _unique_headers(columns)
    rules = sorted({rule for c in columns for rule in c.cells})
    return Table(columns, rules, list(dict.fromkeys(f for c in columns for f in c.flows)))


def _unique_headers(columns: list[Column]) -> None:
    """Two runs of the same implementation: their options, their search profiles, then a number,
    tell them apart."""
    for column in _shared(columns):
        if column.options:
            column.header += " " + " ".join(f"{k}={v}" for k, v in sorted(column.options.items()))
    for column in _shared(columns):
        column.header += f" [{column.search}]"
    seen: dict[str, int] = {}
    for column in columns:
        n = seen[column.header] = seen.get(column.header, 0) + 1
        if n > 1:
            column.header += f" #{n}"


def _shared(columns: list[Column]) -> list[Column]:
    """The columns whose header another column has too."""
    headers = Counter(c.header for c in columns)
    return [c for c in columns if headers[c.header] > 1]


def footnotes(table: Table) -> dict[tuple[str, str], int]:
    """(column header, reason) → footnote number, in the order the full table meets them."""
    notes: dict[tuple[str, str], int] = {}
    for rule in table.rules:
        for column in table.columns:
            cell = table.cell(rule, column)
            if cell.label == "known deviation" and (column.header, cell.reason) not in notes:
                notes[(column.header, cell.reason)] = len(notes) + 1
    return notes


# Markdown ----------------------------------------------------------------------------------------

def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(table: Table) -> str:
    notes = footnotes(table)

    def cell(rule: str, column: Column) -> str:
        c = table.cell(rule, column)
        ref = f"[^{notes[(column.header, c.reason)]}]" if c.label == "known deviation" else ""
        return f"{MARK[c.label]} {c.label}{ref}"

    def grid(rules: list[str]) -> list[str]:
        lines = ["| rule | " + " | ".join(_md(c.header) for c in table.columns) + " |",
                 "|---|" + "---|" * len(table.columns)]
        lines += [f"| `{rule}` | " + " | ".join(cell(rule, c) for c in table.columns) + " |" for rule in rules]
        return lines

    differing = table.differing()
    out = ["# Differences between implementations", "",
           f"Generated by `ashcheck merge` from {len(table.columns)} reports; CI checks that it is up to date "
           "(`ashcheck merge --check`). Cells: " + " · ".join(f"{MARK[c]} {c}" for c in CELLS) + ". "
           "\"pass, emulated\": the adapter computed the answers instead of observing them; \"not applicable\": "
           "the rule is not in that implementation's profile.", "",
           "## Implementations", "", "| column | adapter | spec profile | search profile | identity |",
           "|---|---|---|---|---|"]
    out += [f"| {_md(c.header)} | `{_md(c.adapter)}` | {c.profile} | {c.search} | {_md(_identity(c)) or '—'} |"
            for c in table.columns]
    out += ["", "## Differences only", "",
            f"{len(differing)} of {len(table.rules)} rules: where one implementation passes and another fails "
            "or declares a deviation.", ""]
    out += grid(differing) if differing else ["No rule: every implementation that was judged on a rule agrees."]
    varying = table.varying()
    if varying:
        out += ["", "## Allowed variants", "",
                "Where the spec allows more than one behaviour because real kernels differ, the ones each "
                "implementation showed.", "",
                "| rule | " + " | ".join(_md(c.header) for c in table.columns) + " |",
                "|---|" + "---|" * len(table.columns)]
        out += [f"| `{rule}` | " + " | ".join(_md(table.variants(rule, c)) for c in table.columns) + " |"
                for rule in varying]
    out += ["", "## Totals", "", "| result | " + " | ".join(_md(c.header) for c in table.columns) + " |",
            "|---|" + "---|" * len(table.columns)]
    totals = [table.totals(c) for c in table.columns]
    out += [f"| {MARK[name]} {name} | " + " | ".join(str(t[name]) for t in totals) + " |" for name in CELLS]
    if table.flows:
        out += ["", "## Callers' flows", "", "| flow | " + " | ".join(_md(c.header) for c in table.columns) + " |",
                "|---|" + "---|" * len(table.columns)]
        out += [f"| {flow} | " + " | ".join(_flow_cell(c.flows.get(flow)) for c in table.columns) + " |"
                for flow in table.flows]
    out += ["", "## Every rule", "", *grid(table.rules)]
    if notes:
        out += ["", "## Known deviations", ""]
        out += [f"[^{n}]: {_md(col)}: {_md(reason)}" for (col, reason), n in notes.items()]
    return "\n".join(out) + "\n"


def _flow_cell(status: str | None) -> str:
    return f"{MARK[status]} {status}" if status else "— not run"


def _results_only(text: str) -> list[str]:
    """The Markdown without the lines of its "Implementations" section (see `check`)."""
    out, skipping = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            skipping = line == "## Implementations"
        if not skipping:
            out.append(line)
    return out


def _identity(column: Column) -> str:
    """The identity without file paths, which differ between machines (the Markdown is compared)."""
    return "; ".join(f"{k}: {v}" for k, v in sorted(column.identity.items()) if not str(v).startswith("/"))


# HTML and JSON -----------------------------------------------------------------------------------

def html(table: Table) -> str:
    notes = footnotes(table)

    def grid(rules: list[str]) -> str:
        head = "<tr><th>rule</th>" + "".join(f"<th>{h.escape(c.header)}</th>" for c in table.columns) + "</tr>"
        rows = []
        for rule in rules:
            tds = []
            for column in table.columns:
                c = table.cell(rule, column)
                ref = f"<sup>{notes[(column.header, c.reason)]}</sup>" if c.label == "known deviation" else ""
                tds.append(f"<td style='background:{COLOR[c.label]}' title='{h.escape(c.reason)}'>"
                           f"{MARK[c.label]} {h.escape(c.label)}{ref}</td>")
            rows.append(f"<tr><td><code>{h.escape(rule)}</code></td>{''.join(tds)}</tr>")
        return f"<table>{head}{''.join(rows)}</table>"

    differing, varying = table.differing(), table.varying()
    totals = [table.totals(c) for c in table.columns]
    head_row = "<tr><th>rule</th>" + "".join(f"<th>{h.escape(c.header)}</th>" for c in table.columns) + "</tr>"
    body = [f"<p>{len(table.columns)} implementations, {len(table.rules)} rules; {len(differing)} differ.</p>",
            "<h2>Differences only</h2>", grid(differing) if differing else "<p>No rule.</p>",
            *([f"<h2>Allowed variants</h2><table>{head_row}"
               + "".join(f"<tr><td><code>{h.escape(rule)}</code></td>" + "".join(
                   f"<td>{h.escape(table.variants(rule, c))}</td>" for c in table.columns) + "</tr>"
                         for rule in varying) + "</table>"] if varying else []),
            "<h2>Totals</h2><table><tr><th>result</th>"
            + "".join(f"<th>{h.escape(c.header)}</th>" for c in table.columns) + "</tr>"
            + "".join(f"<tr><td>{MARK[name]} {name}</td>" + "".join(f"<td>{t[name]}</td>" for t in totals) + "</tr>"
                      for name in CELLS) + "</table>",
            *(["<h2>Callers' flows</h2><table><tr><th>flow</th>"
               + "".join(f"<th>{h.escape(c.header)}</th>" for c in table.columns) + "</tr>"
               + "".join(f"<tr><td>{h.escape(flow)}</td>" + "".join(
                   f"<td>{h.escape(_flow_cell(c.flows.get(flow)))}</td>" for c in table.columns) + "</tr>"
                         for flow in table.flows) + "</table>"] if table.flows else []),
            "<h2>Every rule</h2>", grid(table.rules)]
    if notes:
        items = [f"<li value='{n}'>{h.escape(col)}: {h.escape(reason)}</li>" for (col, reason), n in notes.items()]
        body.append(f"<h2>Known deviations</h2><ol>{''.join(items)}</ol>")
    return page("Differences between implementations", "".join(body))


def as_json(table: Table) -> dict[str, Any]:
    return {"implementations": [{"header": c.header, "adapter": c.adapter, "profile": c.profile,
                                 "search_profile": c.search, "identity": c.identity, "options": c.options}
                                for c in table.columns],
            "rules": {rule: {c.header: {"cell": table.cell(rule, c).label, "reason": table.cell(rule, c).reason}
                             for c in table.columns} for rule in table.rules},
            "totals": {c.header: table.totals(c) for c in table.columns},
            "flows": {flow: {c.header: c.flows.get(flow) for c in table.columns} for flow in table.flows},
            "differences": table.differing(),
            "variants": {rule: {c.header: list(table.cell(rule, c).variants) for c in table.columns}
                         for rule in table.varying()}}


def write(table: Table, out: Path) -> None:
    """differences.md, .html and .json in `out` (replaced if there). Raises OSError."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "differences.md").write_text(markdown(table))
    (out / "differences.html").write_text(html(table))
    (out / "differences.json").write_text(json.dumps(as_json(table), indent=1, sort_keys=True) + "\n")


def check(table: Table, file: Path) -> tuple[str, list[str]]:
    """('', notes) if `file` holds the Markdown of `table`, else a short diff saying how it differs.
    The implementations' identity rows are left out of the comparison: they name the machine that
    ran each adapter (the host's kernel, say), which is not what the table is about.

    A run that lost outcomes (a VM's channel failed, say) explored less than a complete one: where
    its column shows less than the table (a rule not exercised, fewer allowed variants, a flow lost
    or incomplete), the table's cell stands, and `notes` says which cells did (the differences.json
    beside `file` holds the table's cells). Anything else that differs, in any run, is stale."""
    fresh = "\n".join(_results_only(markdown(table)))
    try:
        current = "\n".join(_results_only(file.read_text()))
    except OSError as exc:
        return f"cannot read it: {exc}", []
    notes: list[str] = []
    if current != fresh and any(c.lost for c in table.columns):
        notes = _keep_where_runs_lost(table, file.with_name(FILES[2]))
        fresh = "\n".join(_results_only(markdown(table)))
    if current == fresh:
        return "", notes
    diff = list(difflib.unified_diff(current.splitlines(), fresh.splitlines(), str(file), "fresh merge",
                                     lineterm="", n=0))
    return "\n".join(diff[:40] + ([f"… {len(diff) - 40} more lines"] if len(diff) > 40 else [])), notes


FEWER_FLOWS = {"lost", "incomplete"}  # a flow's results that say it was not carried to its end


def _keep_where_runs_lost(table: Table, json_file: Path) -> list[str]:
    """Put the table's own cells (from its differences.json) back into the columns of runs that
    lost outcomes, where those show less than the table; one note per cell put back."""
    try:
        doc = json.loads(json_file.read_text())
        rules, variants, flows = doc["rules"], doc.get("variants", {}), doc.get("flows", {})
    except (OSError, ValueError, KeyError, TypeError):
        return []
    notes: list[str] = []
    for column in (c for c in table.columns if c.lost):
        kept = len(notes)
        for rule in table.rules:
            old = rules.get(rule, {}).get(column.header)
            if not isinstance(old, dict):
                continue
            was = Cell(old.get("cell", ""), old.get("reason", ""),
                       tuple(sorted(variants.get(rule, {}).get(column.header, []))))
            now = table.cell(rule, column)
            fewer = (now.label, now.reason) == (was.label, was.reason) and set(now.variants) < set(was.variants)
            if now != was and ((now.label == "not exercised" and was.label != "fail") or fewer):
                column.cells[rule] = was
                notes.append(f"{column.header}: `{rule}` {shown(now)} (the table: {shown(was)})")
        for flow, status in list(column.flows.items()):
            old_flow = flows.get(flow, {}).get(column.header)
            if isinstance(old_flow, str) and old_flow != status and status in FEWER_FLOWS:
                column.flows[flow] = old_flow
                notes.append(f"{column.header}: flow {flow} {status} (the table: {old_flow})")
        if len(notes) > kept:
            notes.append(f"{column.header}: {column.lost:,} outcome(s) lost; the commonest reason: "
                         f"{column.lost_why or 'not recorded'}")
    return notes
