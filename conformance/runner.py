"""Running the conformance tests for `ashcheck run`: pytest in a child process, quietly.

The tests run as `python -m pytest --pyargs ashcheck.conformance` in a process group of its own
(with pytest-xdist workers under it), with its output in `<report>/pytest.log` (or on the console
with -v), and pytest's own JUnit file in a temporary folder, read afterwards to tell a test that
reported violated rules (pytest.fail, which ends every failing conformance test) from one that
failed any other way (a harness or adapter bug).

Signals: the first SIGINT (Ctrl-C) or SIGTERM that the command receives is passed on to the whole
group as SIGINT, so that every test process unwinds the same way: it stops, writes its evidence,
closes its executors and VMs. A second signal, or a group that has not ended after `GRACE` seconds,
is answered with SIGKILL. On Linux the child also gets SIGINT if the command itself dies (SIGKILL),
so that a killed command leaves no run behind.

Everything else the child writes goes into the command's temporary folder, removed however the
command ends (a SIGKILL aside): pytest's basetemp (pytest-xdist makes one even when no test asks for
it), and Hypothesis' storage (its cache of constants; the example database is off), so nothing lands
in `$TMPDIR/pytest-of-<user>` or in `.hypothesis/` of the current directory. A pytest-xdist worker's
environment (when `ashcheck run` is itself started from a test) is not passed on.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

GRACE = 60.0  # seconds an interrupted run may take to unwind (a VM's shutdown included)
NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class Interrupts:
    """SIGINT and SIGTERM, recorded. Inside `deferred()` (while the tests run, and while their report
    is written) a signal does not stop this process: it is passed on to the child's group, and the
    run ends in order. Outside, it raises KeyboardInterrupt, so that a command stuck before the run
    (an adapter's check that hangs) can still be stopped.

    Use as a context manager around everything that must be cleaned up; the previous handlers are
    restored on exit."""

    def __init__(self) -> None:
        self.first: int | None = None  # the first signal received
        self.at: float | None = None   # when (time.monotonic)
        self.count = 0
        self.group: int | None = None  # the child's process group, while it runs
        self._defer = False
        self._previous: dict[int, object] = {}

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._defer = True
        try:
            yield
        finally:
            self._defer = False

    def __enter__(self) -> Interrupts:
        for signum in NAMES:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.first is None:
            self.first, self.at = signum, time.monotonic()
        if self.group is not None:
            kill_group(self.group, signal.SIGINT if self.count == 1 else signal.SIGKILL)
        if not self._defer:
            raise KeyboardInterrupt(NAMES.get(signal.Signals(signum), str(signum)))


def kill_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


@dataclass
class Outcome:
    """How the test process ended."""

    returncode: int | None        # pytest's exit status (negative: killed by that signal)
    interrupted: int | None       # the signal that interrupted the run
    duration: float               # seconds
    errors: list[str] = field(default_factory=list)  # tests that failed other than by violated rules

    @property
    def interruption(self) -> str | None:
        """The interrupting signal's name, as reports show it."""
        return None if self.interrupted is None else NAMES.get(signal.Signals(self.interrupted), str(self.interrupted))


def pytest_command(*, adapter: str, options: list[str], profile: str, report: Path, workers: int,
                   tmp: Path, verbose: bool) -> list[str]:
    """The child's command line. `report` must be absolute (the child does not change directory, but
    a relative path is easy to misread in a log)."""
    ini = tmp / "pytest.ini"
    ini.write_text("[pytest]\n")  # the user's own pytest configuration has no say in a conformance run
    return [sys.executable, "-m", "pytest", "--pyargs", "ashcheck.conformance",
            "-c", str(ini), "--rootdir", str(tmp), "--basetemp", str(tmp / "basetemp"), "-p", "no:cacheprovider",
            "--adapter", adapter, *(x for opt in options for x in ("--adapter-option", opt)),
            "--ashcheck-profile", profile, "--ashcheck-results", str(report),
            "--junitxml", str(tmp / "pytest.xml"), "-n", str(workers),
            "-W", "ignore::pytest.PytestAssertRewriteWarning",  # adapters imported before the plugin's tests
            "-v" if verbose else "-q", "--tb=short"]


def run(command: list[str], *, tmp: Path, log: Path | None, interrupts: Interrupts,
        tick: Callable[[], None], every: float = 0.25) -> Outcome:
    """Run `command` (pytest_command) until it ends, calling `tick` every `every` seconds. Call it
    inside `interrupts.deferred()`.

    log: where its output goes (None: to this process's stdout and stderr)."""
    start = time.monotonic()
    if interrupts.first is not None:
        return Outcome(None, interrupts.first, 0.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST_", "PYTEST_CURRENT_TEST"))}
    env["HYPOTHESIS_STORAGE_DIRECTORY"] = str(tmp / "hypothesis")  # not `.hypothesis/` here
    with _output(log) as out:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=None if out is None else subprocess.STDOUT, env=env, process_group=0,
                                 preexec_fn=_die_with_parent)
        interrupts.group = child.pid
        try:
            if interrupts.first is not None:  # it came between the check above and Popen
                kill_group(child.pid, signal.SIGINT)
            while child.poll() is None:
                tick()
                time.sleep(every)
                if interrupts.at is not None and time.monotonic() - interrupts.at > GRACE:
                    kill_group(child.pid, signal.SIGKILL)
        finally:
            if child.poll() is None:  # an exception of our own: the run must not outlive us
                kill_group(child.pid, signal.SIGKILL)
                child.wait()
            interrupts.group = None
            kill_group(child.pid, signal.SIGKILL)  # workers or executors that outlived their pytest
    tick()
    errors = failures_outside_rules(tmp / "pytest.xml")
    return Outcome(child.returncode, interrupts.first, time.monotonic() - start, errors)


@contextlib.contextmanager
def _output(log: Path | None) -> Iterator[int | None]:
    if log is None:
        yield None
        return
    with open(log, "wb") as file:
        yield file.fileno()


def _die_with_parent() -> None:
    """In the child, before exec: SIGINT when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT))


def failures_outside_rules(junit: Path) -> list[str]:
    """Tests in pytest's JUnit file that failed or errored other than by reporting violated rules
    (a conformance test reports them with pytest.fail, whose message JUnit starts with 'Failed: ')."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return []
    errors = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for kind in ("failure", "error"):
            for element in case.findall(kind):
                message = element.get("message", "")
                if kind == "failure" and message.startswith("Failed: "):
                    continue
                first = (message or element.text or "").strip().splitlines()
                errors.append(f"{name}: {first[0] if first else kind}")
    return errors
