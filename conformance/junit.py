"""junit.xml: the report as JUnit XML, one test case per rule, for CI systems that show test results.

JUnit has pass, failure, error and skipped; the labels map to them as:

    pass, pass emulated     passed (an emulated pass says so in system-out, as do lost outcomes)
    fail                    <failure>, with the violating step, the steps and the reproducer
    known deviation         <skipped type="known deviation"> with the declared reason
    skip, not exercised     <skipped> with the reason
    (a callers' flow)       a test case `flow.<name>`: failed (its steps, the rules violated), skipped
                            (skip, lost, incomplete: with the reason), or passed
    (the run itself)        an <error> test case `ashcheck.run` when the run was interrupted, lost too
                            many outcomes, or failed outside any rule; absent otherwise
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from ashcheck.conformance.report import label, steps_as_lines

# XML 1.0 cannot carry most control characters, even escaped
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: str) -> str:
    return _NOT_XML.sub("\N{REPLACEMENT CHARACTER}", value)


def xml(report: dict[str, Any]) -> str:
    run = report["run"]
    suite = ET.Element("testsuite", name=f"ashcheck.{report['adapter']}", timestamp=run["started"],
                       time=f"{run['duration_s']:.3f}")
    props = ET.SubElement(suite, "properties")
    for key, value in [("adapter", report["adapter"]), ("spec profile", str(report.get("profile"))),
                       ("search profile", run["search"]["profile"]),
                       ("seeds", ", ".join(map(hex, run["search"]["seeds"] or [])) or "random"),
                       ("ashcheck", run["ashcheck_version"]),
                       ("lost outcomes", f"{report['totals'].get('lost', 0)} of {report['totals'].get('steps', 0)}"),
                       *((f"identity.{k}", v) for k, v in report.get("identity", {}).items()),
                       *((f"option.{k}", v) for k, v in report.get("options", {}).items())]:
        ET.SubElement(props, "property", name=key, value=_text(str(value)))
    failures = skipped = errors = 0
    for r in report["results"]:
        case = ET.SubElement(suite, "testcase", classname=r["rule"].rsplit(".", 1)[0], name=r["rule"], time="0")
        name = label(r)
        if name == "fail":
            failures += 1
            message = f"{r['step']} → {r['observed']}" if r.get("step") else r.get("reason", "")
            body = [r.get("reason", "")]
            if r.get("steps"):
                body += ["", "steps:", *steps_as_lines(r["steps"])]
            if r.get("reproducer"):
                body += ["", f"reproducer: {r['reproducer']}"]
            fail = ET.SubElement(case, "failure", message=_text(message.splitlines()[0] if message else ""),
                                 type="ashcheck.rule")
            fail.text = _text("\n".join(body))
        elif name in ("known deviation", "skip", "not exercised"):
            skipped += 1
            ET.SubElement(case, "skipped", type=name, message=_text(r.get("reason", name)))
        notes = (["pass, emulated: every confirmation was computed by the adapter"] if name == "pass, emulated"
                 else []) + ([f"lost outcomes: {r['lost']}"] if r.get("lost") else [])
        if notes:
            ET.SubElement(case, "system-out").text = "\n".join(notes)
    flows = report.get("flows", [])
    for f in flows:
        case = ET.SubElement(suite, "testcase", classname="flow", name=f["flow"], time="0")
        if f["status"] == "fail":
            failures += 1
            ET.SubElement(case, "failure", message=_text(f["reason"]), type="ashcheck.flow").text = _text(
                "\n".join([f["doc"], "", "steps:", *steps_as_lines(f.get("steps", []))]))
        elif f["status"] != "pass":
            skipped += 1
            ET.SubElement(case, "skipped", type=f["status"], message=_text(f["reason"]))
    problems = ([f"interrupted: {run['interrupted']}"] if run["interrupted"] else []) + run.get("problems", [])
    if report.get("error"):
        problems.insert(0, f"the adapter could not start: {report['error']}")
    if problems:
        errors += 1
        case = ET.SubElement(suite, "testcase", classname="ashcheck", name="run", time="0")
        ET.SubElement(case, "error", message=_text(problems[0]), type="ashcheck.run").text = _text("\n".join(problems))
    suite.set("tests", str(len(report["results"]) + len(flows) + (1 if problems else 0)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
