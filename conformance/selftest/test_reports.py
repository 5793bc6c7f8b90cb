"""Reports without a run: report.json/.md/.html and junit.xml from made-up evidence, the report
folder's hygiene, the citations of rule sources, the progress read from evidence files, and the
difference table of `ashcheck merge`. (test_cli.py and test_run.py run the real command.)"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from ashcheck.adapters.base import Capability
from ashcheck.conformance import console, differences, junit, progress, render
from ashcheck.conformance import report as reporting
from ashcheck.conformance.reportdir import ReportDirError, earlier_files, prepare
from ashcheck.conformance.results import Evidence, Recorder, Totals, statuses
from ashcheck.conformance.runner import failures_outside_rules
from ashcheck.spec import RULES
from ashcheck.spec import ops as o
from ashcheck.spec.outcome import ok
from ashcheck.spec.rules import rule_ids
from ashcheck.spec.sources import BY_TAG, cite, parts, resolve

FAILING = "ashmem.get-size.value"
DEVIATING = "ashmem.maps.name"
EMULATED = "ashmem.get-name.value"
LOSING = "fd.dup.lowest-free"


def evidence() -> dict[str, Evidence]:
    """Every ashmem rule confirmed once, except: one failure with a 2-step program, one declared
    deviation seen, one rule only emulated, one with lost outcomes besides its confirmations."""
    steps = [{"op": o.Spawn(0).to_json(), "outcome": ok((0, 1, 2)).to_json()},
             {"op": o.GetSize(0, 3).to_json(), "outcome": ok(4097).to_json()}]
    out = {rule: Evidence(confirmed=1) for rule in rule_ids("ashmem")}
    out[FAILING] = Evidence(confirmed=5, violated=1, message="rule ashmem.get-size.value violated\n  more",
                            step="p0: ASHMEM_GET_SIZE(3)", observed="4097", allowed=["4096  [ashmem.get-size.value]"],
                            reproducer=steps, shrunk=True)
    out[DEVIATING] = Evidence(confirmed=0, deviated=3)
    out[EMULATED] = Evidence(confirmed=0, emulated=7)
    out[LOSING] = Evidence(confirmed=2, lost=4)
    return out


def run_settings(**changes: Any) -> dict[str, Any]:
    run = {"ashcheck_version": "0.1.0", "hypothesis_version": "6", "python": "3.11", "host": "test",
           "search": {"profile": "ci", "examples": 100, "steps": 50, "shards": 4, "seeded": True,
                      "seeds": [0x5eed, 0x5eee], "shrink_replays": 300, "hypothesis": {"max_examples": 100}},
           "workers": 2, "started": "2026-01-01T00:00:00+00:00", "duration_s": 12.5, "interrupted": None,
           "lost_limit": 0.05, "problems": [], "exit_code": 1, "exit_reason": "1 rule(s) failed"}
    run.update(changes)
    return run


def make_report(name: str = "mine", identity: dict[str, str] | None = None, profile: str = "ashmem",
                ev: dict[str, Evidence] | None = None, deviations: dict[str, str] | None = None,
                **run: Any) -> dict[str, Any]:
    deviations = {DEVIATING: "our maps say /mine/"} if deviations is None else deviations
    capabilities = sorted(c.value for c in Capability)
    results = statuses(evidence() if ev is None else ev, profile, set(capabilities), deviations)
    meta = {"name": name, "profile": profile, "capabilities": capabilities,
            "deviations": deviations, "unsupported": {}, "identity": identity or {}}
    totals = asdict(Totals(examples=10, steps=200, lost=4, lossy=1, set_aside=1))
    return reporting.build(adapter=name, options={"seed": "1"}, meta=meta, results=results, totals=totals,
                           run=run_settings(**run))


# citations -------------------------------------------------------------------------------------

def test_every_part_of_every_rule_source_resolves_to_a_citation() -> None:
    unresolved = [(rule.id, part) for rule in RULES.values() for part in parts(rule.source) if resolve(part) is None]
    assert unresolved == [], "add these to spec/sources.py"


@pytest.mark.parametrize("source, tags", [
    ("drivers/staging/android/ashmem.c set_name; SHIM; K510-OBS §2 (Debian 5.10.0-46)",
     ["ASHMEM-5.10", "SHIM", "K510-OBS"]),
    ("libcutils ashmem_pin_region memfd path; SHIM", ["LC", "SHIM"]),  # libcutils, not the driver's ashmem_*
    ("binder_apply_fd_fixups (O_CLOEXEC), 5.10.89", ["C-5.10"]),
    ("mm/shmem.c; ashmem.md §6.4 (probed)", ["LINUX-5.10", "ashmem.md"]),
    ("RUST ashmem_memfd_ioctl; ACK-C", ["RUST", "ACK-C"]),
    ("something nobody wrote down", []),
])
def test_source_parts_resolve_to_the_right_citation(source: str, tags: list[str]) -> None:
    assert cite(source) == tags
    for tag in tags:
        assert BY_TAG[tag].where and BY_TAG[tag].title


# report.json, .md, .html, junit.xml ------------------------------------------------------------

def test_the_report_labels_counts_and_cites() -> None:
    report = make_report()
    by_rule = {r["rule"]: r for r in report["results"]}
    assert by_rule[FAILING]["label"] == "fail"
    assert by_rule[DEVIATING]["label"] == "known deviation"
    assert by_rule[EMULATED]["label"] == "pass, emulated"
    n = len(rule_ids("ashmem"))
    assert report["counts"] == {"fail": 1, "known deviation": 1, "not exercised": 0, "skip": 0,
                                "pass, emulated": 1, "pass": n - 3}
    assert report["lost_by_rule"] == {LOSING: 4}
    assert set(report["citations"]) == {tag for r in report["results"] for tag in r["citations"]}
    assert "K510-OBS" in report["citations"] and "kernel-observed.md" in report["citations"]["K510-OBS"]


def test_markdown_puts_failures_first_with_their_steps_and_reproducer(tmp_path: Path) -> None:
    report = make_report()
    written = reporting.write(tmp_path, report)
    md = (tmp_path / "report.md").read_text()
    failure = md.index(f"### ❌ `{FAILING}`")
    assert failure < md.index("## Every rule") < md.index("## Run") < md.index("## Sources")
    assert md.index("p0: spawn()  →  (0, 1, 2)") > failure  # the steps, inline, as strace lines
    assert f"[reproducers/{FAILING}.py](reproducers/{FAILING}.py)" in md
    assert (tmp_path / "reproducers" / f"{FAILING}.py").exists()
    table = md[md.index("## Every rule"):md.index("## Run")]
    assert table.index(FAILING) < table.index(DEVIATING) < table.index(EMULATED)  # fail, deviation, pass
    assert f"| `{LOSING}` | 4 |" in md  # lost outcomes per rule
    assert "seeds 0x5eed, 0x5eee" in md and "seed=1" in md and "12.5 s" in md
    assert "| K510-OBS |" in md
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == report["files"]
    assert json.loads((tmp_path / "report.json").read_text())["files"] == report["files"]


def test_an_interrupted_report_says_so_everywhere(tmp_path: Path) -> None:
    report = make_report(interrupted="SIGTERM", exit_code=143, exit_reason="interrupted by SIGTERM")
    reporting.write(tmp_path, report)
    for name in ("report.md", "report.html", "junit.xml"):
        assert "SIGTERM" in (tmp_path / name).read_text(), name
    assert "Interrupted (SIGTERM)" in (tmp_path / "report.md").read_text()


def test_html_escapes_what_the_implementation_returned() -> None:
    ev = evidence()
    ev[FAILING].observed = "<script>alert(1)</script>"
    page = render.html(make_report(ev=ev))
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
    assert page.lower().startswith("<!doctype html>")


def test_junit_has_a_case_per_rule_and_a_failure_for_the_failing_one() -> None:
    report = make_report(problems=["12.0% of the operations were lost"])
    root = ET.fromstring(junit.xml(report))
    suite = root.find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert len(cases) == len(rule_ids("ashmem")) + 1  # every rule, and the run's own problem
    failure = cases[FAILING].find("failure")
    assert failure is not None and "4097" in failure.get("message", "") and "p0: spawn()" in (failure.text or "")
    skipped = cases[DEVIATING].find("skipped")
    assert skipped is not None and skipped.get("type") == "known deviation"
    assert suite.get("failures") == "1" and suite.get("errors") == "1" and suite.get("skipped") == "1"
    lost = cases[LOSING].find("system-out")
    assert lost is not None and lost.text == "lost outcomes: 4"
    error = cases["run"].find("error")
    assert error is not None and "lost" in error.get("message", "")


def test_junit_survives_control_characters() -> None:
    ev = evidence()
    ev[FAILING].observed = "\x00\x01 raw bytes"
    ET.fromstring(junit.xml(make_report(ev=ev)))  # parses


def test_the_console_end_names_each_failure_with_its_reproducer(tmp_path: Path) -> None:
    report = make_report(lost_reasons={"process [1] was lost: timeout": 3, "the hub closed the stream": 1})
    reporting.write(tmp_path, report)
    lines = console.final_lines(report, tmp_path)
    fails = [line for line in lines if line.startswith("FAIL ")]
    assert fails == [f"FAIL {FAILING}: p0: ASHMEM_GET_SIZE(3) → 4097 (allowed: 4096  [ashmem.get-size.value]); "
                     f"reproducer: {tmp_path / 'reproducers' / (FAILING + '.py')}"]
    assert any(line.startswith("known deviations seen (1): ashmem.maps.name") for line in lines)
    # the share is the larger of the operations' (2%) and the test cases' (10%)
    assert any(line.startswith("lost outcomes: 4 of 200 operations, in 1 of 10 test cases (10.00%") for line in lines)
    assert "  3 × process [1] was lost: timeout" in lines  # why, commonest first
    assert "| why lost | 3 × process [1] was lost: timeout; 1 × the hub closed the stream |" in \
        (tmp_path / "report.md").read_text()
    assert lines[-1].startswith("ashcheck: mine (ashmem), ci: 1 fail, 1 known deviation")


# the report folder -----------------------------------------------------------------------------

def test_a_folder_of_someone_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(ReportDirError, match="holds no earlier ashcheck report"):
        prepare(tmp_path)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_a_later_run_removes_what_the_earlier_one_wrote_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "gw0.json").write_text("{}")
    reporting.write(tmp_path, make_report())
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "reproducers" / "my-own-script.py").write_text("mine too")
    removed = prepare(tmp_path)
    assert tmp_path / "reproducers" / f"{FAILING}.py" in removed
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert left == ["notes.txt", "reproducers", "reproducers/my-own-script.py"]


def test_a_report_of_the_first_layout_is_recognized(tmp_path: Path) -> None:
    old = {"adapter": "sim", "profile": "ashmem", "results": [{"rule": FAILING, "status": "fail"}]}
    (tmp_path / "report.json").write_text(json.dumps(old))
    (tmp_path / "report.md").write_text("#")
    (tmp_path / "reproducers").mkdir()
    (tmp_path / "reproducers" / f"{FAILING}.py").write_text("")
    prepare(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_left_only_evidence_is_recognized(tmp_path: Path) -> None:
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "gw1.unavailable").write_text("no device\n")
    (tmp_path / "pytest.log").write_text("")
    assert earlier_files(tmp_path) is not None
    prepare(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_listed_file_outside_the_folder_is_never_removed(tmp_path: Path) -> None:
    folder, outside = tmp_path / "r", tmp_path / "precious"
    folder.mkdir()
    outside.write_text("keep")
    (folder / "report.json").write_text(json.dumps({"adapter": "x", "results": [], "files": ["../precious"]}))
    prepare(folder)
    assert outside.read_text() == "keep"


# progress --------------------------------------------------------------------------------------

def test_progress_reads_the_newest_file_of_each_worker(tmp_path: Path) -> None:
    evidence_dir = tmp_path / "evidence"
    a, b = Recorder(), Recorder()
    a.get("ashmem.get-size.value").confirmed = 1
    a.get("ashmem.get-name.value").violated = 1
    a.totals = Totals(examples=3, steps=30, lost=1, lossy=1)
    b.get("fd.close.ok").confirmed = 2
    b.get("memfd.write.stores").confirmed = 1  # not in the ashmem profile
    b.totals = Totals(examples=4, steps=40)
    a.dump(evidence_dir / "gw0.json")
    b.dump(evidence_dir / "gw1.json")
    assert progress.read(evidence_dir).profile is None  # no adapter has started yet
    starting = console.progress_line(progress.read(tmp_path / "nothing"), 3, "x")
    assert starting == "ashcheck x: starting the adapter, 0:03"
    (evidence_dir / "gw0.adapter").write_text(json.dumps({"profile": "ashmem"}))
    snap = progress.read(evidence_dir)
    assert (snap.profile, snap.exercised, snap.rules, snap.failing) == ("ashmem", 3, len(rule_ids("ashmem")), 1)
    assert (snap.examples, snap.steps, snap.lost) == (7, 70, 1)
    a.totals.examples = 50
    progress.Heartbeat(a, evidence_dir / "gw0.progress").write()  # newer than gw0.json
    assert progress.read(evidence_dir).examples == 54
    line = console.progress_line(progress.read(evidence_dir), 75, "sim ci")
    assert line == f"ashcheck sim ci: 3/{len(rule_ids('ashmem'))} rules exercised, 1 failing, 54 examples, " \
                   "70 steps, 1 lost in 1 examples, 1:15"


def test_progress_prints_plain_lines_where_there_is_no_terminal(tmp_path: Path) -> None:
    out = io.StringIO()
    with console.Progress(tmp_path, "sim ci", live=None, stream=out, every=0) as shown:
        shown.tick()
        shown.tick()
    assert out.getvalue().count("ashcheck sim ci: starting the adapter") == 2


def test_a_heartbeat_thread_writes_until_stopped(tmp_path: Path) -> None:
    recorder = Recorder()
    recorder.get("fd.close.ok").confirmed = 9
    beat = progress.Heartbeat(recorder, tmp_path / "main.progress", every=0.01)
    beat.start()
    try:
        for _ in range(500):
            if (tmp_path / "main.progress").exists():
                break
            __import__("time").sleep(0.01)
    finally:
        beat.stop()
    assert json.loads((tmp_path / "main.progress").read_text())["rules"]["fd.close.ok"]["confirmed"] == 9


# the run's own failures ----------------------------------------------------------------------------

def test_only_failures_that_are_not_rule_reports_count_as_errors(tmp_path: Path) -> None:
    (tmp_path / "pytest.xml").write_text(
        "<testsuites><testsuite>"
        "<testcase classname='t' name='test_explore[0]'><failure message='Failed: 1 rule(s) violated:'/></testcase>"
        "<testcase classname='t' name='test_explore[1]'><failure message='KeyError: 3'>trace</failure></testcase>"
        "<testcase classname='t' name='test_tables'><error message='failed on setup'/></testcase>"
        "</testsuite></testsuites>")
    assert failures_outside_rules(tmp_path / "pytest.xml") == ["t::test_explore[1]: KeyError: 3",
                                                    "t::test_tables: failed on setup"]
    assert failures_outside_rules(tmp_path / "missing.xml") == []


# the difference table --------------------------------------------------------------------------

def write_reports(tmp_path: Path) -> list[Path]:
    """Three implementations: a conforming one, a kernel that fails one rule and declares another,
    and a memfd implementation (other profile)."""
    conforming = {rule: Evidence(confirmed=1) for rule in rule_ids("ashmem")}
    reports = {
        "a": make_report("sim", ev=conforming, deviations={}),
        "b": make_report("kernel", identity={"release": "5.10.0-32-amd64", "kernel": "/root/vmlinux"}),
        "c": make_report("memfd", profile="memfd", ev={r: Evidence(confirmed=1) for r in rule_ids("memfd")},
                         deviations={}),
    }
    paths = []
    for name, data in reports.items():
        reporting.write(tmp_path / name, data)
        paths.append(tmp_path / name)
    return paths


def test_the_difference_table_has_a_column_per_implementation(tmp_path: Path) -> None:
    table = differences.load(write_reports(tmp_path))
    headers = [c.header for c in table.columns]
    assert headers == ["kernel 5.10.0-32-amd64 (ashmem)", "memfd (memfd)", "sim (ashmem)"]  # sorted
    kernel, memfd, sim = table.columns
    assert table.cell(FAILING, kernel).label == "fail" and table.cell(FAILING, sim).label == "pass"
    deviation = table.cell(DEVIATING, kernel)
    assert deviation.label == "known deviation" and deviation.reason == "our maps say /mine/"
    assert table.cell("ashmem.pin.split", memfd).label == "not applicable"
    assert table.cell(EMULATED, kernel).label == "pass, emulated"
    assert set(table.differing()) == {FAILING, DEVIATING}  # emulated vs observed pass is no difference
    assert table.totals(kernel)["fail"] == 1 and table.totals(memfd)["not applicable"] > 0
    md = differences.markdown(table)
    assert "[^1]: kernel 5.10.0-32-amd64 (ashmem): our maps say /mine/" in md
    assert "/root/vmlinux" not in md  # paths differ between machines; the Markdown is compared
    diff_view = md[md.index("## Differences only"):md.index("## Totals")]
    assert FAILING in diff_view and "ashmem.pin.split" not in diff_view


def test_the_markdown_does_not_depend_on_the_order_of_the_reports(tmp_path: Path) -> None:
    paths = write_reports(tmp_path)
    first = differences.markdown(differences.load(paths))
    assert differences.markdown(differences.load(paths[::-1])) == first


def test_a_rerun_into_its_own_output_folder_passes_over_it(tmp_path: Path) -> None:
    paths = write_reports(tmp_path)
    out = tmp_path / "table"
    differences.write(differences.load(paths), out)
    again = differences.load([*paths, out], skip=out)
    assert len(again.columns) == 3
    assert len(differences.load([*paths, out]).columns) == 3  # an earlier merge's output, without --out
    with pytest.raises(differences.ReportError, match="no report"):
        differences.load([tmp_path / "missing"])


def test_check_says_how_a_stale_table_differs(tmp_path: Path) -> None:
    table = differences.load(write_reports(tmp_path))
    file = tmp_path / "differences.md"
    file.write_text(differences.markdown(table))
    assert differences.check(table, file) == ("", [])
    file.write_text(differences.markdown(table).replace("❌ fail", "✅ pass", 1))
    assert "fresh merge" in differences.check(table, file)[0]


def test_a_run_that_lost_outcomes_may_show_less_than_the_table_never_more(tmp_path: Path) -> None:
    """The table was made from complete runs; a later run of the sim lost outcomes (a VM's channel
    failed, say) and so left a rule unexercised: the table stands, with a note. The same run
    without losses, or a run that shows something the table does not (a failure), is stale."""
    paths = write_reports(tmp_path)
    docs = tmp_path / "docs"
    differences.write(differences.load(paths), docs)
    file = docs / "differences.md"
    sim = paths[0] / "report.json"
    data = json.loads(sim.read_text())
    [result] = [r for r in data["results"] if r["rule"] == "ashmem.pin.split"]
    result.update(status="unknown", confirmed=0)
    data["run"]["lost_reasons"] = {"the hub channel failed: the hub closed the stream": 3, "a timeout": 1}
    for lost, expected_stale in ((4, False), (0, True)):
        data["totals"]["lost"] = lost
        sim.write_text(json.dumps(data))
        stale, kept = differences.check(differences.load(paths), file)
        assert bool(stale) is expected_stale, (lost, stale)
        assert kept == ([] if expected_stale else
                        ["sim (ashmem): `ashmem.pin.split` ❔ not exercised (the table: ✅ pass)",
                         "sim (ashmem): 4 outcome(s) lost; the commonest reason: the hub channel failed: the hub "
                         "closed the stream"])
    data["totals"]["lost"] = 4
    result.update(status="fail", violated=1)
    sim.write_text(json.dumps(data))
    assert "fresh merge" in differences.check(differences.load(paths), file)[0]


def test_two_runs_of_one_implementation_get_different_headers(tmp_path: Path) -> None:
    for name in ("x", "y"):
        reporting.write(tmp_path / name, make_report("sim"))
    data = json.loads((tmp_path / "y" / "report.json").read_text())
    data["hypothesis_profile"] = "deep"
    (tmp_path / "y" / "report.json").write_text(json.dumps(data))
    headers = [c.header for c in differences.load([tmp_path / "x", tmp_path / "y"]).columns]
    assert headers == ["sim (ashmem) seed=1 [ci]", "sim (ashmem) seed=1 [deep]"]


def test_the_table_says_which_allowed_variant_each_implementation_showed(tmp_path: Path) -> None:
    """Two kernels that both pass a rule by different allowed behaviours (6.12's EPERM whole for a
    write crossing the end, 6.1's short count): no difference, but a section that names each one's."""
    from ashcheck.spec.fileio import CROSSING_EPERM, CROSSING_SHORT

    rule = "memfd.write.stores"
    kernels = {"6.1": {CROSSING_SHORT: 3}, "6.12": {CROSSING_EPERM: 2}, "host": {}}
    paths = []
    for release, variants in kernels.items():
        ev = {r: Evidence(confirmed=1) for r in rule_ids("memfd")}
        parts = [Evidence(confirmed=1, variants=dict(variants)), Evidence(confirmed=1, variants=dict(variants))]
        for part in parts:
            ev[rule].merge(part)
        data = make_report("kernel", identity={"release": release}, profile="memfd", ev=ev, deviations={})
        reporting.write(tmp_path / release, data)
        paths.append(tmp_path / release)
    (short_report,) = [r for r in json.loads((tmp_path / "6.1" / "report.json").read_text())["results"]
                       if r["rule"] == rule]
    assert short_report["variants"] == {CROSSING_SHORT: 6}  # merged evidence sums its counts
    table = differences.load(paths)
    assert table.varying() == [rule] and rule not in table.differing()
    md = differences.markdown(table)
    section = md[md.index("## Allowed variants"):md.index("## Totals")]
    row = next(line for line in section.splitlines() if line.startswith(f"| `{rule}`"))
    assert row.split(" | ")[1:] == [CROSSING_SHORT, CROSSING_EPERM, "✅ pass |"]
    assert differences.as_json(table)["variants"][rule]["kernel 6.12 (memfd)"] == [CROSSING_EPERM]
    assert "Allowed variants" in differences.html(table)
