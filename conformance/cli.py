"""The `ashcheck` command.

    ashcheck adapters                        which adapters exist, and whether each can run here
    ashcheck rules [--format text|json] [--profile ashmem|memfd]
                                             every rule id with its summary and source
    ashcheck run --adapter NAME [--profile quick|ci|deep|concurrency] [--report DIR] [--adapter-option K=V]...
                 [-n WORKERS] [-v] [--max-lost FRACTION]
                                             a conformance pass, with its report in DIR
    ashcheck merge REPORT... --out DIR       the difference table: rules × implementations
    ashcheck merge REPORT... --check FILE    exit 1 if FILE (the table's Markdown) is out of date
    ashcheck peers [--target NAME]... [--differences FILE] [--out DIR] [--check FILE]
                                             run AOSP's ashmem_test and the kernel's memfd selftest against
                                             the same implementations; the agreement table (docs/peers.md)
    ashcheck executor build --target T       cross-build the native executor
    ashcheck vm fetch [--force]              fetch and prepare the kernel adapter's VM
    ashcheck vm boot-check                   boot it once and report what the guest has

Exit status of `run`:
  0    every rule passes or is a known (declared) deviation
  1    a rule failed
  2    a usage error; the adapter cannot run here or could not start; a test failed outside any rule
       (a harness or adapter bug); or more than --max-lost of the operations were lost
  130  interrupted by SIGINT (Ctrl-C)     the report covers the part that ran, and says so
  143  interrupted by SIGTERM             likewise
Exit status of `merge`: 0 done (with --check: the file is up to date), 1 (--check) the file differs,
2 a usage error or a report that cannot be read.
Exit status of `peers`: 0 every peer failure is reported by ashcheck (and with --check the file is up
to date), 1 a peer failure ashcheck misses or (--check) the file differs, 2 a peer could not be
fetched, built or run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ashcheck.adapters import adapter_names, load_adapter
from ashcheck.spec import RULES

if TYPE_CHECKING:  # the run's modules are imported when a run starts: `ashcheck rules` stays quick
    from ashcheck.conformance.runner import Interrupts, Outcome

LOST_LIMIT = 0.05  # default --max-lost: a run that lost more of its operations than this exits 2


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


def _workers(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"wants a number of worker processes (0: in-process), got {text!r}")
    return int(text)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"wants a fraction between 0 and 1, got {text!r}")
    return value


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
    run = sub.add_parser("run", help="run a conformance pass against an adapter",
                         description="Run a conformance pass; exit 0 every rule passes or is a known deviation, "
                         "1 a rule failed, 2 usage error / adapter unavailable / a failure outside any rule / "
                         "too many lost outcomes, 130 SIGINT, 143 SIGTERM.")
    run.add_argument("--adapter", required=True, help="a registered name (see `ashcheck adapters`) or module:Class")
    run.add_argument("--profile", choices=["quick", "ci", "deep", "concurrency"], default="quick",
                     help="how hard to search: quick (seconds), ci (the same examples every run), deep; "
                     "concurrency: concurrent histories only")
    run.add_argument("--report", type=Path, default=Path("ashcheck-report"),
                     help="the report folder (default ashcheck-report); what an earlier run wrote there is replaced")
    run.add_argument("--adapter-option", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("-n", "--workers", type=_workers, default=None, metavar="N",
                     help="test processes (pytest-xdist workers); default: the CPUs, at most the profile's "
                     "shards; 0 runs in this process")
    run.add_argument("-v", "--verbose", action="store_true", help="show pytest's own output")
    run.add_argument("--max-lost", type=_share, default=LOST_LIMIT, metavar="FRACTION",
                     help=f"exit 2 if more than this share of operations was lost (default {LOST_LIMIT})")
    run.set_defaults(func=cmd_run)
    m = sub.add_parser("merge", help="the difference table of several reports (rules × implementations)")
    m.add_argument("reports", nargs="+", type=Path, help="report folders (or their report.json)")
    m.add_argument("--out", type=Path, default=None, help="write differences.md, .html and .json here")
    m.add_argument("--check", type=Path, default=None, metavar="FILE",
                   help="exit 1 if FILE is not the Markdown a merge of these reports writes")
    m.set_defaults(func=cmd_merge)
    pe = sub.add_parser("peers", help="run the peer suites against the same implementations; the agreement table")
    pe.add_argument("--target", action="append", default=None, metavar="NAME",
                    help="an implementation of the matrix (repeatable; default: all of them)")
    pe.add_argument("--differences", type=Path, default=Path("docs/differences.json"), metavar="FILE",
                    help="the matrix to compare with (default docs/differences.json)")
    pe.add_argument("--out", type=Path, default=None, help="write peers.md and peers.json here")
    pe.add_argument("--check", type=Path, default=None, metavar="FILE",
                    help="exit 1 if FILE is not the Markdown these runs give")
    pe.set_defaults(func=cmd_peers)
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
    from ashcheck.conformance.runner import Interrupts

    code = 2
    with Interrupts() as interrupts:  # from here on, SIGINT and SIGTERM end the run in order
        try:
            code = _run(args, interrupts)
        except KeyboardInterrupt:  # before the tests started: nothing to report
            print("ashcheck: interrupted before the run started", file=sys.stderr)
    if interrupts.first is not None:
        return 128 + interrupts.first
    return code


def _run(args: argparse.Namespace, interrupts: Interrupts) -> int:
    from ashcheck.conformance import console, runner
    from ashcheck.conformance.reportdir import ReportDirError, prepare
    from ashcheck.conformance.settings import PROFILES

    try:
        cls = load_adapter(args.adapter)
    except LookupError as exc:
        print(f"ashcheck: {exc}", file=sys.stderr)
        return 2
    bad = [opt for opt in args.adapter_option if "=" not in opt]
    if bad:
        print(f"ashcheck: --adapter-option wants KEY=VALUE, got {bad[0]!r}", file=sys.stderr)
        return 2
    options = dict(opt.split("=", 1) for opt in args.adapter_option)
    try:  # constructors only check their options: a bad one is a usage error, before any test runs
        reason = cls(**options).why_unavailable()
    except (ValueError, TypeError) as exc:
        print(f"ashcheck: {exc}", file=sys.stderr)
        return 2
    if reason is not None:
        print(f"ashcheck: adapter {args.adapter!r} cannot run here: {reason}", file=sys.stderr)
        return 2
    profile = PROFILES[args.profile]
    workers = default_workers(profile.shards, cls.max_workers) if args.workers is None else args.workers
    try:
        prepare(args.report)
    except (ReportDirError, OSError) as exc:
        print(f"ashcheck: {exc}", file=sys.stderr)
        return 2
    report_dir = args.report.resolve()
    started = datetime.now(UTC)
    with _run_folder() as tmp, interrupts.deferred():
        command = runner.pytest_command(adapter=args.adapter, options=args.adapter_option, profile=args.profile,
                                        report=report_dir, workers=workers, tmp=Path(tmp), verbose=args.verbose)
        with console.Progress(report_dir / "evidence", f"{args.adapter} {args.profile}",
                              live=False if args.verbose else None) as shown:
            outcome = runner.run(command, tmp=Path(tmp), log=None if args.verbose else report_dir / "pytest.log",
                                 interrupts=interrupts, tick=shown.tick)
        run = run_settings(args.profile, workers, args.max_lost, started, outcome)
        return finish(args, options, run, outcome)


def default_workers(shards: int, most: int | None = None) -> int:
    """pytest-xdist workers of a run: one per CPU this process may use, at most one per shard of the
    exploration (the exhaustive tables run beside them), and at most what the adapter allows."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, shards, most or cpus))


