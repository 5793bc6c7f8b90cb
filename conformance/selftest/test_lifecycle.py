"""The memfd adapter's executors end with the run, however it ends (pass, fail, SIGINT, SIGTERM),
no fd is leaked, and an executor that dies or hangs becomes an indeterminate outcome, not a hang.
An adapter that cannot start (no executor can be built or cached) says why once; a cached
executor that goes bad during a run is rebuilt at the next start of a process.

Runs are real `ashcheck run` commands; their executors are found by a tag in their environment
(every executor inherits the environment of the run that started it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ashcheck.adapters import build
from ashcheck.adapters.base import AdapterUnavailable
from ashcheck.adapters.memfd import HostTransport, MemfdAdapter
from ashcheck.spec import ops as o
from ashcheck.spec.outcome import Kind

LYING_ADAPTER = '''
from ashcheck.adapters import build
from ashcheck.adapters.base import AdapterUnavailable
from ashcheck.adapters.memfd import HostTransport, MemfdAdapter
from ashcheck.spec import ops as o
from ashcheck.spec.outcome import ok


class LyingSize(MemfdAdapter):
    """Real executors, but GET_SIZE answers one byte too many: the run must fail."""

    def perform(self, op):
        out = super().perform(op)
        return ok(out.value + 1) if isinstance(op, o.GetSize) and out.succeeded else out
'''


def executors_tagged(tag: str) -> list[int]:
    """Live executor processes (not zombies) whose environment carries the tag."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"ashcheck-exec" not in (entry / "cmdline").read_bytes():
                continue
            if f"ASHCHECK_LEAK_TAG={tag}".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
        except OSError:  # it ended while we looked
            continue
    return found


def gone_within(tag: str, seconds: float) -> list[int]:
    """The tagged executors still alive after waiting up to `seconds` for them to go."""
    end = time.monotonic() + seconds
    while (left := executors_tagged(tag)) and time.monotonic() < end:
        time.sleep(0.1)
    return left


