"""The pytest plugin (entry point `pytest11: ashcheck`).

    pytest --pyargs ashcheck.conformance [--adapter NAME|module:Class] [--adapter-option KEY=VALUE ...]
           [--ashcheck-profile quick|ci|deep|concurrency] [--ashcheck-results DIR] [-n auto]

It provides the `adapter` fixture (the adapter under test, started once per test process; a
project may override the fixture to supply its own instance) and the `ashcheck_profile` fixture,
parametrizes the exploration's shards and the callers' flows, and at the end of the session writes the per-rule evidence
of this process (one file per xdist worker) for `ashcheck run` to merge.

It changes nothing for test suites that do not use it: no Hypothesis profile is loaded or
registered (ashcheck's tests pass their settings explicitly), and the adapter is looked at only
when `--adapter` is given or ashcheck's own tests ask for it. The project's self-tests live in
ashcheck.conformance.selftest and are collected only when named explicitly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ashcheck.adapters import load_adapter
from ashcheck.adapters.base import Adapter, AdapterUnavailable
from ashcheck.conformance import session
from ashcheck.conformance.progress import Heartbeat
from ashcheck.conformance.results import RECORDER
from ashcheck.conformance.settings import PROFILES, Profile

HERE = Path(__file__).parent
SELFTEST = HERE / "selftest"
HEARTBEAT = pytest.StashKey[Heartbeat]()  # the progress writer of this test process, if it keeps evidence


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ashcheck", "ashmem / binder conformance")
    group.addoption("--adapter", default=None,
                    help="adapter to test: a registered name (see `ashcheck adapters`) or module:Class (default sim)")
    group.addoption("--adapter-option", action="append", default=[], metavar="KEY=VALUE",
                    help="option passed to the adapter (repeatable)")
    group.addoption("--ashcheck-profile", default="quick", choices=sorted(PROFILES),
                    help="how hard ashcheck searches: quick, ci (the same examples every run) or deep")
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
    spec = config.getoption("adapter")
    options = parse_options(config.getoption("adapter_option"))
    if spec is None:
        if options:
            raise pytest.UsageError("--adapter-option needs --adapter")
        session.configure("sim", {})
    else:
        _check(spec, options)
        session.configure(spec, options)
    results = config.getoption("ashcheck_results")
    # xdist's own mark of a worker, not its environment variable, which a pytest run started from
    # a worker's test (as ashcheck's self-tests do) inherits
    workerinput = getattr(config, "workerinput", None)
    worker = workerinput["workerid"] if workerinput else "main"
    # only processes that run tests keep evidence (not an xdist controller)
    if results and (workerinput or not config.getoption("numprocesses", None)):
        RECORDER.path = Path(results) / "evidence" / f"{worker}.json"
        heartbeat = Heartbeat(RECORDER, RECORDER.path.with_suffix(".progress"))
        config.stash[HEARTBEAT] = heartbeat
        heartbeat.start()


def _check(spec: str, options: dict[str, str]) -> None:
    """A bad adapter name or option is a usage error before any test runs."""
    try:
        reason = load_adapter(spec)(**options).why_unavailable()
    except (LookupError, ValueError, TypeError) as exc:
        raise pytest.UsageError(str(exc)) from exc
    if reason is not None:
        raise pytest.UsageError(f"adapter {spec!r} cannot run here: {reason}")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # only the positional arguments: an adapter named `...selftest.mutants:X` must not pull them in
    if collection_path == SELFTEST and not any("selftest" in str(arg) for arg in config.args):
        return True
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if Path(metafunc.module.__file__).parent != HERE:
        return
    if "shard" in metafunc.fixturenames:
        profile = PROFILES[metafunc.config.getoption("ashcheck_profile")]
        metafunc.parametrize("shard", range(profile.shards))
    if "flow_name" in metafunc.fixturenames:
        from ashcheck.conformance.flows import FLOWS

        metafunc.parametrize("flow_name", list(FLOWS))


@pytest.fixture(scope="session")
def ashcheck_profile(request: pytest.FixtureRequest) -> Profile:
    """The search profile chosen with --ashcheck-profile."""
    return PROFILES[request.config.getoption("ashcheck_profile")]


@pytest.fixture(scope="session")
def adapter(request: pytest.FixtureRequest) -> Adapter:
    """The adapter under test, started once per test process. One that cannot start ends the run
    with its reason, said once (not once per test); under `ashcheck run` the reason is also written
    to `evidence/<worker>.unavailable`, and `.adapter` describes the adapter as soon as it runs (the
    progress line needs its profile)."""
    try:
        started = session.adapter()
    except AdapterUnavailable as exc:
        why = f"adapter {session.SELECTION.spec!r} could not start: {exc}"
        if RECORDER.path is not None:
            RECORDER.path.parent.mkdir(parents=True, exist_ok=True)
            RECORDER.path.with_suffix(".unavailable").write_text(f"{exc}\n")
        if hasattr(request.config, "workerinput"):  # pytest.exit in an xdist worker is an INTERNALERROR
            pytest.fail(why, pytrace=False)
        pytest.exit(why, returncode=pytest.ExitCode.USAGE_ERROR)
    _write_meta(started)
    return started


def _write_meta(running: Adapter) -> None:
    if RECORDER.path is None:
        return
    meta = {"name": running.name, "profile": running.profile,
            "capabilities": sorted(c.value for c in running.capabilities),
            "deviations": dict(running.deviations),
            "unsupported": {op.__name__: why for op, why in running.unsupported.items()},
            "identity": running.identity(), "page_size": running.page_size}
    RECORDER.path.parent.mkdir(parents=True, exist_ok=True)
    RECORDER.path.with_suffix(".adapter").write_text(json.dumps(meta))


def pytest_sessionfinish(session: pytest.Session) -> None:
    from ashcheck.conformance import session as adapter_session

    heartbeat = session.config.stash.get(HEARTBEAT, None)
    if heartbeat is not None:
        heartbeat.stop()
    if RECORDER.path is not None:
        RECORDER.dump()
        running = adapter_session.started()
        if running is not None:
            _write_meta(running)
    adapter_session.shutdown()
