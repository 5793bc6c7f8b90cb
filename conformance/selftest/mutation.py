"""Mutation testing of the reference simulator (`reference/`) with cosmic-ray: does the suite,
run against the `sim` adapter under the `ci` profile, notice each small change to the simulator?

    python -m ashcheck.conformance.selftest.mutation run [--workers 2] [--survivors FILE] [--check]
    python -m ashcheck.conformance.selftest.mutation recheck [--status open,unjudged]  # survivors only
    python -m ashcheck.conformance.selftest.mutation check COPY   # one verdict (cosmic-ray's test command)

Why cosmic-ray (not mutmut): mutmut 3 copies the sources to `mutants/` and imports them as
top-level modules named after their folders (`reference.ranges`); this project's folders install
as `ashcheck.reference` etc. through setuptools `package-dir`, which that scheme does not import.
cosmic-ray writes one mutation into a file, runs any command with a timeout, and puts the file
back; so it mutates a scratch copy of `reference/` that the test command imports as
`ashcheck.reference`. Its operators, its mutate-and-test and its session database are used as
they are; only the choice of operators and the pool of copies are ours.

How a run goes:
1. The installed `ashcheck.reference` (the worktree, for an editable install) is copied to a
   temporary folder, once per worker. The worktree is never written: an interrupted run leaves no
   mutated file behind (the copies go with the temporary folder; a check whose run is gone exits).
2. cosmic-ray's operators in OPERATORS (a selective set: one replacement per arithmetic or bitwise
   operator, boundary and negation for comparisons, and the logical, constant, loop and decorator
   operators; Offutt et al., "An experimental determination of sufficient mutant operators",
   TOSEM 1996) enumerate the mutants into a cosmic-ray session (reports/mutation/session.sqlite,
   readable with `cr-report`).
3. Baseline: the check on the unmutated copy, to the end. Its wall time sets the per-mutant
   timeout (TIMEOUT_FACTOR × it, at least MIN_TIMEOUT s); the rules it violates (there should be
   none: it is the reference) are left out of every verdict, and said.
4. Each mutant: cosmic-ray writes it into a free copy, runs `check COPY` with the timeout and
   restores the copy. The check imports the copy as `ashcheck.reference`, runs the whole suite
   in-process (catching.violated_rules: sim adapter, ci profile, scenarios on, stopping at the
   first violated rule) with a watchdog on each operation (watched_sim.py), and prints a verdict.

Verdicts. Killed: `violation` (a rule reported violated), `crash` (the simulator raised inside
`perform`: the suite noticed, as a real driver's crash would be noticed), `hang` (one operation ran
past STEP_SECONDS) or `timeout` (the whole check ran past the timeout), `import-error` (the
mutated reference does not load), `suite-crash` (the suite itself raised: counted as killed, but
listed, as it may be a weakness of the suite rather than a catch). Survived: `survived`. Left out
of every count: `incompetent` (cosmic-ray wrote code that does not parse).

The survivors file (mutation_survivors.toml, beside this module) lists every surviving mutant with a `status`:
`equivalent` with a one-line `reason` (no behaviour changes that a rule could see), `unjudged`
(the behaviour changes, but no rule of the spec judges it: a spec gap, the reason says which), or
`open` (a rule would see it: the exploration does not reach it, or the baseline masks the rule). A run
rewrites it, keeping the statuses of the mutants it already had; `--check` exits 1 when the list
changed (a new survivor, or one now killed), so that the change is reviewed and committed.
`mutation_score` = killed ÷ (mutants − equivalent − unjudged): the brief's "killed ÷ non-equivalent",
equivalence meaning that no rule can see the change; `score_all` counts unjudged ones as survivors.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import queue
import resource
import shlex
import shutil
import signal
import sys
import tempfile
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

OPERATORS = (
    # arithmetic and bitwise: the one replacement that undoes the operator (or its neighbour)
    "core/ReplaceBinaryOperator_Add_Sub", "core/ReplaceBinaryOperator_Sub_Add",
    "core/ReplaceBinaryOperator_Mul_FloorDiv", "core/ReplaceBinaryOperator_FloorDiv_Mul",
    "core/ReplaceBinaryOperator_BitAnd_BitOr", "core/ReplaceBinaryOperator_BitOr_BitAnd",
    "core/ReplaceBinaryOperator_BitXor_BitOr",
    "core/ReplaceBinaryOperator_LShift_RShift", "core/ReplaceBinaryOperator_RShift_LShift",
    # comparisons: the boundary moved, and the comparison negated
    "core/ReplaceComparisonOperator_Lt_LtE", "core/ReplaceComparisonOperator_Lt_GtE",
    "core/ReplaceComparisonOperator_LtE_Lt", "core/ReplaceComparisonOperator_LtE_Gt",
    "core/ReplaceComparisonOperator_Gt_GtE", "core/ReplaceComparisonOperator_Gt_LtE",
    "core/ReplaceComparisonOperator_GtE_Gt", "core/ReplaceComparisonOperator_GtE_Lt",
    "core/ReplaceComparisonOperator_Eq_NotEq", "core/ReplaceComparisonOperator_NotEq_Eq",
    "core/ReplaceComparisonOperator_Is_IsNot", "core/ReplaceComparisonOperator_IsNot_Is",
    # logic, constants, control flow
    "core/AddNot", "core/ReplaceUnaryOperator_Delete_Not", "core/ReplaceUnaryOperator_Delete_USub",
    "core/ReplaceUnaryOperator_Delete_Invert", "core/ReplaceAndWithOr", "core/ReplaceOrWithAnd",
    "core/ReplaceTrueWithFalse", "core/ReplaceFalseWithTrue", "core/NumberReplacer",
    "core/ZeroIterationForLoop", "core/ReplaceBreakWithContinue", "core/ReplaceContinueWithBreak",
    "core/ExceptionReplacer", "core/RemoveDecorator",
)
STEP_SECONDS = 10.0      # one simulated operation takes microseconds; this long is a hang
TIMEOUT_FACTOR = 3.0     # a mutant's check may take this many times the baseline's full run
MIN_TIMEOUT = 60.0
RECHECK_FACTOR = 4.0   # a mutant that timed out runs again with this many times the timeout
MEMORY_LIMIT = 4 << 30   # address space of one check: a mutant that allocates without bound fails
INCOMPETENT = "incompetent"  # the mutated file does not parse (e.g. `|` in a match pattern made `&`): left out
NOT_SEEN = ("equivalent", "unjudged")  # survivor statuses left out of the score
KILLED = ("violation", "crash", "hang", "timeout", "import-error", "suite-crash", "abnormal")
VERDICT_TAG = "ashcheck-mutant-verdict: "
HERE = Path(__file__).resolve().parent
SURVIVORS = HERE / "mutation_survivors.toml"  # package data: the sample test reads it wherever it runs


@dataclass(frozen=True)
class Mutant:
    """One mutation: where it is and what it changes. `key` names it across runs while the line it
    changes stays as it is (line numbers may move)."""

    file: str        # "reference/ranges.py"
    line: int
    function: str    # the enclosing definition, as cosmic-ray names it
    operator: str
    occurrence: int  # cosmic-ray's: the n-th place this operator applies in the file
    code: str        # the line as it is, stripped
    nth: int         # among mutants of the same file, function, operator and line

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        return (self.file, self.function, self.operator, self.code, self.nth)

    def digest(self) -> str:
        return hashlib.sha256(repr(self.key).encode()).hexdigest()


@dataclass
class Verdict:
    mutant: Mutant
    verdict: str                  # one of KILLED, or "survived"
    rules: list[str] = field(default_factory=list)
    detail: str = ""              # the exception, or the mutated line
    mutated: str = ""             # the line as the mutant has it
    seconds: float = 0.0          # wall time of the check

    @property
    def killed(self) -> bool:
        return self.verdict in KILLED  # INCOMPETENT is neither killed nor survived: callers leave it out


# --- the source and its mutants --------------------------------------------------------------------

# The scheduler of concurrent runs is not the simulated kernel, and the test the mutation run uses
# (the ci suite, one call at a time) never runs it: test_concurrency.py tests it.
NOT_MUTATED = {"sched.py"}

def reference_source() -> Path:
    """The folder `ashcheck.reference` is imported from (not imported here: the check must be able
    to point the name elsewhere first)."""
    spec = importlib.util.find_spec("ashcheck.reference")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("ashcheck.reference is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def copy_reference(into: Path) -> Path:
    """A copy of the reference's .py files as `into/reference`; returns that folder."""
    dest = into / "reference"
    shutil.copytree(reference_source(), dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def enumerate_mutants(copy: Path, operators: Iterable[str] = OPERATORS) -> list[tuple[Mutant, Any]]:
    """Every mutant cosmic-ray's `operators` make in the copy, with its cosmic-ray MutationSpec,
    in file, operator, occurrence order (the numbering `cosmic-ray init` uses). Places inside type
    annotations are left out: with `from __future__ import annotations` they are never evaluated,
    so every mutant there is equivalent by construction."""
    import cosmic_ray.plugins
    from cosmic_ray.ast import ast_nodes, get_ast_from_path
    from cosmic_ray.ast.ast_query import ASTQuery
    from cosmic_ray.work_item import MutationSpec

    out: list[tuple[Mutant, Any]] = []
    seen: Counter[tuple[str, str, str, str]] = Counter()
    for path in sorted(copy.glob("*.py")):
        if path.name in NOT_MUTATED:
            continue
        lines = path.read_text().splitlines()
        tree = get_ast_from_path(path)
        nodes = list(ast_nodes(tree))
        for name in operators:
            operator = cosmic_ray.plugins.get_operator(name)()
            positions = [(node, start, end) for node in nodes for start, end in operator.mutation_positions(node)]
            for occurrence, (node, start, end) in enumerate(positions):
                if _in_annotation(node):
                    continue
                function = ASTQuery(node).get_definition_name() or "<module>"
                code = lines[start[0] - 1].strip()
                base = (f"reference/{path.name}", function, name, code)
                mutant = Mutant(file=base[0], line=start[0], function=function, operator=name,
                                occurrence=occurrence, code=code, nth=seen[base])
                seen[base] += 1
                spec = MutationSpec(module_path=path, operator_name=name, occurrence=occurrence,
                                    start_pos=start, end_pos=end, definition_name=function)
                out.append((mutant, spec))
    return out


def _in_annotation(node: Any) -> bool:
    """Whether a parso node lies in a parameter's, a return's or a variable's annotation."""
    child, parent = node, node.parent
    while parent is not None:
        kids = parent.children
        i = kids.index(child)
        if (parent.type == "tfpdef" and i >= 2) or (parent.type == "annassign" and i == 1):
            return True
        if parent.type == "funcdef" and i > 0 and getattr(kids[i - 1], "value", None) == "->":
            return True
        child, parent = parent, parent.parent
    return False


def sample(mutants: list[Mutant], skip: set[tuple[str, str, str, str, int]], per_file: int = 3,
           at_least: int = 30) -> list[Mutant]:
    """A fixed sample spread over the files: in each file, the `per_file` mutants whose key hashes
    lowest (stable while their lines are), leaving out `skip` (those marked equivalent); then more
    from the files in turn until there are `at_least`."""
    by_file: dict[str, list[Mutant]] = {}
    for m in sorted(mutants, key=Mutant.digest):
        if m.key not in skip:
            by_file.setdefault(m.file, []).append(m)
    chosen = [m for ms in by_file.values() for m in ms[:per_file]]
    extra = per_file
    while len(chosen) < at_least and any(len(ms) > extra for ms in by_file.values()):
        chosen += [ms[extra] for ms in by_file.values() if len(ms) > extra][:at_least - len(chosen)]
        extra += 1
    return sorted(chosen, key=lambda m: (m.file, m.line, m.operator, m.occurrence))


# --- running mutants ---------------------------------------------------------------------------------

def check_command(copy: Path, ignore: Iterable[str] = (), full: bool = False) -> str:
    """The test command cosmic-ray runs for a mutant written into `copy`."""
    args = [sys.executable, "-m", "ashcheck.conformance.selftest.mutation", "check", str(copy)]
    args += [f"--ignore={','.join(sorted(ignore))}"] if ignore else []
    return shlex.join(args + (["--full"] if full else []))


def parse_verdict(mutant: Mutant, output: str | None, diff: str | None, seconds: float) -> Verdict:
    """The verdict a check printed; `timeout` when cosmic-ray stopped it, `abnormal` when it died
    without one (a signal, the memory limit)."""
    mutated = next((line[1:].strip() for line in (diff or "").splitlines()
                    if line.startswith("+") and not line.startswith("+++")), "")
    if output == "timeout":
        return Verdict(mutant, "timeout", mutated=mutated, seconds=seconds)
    for line in (output or "").splitlines():
        if line.startswith(VERDICT_TAG):
            data = json.loads(line[len(VERDICT_TAG):])
            return Verdict(mutant, data["verdict"], data["rules"], data["detail"], mutated, seconds)
    return Verdict(mutant, "abnormal", detail=(output or "")[-300:], mutated=mutated, seconds=seconds)


def run_mutants(items: list[tuple[Mutant, Any]], timeout: float, ignore: Iterable[str],
                workers: int) -> list[Verdict]:
    """Each mutant through cosmic-ray's mutate_and_test, in `workers` copies of the reference at
    once (those that timed out once again, with RECHECK_FACTOR times the time); the verdicts in
    the order of `items`."""
    verdicts: list[Verdict | None] = [None] * len(items)
    for index, verdict, _ in each_mutant(items, timeout, ignore, workers):
        verdicts[index] = verdict
    again = [i for i, v in enumerate(verdicts) if v is not None and v.verdict == "timeout"]  # see full_run
    for j, verdict, _ in each_mutant([items[i] for i in again], RECHECK_FACTOR * timeout, ignore, workers):
        verdicts[again[j]] = verdict
    return [v for v in verdicts if v is not None]


def each_mutant(items: list[tuple[Mutant, Any]], timeout: float, ignore: Iterable[str],
                workers: int) -> Iterator[tuple[int, Verdict, Any]]:
    """(index in `items`, verdict, cosmic-ray's WorkResult) for each mutant, as each finishes."""
    from attrs import evolve
    from cosmic_ray.mutating import mutate_and_test

    command_ignore = sorted(ignore)
    with tempfile.TemporaryDirectory(prefix="ashcheck-mutation-") as tmp:
        free: queue.Queue[Path] = queue.Queue()
        for i in range(workers):
            free.put(copy_reference(Path(tmp) / f"w{i}"))

        def one(index: int) -> tuple[int, Verdict, Any]:
            mutant, spec = items[index]
            copy = free.get()
            try:
                moved = evolve(spec, module_path=copy / Path(spec.module_path).name)
                start = time.monotonic()
                result = mutate_and_test([moved], check_command(copy, command_ignore), timeout)
                return index, parse_verdict(mutant, result.output, result.diff, time.monotonic() - start), result
            finally:
                free.put(copy)

        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(one, i) for i in range(len(items))]
            try:
                for future in as_completed(futures):
                    yield future.result()
            finally:
                for f in futures:  # interrupted: start no more; the running checks end with their run
                    f.cancel()


