"""One reply of the native executor, and the strict reading of reply lines (see executor.c).

A reply line is `<id> <status> [<field>...]`: the id of the request it answers, a status (`ok`,
`err`, `fault`, `bad`; a hub may also answer `lost`), and fields of printable ASCII, separated
by single spaces, the line ending in a bare '\\n'. `parse` reads exactly that grammar and nothing
else: any other line (a `\\r` before the '\\n', a NUL, an empty field, another id) raises
MalformedReply, which the channels turn into the loss of the executor, so that a reply is never
taken as the answer to a request it does not name. Reading is linear in the line's length.

This module turns reply fields into values (`Reply.int`, `Reply.bytes`,
`unhex`); the one hex encoder of request arguments (`hexed`) lives with the operations'
declarations (spec/ops.py) and is exported from here too.
"""

from __future__ import annotations

import builtins
from typing import NamedTuple

from ashcheck.spec.ops import hexed  # the one encoder of request arguments, beside the op declarations

STATUSES = frozenset({"ok", "err", "fault", "bad"})
HUB_STATUSES = STATUSES | {"lost"}  # `lost`: the hub's answer for a process that died
MAX_ID = 19  # decimal digits
_ALLOWED = bytes(range(0x20, 0x7F))  # printable ASCII and the space between fields


class MalformedReply(ValueError):
    """A line that is not the reply it should be (wrong id, bad grammar): a protocol error."""


class Reply(NamedTuple):
    """One reply: `status` (ok, err, fault, bad; lost from a hub) and the fields after it.
    (A NamedTuple: one is made per request, and a frozen dataclass costs a microsecond more.)"""

    status: str
    fields: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def int(self, i: builtins.int = 0) -> builtins.int:
        """Field i as an integer (decimal or 0x hex). Raises IndexError or ValueError."""
        return builtins.int(self.fields[i], 0)

    def bytes(self, i: builtins.int = 0) -> builtins.bytes:
        """Field i decoded from hex (`-` is empty). Raises IndexError or ValueError."""
        return unhex(self.fields[i])

    def message(self) -> str:
        """The human message of a `bad` or `lost` reply (its hex field, decoded)."""
        try:
            return self.bytes(0).decode(errors="replace")
        except (IndexError, ValueError):
            return " ".join(self.fields)

    def __str__(self) -> str:
        return " ".join((self.status, *self.fields))


def unhex(field: str) -> builtins.bytes:
    """The bytes of a hex field (`-` is empty). Raises ValueError on anything else."""
    return b"" if field == "-" else builtins.bytes.fromhex(field)


def parse(line: builtins.bytes | bytearray, expect_id: str, statuses: frozenset[str] = STATUSES) -> Reply:
    """The reply in `line` (without its '\\n'), which must answer request `expect_id`.

    Raises MalformedReply if the line breaks the grammar, names another id, or has a status
    outside `statuses`."""
    # In C, one pass each, and as few copies as can be (a reply may be 40 MiB): no byte outside
    # printable ASCII and space; then the line is decoded once and split once.
    if line.translate(None, _ALLOWED):
        raise MalformedReply(f"not a reply line (a byte outside printable ASCII): {_excerpt(line)}")
    parts = line.decode().split(" ")
    if parts[0] != expect_id:
        raise MalformedReply(f"a reply for request {parts[0][:40]!r}, not for {expect_id}: {_excerpt(line)}")
    fields = tuple(parts[2:])
    if len(parts) < 2 or parts[1] not in statuses or "" in fields:
        raise MalformedReply(f"not a reply line: {_excerpt(line)}")
    return tuple.__new__(Reply, (parts[1], fields))  # what Reply() and _make call, without them: one per request


def _excerpt(data: builtins.bytes | bytearray) -> str:
    return repr(builtins.bytes(data[:120])) + ("…" if len(data) > 120 else "")


__all__ = ["HUB_STATUSES", "STATUSES", "MalformedReply", "Reply", "hexed", "parse", "unhex"]
