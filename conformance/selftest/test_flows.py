"""The callers' flows (flows.py): each runs on the reference and is judged by rules; a mutant that
keys regions by name fails the same-name flow as the rule it breaks; a flow without its
capabilities is skipped, one whose transport is lost says so; and every report format shows them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from ashcheck.adapters.base import Adapter, Capability
from ashcheck.adapters.sim import SimAdapter
from ashcheck.conformance import console, differences, junit, render
from ashcheck.conformance.flows import FLOWS, run
from ashcheck.conformance.report import flow_rows
from ashcheck.conformance.results import FlowResult
from ashcheck.conformance.selftest.mutants import NamesAreKeys
from ashcheck.conformance.selftest.test_reports import make_report
from ashcheck.spec import ops as o
from ashcheck.spec.outcome import Outcome, indeterminate

NAME_RULE = "ashmem.name.not-an-identity"


def run_on(adapter: Adapter, name: str) -> FlowResult:
    adapter.start()
    try:
        return run(adapter, name)
    finally:
        adapter.close()


@pytest.fixture
def sim() -> Iterator[Adapter]:
    adapter = SimAdapter()
    adapter.start()
    yield adapter
    adapter.close()


@pytest.mark.parametrize("name", list(FLOWS))
def test_every_flow_passes_on_the_reference_and_is_judged_by_rules(sim: Adapter, name: str) -> None:
    result = run(sim, name)
    assert result.status == "pass", result.reason
    assert len(result.steps) >= 10 and sum(result.rules.values()) >= 10
    assert not result.violated
    assert FLOWS[name].doc and FLOWS[name].title


def test_the_flows_cover_what_callers_do() -> None:
    ops = {type(o.Op.from_json(s["op"])).__name__ for name in FLOWS for s in run_on(SimAdapter(), name).steps}
    assert {"CreateRegion", "OpenAshmem", "SetName", "SetSize", "Pin", "Unpin", "PurgeAllCaches", "Mmap",
            "Store", "Load", "BinderSend", "Dup", "Read", "Write", "GetName"} <= ops


def test_the_same_name_flow_confirms_that_a_name_is_not_an_identity(sim: Adapter) -> None:
    assert run(sim, "same-name-twice").rules.get(NAME_RULE, 0) >= 2


def test_a_mutant_that_keys_regions_by_name_fails_the_same_name_flow_as_that_rule() -> None:
    result = run_on(NamesAreKeys(), "same-name-twice")
    assert result.status == "fail" and result.violated == [NAME_RULE], (result.status, result.violated)
    assert NAME_RULE in result.reason


class WithoutDevice(SimAdapter):
    capabilities = frozenset(Capability) - {Capability.ASHMEM_DEVICE}


class LosesLoads(SimAdapter):
    def perform(self, op: o.Op) -> Outcome:
        return indeterminate("the link went down") if isinstance(op, o.Load) else super().perform(op)


def test_a_flow_without_its_capabilities_is_skipped_with_the_reason() -> None:
    result = run_on(WithoutDevice(), "open-name-size-map")
    assert (result.status, result.reason, result.steps) == ("skip", "needs capability ashmem-device", [])


def test_a_flow_whose_transport_is_lost_says_so() -> None:
    result = run_on(LosesLoads(), "binder-share")
    assert result.status == "lost" and "lost on" in result.reason


def report_with_flows() -> dict[str, Any]:
    flows = {"same-name-twice": asdict(run_on(NamesAreKeys(), "same-name-twice")),
             "binder-share": asdict(run_on(SimAdapter(), "binder-share"))}
    report = make_report()
    report["flows"] = flow_rows(flows)
    return report


def test_every_report_format_shows_the_flows(tmp_path: Path) -> None:
    report = report_with_flows()
    md = render.markdown(report)
    section = md[md.index("## Callers' flows"):]
    assert "| **same-name-twice**" in section and "❌ fail" in section and "✅ pass" in section
    assert NAME_RULE in section and "Steps of the failing flow **same-name-twice**" in section
    page = render.html(report)
    assert "<h2>Callers' flows</h2>" in page and "same-name-twice" in page
    cases = {c.get("name"): c for c in ET.fromstring(junit.xml(report)).iter("testcase")}
    assert cases["same-name-twice"].find("failure") is not None and cases["binder-share"].find("failure") is None
    lines = console.final_lines(report, tmp_path)
    assert "callers' flows: 1 fail (same-name-twice); 1 pass" in lines


def test_the_difference_table_has_a_row_per_flow(tmp_path: Path) -> None:
    report = report_with_flows()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "report.json").write_text(json.dumps(report))
    table = differences.load([tmp_path / "a"])
    md = differences.markdown(table)
    assert "## Callers' flows" in md and "| same-name-twice | ❌ fail |" in md
    assert differences.as_json(table)["flows"]["binder-share"] == {table.columns[0].header: "pass"}
