"""How far a run has got, read from the files its test processes write: what `ashcheck run` shows
while it waits.

Each test process (the single one, or each pytest-xdist worker) keeps its evidence in memory and
writes `evidence/<worker>.json` at the end of every test. A test (one shard of the exploration) can
run for minutes, so each process also writes a heartbeat, `evidence/<worker>.progress`, every
second from a thread of its own: the same content, a snapshot taken while the tests go on. The
final report reads only the `.json` files; the heartbeat is for the progress line.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from ashcheck.conformance.results import Recorder
from ashcheck.spec.rules import rule_ids


class Heartbeat:
    """Writes `path` (a `.progress` file) every `every` seconds until `stop`. The snapshot copies the
    recorder's dict in one C-level call (no other thread runs meanwhile) and writes a file of its
    own name, so it never meets the test thread's own writes of the `.json` file."""

    def __init__(self, recorder: Recorder, path: Path, every: float = 1.0) -> None:
        self.recorder, self.path, self.every = recorder, path, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ashcheck-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.write()
            except OSError:  # the report folder went away: the run is ending
                return

    def write(self) -> None:
        rules = dict(self.recorder.rules)
        data = {"rules": {rule: asdict(ev) for rule, ev in rules.items()},
                "totals": asdict(self.recorder.totals)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)


@dataclass(frozen=True)
class Snapshot:
    """The run so far, over every test process."""

    profile: str | None  # the adapter's profile (ashmem, memfd), once a process has started it
    exercised: int       # rules of the profile that met at least one judged outcome
    rules: int           # rules of the profile (0 while the profile is unknown)
    failing: int         # rules violated so far
    examples: int
    steps: int
    lost: int
    lossy: int           # test cases that lost an outcome
    set_aside: int


def read(evidence_dir: Path) -> Snapshot:
    """What the evidence files say now. Files being replaced, or half-written by a process that was
    killed, are skipped: the next read will have them."""
    profile = None
    for meta in sorted(evidence_dir.glob("*.adapter")):
        try:
            profile = json.loads(meta.read_text())["profile"]
            break
        except (OSError, ValueError, KeyError):
            continue
    workers: dict[str, Path] = {}
    for path in sorted(evidence_dir.glob("*.json")) + sorted(evidence_dir.glob("*.progress")):
        known = workers.get(path.stem)
        if known is None or _mtime(path) > _mtime(known):
            workers[path.stem] = path
    rules: dict[str, list[int]] = {}
    totals = {"examples": 0, "steps": 0, "lost": 0, "lossy": 0, "set_aside": 0}
    for path in workers.values():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for rule, ev in data.get("rules", {}).items():
            seen = rules.setdefault(rule, [0, 0])
            seen[0] += ev["confirmed"] + ev["emulated"] + ev["violated"] + ev["deviated"]
            seen[1] += ev["violated"]
        for name in totals:
            totals[name] += data.get("totals", {}).get(name, 0)
    in_profile = set(rule_ids(profile)) if profile else set(rules)
    return Snapshot(profile=profile,
                    exercised=sum(1 for r, (judged, _) in rules.items() if judged and r in in_profile),
                    rules=len(in_profile) if profile else 0,
                    failing=sum(1 for r, (_, violated) in rules.items() if violated and r in in_profile),
                    **totals)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
