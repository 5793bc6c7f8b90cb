"""The pytest plugin (entry point `pytest11: ashcheck`).

    pytest --pyargs ashcheck.conformance --adapter NAME [--adapter-option KEY=VALUE ...]
           [--hypothesis-profile quick|ci|deep] [--ashcheck-results DIR] [-n auto]

Registers the Hypothesis profiles, chooses the adapter, and at the end of the session writes the
per-rule evidence of this process (one file per xdist worker) for `ashcheck run` to merge.
The project's own self-tests live in ashcheck.conformance.selftest and are collected only when
named explicitly, so a conformance run does not run them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from ashcheck.adapters import load_adapter
from ashcheck.adapters.base import Adapter, AdapterUnavailable
from ashcheck.conformance import session
from ashcheck.conformance.results import RECORDER

# Stateful tests judge their own health (rejected examples are deviations or lost transports),
# and an operation on a VM or a device has no meaningful deadline.
_QUIET = list(HealthCheck)
settings.register_profile("quick", max_examples=40, stateful_step_count=30, deadline=None,
                          suppress_health_check=_QUIET)
settings.register_profile("ci", max_examples=150, stateful_step_count=40, derandomize=True, database=None,
                          print_blob=False, deadline=None, suppress_health_check=_QUIET)
settings.register_profile("deep", max_examples=2000, stateful_step_count=100, deadline=None,
                          suppress_health_check=_QUIET)

SELFTEST = Path(__file__).parent / "selftest"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ashcheck", "ashmem / binder conformance")
    group.addoption("--adapter", default="sim",
                    help="adapter to test: a registered name (see `ashcheck adapters`) or module:Class")
    group.addoption("--adapter-option", action="append", default=[], metavar="KEY=VALUE",
                    help="option passed to the adapter (repeatable)")
    group.addoption("--ashcheck-results", default=None, metavar="DIR",
                    help="write per-rule evidence of this run into DIR (used by `ashcheck run`)")


def parse_options(items: list[str]) -> dict[str, str]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise pytest.UsageError(f"--adapter-option wants KEY=VALUE, got {item!r}")
        options[key] = value
    return options


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hypothesis_profile", None) is None:
        settings.load_profile("quick")
    spec = config.getoption("adapter")
    try:
        cls = load_adapter(spec)
    except LookupError as exc:
        raise pytest.UsageError(str(exc)) from exc
    options = parse_options(config.getoption("adapter_option"))
    try:
        reason = cls(**options).why_unavailable()
    except (ValueError, TypeError) as exc:
        raise pytest.UsageError(str(exc)) from exc
    if reason is not None:
        raise pytest.UsageError(f"adapter {spec!r} cannot run here: {reason}")
    session.configure(spec, options)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # only the positional arguments: an adapter named `...selftest.mutants:X` must not pull them in
    if collection_path == SELFTEST and not any("selftest" in str(arg) for arg in config.args):
        return True
    return None


@pytest.fixture(scope="session")
def adapter() -> Adapter:
    """The adapter under test, started once per test process. One that cannot start ends the run
    with its reason, said once (not once per test)."""
    try:
        return session.adapter()
    except AdapterUnavailable as exc:
        pytest.exit(f"adapter {session.SELECTION.spec!r} could not start: {exc}",
                    returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from ashcheck.conformance import session as adapter_session

    results = session.config.getoption("ashcheck_results", None)
    if results:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        RECORDER.dump(Path(results) / "evidence" / f"{worker}.json")
        running = adapter_session.started()
        if running is not None:
            meta = {"name": running.name, "profile": running.profile,
                    "capabilities": sorted(c.value for c in running.capabilities),
                    "deviations": dict(running.deviations)}
            (Path(results) / "evidence" / f"{worker}.adapter").write_text(json.dumps(meta))
    adapter_session.shutdown()
