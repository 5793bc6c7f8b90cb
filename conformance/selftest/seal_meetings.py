"""Every way a new shared mapping of a sealed memfd can meet an older one, replayed on an adapter.

The contract of F_SEAL_FUTURE_WRITE (man 2 fcntl; spec rules memfd.seal.*): after the seal no new
shared mapping is writable (mmap EPERM), none made after it becomes writable (mprotect EACCES), and
nothing writes the file. Kernels have broken it where mm/mmap.c's mmap_region merges the new
mapping into an adjacent, older one of the same file *before* the file's mmap hook (shmem_mmap,
which checks the seal and clears VM_MAYWRITE) runs: the merged range keeps the older mapping's
VM_MAYWRITE, or its VM_WRITE.

A merge needs the two mappings to touch in the address space, to be file-contiguous (the new one's
pages continue the older one's: new.offset + new.length == older.offset when it lands below,
older.offset + older.length == new.offset when it lands above) and to have the same flags
(prot included). A meeting (placement, older prot, contiguous or not) is replayed twice:

- "mmap": the new mapping asks for the older one's prot with PROT_WRITE: EPERM expected;
- "mprotect": the new mapping asks for the older one's prot without PROT_WRITE (allowed), then
  mprotect adds PROT_READ|PROT_WRITE: EACCES expected.

Where the kernel lets either through, a store through the new mapping is read back through the fd:
"store" says the sealed file really changed. write() on the fd is tried too (EPERM expected).

Placement is asked for with the executor's address hint (Mmap.near / above: the page range right
below or right above the older mapping; the executor keeps free space around every mapping, so the
range is there to take). `landed` records where the new mapping really went, from
/proc/self/maps, so a replay whose placement did not happen is seen as such, not as a kernel that
kept its seal.

Each sequence runs in a fresh process and is judged step by step by the spec: the first step it
refuses names the rule a conformance run would fail. The same meetings apply to the C ashmem
driver, where "the seal" is the prot mask (SET_PROT_MASK without PROT_WRITE; rules
ashmem.mmap.prot-outside-mask and ashmem.mprotect.beyond-mask), and write() is EINVAL anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ashcheck.adapters.base import Adapter
from ashcheck.spec import Spec
from ashcheck.spec import ops as o
from ashcheck.spec.constants import PROT_EXEC, PROT_READ, PROT_WRITE, SEEK_SET
from ashcheck.spec.outcome import Outcome

PAGE = 4096
REGION_PAGES = 8
OLDER_PAGES = 4
OLDER_PROTS = (0, PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_EXEC, PROT_READ | PROT_WRITE | PROT_EXEC)
PLACEMENTS = ("below", "above")
KINDS = ("mmap", "mprotect")
OLDER, NEW = 1, 2  # mapping ids
MARK = b"past the seal"

# A reader of /proc/self/maps in a process: (proc) → the file's text. Adapter-specific (it needs
# a raw open/read), so the caller provides it; None: placement is not checked.
MapsReader = Callable[[int], str]


@dataclass(frozen=True)
class Meeting:
    """Where the new mapping lands next to the older one, the older one's prot, and whether their
    file offsets continue each other."""

    placement: str
    older_prot: int
    contiguous: bool
    kind: str

    @property
    def older_offset(self) -> int:
        return PAGE if self.placement == "below" else 0

    @property
    def new_offset(self) -> int:
        if not self.contiguous:
            return 6 * PAGE  # continues nothing: the older mapping covers pages 0..4 or 1..5
        return 0 if self.placement == "below" else OLDER_PAGES * PAGE

    @property
    def new_prot(self) -> int:
        return self.older_prot | PROT_WRITE if self.kind == "mmap" else self.older_prot & ~PROT_WRITE

    def __str__(self) -> str:
        prot = "".join(c for bit, c in ((PROT_READ, "r"), (PROT_WRITE, "w"), (PROT_EXEC, "x"))
                       if self.older_prot & bit) or "none"
        return (f"{self.kind}: new mapping {self.placement} an older {prot} one, "
                f"{'file-contiguous' if self.contiguous else 'not contiguous'}")


def meetings() -> Iterator[Meeting]:
    for placement in PLACEMENTS:
        for prot in OLDER_PROTS:
            for contiguous in (True, False):
                for kind in KINDS:
                    yield Meeting(placement, prot, contiguous, kind)


@dataclass
class Replay:
    """What one meeting showed.

    Attributes:
        violated: the spec rule the first refused step broke, or None (the seal held).
        steps: every step with its outcome, as strace-like text.
        landed: where the new mapping went relative to the older one ("below", "above",
            "elsewhere"), and whether it shares a /proc/self/maps line with it ("merged"); "" when
            not checked.
        store: after a bypass, whether a store through the new mapping changed the sealed file.
        write: the outcome of write() on the fd after the seal.
    """

    meeting: Meeting
    violated: str | None = None
    steps: list[str] = field(default_factory=list)
    landed: str = ""
    store: bool | None = None
    write: Outcome | None = None


def replay(adapter: Adapter, meeting: Meeting, proc: int, maps: MapsReader | None = None) -> Replay:
    """Run `meeting` in a fresh process `proc` of a started adapter and judge it by the adapter's profile."""
    spec = Spec(adapter.profile, page_size=adapter.page_size, long_bits=adapter.long_bits,
                memory=adapter.memory_bytes)
    result = Replay(meeting)

    def step(op: o.Op) -> Outcome:
        observed = adapter.perform(op)
        result.steps.append(f"{op}  →  {observed}")
        if result.violated is None:
            verdict = spec.observe(op, observed)
            if not verdict.ok:
                result.violated = verdict.rule
        return observed

    m = meeting
    step(o.Spawn(proc))
    try:
        fd = step(o.CreateRegion(proc, b"sealed", REGION_PAGES * PAGE)).value
        step(o.Mmap(proc, fd, OLDER, OLDER_PAGES * PAGE, m.older_prot, True, m.older_offset))
        step(o.SetProtMask(proc, fd, PROT_READ | PROT_EXEC))  # memfd: F_SEAL_FUTURE_WRITE
        before = maps(proc) if maps else ""
        mapped = step(o.Mmap(proc, fd, NEW, PAGE, m.new_prot, True, m.new_offset, near=OLDER,
                             above=m.placement == "above"))
        if maps and mapped.succeeded:
            result.landed = _landed(before, maps(proc))
        writable = mapped.succeeded and bool(m.new_prot & PROT_WRITE)
        if mapped.succeeded and m.kind == "mprotect":
            writable = step(o.Mprotect(proc, NEW, PROT_READ | PROT_WRITE)).succeeded
        if writable:
            stored = step(o.Store(proc, NEW, 0, MARK)).succeeded
            step(o.Lseek(proc, fd, m.new_offset, SEEK_SET))
            back = step(o.Read(proc, fd, len(MARK)))
            result.store = stored and back.succeeded and back.value == MARK
        step(o.Lseek(proc, fd, 7 * PAGE, SEEK_SET))
        result.write = step(o.Write(proc, fd, b"w"))
    finally:
        adapter.perform(o.Exit(proc))
    return result


def _ranges(text: str, name: str) -> list[tuple[int, int]]:
    found = []
    for line in text.splitlines():
        if f"/memfd:{name} " in line or f"/dev/ashmem/{name} " in line:
            start, _, end = line.split()[0].partition("-")
            found.append((int(start, 16), int(end, 16)))
    return sorted(found)


def _landed(before: str, after: str) -> str:
    """Where the new mapping went next to the older one, from the maps before and after it."""
    old, new = set(_ranges(before, "sealed")), set(_ranges(after, "sealed"))
    added = sorted(new - old)
    if len(added) != 1 or len(old - new) > 1:
        return "unknown"
    start, end = added[0]
    replaced = old - new
    if replaced:  # an older line now covers more: the new mapping was merged into it
        older_start, _ = replaced.pop()
        return f"merged {'below' if start < older_start else 'above'}"
    if any(older_start == end for older_start, _ in old):
        return "below"
    if any(older_end == start for _, older_end in old):
        return "above"
    return "elsewhere"
