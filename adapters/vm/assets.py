"""What a VM boots from (VmAssets), where it is cached, and the checksummed manifest of the cache.

The cache lives under `${XDG_CACHE_HOME:-~/.cache}/ashcheck/vm/`, one per user. Several processes
(pytest-xdist workers, parallel `ashcheck run`s) may prepare it at once, so every change to it
happens under an exclusive lock on `vm/lock`, and files are written aside and renamed into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Progress = Callable[[str], None]


class VmError(Exception):
    """The VM cannot be prepared or booted. The message says what went wrong and what to do."""


@dataclass(frozen=True)
class VmAssets:
    """Everything a guest is made of, except the executor (image.py adds it).

    Attributes:
        kernel: an ELF vmlinux with the PVH note (fast boot), or a bzImage (booted the slow way).
        modules: uncompressed .ko files, in the order the guest must insmod them.
        busybox: a static x86_64 busybox, the guest's only userland besides the executor.
        release: the kernel release ("5.10.0-32-amd64"), or "user" for a kernel given by path
            (the guest reports its `uname -r` once booted).
        origin: where the kernel came from, for messages and reports.
        package: the Debian image package and its version ("linux-image-… 5.10.223-1"); "" when
            not known (a user's kernel).
    """

    kernel: Path
    modules: tuple[Path, ...]
    busybox: Path
    release: str
    origin: str
    package: str = ""


def cache_root() -> Path:
    """The per-user cache directory of the VM (created on demand by callers)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ashcheck" / "vm"


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the cache's exclusive lock: one process prepares, the others wait and then reuse."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to a sibling temp file and rename it over `path`: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def checksums(root: Path, relative: list[str]) -> dict[str, str]:
    return {name: sha256(root / name) for name in relative}


def first_mismatch(root: Path, files: Mapping[str, str]) -> str | None:
    """The first recorded file that is missing or no longer matches its sha256, or None."""
    for name, digest in files.items():
        path = root / name
        if not path.is_file() or sha256(path) != digest:
            return name
    return None


MANIFEST = "manifest.json"
FORMAT = 1


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest's stages ({} if absent, unreadable or of another format: all get rebuilt)."""
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return {}
    stages = data.get("stages")
    return stages if isinstance(stages, dict) else {}


def write_manifest(root: Path, stages: Mapping[str, Any]) -> None:
    text = json.dumps({"format": FORMAT, "stages": stages}, indent=2, sort_keys=True) + "\n"
    write_atomic(root / MANIFEST, text.encode())
