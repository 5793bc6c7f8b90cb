"""The run profiles: how hard to search, as Hypothesis settings applied to ashcheck's own tests
only (never loaded globally: a pytest plugin must change nothing for other test suites).

- quick: seconds, for a first look; random examples.
- ci: the same examples on every run (each shard of the exploration has a fixed seed), so that a
  report changes only when the implementation does.
- deep: thousands of examples, random.
- concurrency: concurrent histories only (concurrent.py), many of them, the same every run; the
  other profiles run a few beside the sequential tests.

No example database: ashcheck keeps what it finds in its own evidence and reproducers, so nothing
is written to `.hypothesis/` in the current directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, settings


@dataclass(frozen=True)
class Profile:
    name: str
    examples: int      # test cases per shard of the exploration
    steps: int         # operations (rules) per test case, at most
    shards: int        # the exploration runs as this many tests (pytest-xdist spreads them)
    seeded: bool       # each shard has a fixed seed (the same examples every run)
    shrink_replays: int  # replays allowed to minimize each failing rule's program
    histories: int = 0   # concurrent histories per shard (concurrent.py)
    sequential: bool = True  # the exploration, tables and flows run (False: concurrent histories only)

    def hypothesis(self, *, shrink: bool = False) -> settings:
        """Settings for one shard. Hypothesis never sees a failure (the harness records them), so
        its own shrinking never runs; `shrink` is kept False for clarity and speed."""
        phases = [Phase.explicit, Phase.generate, Phase.target] + ([Phase.shrink] if shrink else [])
        # the parent is Hypothesis's own default, not whatever profile the environment loaded
        # (Hypothesis loads a "ci" profile by itself when $CI is set: derandomize, print_blob),
        # so that a run means the same on a laptop and on a CI machine
        return settings(settings.get_profile("default"), derandomize=False,
                        max_examples=self.examples, stateful_step_count=self.steps, deadline=None,
                        database=None, print_blob=False, phases=phases,
                        # stateful tests judge their own health: a step that is set aside or an
                        # adapter slower than a laptop is not a problem of the test
                        suppress_health_check=list(HealthCheck))


PROFILES = {
    "quick": Profile("quick", examples=25, steps=30, shards=2, seeded=False, shrink_replays=60, histories=5),
    "ci": Profile("ci", examples=100, steps=50, shards=4, seeded=True, shrink_replays=300, histories=10),
    "deep": Profile("deep", examples=600, steps=100, shards=4, seeded=False, shrink_replays=1500, histories=200),
    "concurrency": Profile("concurrency", examples=1, steps=1, shards=4, seeded=True, shrink_replays=200,
                           histories=300, sequential=False),
}