@contextlib.contextmanager
def _run_folder() -> Iterator[str]:
    """The run's temporary folder, named by its owner, so that a run killed with SIGKILL leaves it
    for the next run to remove (adapters/vm/owned.py); removed here on every other exit."""
    from ashcheck.adapters.vm.owned import make

    folder = make("ashcheck-run-")
    try:
        yield str(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_settings(profile_name: str, workers: int, max_lost: float, started: datetime,
                 outcome: Outcome) -> dict[str, Any]:
    """The run's settings and how it ended, as report.json's `run` (exit code and reason come later)."""
    import hypothesis

    from ashcheck.conformance.explore import SEED_BASE
    from ashcheck.conformance.settings import PROFILES

    profile = PROFILES[profile_name]
    hyp = profile.hypothesis()
    try:
        own = version("ashcheck")
    except PackageNotFoundError:
        own = "unknown (not installed)"
    return {"ashcheck_version": own, "hypothesis_version": hypothesis.__version__,
            "python": platform.python_version(), "host": platform.platform(),
            "search": {"profile": profile.name, "examples": profile.examples, "steps": profile.steps,
                       "shards": profile.shards, "seeded": profile.seeded,
                       "seeds": [SEED_BASE + k for k in range(profile.shards)] if profile.seeded else None,
                       "shrink_replays": profile.shrink_replays,
                       "histories": profile.histories, "sequential": profile.sequential,
                       "hypothesis": {"max_examples": hyp.max_examples,
                                      "stateful_step_count": hyp.stateful_step_count,
                                      "deadline": hyp.deadline, "database": hyp.database,
                                      "phases": ", ".join(p.name for p in hyp.phases)}},
            "workers": workers, "started": started.isoformat(timespec="seconds"),
            "duration_s": round(outcome.duration, 1), "interrupted": outcome.interruption,
            "lost_limit": max_lost, "problems": []}


def finish(args: argparse.Namespace, options: dict[str, str], run: dict[str, Any], outcome: Outcome) -> int:
    """Write the report, print the end of the run, and return the exit status."""
    from ashcheck.conformance import console
    from ashcheck.conformance import report as reporting
    from ashcheck.conformance.results import Recorder, lost_share, statuses
    from ashcheck.spec.reach import unreachable

    evidence_dir = args.report / "evidence"
    interrupted = None if outcome.interrupted is None else 128 + outcome.interrupted
    metas = [json.loads(p.read_text()) for p in sorted(evidence_dir.glob("*.adapter"))]
    if not metas:
        reasons = sorted({p.read_text().strip() for p in evidence_dir.glob("*.unavailable")})
        if reasons:
            why = f"adapter {args.adapter!r} could not start: {reasons[0]}"
        elif outcome.interrupted:
            why = f"interrupted ({outcome.interruption}) before the adapter started"
        else:
            why = (f"the tests ended (pytest status {outcome.returncode}) before the adapter started: "
                   + (_tail(args.report / "pytest.log") or "no output"))
        run.update(exit_code=interrupted or 2, exit_reason=why)
        reporting.write(args.report, reporting.failed_to_start(adapter=args.adapter, options=options,
                                                               reason=why, run=run))
        print(f"ashcheck: {why}", file=sys.stderr)
        return int(run["exit_code"])  # the interruption's, or 2
    meta = metas[0]
    meta["unsupported"] = {**meta.get("unsupported", {}), **Recorder.load_unsupported(evidence_dir)}
    evidence, totals = Recorder.load_all(evidence_dir)
    results = statuses(evidence, meta["profile"], set(meta["capabilities"]), meta["deviations"],
                       unreachable(meta.get("unsupported", {})))
    problems = run["problems"]
    if outcome.errors:
        problems.append(f"{len(outcome.errors)} test(s) failed outside any rule (a harness or adapter bug; "
                        f"pytest's output is in {args.report / 'pytest.log'}): " + "; ".join(outcome.errors[:3]))
    elif outcome.returncode not in (0, 1, 5) and outcome.interrupted is None:
        problems.append(f"the tests ended with pytest status {outcome.returncode}: see {args.report / 'pytest.log'}")
    share = lost_share(asdict(totals))
    if share > run["lost_limit"]:
        problems.append(f"{share:.1%} of the run was lost ({totals.lost:,} of {totals.steps:,} operations, in "
                        f"{totals.lossy:,} of {totals.examples:,} test cases; more than --max-lost "
                        f"{run['lost_limit']:.0%}): the transport to the implementation is not reliable enough to "
                        "judge it")
    failed = sum(r["status"] == "fail" for r in results)
    if interrupted:
        code, why = interrupted, f"interrupted by {outcome.interruption}"
    elif problems:
        code, why = 2, "the run could not judge the implementation (see above)"
    elif failed:
        code, why = 1, f"{failed} rule(s) failed"
    else:
        code, why = 0, "every rule passes or is a known deviation"
    run.update(exit_code=code, exit_reason=why, lost_reasons=Recorder.load_lost_reasons(evidence_dir))
    flows = {name: asdict(f) for name, f in Recorder.load_flows(evidence_dir).items()}
    report = reporting.build(adapter=args.adapter, options=options, meta=meta, results=results,
                             totals=asdict(totals), run=run, flows=flows)
    reporting.write(args.report, report)
    for line in console.final_lines(report, args.report):
        print(line)
    return code


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def cmd_merge(args: argparse.Namespace) -> int:
    from ashcheck.conformance import differences

    if args.out is None and args.check is None:
        print("ashcheck: merge wants --out DIR, --check FILE, or both", file=sys.stderr)
        return 2
    try:
        table = differences.load(args.reports, skip=args.out)
    except differences.ReportError as exc:
        print(f"ashcheck: {exc}", file=sys.stderr)
        return 2
    if args.out is not None:
        differences.write(table, args.out)
        print(f"ashcheck: {len(table.columns)} implementations, {len(table.rules)} rules, "
              f"{len(table.differing())} differ; table in {args.out / 'differences.md'}")
    if args.check is not None:
        stale, kept = differences.check(table, args.check)
        if kept:
            print(f"ashcheck: {len(kept)} cell(s) show less in runs that lost outcomes; the table's stand:\n  "
                  + "\n  ".join(kept))
        if stale:
            print(f"ashcheck: {args.check} is out of date with these reports; regenerate it with "
                  f"`ashcheck merge ... --out DIR` and copy DIR/differences.md:\n{stale}", file=sys.stderr)
            return 1
        print(f"ashcheck: {args.check} matches the {len(table.columns)} reports")
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    from ashcheck.conformance import peers, peertable

    known = {t.name: t for t in peers.TARGETS}
    unknown = [name for name in args.target or [] if name not in known]
    if unknown:
        print(f"ashcheck: no peer target {', '.join(unknown)}; known are {', '.join(known)}", file=sys.stderr)
        return 2
    try:
        differences_ = json.loads(args.differences.read_text())
    except (OSError, ValueError) as exc:
        print(f"ashcheck: cannot read the matrix {args.differences}: {exc}", file=sys.stderr)
        return 2
    targets = tuple(known[name] for name in args.target) if args.target else peers.TARGETS
    table = peertable.rows(peers.run(targets), differences_)
    text = peertable.render(table)
    if args.out is not None:
        print(f"ashcheck: agreement table in {peertable.write(table, args.out)}")
    for row in table:
        failed = f"{len(row.failures)} failure site(s)" if not row.error else f"could not run: {row.error}"
        print(f"  {row.implementation}: {row.peer} ({row.source}), {len(row.tests)} tests, {failed}")
    lost = peertable.missed(table)
    print(f"ashcheck: peers: {sum(len(r.failures) for r in table)} failure site(s), {lost} missed by ashcheck")
    status = 2 if any(r.error for r in table) else 1 if lost else 0
    if args.check is not None:
        try:
            current = args.check.read_text()
        except OSError:
            current = ""
        if current != text:
            print(f"ashcheck: {args.check} is out of date with these runs; regenerate it with "
                  f"`ashcheck peers --out {args.check.parent}`", file=sys.stderr)
            status = max(status, 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
