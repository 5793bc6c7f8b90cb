"""The `--report` folder holds only what the latest run wrote.

Before a run writes into a folder, what an earlier run wrote there is removed: the files its
report.json lists (`files`), or, for a report of the first layout that has no list, the names
ashcheck writes (report.*, junit.xml, pytest.log, the reproducers of its failed rules, the evidence
files). Nothing else is ever deleted: a folder that is not empty and holds no earlier ashcheck run is
refused, and files of someone else's beside an earlier report stay where they are.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

OWN = ("report.json", "report.md", "report.html", "junit.xml", "pytest.log")
# what test processes write into evidence/ (worker name: "main", or xdist's gw0, gw1, …)
EVIDENCE = re.compile(r"[\w-]+\.(json|adapter|progress|unavailable)(\.tmp\d+)?|[\w-]+\.tmp\d+")


class ReportDirError(Exception):
    """The folder cannot be used for a report; the message says why and what to do."""


def prepare(directory: Path) -> list[Path]:
    """Make `directory` ready for a new report: create it, or remove what an earlier run wrote
    there. Returns the files removed. Raises ReportDirError (a folder of someone else's, a file)."""
    if directory.exists() and not directory.is_dir():
        raise ReportDirError(f"--report {directory} is a file, not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.iterdir()):
        return []
    earlier = earlier_files(directory)
    if earlier is None:
        raise ReportDirError(
            f"--report {directory} is not empty and holds no earlier ashcheck report: give a new or empty "
            "folder (a later run into the same folder replaces what ashcheck wrote there, and never "
            "touches anything else)")
    removed = []
    for path in earlier:
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(path)
    for sub in ("reproducers", "evidence"):
        folder = directory / sub
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed


def earlier_files(directory: Path) -> list[Path] | None:
    """What an earlier ashcheck run wrote into `directory`, or None if nothing says one ran there."""
    evidence = [p for p in (directory / "evidence").glob("*") if EVIDENCE.fullmatch(p.name)]
    report = _read(directory / "report.json")
    if report is None:
        # a run that ended before its report (killed, or its adapter never started) left only these
        everything = [p for p in directory.rglob("*") if p.is_file()]
        ours = set(evidence) | {directory / name for name in OWN}
        if evidence and all(p in ours for p in everything):
            return everything
        return None
    listed = report.get("files")
    if isinstance(listed, list):
        files = [directory / name for name in listed if isinstance(name, str)]
    else:  # the first layout: the names it writes
        files = [directory / name for name in OWN]
        files += [directory / "reproducers" / f"{r['rule']}.py" for r in report["results"]
                  if isinstance(r, dict) and isinstance(r.get("rule"), str)]
    inside = directory.resolve()
    files = [p for p in files if p.resolve().is_relative_to(inside) and p.resolve() != inside]
    return sorted(set(files) | set(evidence))


def _read(path: Path) -> dict[str, Any] | None:
    """report.json as ashcheck writes it (adapter, results), or None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("results"), list) and "adapter" in data:
        return data
    return None
