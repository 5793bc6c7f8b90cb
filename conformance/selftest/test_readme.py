"""The README's promises: the example adapter runs as printed, and the test command is .ci/run's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ashcheck.conformance


def source_root() -> Path:
    """The source checkout: next to the package (editable install) or the cwd (tox)."""
    for root in (Path(ashcheck.conformance.__file__).resolve().parents[1], Path.cwd()):
        if (root / "README.md").exists() and (root / ".ci" / "run").exists():
            return root
    pytest.skip("README.md is not here: these tests run from a source checkout")


def readme() -> str:
    return (source_root() / "README.md").read_text()


def test_the_example_adapter_runs_as_printed(tmp_path: Path) -> None:
    text = readme()
    block = re.search(r"<!-- example-adapter[^\n]*-->\n```python\n(.*?)```", text, re.S)
    assert block, "the README lost its example adapter block"
    package = tmp_path / "my_ashmem"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "adapter.py").write_text(block.group(1))
    report = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "ashcheck.conformance.cli", "run", "--adapter",
                           "my_ashmem.adapter:MyAshmemAdapter", "--profile", "ci", "--report", str(report)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = {r["rule"]: r["status"] for r in json.loads((report / "report.json").read_text())["results"]}
    assert results["ashmem.maps.name"] == "xfail"  # the deviation it declares is observed
    assert list(results.values()).count("pass") >= 60


def test_an_operation_newer_than_the_example_adapter_is_skipped_and_reported(tmp_path: Path) -> None:
    """The example adapter as if written before fallocate existed: it raises UnsupportedOperation,
    the run goes on (exit 0), the report names the operation and skips the rules only it reaches."""
    block = re.search(r"<!-- example-adapter[^\n]*-->\n```python\n(.*?)```", readme(), re.S)
    assert block
    older = re.sub(r"\n *o\.Fallocate: [^\n]*", "", block.group(1))
    assert older != block.group(1), "the example adapter no longer calls fallocate"
    (tmp_path / "older_adapter.py").write_text(older)
    report = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "ashcheck.conformance.cli", "run", "--adapter",
                           "older_adapter:MyAshmemAdapter", "--profile", "quick", "--report", str(report)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((report / "report.json").read_text())
    assert "Fallocate" in data["unsupported"], data["unsupported"]
    results = {r["rule"]: r["status"] for r in data["results"]}
    assert results["ashmem.fallocate.enodev"] == "skip" and results["fd.fallocate.args"] == "skip"
    assert results["ashmem.ftruncate.einval"] == "pass"  # its neighbour still runs


def test_the_readme_test_command_is_what_ci_runs() -> None:
    text = readme()
    commands = re.search(r"```sh\n(.*?)```", text, re.S)
    assert commands
    lines = [line for line in commands.group(1).splitlines() if line and not line.startswith("#")]
    assert "python3 -m venv .venv" in lines[0] and lines[0].endswith(
        ".venv/bin/ashcheck run --adapter sim --profile ci --report reports/sim")
    root = source_root()
    ci_text = (root / ".ci" / "run").read_text()
    ci = [line for line in ci_text.splitlines() if line and not line.startswith("#")]
    assert lines[1].endswith(" && ".join(ci[-3:])), f"README runs {lines[1]!r}, CI ends with {ci[-3:]!r}"
    for package in re.findall(r"apt-get install -y ([^&]*)&&", lines[1])[0].split():
        assert package in ci_text, package


def test_the_kernel_table_names_every_ashmem_rule_once() -> None:
    """The table of rules confirmed on the real 5.10 driver stays complete as rules are added."""
    from ashcheck.spec import RULES

    section = re.search(r"\n## Confirmed on the real 5\.10 driver\n(.*?)(\n## |\Z)", readme(), re.S)
    assert section, "the README lost its table of rules confirmed on 5.10"
    table = [line for line in section.group(1).splitlines() if line.startswith("| ") and "`" in line]
    named = [rule for line in table for rule in re.findall(r"`([a-z]+(?:\.[a-z0-9-]+)+)`", line)]
    expected = {r.id for r in RULES.values() if "ashmem" in r.profiles}
    assert len(named) == len(set(named)), "a rule is listed twice"
    assert set(named) == expected, (f"missing: {sorted(expected - set(named))}; "
                                    f"not ashmem-profile rules: {sorted(set(named) - expected)}")


def test_the_bench_runs_and_prints_its_figures() -> None:
    """`python bench/run.py --json` (the README's figures) still runs against the engine as it is."""
    done = subprocess.run([sys.executable, str(source_root() / "bench" / "run.py"), "--json", "--only", "sim"],
                          capture_output=True, text=True, timeout=600, cwd=source_root())
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["floor_steps_per_s"] > 0 and figures["sim_steps_per_s"] > 0, figures
