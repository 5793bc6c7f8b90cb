"""The peer suites: what their output says, the agreement table's verdicts, and one real run of AOSP's
ashmem_test against Debian's host libcutils (its known failures, each reported by ashcheck)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ashcheck.conformance import peers, peertable
from ashcheck.conformance.peers import Failure, PeerRun
from ashcheck.conformance.selftest.test_readme import source_root

GTEST = """[ RUN      ] AshmemTest.BasicTest
[       OK ] AshmemTest.BasicTest (0 ms)
[ RUN      ] AshmemTest.ProtTest
/x/system/core/libcutils/ashmem_test.cpp:56: Failure
Expected equality of these values:
  prot
    Which is: 1
[  FAILED  ] AshmemTest.ProtTest (0 ms)
[ RUN      ] AshmemTest.ForkTest
ashmem_test.cpp:102: Failure
Death test: ...
[  FAILED  ] AshmemTest.ForkTest (3 ms)
"""
MEMFD = "memfd: CREATE\nmemfd: BASIC\nmemfd: SEAL-FUTURE-WRITE\nmmap() didn't fail as expected\n"


def test_googletest_output_gives_each_test_and_each_failed_assertion_with_its_site() -> None:
    tests, failures = peers.parse_gtest(GTEST)
    assert tests == ["AshmemTest.BasicTest", "AshmemTest.ProtTest", "AshmemTest.ForkTest"]
    assert [(f.test, f.where) for f in failures] == [("AshmemTest.ProtTest", "ashmem_test.cpp:56"),
                                                     ("AshmemTest.ForkTest", "ashmem_test.cpp:102")]
    assert failures[0].message.startswith("Expected equality")


def test_memfd_test_aborts_at_its_first_failure_which_is_the_last_test_begun() -> None:
    tests, failures = peers.parse_memfd(MEMFD, 134)
    assert tests == ["CREATE", "BASIC", "SEAL-FUTURE-WRITE"]
    assert failures == [Failure("SEAL-FUTURE-WRITE", "", "mmap() didn't fail as expected")]
    assert peers.parse_memfd(MEMFD, 0)[1] == []


def _matrix(cell: str) -> dict[str, object]:
    header = "libcutils-host (ashmem)"
    return {"implementations": [{"adapter": "libcutils-host", "options": {}, "header": header}],
            "rules": {"ashmem.get-prot-mask.value": {header: {"cell": cell}},
                      "ashmem.set-name.stores": {header: {"cell": "known deviation"}}}}


@pytest.mark.parametrize("cell", ["known deviation", "fail", "pass"])
def test_a_peer_failure_counts_as_reported_only_where_its_rule_fails_or_deviates(cell: str) -> None:
    run = PeerRun(peers.TARGETS[0], "android-platform-tools 29.0.6-28", ["T"],
                  [Failure("AshmemTest.ProtTest", "ashmem_test.cpp:56", "prot Which is: 0x7f00aa001000")])
    [row] = peertable.rows([run], _matrix(cell))
    assert row.failures[0]["reported"] is (cell != "pass")
    assert peertable.missed([row]) == (cell == "pass")
    assert row.ashcheck_only == ["ashmem.set-name.stores"]  # reported by ashcheck, asserted by no peer failure
    assert "0x…" in row.failures[0]["message"]  # addresses change from run to run: the table must not


def test_a_failure_no_rule_checks_is_missed_and_says_what_it_asserts() -> None:
    run = PeerRun(peers.TARGETS[0], "android-platform-tools 29.0.6-28", ["T"],
                  [Failure("AshmemTest.ForkTest", "ashmem_test.cpp:102", "")])
    [row] = peertable.rows([run], _matrix("fail"))
    assert not row.failures[0]["reported"] and "fork()" in row.failures[0]["why"]
    assert "1 missed" in peertable.render([row])


@pytest.mark.skipif(not (shutil.which("g++") and Path("/usr/include/gtest/gtest.h").is_file()
                         and (peers.LIBCUTILS_SO / "libcutils.so").exists()),
                    reason="needs g++, libgtest-dev and android-libcutils-dev (.ci/run installs them)")
def test_aosp_ashmem_test_against_host_libcutils_fails_where_ashcheck_reports_a_deviation() -> None:
    [run] = peers.run((peers.TARGETS[0],), say=lambda _: None)
    assert not run.error, run.error
    assert len(run.tests) == 6 and run.status != 0
    [row] = peertable.rows([run], json.loads((source_root() / "docs" / "differences.json").read_text()))
    assert {f["site"] for f in row.failures} == {"ashmem_test.cpp:50", "ashmem_test.cpp:56", "ashmem_test.cpp:206"}
    assert all(f["reported"] for f in row.failures)
