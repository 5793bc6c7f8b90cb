"""The `ashcheck` command.

    ashcheck adapters                        which adapters exist, and whether each can run here
    ashcheck rules [--format text|json]      every rule id with its summary and source
    ashcheck run --adapter NAME [--profile quick|ci|deep] [--report DIR] [--adapter-option K=V]
                 [-n WORKERS]                a conformance pass; exit 0 all pass/xfail, 1 a rule failed,
                                             2 usage error or adapter unavailable
    ashcheck merge DIR... --out DIR          a rule × adapter grid from several reports
    ashcheck executor build --target T       cross-build the native executor
    ashcheck vm fetch [--force]              fetch and prepare the kernel adapter's VM
    ashcheck vm boot-check                   boot it once and report what the guest has
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ashcheck.adapters import adapter_names, load_adapter
from ashcheck.conformance import report as reporting
from ashcheck.conformance.results import RECORDER, Recorder, statuses
from ashcheck.spec import RULES
from ashcheck.spec.reach import unreachable


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["executor", "build"]:
        from ashcheck.adapters.build import main_build

        return int(main_build(argv[2:]))
    if argv[:2] == ["vm", "fetch"]:
        from ashcheck.adapters.vm.fetch import main_fetch

        return int(main_fetch(argv[2:]))
    if argv[:2] == ["vm", "boot-check"]:
        from ashcheck.adapters.vm.qemu import main_boot_check

        return int(main_boot_check(argv[2:]))
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    return int(args.func(args))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ashcheck", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    a = sub.add_parser("adapters", help="list adapters and whether they can run here")
    a.set_defaults(func=cmd_adapters)
    r = sub.add_parser("rules", help="list the spec's rules")
    r.add_argument("--format", choices=["text", "json"], default="text")
    r.add_argument("--profile", default=None, help="only rules of this profile (ashmem, memfd)")
    r.set_defaults(func=cmd_rules)
    run = sub.add_parser("run", help="run a conformance pass against an adapter")
    run.add_argument("--adapter", required=True)
    run.add_argument("--profile", choices=["quick", "ci", "deep"], default="quick")
    run.add_argument("--report", type=Path, default=Path("ashcheck-report"))
    run.add_argument("--adapter-option", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("-n", "--workers", default=None, help="pytest-xdist workers (e.g. auto)")
    run.set_defaults(func=cmd_run)
    m = sub.add_parser("merge", help="merge reports into a rule × adapter grid")
    m.add_argument("reports", nargs="+", type=Path)
    m.add_argument("--out", type=Path, required=True)
    m.set_defaults(func=cmd_merge)
    sub.add_parser("executor", help="executor build --target x86_64|aarch64|armv7|x86|host")
    sub.add_parser("vm", help="vm fetch [--force] | vm boot-check")
    return p


def cmd_adapters(_: argparse.Namespace) -> int:
    for name in adapter_names():
        try:
            reason = load_adapter(name).unavailable_reason()
        except Exception as exc:  # a broken third-party adapter must not hide the others
            reason = f"cannot be loaded: {exc}"
        print(f"{name:10} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    rules = [r for r in sorted(RULES.values(), key=lambda r: r.id)
             if args.profile is None or args.profile in r.profiles]
    if args.format == "json":
        print(json.dumps([{"id": r.id, "summary": r.summary, "source": r.source,
                           "profiles": list(r.profiles), "needs": list(r.needs)} for r in rules], indent=1))
    else:
        for r in rules:
            print(f"{r.id}\n    {r.summary}\n    source: {r.source}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cls = load_adapter(args.adapter)
    except LookupError as exc:
        print(f"ashcheck: {exc}", file=sys.stderr)
        return 2
    bad = [opt for opt in args.adapter_option if "=" not in opt]
    if bad:
        print(f"ashcheck: --adapter-option wants KEY=VALUE, got {bad[0]!r}", file=sys.stderr)
        return 2
    try:  # constructors only check their options: a bad one is a usage error, before any test runs
        reason = cls(**dict(opt.split("=", 1) for opt in args.adapter_option)).why_unavailable()
    except (ValueError, TypeError) as exc:
        print(f"ashcheck: {exc}", file=sys.stderr)
        return 2
    if reason is not None:
        print(f"ashcheck: adapter {args.adapter!r} cannot run here: {reason}", file=sys.stderr)
        return 2
    import pytest

    args.report.mkdir(parents=True, exist_ok=True)
    evidence_dir = args.report / "evidence"
    shutil.rmtree(evidence_dir, ignore_errors=True)
    pytest_args = ["--pyargs", "ashcheck.conformance", "--adapter", args.adapter,
                   "--ashcheck-profile", args.profile, "--ashcheck-results", str(args.report),
                   "-p", "no:cacheprovider", "-q", "-rfE", "--tb=line",
                   "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    pytest_args += [x for opt in args.adapter_option for x in ("--adapter-option", opt)]
    if args.workers:
        pytest_args += ["-n", str(args.workers)]
    with tempfile.TemporaryDirectory() as tmp, _Progress(), _terminate_as_interrupt():
        code = pytest.main([*pytest_args, "--rootdir", tmp])
    if code in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERNAL_ERROR):
        return 2
    if code == pytest.ExitCode.INTERRUPTED:  # keep what was learnt: a partial report
        if list(evidence_dir.glob("*.adapter")):
            _finish(args, 0)
        print("ashcheck: interrupted (the report covers the part that ran)", file=sys.stderr)
        return 130
    return _finish(args, int(code))


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the session closes its executors and
    VMs and removes its temporary files instead of dying on the spot."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _finish(args: argparse.Namespace, pytest_code: int) -> int:
    evidence_dir = args.report / "evidence"
    metas = [json.loads(p.read_text()) for p in evidence_dir.glob("*.adapter")]
    if not metas:
        print("ashcheck: the adapter never started; see the errors above", file=sys.stderr)
        return 2
    meta = metas[0]
    evidence, totals = Recorder.load_all(evidence_dir)
    results = statuses(evidence, meta["profile"], set(meta["capabilities"]), meta["deviations"],
                       unreachable(meta.get("unsupported", {})))
    report: dict[str, Any] = {"adapter": args.adapter, "profile": meta["profile"],
                              "hypothesis_profile": args.profile, "capabilities": meta["capabilities"],
                              "options": dict(o.split("=", 1) for o in args.adapter_option),
                              "identity": meta.get("identity", {}), "totals": asdict(totals),
                              "results": results}
    reporting.write(args.report, report)
    counts = reporting.counts(report)
    print(f"ashcheck: {args.adapter} ({meta['profile']}): " + ", ".join(f"{n} {s}" for s, n in counts.items())
          + f"; report in {args.report}/report.md")
    failed = counts["fail"] > 0
    if pytest_code not in (0, 5) and not failed:
        print("ashcheck: the test run failed outside any rule (a harness or adapter error); see above",
              file=sys.stderr)
        return 1
    return 1 if failed else 0


def cmd_merge(args: argparse.Namespace) -> int:
    reports = []
    for path in args.reports:
        file = path / "report.json" if path.is_dir() else path
        if not file.exists():
            print(f"ashcheck: no report at {file}", file=sys.stderr)
            return 2
        reports.append(json.loads(file.read_text()))
    reporting.grid(reports, args.out)
    print(f"ashcheck: grid of {len(reports)} runs in {args.out}/grid.md")
    return 0


class _Progress:
    """Prints steps checked and rules confirmed every few seconds on stderr (in-process runs;
    with -n, pytest-xdist prints its own progress)."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Progress:
        self.start = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            rules = dict(RECORDER.rules)
            steps = sum(e.confirmed for e in rules.values())
            seen = sum(1 for e in rules.values() if e.confirmed)
            print(f"\n[ashcheck {time.monotonic() - self.start:5.0f}s] {steps} steps checked, "
                  f"{seen}/{len(RULES)} rules confirmed", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
