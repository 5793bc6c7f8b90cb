"""Handles: what the exploration names the things the model made, and what an operation's
region or mapping argument may be. A handle may go stale (a closed fd, an exited process)."""

from __future__ import annotations

from dataclasses import dataclass

from ashcheck.conformance.strategies import AnyFd, AnyMap, Focus


@dataclass(frozen=True)
class FdRef:
    proc: int
    fd: int

    def __repr__(self) -> str:
        return f"FdRef(proc={self.proc}, fd={self.fd})"


@dataclass(frozen=True)
class MapRef:
    proc: int
    map_id: int


Ref = FdRef | MapRef | Focus | AnyFd | AnyMap  # what an operation's region or mapping argument may be
