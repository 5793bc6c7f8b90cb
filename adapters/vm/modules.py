"""Kernel modules: which files the guest needs, and in which order to insmod them.

The guest has no modprobe and no modules.dep (Debian's image package does not ship one either:
depmod writes it at install time). Both questions are answered from each module's own `.modinfo`
section, whose `depends=` list modpost derived from the same symbol resolution depmod uses. One
mechanism then serves Debian's tree and a user's directory of .ko files alike.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from ashcheck.adapters.vm import elf

SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


class ModuleError(ValueError):
    """A module is missing, unreadable, or its dependencies form a cycle."""


def normalize(name: str) -> str:
    """Module names treat '-' and '_' alike; the kernel reports them with '_'."""
    return name.replace("-", "_")


def stem(path: Path) -> str:
    """The module name a file's name implies: `virtio-rng.ko.xz` → `virtio_rng`."""
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return normalize(path.name[: -len(suffix)])
    raise ModuleError(f"{path} is not a kernel module file ({', '.join(SUFFIXES)})")


def read_ko(path: Path) -> bytes:
    """The uncompressed module: the guest's busybox insmod takes plain ELF only."""
    raw = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(raw)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(raw)
    if path.name.endswith(".ko.zst"):
        tool = shutil.which("zstd")
        if tool is None:
            raise ModuleError(f"{path} is zstd-compressed: install the `zstd` package")
        return subprocess.run([tool, "-dcq"], input=raw, capture_output=True, check=True).stdout
    return raw


def depends(image: bytes, origin: Path) -> list[str]:
    """The module names `image` needs loaded first."""
    try:
        listed = elf.modinfo(image).get("depends", "")
    except ValueError as exc:
        raise ModuleError(f"{origin}: {exc}") from exc
    return [normalize(d) for d in listed.split(",") if d]


def index(tree: Path) -> dict[str, Path]:
    """Every module file under `tree`, by module name."""
    return {stem(p): p for p in sorted(tree.rglob("*.ko*")) if p.name.endswith(SUFFIXES)}


def closure(roots: Iterable[str], available: Mapping[str, Path]) -> dict[str, Path]:
    """`roots` and everything they depend on, transitively. Raises ModuleError for a name that is
    in neither `available` nor (the caller's job) the kernel's built-ins."""
    chosen: dict[str, Path] = {}
    todo = [normalize(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        if name not in available:
            raise ModuleError(f"module {name!r} is needed but not found")
        chosen[name] = available[name]
        todo.extend(depends(read_ko(available[name]), available[name]))
    return chosen


def load_order(deps: Mapping[str, list[str]]) -> list[str]:
    """A dependency-first order of the keys of `deps` (name → names it needs). Needed names that are
    not keys are assumed built into the kernel. Ties keep alphabetical order, for stable images."""
    order: list[str] = []
    state: dict[str, str] = {}  # name → "visiting" | "done"

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done" or name not in deps:
            return
        if state.get(name) == "visiting":
            raise ModuleError(f"module dependency cycle: {' → '.join((*path, name))}")
        state[name] = "visiting"
        for needed in sorted(deps[name]):
            visit(needed, (*path, name))
        state[name] = "done"
        order.append(name)

    for name in sorted(deps):
        visit(name, ())
    return order