def baseline(workers_copy: Path) -> tuple[set[str], float]:
    """The check on the unmutated reference, to the end: the rules it violates, and its wall time."""
    from cosmic_ray.testing import run_tests

    start = time.monotonic()
    _, output = run_tests(check_command(workers_copy, full=True), timeout=3600)
    seconds = time.monotonic() - start
    verdict = parse_verdict(Mutant("", 0, "", "", 0, "", 0), output, None, seconds)
    if verdict.verdict not in ("survived", "violation"):
        raise RuntimeError(f"the unmutated reference does not run: {verdict.verdict} {verdict.detail}\n{output}")
    return set(verdict.rules), seconds


# --- the check (one mutant's verdict, in its own process) --------------------------------------------

def check(copy: Path, ignore: set[str], full: bool) -> int:
    """Import `copy` as ashcheck.reference, run the suite against it, print the verdict; exit status
    0 only when nothing was found (cosmic-ray's 'survived')."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    def say(verdict: str, rules: Iterable[str] = (), detail: str = "") -> int:
        print(VERDICT_TAG + json.dumps({"verdict": verdict, "rules": sorted(rules), "detail": detail[:500]}))
        return 0 if verdict == "survived" else 1

    try:
        _point_reference_at(copy)
    except SyntaxError as e:  # cosmic-ray wrote code Python does not parse: not a mutant at all
        return say("incompetent", detail=f"{type(e).__name__}: {e}")
    except BaseException as e:  # the mutant may break the import any way it likes
        return say("import-error", detail=f"{type(e).__name__}: {e}")
    from ashcheck.conformance.selftest.catching import violated_rules
    from ashcheck.conformance.selftest.watched_sim import SimulatorCrash, StepHang, WatchedSim

    WatchedSim.step_seconds = STEP_SECONDS
    try:
        caught = violated_rules("ashcheck.conformance.selftest.watched_sim:WatchedSim",
                                stop_at=None if full else "*", ignore=ignore)
    except BaseException as e:  # every way the run can end is a verdict
        for cause in _chain(e):
            if isinstance(cause, SimulatorCrash):
                return say("crash", detail=str(cause))
            if isinstance(cause, StepHang):
                return say("hang", detail=str(cause))
        if isinstance(e, KeyboardInterrupt):
            raise
        return say("suite-crash", detail=f"{type(e).__name__}: {e}")
    return say("violation" if caught.rules else "survived", caught.rules)


def _point_reference_at(copy: Path) -> None:
    """Make `ashcheck.reference` the package in `copy` (before anything imports the installed one);
    its submodules are then found in `copy` through its __path__."""
    if any(name == "ashcheck.reference" or name.startswith("ashcheck.reference.") for name in sys.modules):
        raise RuntimeError("ashcheck.reference was imported before the check could point it at the copy")
    spec = importlib.util.spec_from_file_location("ashcheck.reference", copy / "__init__.py",
                                                  submodule_search_locations=[str(copy)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ashcheck.reference"] = module
    spec.loader.exec_module(module)
    import ashcheck.reference.kernel as kernel

    if Path(kernel.__file__ or "").resolve().parent != copy.resolve():
        raise RuntimeError(f"ashcheck.reference.kernel came from {kernel.__file__}, not from {copy}")


def _chain(e: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                yield from _chain(inner)
        e = e.__cause__ or e.__context__


# --- the survivors file ------------------------------------------------------------------------------

@dataclass
class Survivors:
    run: dict[str, Any]
    entries: list[dict[str, Any]]

    def statuses(self) -> dict[tuple[str, str, str, str, int], dict[str, Any]]:
        return {_entry_key(e): e for e in self.entries}

    def equivalent(self) -> set[tuple[str, str, str, str, int]]:
        """The mutants no rule can see: `equivalent` and `unjudged` (left out of the score and the sample)."""
        return {k for k, e in self.statuses().items() if e.get("status") in NOT_SEEN}


def _entry_key(e: dict[str, Any]) -> tuple[str, str, str, str, int]:
    return (e["file"], e["function"], e["operator"], e["code"], int(e["nth"]))


def load_survivors(path: Path = SURVIVORS) -> Survivors:
    if not path.exists():
        return Survivors({}, [])
    data = tomllib.loads(path.read_text())
    return Survivors(data.get("run", {}), data.get("survivor", []))


HEADER = """\
# Mutation testing of reference/ (conformance/selftest/mutation.py; `tox -e mutation` rewrites this
# file): the mutants the suite (sim adapter, ci profile) did not kill. Each one is either
#   status = "equivalent", with a one-line reason: no behaviour changes that any rule could see;
#   status = "unjudged", the reason starting "spec:": the behaviour changes, but the spec has no rule
#     that judges it (or disagrees with the reference there), so no rule can see it; or
#   status = "open": a rule would see it, until a change kills it; the reason says why it has not:
#     "exploration: ..." the ci exploration never makes the sequence (given in the reason);
#     "baseline: ..."    the rule that would catch it is ignored, the unmutated reference violating it.
# An entry is matched by file, function, operator, code (the line before mutation) and nth, so it
# keeps its status while its line stays as it is.
# score = killed / (mutants - equivalent - unjudged); score_all = killed / (mutants - equivalent).
"""


def write_survivors(path: Path, run: dict[str, Any], verdicts: list[Verdict], old: Survivors) -> None:
    """The survivors among `verdicts`, each with the status and reason `old` gave it (else open)."""
    known = old.statuses()
    entries = []
    for v in sorted((v for v in verdicts if not v.killed),
                    key=lambda v: (v.mutant.file, v.mutant.line, v.mutant.operator, v.mutant.nth)):
        m = v.mutant
        previous = known.get(m.key, {})
        entries.append({"file": m.file, "line": m.line, "function": m.function, "operator": m.operator,
                        "code": m.code, "nth": m.nth, "mutant": v.mutated,
                        "status": previous.get("status", "open"), "reason": previous.get("reason", "")})
    dump_survivors(path, Survivors(run, entries))


def dump_survivors(path: Path, survivors: Survivors) -> None:
    lines = [HEADER, "[run]"] + [f"{k} = {_toml(v)}" for k, v in survivors.run.items()]
    for entry in survivors.entries:
        lines += ["", "[[survivor]]"] + [f"{k} = {_toml(x)}" for k, x in entry.items()]
    path.write_text("\n".join(lines) + "\n")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(x) for x in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string


def score(run: dict[str, Any]) -> float:
    """killed ÷ (mutants − equivalent − unjudged), from a survivors file's [run] table."""
    return float(run["killed"]) / max(1, int(run["mutants"]) - int(run["equivalent"]) - int(run.get("unjudged", 0)))