def start_run(adapter: str, report: Path, profile: str, tag: str, pythonpath: Path | None = None,
              ) -> subprocess.Popen[str]:
    env = dict(os.environ, ASHCHECK_LEAK_TAG=tag)
    if pythonpath is not None:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.Popen([sys.executable, "-m", "ashcheck.conformance.cli", "run", "--adapter", adapter,
                             "--profile", profile, "--report", str(report)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def test_a_passing_run_leaves_no_executor(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    run = start_run("memfd", tmp_path / "report", "quick", tag)
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output
    assert gone_within(tag, 2) == []


def test_a_failing_run_leaves_no_executor(tmp_path: Path) -> None:
    (tmp_path / "lying_adapter.py").write_text(LYING_ADAPTER)
    tag = uuid.uuid4().hex
    run = start_run("lying_adapter:LyingSize", tmp_path / "report", "quick", tag, pythonpath=tmp_path)
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 1, output
    assert "ashmem.get-size.value" in (tmp_path / "report" / "report.md").read_text()
    assert gone_within(tag, 2) == []


@pytest.mark.parametrize("how", ["SIGINT to the group (Ctrl-C)", "SIGTERM to the command"])
def test_an_interrupted_run_leaves_no_executor(tmp_path: Path, how: str) -> None:
    tag = uuid.uuid4().hex
    run = start_run("memfd", tmp_path / "report", "ci", tag)
    try:
        deadline = time.monotonic() + 120
        while not executors_tagged(tag):
            assert run.poll() is None, f"the run ended before it started an executor: {run.communicate()[0]}"
            assert time.monotonic() < deadline, "no executor appeared within 120 s"
            time.sleep(0.05)
        if how.startswith("SIGINT"):
            os.killpg(run.pid, signal.SIGINT)
        else:
            run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == (130 if how.startswith("SIGINT") else 143), output
    assert "interrupted" in output
    assert gone_within(tag, 2) == []


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture
def adapter() -> Iterator[MemfdAdapter]:
    a = MemfdAdapter(timeout="1")
    a.start()
    try:
        yield a
    finally:
        a.close()


def test_no_fd_is_leaked_by_a_session() -> None:
    before = open_fds()
    a = MemfdAdapter()
    a.start()
    for proc in (0, 1):
        assert a.perform(o.Spawn(proc)).succeeded
    fd = a.perform(o.CreateRegion(0, b"leak", 4096)).value
    assert a.perform(o.BinderSend(0, 1, (fd, fd))).succeeded
    assert a.perform(o.BinderSend(0, 1, (fd, 999))).value == "BR_FAILED_REPLY"  # refused: holds nothing either
    assert a.perform(o.Exit(1)).succeeded
    a.close()
    assert open_fds() == before


def test_a_killed_executor_is_indeterminate_and_the_others_go_on(adapter: MemfdAdapter) -> None:
    for proc in (0, 1):
        assert adapter.perform(o.Spawn(proc)).succeeded
    assert isinstance(adapter.transport, HostTransport)
    victim = adapter.transport.executor(0)
    os.kill(victim.pid, signal.SIGKILL)
    out = adapter.perform(o.CreateRegion(0, b"x", 4096))
    assert out.kind is Kind.INDETERMINATE and "died" in str(out.value), out
    again = adapter.perform(o.GetSize(0, 3))
    assert again.kind is Kind.INDETERMINATE and "lost earlier" in str(again.value), again
    assert adapter.perform(o.CreateRegion(1, b"y", 4096)).succeeded


def test_a_hung_executor_is_killed_after_the_timeout(adapter: MemfdAdapter) -> None:
    assert adapter.perform(o.Spawn(0)).succeeded
    assert isinstance(adapter.transport, HostTransport)
    victim = adapter.transport.executor(0)
    os.kill(victim.pid, signal.SIGSTOP)
    start = time.monotonic()
    out = adapter.perform(o.CreateRegion(0, b"x", 4096))
    took = time.monotonic() - start
    assert out.kind is Kind.INDETERMINATE and "did not answer in time" in str(out.value), out
    assert took < 10, f"a 1 s timeout took {took:.1f} s"
    assert victim.returncode == -signal.SIGKILL


def _garbage_cc(folder: Path) -> Path:
    """A C compiler that writes garbage as the binary."""
    script = folder / "garbage-cc"
    script.write_text('#!/bin/sh\ncase "$1" in --version) echo garbage-cc; exit 0;; -print-file-name=*) echo libc.a; '
                      'exit 0;; esac\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && echo garbage > "$2"; shift; done\n')
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("setup", ["an unwritable cache", "a compiler that writes garbage"])
def test_an_adapter_that_cannot_start_says_why_once(setup: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if setup == "an unwritable cache":
        (tmp_path / "a-file").write_text("")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))
        says = "cannot be written"
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.setenv("CC", str(_garbage_cc(tmp_path)))
        says = "not an ELF binary"
    with pytest.raises(AdapterUnavailable, match=says):
        MemfdAdapter().start()
    run = start_run("memfd", tmp_path / "report", "quick", uuid.uuid4().hex)
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 2, output
    assert says in output and output.count(says) <= 2, output
    assert "Traceback" not in output and len(output.splitlines()) < 15, output


def test_a_cached_executor_that_goes_bad_is_rebuilt_at_the_next_spawn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    a = MemfdAdapter()
    a.start()
    try:
        assert a.perform(o.Spawn(0)).succeeded
        binary = build.executor_path()
        bad = binary.with_name("bad")
        bad.write_bytes(b"#!/bin/sh\necho 1 ok\n")
        bad.chmod(0o755)
        bad.replace(binary)  # a rename: process 0 runs on from the old file
        capfd.readouterr()
        assert a.perform(o.Spawn(1)).succeeded, "the start answered the wrong version: rebuilt, started again"
        said = capfd.readouterr().err
        assert said.count("unusable") == 1 and "rebuilding" in said, said
        assert binary.read_bytes()[:4] == b"\x7fELF"
        assert a.perform(o.CreateRegion(1, b"x", 4096)).succeeded and a.perform(o.ListFds(0)).succeeded
    finally:
        a.close()
