"""Temporary folders that name their owning process, so that a later run removes those of the dead.

A process killed with SIGKILL (or by the OOM killer, or a CI timeout that does not wait) cannot
remove its temporary folders: a VM's work folder, or a half-unpacked kernel package of a few
hundred MB. Each such folder's name carries its owner's pid and that process's start time, and
every run removes, before making its own, the folders whose owner is gone. The start time (field 22
of /proc/<pid>/stat, clock ticks since boot) is there because a pid alone can be reused by an
unrelated process, which would keep a dead owner's folder forever.

A normal exit still removes its own folder itself (the callers do, in `finally` or a finalizer).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def start_time(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot; None if it does not exist (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields start after the last ')'
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _tag() -> str:
    return f"{os.getpid()}.{start_time(os.getpid()) or 0}"


def make(prefix: str, parent: Path | None = None) -> Path:
    """A new private folder `<parent>/<prefix><pid>.<start>-<random>` (parent: the system temp dir),
    after removing the folders of the same prefix whose owner is dead. Raises OSError."""
    parent = parent or Path(tempfile.gettempdir())
    sweep(prefix, parent)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{_tag()}-", dir=parent))


def owner_alive(pid: int, started: int | None) -> bool:
    """Whether the folder's owner still runs: the pid exists and, when the name recorded its start
    time, started then (not a later process that got the same pid)."""
    if pid == os.getpid():
        return True
    now = start_time(pid)
    if now is not None:
        return not started or now == started
    try:  # no /proc entry: gone, unless /proc hides other users' processes (hidepid)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(prefix: str, parent: Path | None = None) -> list[Path]:
    """Remove `<parent>/<prefix><pid>[.<start>]-*` folders whose owner is dead; return them. Names in
    the older `<prefix><pid>-*` form (no start time) are judged by the pid alone."""
    parent = parent or Path(tempfile.gettempdir())
    removed = []
    for folder in parent.glob(f"{prefix}*-*"):
        owner = folder.name[len(prefix):].split("-", 1)[0]
        pid, _, started = owner.partition(".")
        if not pid.isdigit() or (started and not started.isdigit()) or not folder.is_dir():
            continue
        if not owner_alive(int(pid), int(started) if started else None):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