def figures(survivors: Survivors) -> dict[str, Any]:
    """The last run's counts with the marks as the file has them now (they are made after the run):
    mutants, killed, survived, equivalent, unjudged, open, score, and score_all (unjudged counted
    as survivors: what a spec that judged every behaviour of the reference would score)."""
    run = survivors.run
    marks = Counter(e.get("status", "open") for e in survivors.entries)
    out: dict[str, Any] = {"mutants": int(run["mutants"]), "killed": int(run["killed"]),
                           "survived": len(survivors.entries), "equivalent": marks["equivalent"],
                           "unjudged": marks["unjudged"], "open": marks["open"]}
    out["score"] = round(score(out), 4)
    out["score_all"] = round(score(out | {"unjudged": 0}), 4)
    return out


def rescore(path: Path) -> dict[str, Any]:
    """Bring the [run] table's counts and scores up to date with the marks in the file."""
    survivors = load_survivors(path)
    now = figures(survivors)
    run = dict(survivors.run)
    at = list(run).index("equivalent") if "equivalent" in run else len(run)
    keys = list(run)[:at] + [k for k in ("equivalent", "unjudged", "open", "score", "score_all")]
    keys += [k for k in run if k not in keys]
    dump_survivors(path, Survivors({k: now.get(k, run.get(k)) for k in keys}, survivors.entries))
    return now


