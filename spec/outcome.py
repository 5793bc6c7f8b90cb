"""Outcomes: what one operation on an implementation can come back with.

Every operation an adapter performs ends in exactly one outcome (ARCHITECTURE, "the adapter
contract"): a value, an errno, a fault (a signal caught while touching mapped memory), or
*indeterminate* (the transport was lost, so nobody knows what happened). Kernel errors are
outcomes, never exceptions; an exception out of an adapter is a harness bug.
"""

from __future__ import annotations

import enum
import errno as _errno
import signal as _signal
from dataclasses import dataclass, field
from typing import Any


class Kind(enum.Enum):
    VALUE = "value"
    ERRNO = "errno"
    FAULT = "fault"
    INDETERMINATE = "indeterminate"


@dataclass(frozen=True, slots=True)
class Outcome:
    """`emulated` marks an answer the adapter computed itself instead of observing it from the
    implementation (a shim answered in Python): it is judged like any other, but it confirms a
    rule only as emulated. It takes no part in equality."""

    kind: Kind
    value: Any = None
    emulated: bool = field(default=False, compare=False)

    @property
    def succeeded(self) -> bool:
        """A value came back (an errno's code is in `value` too, so test this, not `value`)."""
        return self.kind is Kind.VALUE

    def __str__(self) -> str:
        if self.kind is Kind.ERRNO:
            return f"-1 {_errno.errorcode.get(self.value, str(self.value))}"
        if self.kind is Kind.FAULT:
            return f"fault {_signal.Signals(self.value).name}"
        if self.kind is Kind.INDETERMINATE:
            return f"indeterminate ({self.value})"
        return _show(self.value)

    def to_json(self) -> list[Any]:
        return [self.kind.value, _jsonable(self.value)]

    @staticmethod
    def from_json(data: list[Any]) -> Outcome:
        return Outcome(Kind(data[0]), _unjson(data[1]))


def ok(value: Any = None) -> Outcome:
    return Outcome(Kind.VALUE, value)


def err(code: int) -> Outcome:
    return Outcome(Kind.ERRNO, code)


def fault(signo: int) -> Outcome:
    return Outcome(Kind.FAULT, signo)


def indeterminate(reason: str) -> Outcome:
    return Outcome(Kind.INDETERMINATE, reason)


def emulated(outcome: Outcome) -> Outcome:
    """The same outcome, marked as computed by the adapter rather than observed."""
    return Outcome(outcome.kind, outcome.value, True)  # (dataclasses.replace costs twice as much)


# Binder answers that are not errnos: the driver reports a failed transaction to the sender as
# the return command BR_FAILED_REPLY, and 5.10 has no way to ask why (BINDER_GET_EXTENDED_ERROR
# arrived in 6.x), so the outcome is the command itself.
BR_FAILED_REPLY = "BR_FAILED_REPLY"
BR_TRANSACTION_COMPLETE = "BR_TRANSACTION_COMPLETE"

SIGSEGV = int(_signal.SIGSEGV)
SIGBUS = int(_signal.SIGBUS)


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return repr(value) if len(value) <= 24 else f"{value[:16]!r}…({len(value)} bytes)"
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    return repr(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _unjson(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"hex"}:
        return bytes.fromhex(value["hex"])
    if isinstance(value, list):
        return tuple(_unjson(v) for v in value)
    return value
