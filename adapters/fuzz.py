"""Seeded fuzzing of the executor's request parser and of the Python reply readers (for the
self-tests, a few hundred lines; for `bench/run.py --only fuzz`, ten thousand).

- `fuzz_executor`: malformed request lines (random bytes, huge numbers, wrong arity, bad hex,
  embedded NULs, stray spaces, '\\r', malformed ids, lines over 1 MiB) to one executor, each
  answered by exactly one `bad` under the id the line names (`-` when it names none validly).
- `fuzz_replies`: malformed reply lines (wrong, missing or unknown ids, a second reply, '\\r\\n',
  NULs, bytes outside ASCII, empty fields, unknown statuses, random bytes) through the readers the
  channels use: the executor's (channel.LineBuffer.take_reply) and the hub's (channel.Hub, over a
  socketpair). Each must be refused as malformed, never accepted as a reply to another request.

Every run counts crashes (the executor died; a reader raised anything but a protocol error),
hangs (no answer within the time limit), desyncs (a reply for another request, or more than
one reply), and acceptances (a malformed line taken as valid, or a valid one refused): all
should be 0.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ashcheck.adapters.channel import ExecutorError, Hub, HubTimeout, LineBuffer
from ashcheck.adapters.reply import MalformedReply, parse

MAX_LINE = 1 << 20  # executor.c: the longest request line
HEAD = 63           # executor.c: the bytes of a dropped overlong line that are kept (its id)
MAX_ID = 19


@dataclass
class Figures:
    """What a fuzz run found."""

    lines: int = 0
    crashes: int = 0
    hangs: int = 0
    desyncs: int = 0
    accepted: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)  # the first few findings, for the message

    def found(self, kind: str, line: bytes, detail: str = "") -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 5:
            self.examples.append(f"{kind}: {line[:100]!r} {detail[:200]}")

    @property
    def clean(self) -> bool:
        return self.crashes == self.hangs == self.desyncs == self.accepted == 0

    def summary(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_lines": self.lines, f"{prefix}_crashes": self.crashes, f"{prefix}_hangs": self.hangs,
                f"{prefix}_desyncs": self.desyncs, f"{prefix}_accepted": self.accepted,
                f"{prefix}_lines_per_s": self.lines / self.seconds if self.seconds else 0.0}


def verb_tables(source: str) -> dict[str, dict[str, tuple[int, int]]]:
    """The verb tables of executor.c: {"ops": {verb: (min, max)}, "hub_ops": {...}}; max -1 is
    unlimited. Raises ValueError if a table cannot be read."""
    defines = dict(re.findall(r"^#define (\w+) \(?(\d+)", source, re.MULTILINE))
    tables = {}
    for name in ("ops", "hub_ops"):
        body = re.search(r"static const struct op " + name + r"\[\] = \{(.*?)\n\};", source, re.DOTALL)
        if body is None:
            raise ValueError(f"no table {name}[] in executor.c")
        rows = re.findall(r'\{ "(\w+)", (-?\w+), (-?\w+), \w+ \}', body.group(1))
        tables[name] = {verb: (int(defines.get(lo, lo)), int(defines.get(hi, hi))) for verb, lo, hi in rows}
    return tables


def expected_id(line: bytes) -> str:
    """The id an executor answers `line` under (executor.c read_id): "" if it has none, "-" if it
    is malformed. An overlong line is judged by the bytes the executor keeps of it."""
    if len(line) > MAX_LINE:
        line = line[:HEAD]
    digits = len(line) - len(line.lstrip(b"0123456789"))
    if digits == 0:
        return ""
    if digits > MAX_ID or line[digits:digits + 1] not in (b"", b" "):
        return "-"
    return line[:digits].decode()


# ---- malformed requests ------------------------------------------------------------------------
# beyond 64 bits, and never valid hex either (odd length, or a sign or an x)
_HUGE = ("9" * 21, "9" * 41, "-" + "9" * 25, "0x" + "f" * 17, "184467440737095516161", "-9223372036854775809")
_BAD_HEX = ("zz", "abc", "ABCD", "0x12", "--", "1g", "a b")
_HEX_TEMPLATES = ("write 3 {}", "readlink {}", "memfd_region {} 4096", "open {} 0", "store 0 0 {}",
                  "ashmem_region {} - 4096", "binder_open {} 1 0")
_SAFE = (b"ping", b"info", b"fds", b"version")


def malformed_requests(rng: random.Random, verbs: dict[str, tuple[int, int]]) -> Iterator[bytes]:
    """Request lines (without '\\n') the executor must refuse, forever. None holds a '\\n'."""
    with_args = sorted(v for v, (lo, _) in verbs.items() if lo > 0)
    arity = sorted(v for v, (lo, hi) in verbs.items() if lo > 0 or hi >= 0)
    serial = 0
    while True:
        serial += 1
        rid = str(serial).encode()
        kind = rng.randrange(11)
        if kind == 0:  # random bytes after an id
            body = rng.randbytes(rng.randrange(1, 300)).replace(b"\n", b"")
            line = rid + b" " + body
        elif kind == 1:  # random bytes alone
            line = rng.randbytes(rng.randrange(1, 300)).replace(b"\n", b"") or b"\0"
        elif kind == 2:  # huge numbers in every argument
            verb = rng.choice(with_args)
            lo = verbs[verb][0]
            line = b" ".join([rid, verb.encode(), *(rng.choice(_HUGE).encode() for _ in range(lo))])
        elif kind == 3:  # the wrong number of arguments
            verb = rng.choice(arity)
            lo, hi = verbs[verb]
            wrong = [n for n in (lo - 1, lo - 2, hi + 1, hi + 3) if n >= 0 and (n < lo or (hi >= 0 and n > hi))]
            line = b" ".join([rid, verb.encode(), *[b"0"] * rng.choice(wrong)])
        elif kind == 4:  # bad hex where hex belongs
            line = rid + b" " + rng.choice(_HEX_TEMPLATES).format(rng.choice(_BAD_HEX)).encode()
        elif kind == 5:  # a NUL anywhere after the id
            base = rid + b" " + rng.choice(_SAFE)
            at = rng.randrange(len(rid) + 1, len(base) + 1)
            line = base[:at] + b"\0" + base[at:]
        elif kind == 6:  # stray spaces, tabs, a carriage return
            word = rng.choice(_SAFE)
            line = rng.choice([rid + b"  " + word, rid + b" " + word + b" ", rid + b"\t" + word,
                               rid + b" " + word + b"\r", rid + b" \r" + word, rid + b" " + word + b"\t"])
        elif kind == 7:  # malformed ids
            line = rng.choice([b"1" * 20 + b" ping", rid + b"a ping", b"0x" + rid + b" ping", rid + b"-1 ping",
                               b"-" + rid + b" ping", b"+" + rid + b" ping", rid, rid + b" "])
        elif kind == 8:  # an unknown verb
            line = rid + b" " + rng.choice([b"pingg", b"PING", b"exit_", b"mmap_", b"hub", b"*"])
        elif kind == 9 and rng.randrange(40) == 0:  # over 1 MiB, now and then (they take a while)
            line = rid + b" ping " + b"a" * (MAX_LINE + rng.randrange(1, 1 << 16))
        else:  # a token too many for a verb without arguments
            line = rid + b" " + rng.choice(_SAFE) + b" " + rng.choice([b"0", b"x", b"-", b"0x0"])
        yield line


class _RawExecutor:
    """An executor on a socketpair, spoken to byte for byte (channel.Executor frames for you)."""

    def __init__(self, binary: Path) -> None:
        self.sock, theirs = socket.socketpair()
        with theirs:
            env = dict(os.environ, ASHCHECK_PARENT=str(os.getpid()))
            self.proc = subprocess.Popen([str(binary)], stdin=theirs.fileno(), stdout=theirs.fileno(),
                                         stderr=subprocess.DEVNULL, env=env)
        self.lines = LineBuffer()

    def send(self, line: bytes, timeout: float) -> None:
        self.sock.settimeout(timeout)
        self.sock.sendall(line + b"\n")

    def read_line(self, timeout: float) -> bytes | None:
        """The next line, or None if none came in time; raises EOFError if the executor is gone."""
        deadline = time.monotonic() + timeout
        while (line := self.lines.take()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                return None
            except OSError as exc:
                raise EOFError from exc
            if not data:
                raise EOFError
            self.lines.data += data
        return line

    def close(self, grace: float = 2.0) -> None:
        """Hang up; kill it if it has not exited after `grace` seconds."""
        self.sock.close()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def fuzz_executor(binary: Path, n: int, seed: int, timeout: float = 5.0) -> Figures:
    """Send `n` malformed lines to an executor (restarted after a crash, hang or desync); after every
    25, and at the end, a well-formed `ping` must still be answered `ok` under its id."""
    verbs = verb_tables(Path(__file__).with_name("executor.c").read_text())["ops"]
    rng, figures = random.Random(seed), Figures()
    start = time.perf_counter()
    ex = _RawExecutor(binary)
    try:
        for line, probe in _schedule(malformed_requests(rng, verbs), n):
            if not _one(ex, line, probe, timeout, figures):
                ex.close(grace=0)  # it is dead, hung or confused
                ex = _RawExecutor(binary)
            figures.lines += not probe
    finally:
        ex.close()
    figures.seconds = time.perf_counter() - start
    return figures


def _schedule(requests: Iterator[bytes], n: int) -> Iterator[tuple[bytes, bool]]:
    """(line, is a probe): n malformed lines, a well-formed ping after every 25 and at the end."""
    for k in range(n):
        yield next(requests), False
        if k % 25 == 24 or k == n - 1:
            yield f"{1_000_000_000 + k} ping".encode(), True


def _one(ex: _RawExecutor, line: bytes, probe: bool, timeout: float, figures: Figures) -> bool:
    """Send one line and judge the answer; False if the executor must be replaced."""
    rid = expected_id(line)
    try:
        ex.send(line, timeout)
        answer = ex.read_line(timeout)
    except (EOFError, OSError):
        figures.found("crashes", line, f"exit status {ex.proc.poll()}")
        return False
    if answer is None:
        figures.found("hangs", line)
        return False
    try:
        reply = parse(answer if rid else b"~ " + answer, rid or "~")
    except MalformedReply as exc:
        figures.found("desyncs", line, str(exc))
        return False
    if ex.lines.data:
        figures.found("desyncs", line, f"a second line: {bytes(ex.lines.data[:80])!r}")
        return False
    if reply.status != ("ok" if probe else "bad"):
        figures.found("accepted", line, str(reply))
    return True


# ---- malformed replies -------------------------------------------------------------------------
def reply_cases(rng: random.Random, rid: bytes) -> Iterator[tuple[bytes, bool]]:
    """(what a peer sends for request `rid`, whether it is exactly one valid reply to it), forever."""
    valid = [b"ok", b"ok 3", b"err 22", b"fault 11", b"bad 6e6f", b"ok - 00ff", b"ok reply 4 5"]
    others = [rid + b"0", b"0" + rid, str(int(rid) + 1).encode(), b"-", b"", rid + b" " + rid]
    while True:
        good = rid + b" " + rng.choice(valid)
        kind = rng.randrange(12)
        if kind == 0:
            yield good + b"\n", True
        elif kind == 1:  # another id, or none
            yield rng.choice(others) + good[len(rid):] + b"\n", False
        elif kind == 2:  # the status first: no id
            yield good[len(rid) + 1:] + b"\n", False
        elif kind == 3:  # \r\n, or a \r inside
            at = rng.randrange(1, len(good) + 1)
            yield rng.choice([good + b"\r\n", good[:at] + b"\r" + good[at:] + b"\n"]), False
        elif kind == 4:  # a second reply, or anything after the reply
            yield good + b"\n" + rng.choice([good, rid + b"0 ok", b"x", b""]) + b"\n", False
        elif kind == 5:  # a NUL, a byte outside ASCII, a control byte
            at = rng.randrange(0, len(good) + 1)
            yield good[:at] + rng.choice([b"\0", b"\xff", b"\x80", b"\x1b", b"\x7f", b"\t"]) + good[at:] + b"\n", False
        elif kind == 6:  # empty fields
            yield rng.choice([good + b" ", b" " + good, good.replace(b" ", b"  ", 1)]) + b"\n", False
        elif kind == 7:  # an unknown status
            yield rid + b" " + rng.choice([b"OK", b"okay", b"e", b"fault11", b"ok\x00"]) + b" 3\n", False
        elif kind == 8:  # random bytes, one line
            yield rid + b" " + rng.randbytes(rng.randrange(1, 200)).replace(b"\n", b"") + b"\n", False
        elif kind == 9:  # only an id, or nothing
            yield rng.choice([rid, rid + b" ", b""]) + b"\n", False
        elif kind == 10:  # a long valid reply
            yield rid + b" ok " + b"ab" * rng.randrange(1, 1 << 16) + b"\n", True
        else:  # a huge id
            yield b"9" * rng.randrange(20, 200) + b" ok\n", False


def fuzz_replies(n: int, seed: int) -> tuple[Figures, Figures]:
    """`n` reply cases through the executor's reader, and `n` through the hub's."""
    rng = random.Random(seed)
    executor, hub = Figures(), Figures()
    # a fresh Hub numbers its first request 1
    for figures, judge, cases in ((executor, _judge_executor, reply_cases(rng, b"7")),
                                  (hub, _judge_hub, reply_cases(rng, b"1"))):
        start = time.perf_counter()
        for _ in range(n):
            data, valid = next(cases)
            figures.lines += 1
            began = time.perf_counter()
            judge(data, valid, figures)
            if time.perf_counter() - began > 1.0:
                figures.found("hangs", data, "took over a second")
        figures.seconds = time.perf_counter() - start
    return executor, hub


def _judge_executor(data: bytes, valid: bool, figures: Figures) -> None:
    lines = LineBuffer()
    lines.data += data
    try:
        reply = lines.take_reply("7")
    except MalformedReply:
        if valid:
            figures.found("accepted", data, "a valid reply was refused")
        return
    except Exception as exc:  # anything but a protocol error is a bug of the reader
        figures.found("crashes", data, repr(exc))
        return
    if reply is None:
        figures.found("hangs", data, "the reader waits for more")
    elif not valid:
        figures.found("desyncs" if not data.startswith(b"7 ") else "accepted", data, str(reply))


def _judge_hub(data: bytes, valid: bool, figures: Figures) -> None:
    tagged = b"".join(b"p1 " + line + b"\n" for line in data.split(b"\n")[:-1])  # as the hub sends it
    ours, theirs = socket.socketpair()
    with ours, theirs:
        hub = Hub(ours, timeout=0.5)
        ticket = hub.submit("p1", "ping")
        theirs.sendall(tagged)
        try:
            reply = hub.wait(ticket)
        except HubTimeout:
            figures.found("hangs", tagged)
            return
        except ExecutorError:  # ProcessLost among them: a `lost` reply
            if valid:
                figures.found("accepted", tagged, "a valid reply was refused")
            return
        except Exception as exc:
            figures.found("crashes", tagged, repr(exc))
            return
        if not valid:  # what followed the reply may still be unread: the next request must fail
            try:
                hub.request("p1", "ping", timeout=0.05)
            except ExecutorError:
                return
            figures.found("desyncs", tagged, str(reply))