# --- the full run -----------------------------------------------------------------------------------

def full_run(workers: int, survivors: Path, results: Path, limit: int | None = None) -> tuple[bool, dict[str, Any]]:
    """Every mutant; writes the cosmic-ray session and results.json to `results`, rewrites
    `survivors`. Returns whether the survivors' list changed, and the [run] figures."""
    from importlib.metadata import version

    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkItem

    results.mkdir(parents=True, exist_ok=True)
    old = load_survivors(survivors)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ashcheck-mutation-base-") as tmp:
        base = copy_reference(Path(tmp))
        items = enumerate_mutants(base)
        if limit is not None:
            items = items[:limit]
        ignore, base_seconds = baseline(base)
    timeout = max(MIN_TIMEOUT, TIMEOUT_FACTOR * base_seconds)
    print(f"{len(items)} mutants of {len({m.file for m, _ in items})} files; baseline {base_seconds:.1f} s"
          f"{', violating ' + ', '.join(sorted(ignore)) if ignore else ''}; timeout {timeout:.0f} s", flush=True)
    session = results / "session.sqlite"
    session.unlink(missing_ok=True)
    jobs = [uuid.uuid4().hex for _ in items]
    with use_db(str(session), WorkDB.Mode.create) as db:
        db.add_work_items(WorkItem.single(job, spec) for job, (_, spec) in zip(jobs, items, strict=True))
        done = Counter[str]()
        verdicts_at: list[Verdict | None] = [None] * len(items)
        for index, verdict, result in each_mutant(items, timeout, ignore, workers):
            verdicts_at[index] = verdict
            db.set_result(jobs[index], result)  # cosmic-ray's own record (`cr-report`), kept as it goes
            done[verdict.verdict] += 1
            if sum(done.values()) % 25 == 0 or not verdict.killed:
                m = verdict.mutant
                print(f"  [{sum(done.values())}/{len(items)}] {dict(done)}" + ("" if verdict.killed else
                      f"  survived: {m.file}:{m.line} {m.operator} {verdict.mutated}"), flush=True)
        # A check stopped by the time-out without a hang (the watchdog names those) was slow, not
        # stuck: on a loaded machine a survivor's full run can pass TIMEOUT_FACTOR × the baseline's.
        # Those run again, alone in their copy, with RECHECK_FACTOR times the time.
        again = [i for i, v in enumerate(verdicts_at) if v is not None and v.verdict == "timeout"]
        if again:
            print(f"{len(again)} mutants timed out: again with {RECHECK_FACTOR * timeout:.0f} s", flush=True)
        for j, verdict, result in each_mutant([items[i] for i in again], RECHECK_FACTOR * timeout, ignore, workers):
            verdicts_at[again[j]] = verdict
            db.set_result(jobs[again[j]], result)
    verdicts = [v for v in verdicts_at if v is not None]
    verdicts = [v for v in verdicts if v.verdict != INCOMPETENT]
    survived = [v for v in verdicts if not v.killed]
    run: dict[str, Any] = {
           "tool": f"cosmic-ray {version('cosmic-ray')}", "date": date.today().isoformat(), "adapter": "sim",
           "profile": "ci", "operators": len(OPERATORS), "incompetent": len(items) - len(verdicts),
           "mutants": len(verdicts),
           "killed": len(verdicts) - len(survived), "survived": len(survived), "equivalent": 0, "unjudged": 0,
           "open": len(survived), "score": 0.0, "score_all": 0.0,
           "seconds": round(time.monotonic() - started), "workers": workers,
           "baseline_violations": sorted(ignore),
           "verdicts": ", ".join(f"{k} {n}" for k, n in Counter(v.verdict for v in verdicts).most_common())}
    (results / "results.json").write_text(json.dumps(
        {"run": run, "mutants": [asdict(v) | {"killed": v.killed} for v in verdicts]}, indent=1))
    before = {k: e.get("status") for k, e in old.statuses().items()}
    write_survivors(survivors, run, verdicts, old)
    run |= rescore(survivors)
    after = {k: e.get("status") for k, e in load_survivors(survivors).statuses().items()}
    return before != after, run


def recheck(workers: int, survivors: Path, statuses: set[str]) -> dict[str, Any]:
    """Run again only the survivors with one of `statuses` (the suite has changed since the full run:
    some may be killed now); those killed leave the file and count as killed, the rest keep their
    status and reason. A survivor whose line no longer makes that mutant is reported, and kept.
    Minutes where a full run takes an hour and a half."""
    old = load_survivors(survivors)
    wanted = {k for k, e in old.statuses().items() if e.get("status", "open") in statuses}
    with tempfile.TemporaryDirectory(prefix="ashcheck-mutation-base-") as tmp:
        base = copy_reference(Path(tmp))
        items = [(m, spec) for m, spec in enumerate_mutants(base) if m.key in wanted]
        ignore, base_seconds = baseline(base)
    timeout = max(MIN_TIMEOUT, TIMEOUT_FACTOR * base_seconds)
    gone = wanted - {m.key for m, _ in items}
    print(f"{len(items)} of {len(wanted)} survivors ({', '.join(sorted(statuses))}) to run again; baseline "
          f"{base_seconds:.1f} s{', violating ' + ', '.join(sorted(ignore)) if ignore else ''}; "
          f"timeout {timeout:.0f} s" + (f"; {len(gone)} no longer made by their line (kept)" if gone else ""),
          flush=True)
    killed: dict[tuple[str, str, str, str, int], Verdict] = {}
    for _, verdict, _ in each_mutant(items, timeout, ignore, workers):
        m = verdict.mutant
        print(f"  {'killed' if verdict.killed else 'survived'} ({verdict.verdict}"
              f"{': ' + ', '.join(verdict.rules) if verdict.rules else ''}) {m.file}:{m.line} {verdict.mutated}",
              flush=True)
        if verdict.killed:
            killed[m.key] = verdict
    run = dict(old.run)
    run["killed"] = int(run["killed"]) + len(killed)
    run["survived"] = int(run["survived"]) - len(killed)
    note = (f"rechecked {date.today().isoformat()} (`mutation recheck`): {len(items)} survivors "
            f"({', '.join(sorted(statuses))}) run again, {len(killed)} killed now (removed, counted as killed)")
    run["note"] = f"{run['note']}; {note}" if run.get("note") else note
    dump_survivors(survivors, Survivors(run, [e for e in old.entries if _entry_key(e) not in killed]))
    return rescore(survivors) | {"rechecked": len(items), "killed_now": len(killed)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ashcheck.conformance.selftest.mutation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="every mutant; rewrites the survivors file")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--survivors", type=Path, default=SURVIVORS)
    r.add_argument("--results", type=Path, default=Path("reports/mutation"))
    r.add_argument("--limit", type=int, help="only the first N mutants (a trial of the machinery)")
    r.add_argument("--check", action="store_true", help="exit 1 when the survivors' list changed")
    sub.add_parser("rescore", help="update the survivors file's figures after marking mutants equivalent")
    rc = sub.add_parser("recheck", help="run only the survivors again (open and unjudged by default); drop the killed")
    rc.add_argument("--workers", type=int, default=2)
    rc.add_argument("--survivors", type=Path, default=SURVIVORS)
    rc.add_argument("--status", default="open,unjudged", help="comma-separated statuses to run again")
    c = sub.add_parser("check", help="one verdict: the suite against the reference in COPY")
    c.add_argument("copy", type=Path)
    c.add_argument("--ignore", default="", help="comma-separated rules the unmutated reference violates")
    c.add_argument("--full", action="store_true", help="run to the end instead of stopping at the first rule")
    args = parser.parse_args(argv)
    if args.command == "check":
        return check(args.copy, {r for r in args.ignore.split(",") if r}, args.full)
    if args.command == "rescore":
        print(json.dumps(rescore(SURVIVORS)))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the temporary copies are removed
    if args.command == "recheck":
        print(json.dumps(recheck(args.workers, args.survivors, set(args.status.split(","))), indent=1))
        return 0
    changed, run = full_run(args.workers, args.survivors, args.results, args.limit)
    print(json.dumps(run, indent=1))
    if args.check and changed:
        print(f"the survivors changed: review {args.survivors} (mark each new one equivalent with a reason, "
              "or leave it open) and commit it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
