"""Prepare what the kernel adapter's VM boots: `ashcheck vm fetch [--kernel 5.10|6.1|6.12|PATH] [--force]`.

Stages, each cached under `${XDG_CACHE_HOME:-~/.cache}/ashcheck/vm/` with the sha256 of every file
it produced and the inputs it was made from (manifest.json):

- `kernel-<name>`, one per kernel of the catalogue (kernels.py: 5.10 from bullseye, 6.1 from
  bookworm, 6.12 from trixie): the newest image package of the suite → `kernel-<name>/vmlinux` (the
  uncompressed ELF, booted by PVH) and `kernel-<name>/modules/*.ko` (virtio-serial, the drivers
  under test and what they depend on, from each module's .modinfo, uncompressed, in load order);
- `busybox`: a static x86_64 busybox, the host's own if it is one, else bullseye's busybox-static.

A later call only verifies the checksums. A stage with a missing or corrupted file is rebuilt from
the same package version when the archive still has it. `force` rebuilds the kernel asked for and
busybox from the newest. Stages of other kernels (and of other versions of this code sharing the
cache) are left as they are.

A user's own kernel (`--kernel PATH [--modules DIR]`) skips the kernel stage: see user_assets.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ashcheck.adapters.vm import debian, elf, kernelimage, modules, owned
from ashcheck.adapters.vm.assets import (
    Progress,
    VmAssets,
    VmError,
    cache_root,
    checksums,
    first_mismatch,
    locked,
    read_manifest,
    write_atomic,
    write_manifest,
)
from ashcheck.adapters.vm.kernels import DEFAULT, KERNELS, DebianKernel, lookup

HOST_BUSYBOXES = ("/bin/busybox", "/usr/bin/busybox")
SCRATCH_PREFIX = ".scratch-"  # then the owner: a killed fetch's unpacked package is removed by the next


def _quiet(_: str) -> None:
    pass


def fetch(progress: Progress | None = None, *, kernel: str = DEFAULT, force: bool = False) -> VmAssets:
    """The cached Debian kernel `kernel` (a name of kernels.KERNELS), its modules and a static
    busybox, prepared if needed.

    Args:
        progress: called with one line per stage (cached, downloading, converting, …).
        kernel: which kernel of the catalogue.
        force: rebuild this kernel and busybox from the newest packages, ignoring the cache.
    Raises:
        KeyError: `kernel` is not in the catalogue.
        VmError: a tool, package or the archive is missing; the message says which and what to do.
    """
    say = progress or _quiet
    choice = lookup(kernel)
    root = cache_root()
    stage = f"kernel-{choice.name}"
    with locked(root):
        owned.sweep(SCRATCH_PREFIX, root)  # what a killed fetch left: a package unpacked halfway
        stages = read_manifest(root)
        for name in (stage, "busybox"):
            old = None if force else stages.get(name)
            if old is not None:
                bad = first_mismatch(root, old["files"])
                if bad is None:
                    say(f"{name}: cached, checksums verified ({old['inputs']['describe']})")
                    continue
                say(f"{name}: {bad} is missing or corrupted; rebuilding")
            pinned = None if old is None else old["inputs"]
            stages[name] = _build_kernel(root, choice, say, pinned) if name == stage else _build_busybox(root, say)
            write_manifest(root, stages)  # after each stage: a later failure keeps this one
        return _assets(root, stage, stages)


def _assets(root: Path, stage: str, stages: dict[str, Any]) -> VmAssets:
    kernel = stages[stage]
    inputs = kernel["inputs"]
    return VmAssets(
        kernel=root / stage / "vmlinux",
        modules=tuple(root / stage / "modules" / f"{m}.ko" for m in kernel["modules"]),
        busybox=root / "busybox",
        release=inputs["release"],
        origin=inputs["describe"],
        package=f"{inputs['package']} {inputs['version']}",
    )


@contextmanager
def _scratch(root: Path) -> Iterator[Path]:
    """A scratch folder in the cache (same filesystem: its results are renamed into place), removed
    on the way out; one left by a killed fetch is removed by the next fetch (owned.py)."""
    work = owned.make(SCRATCH_PREFIX, root)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


# kernel stage -------------------------------------------------------------------------------------
def _choose(apt: debian.Apt, choice: DebianKernel, pinned: dict[str, str] | None) -> tuple[str, str]:
    candidates = apt.versions(choice.packages)
    if not candidates:
        raise VmError(f"no package matching {choice.packages} in {choice.suite}: is the archive a Debian one?")
    if pinned and (pinned["package"], pinned["version"]) in candidates:
        return pinned["package"], pinned["version"]
    return debian.newest(candidates)


def _build_kernel(root: Path, choice: DebianKernel, say: Progress, pinned: dict[str, str] | None) -> dict[str, Any]:
    stage = f"kernel-{choice.name}"
    apt = debian.Apt(root / "apt" / choice.suite, say, choice.suite)
    package, version = _choose(apt, choice, pinned)
    with _scratch(root) as work:
        say(f"{stage}: downloading {package} {version}")
        deb = apt.download(package, version, work / "deb")
        say(f"{stage}: unpacking {deb.name}")
        tree = debian.extract(deb, work / "tree")
        vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))
        # trixie's packages are merged-/usr: usr/lib/modules; bullseye's and bookworm's: lib/modules
        trees = sorted((tree / "usr" / "lib" / "modules").glob("*/kernel")) or sorted(
            (tree / "lib" / "modules").glob("*/kernel"))
        if not vmlinuz or not trees:
            raise VmError(f"{package} {version} has no boot/vmlinuz-* or [usr/]lib/modules/*/kernel: "
                          "it is not a kernel image package with modules")
        release = trees[0].parent.name
        staged = work / "kernel"
        say(f"{stage}: extracting the uncompressed vmlinux from {vmlinuz[0].name}")
        _write_vmlinux(vmlinuz[0], staged / "vmlinux")
        order = _copy_modules(trees[0], release, choice, staged / "modules", say)
        target = root / stage
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)
    files = [f"{stage}/{p.relative_to(target)}" for p in sorted(target.rglob("*")) if p.is_file()]
    describe = f"Debian {choice.suite} {package} {version}"
    inputs = {"package": package, "version": version, "release": release, "describe": describe}
    return {"inputs": inputs, "modules": order, "files": checksums(root, files)}


def _write_vmlinux(image: Path, dest: Path) -> None:
    try:
        vmlinux = kernelimage.vmlinux_from(image.read_bytes())
    except kernelimage.ImageError as exc:
        raise VmError(f"{image.name}: {exc}") from exc
    if not elf.has_pvh_note(vmlinux):
        raise VmError(f"{image.name} has no PVH entry note (CONFIG_PVH): qemu cannot boot it as an ELF")
    write_atomic(dest, vmlinux)


def _builtin(release_dir: Path) -> set[str]:
    listed = release_dir / "modules.builtin"
    lines = listed.read_text().split() if listed.is_file() else []
    return {modules.stem(Path(line)) for line in lines}


def _copy_modules(tree: Path, release: str, choice: DebianKernel, dest: Path, say: Progress) -> list[str]:
    builtin = _builtin(tree.parent)
    available = modules.index(tree)
    missing = [m for m in choice.drivers if m not in available and m not in builtin]
    if missing:
        raise VmError(f"kernel {release} has no {', '.join(missing)} module: the kernel adapter's {choice.name} "
                      f"needs {', '.join(choice.drivers)}")
    try:
        chosen = modules.closure([m for m in choice.roots if m not in builtin], available)
        images = {name: modules.read_ko(path) for name, path in chosen.items()}
        order = modules.load_order({n: modules.depends(images[n], chosen[n]) for n in images})
    except modules.ModuleError as exc:
        raise VmError(f"kernel {release}: {exc}") from exc
    for name in order:
        write_atomic(dest / f"{name}.ko", images[name])
    say(f"kernel-{choice.name}: {release}, modules in load order: {' '.join(order)}")
    return order


# busybox stage ------------------------------------------------------------------------------------
def _usable_busybox(path: Path) -> bool:
    try:
        data = path.read_bytes()
        return elf.Elf(data).machine == elf.EM_X86_64 and elf.is_static(data)
    except (OSError, ValueError):
        return False


def _build_busybox(root: Path, say: Progress) -> dict[str, Any]:
    source = next((Path(p) for p in HOST_BUSYBOXES if _usable_busybox(Path(p))), None)
    if source is not None:
        say(f"busybox: using {source} (static x86_64)")
        write_atomic(root / "busybox", source.read_bytes(), 0o755)
        describe = f"{source} of this host"
    else:
        suite = debian.DEFAULT_SUITE
        say(f"busybox: no static x86_64 busybox on this host (package busybox-static); downloading {suite}'s")
        apt = debian.Apt(root / "apt" / suite, say, suite)
        found = apt.versions("busybox-static")
        if not found:
            raise VmError(f"no busybox-static in {suite}: install the `busybox-static` package")
        package, version = debian.newest(found)
        with _scratch(root) as work:
            tree = debian.extract(apt.download(package, version, work), work / "tree")
            binary = tree / "bin" / "busybox"
            if not _usable_busybox(binary):
                raise VmError(f"{package} {version} has no static x86_64 bin/busybox: install `busybox-static`")
            write_atomic(root / "busybox", binary.read_bytes(), 0o755)
        describe = f"Debian {suite} {package} {version}"
    return {"inputs": {"describe": describe}, "files": checksums(root, ["busybox"])}


# a user's own kernel ------------------------------------------------------------------------------
def user_assets(kernel: Path, modules_dir: Path | None = None, progress: Progress | None = None) -> VmAssets:
    """VmAssets from a user's kernel (an ELF vmlinux or a bzImage) and directory of .ko files.

    A bzImage whose payload is a PVH-capable vmlinux is converted (cached by content); otherwise it
    is booted as is, which is slower. Every module in `modules_dir` is loaded, dependencies first;
    .ko.xz/.gz/.zst are decompressed. What the kernel offers (ashmem? binder?) is probed in the
    guest, not assumed. The busybox comes from fetch()'s busybox stage.
    Raises VmError when a file is unreadable or not a kernel/module."""
    say = progress or _quiet
    root = cache_root()
    try:
        image = kernel.read_bytes()
    except OSError as exc:
        raise VmError(f"cannot read the kernel {kernel}: {exc}") from exc
    key = hashlib.sha256(image)
    mods = modules.index(modules_dir) if modules_dir else {}
    if modules_dir and not mods:
        raise VmError(f"no kernel modules (*.ko, *.ko.xz, …) under {modules_dir}")
    for name in sorted(mods):
        key.update(name.encode() + mods[name].read_bytes())
    work = root / "user" / key.hexdigest()[:16]
    with locked(root):
        boot = _user_kernel(kernel, image, work, say)
        try:
            images = {name: modules.read_ko(path) for name, path in mods.items()}
            order = modules.load_order({n: modules.depends(images[n], mods[n]) for n in images})
        except (modules.ModuleError, OSError) as exc:
            raise VmError(f"modules under {modules_dir}: {exc}") from exc
        for name in order:
            write_atomic(work / "modules" / f"{name}.ko", images[name])
        stages = read_manifest(root)
        old = stages.get("busybox")
        if old is None or first_mismatch(root, old["files"]) is not None:
            stages["busybox"] = _build_busybox(root, say)
            write_manifest(root, stages)
    return VmAssets(kernel=boot, modules=tuple(work / "modules" / f"{n}.ko" for n in order),
                    busybox=root / "busybox", release="user", origin=f"{kernel} (user kernel)")


def _user_kernel(kernel: Path, image: bytes, work: Path, say: Progress) -> Path:
    if elf.is_elf(image):
        if not elf.has_pvh_note(image):
            raise VmError(f"{kernel} is an ELF vmlinux without the PVH entry note (CONFIG_PVH=y): "
                          "give its bzImage instead")
        return kernel
    try:
        vmlinux = kernelimage.vmlinux_from(image)
    except kernelimage.ImageError as exc:
        raise VmError(f"{kernel}: {exc}") from exc
    if not elf.has_pvh_note(vmlinux):
        say(f"kernel: {kernel} has no PVH entry: booting the bzImage as is (slower)")
        return kernel
    target = work / "vmlinux"
    if not target.is_file():
        say(f"kernel: extracting the uncompressed vmlinux from {kernel}")
        write_atomic(target, vmlinux)
    return target


# a kernel by name or by path --------------------------------------------------------------------
def kernel_choice(kernel: str | None, modules_dir: str | Path | None = None) -> DebianKernel | Path:
    """What `--kernel X` / `kernel=X` names: a kernel of the catalogue (kernels.py; default 5.10) or
    the path of a user's vmlinux/bzImage. Only a user's kernel takes `modules_dir` (a catalogue
    kernel brings its own). Raises ValueError when X is neither a known name nor a file."""
    if kernel is None or kernel in KERNELS:
        if modules_dir is not None:
            raise ValueError(f"modules= goes with a kernel given by path; kernel {kernel or DEFAULT} brings its own")
        return lookup(kernel or DEFAULT)
    path = Path(kernel)
    if not path.is_file():
        raise ValueError(f"kernel {kernel!r} is neither a kernel of the catalogue ({', '.join(KERNELS)}) "
                         "nor a vmlinux/bzImage file")
    return path


def prepare(choice: DebianKernel | Path, modules_dir: str | Path | None = None, progress: Progress | None = None,
            *, force: bool = False) -> VmAssets:
    """The VmAssets of a kernel_choice(): fetch() for a catalogue kernel, user_assets() for a file.
    Raises VmError."""
    if isinstance(choice, DebianKernel):
        return fetch(progress, kernel=choice.name, force=force)
    return user_assets(choice, Path(modules_dir) if modules_dir else None, progress)


# command line ------------------------------------------------------------------------------------
def _print(line: str) -> None:
    print(line, flush=True)


def main_fetch(argv: list[str]) -> int:
    """`ashcheck vm fetch [--kernel NAME|PATH [--modules DIR]] [--force]`: 0 when ready, 1 on VmError,
    2 on a usage error."""
    parser = argparse.ArgumentParser(prog="ashcheck vm fetch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild from the newest packages")
    parser.add_argument("--kernel", default=DEFAULT, metavar="|".join([*KERNELS, "PATH"]),
                        help=f"a Debian kernel by name (default {DEFAULT}), or your own vmlinux or bzImage")
    parser.add_argument("--modules", type=Path, help="with --kernel PATH: a directory of .ko files to load")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        assets = prepare(kernel_choice(args.kernel, args.modules), args.modules, _print, force=args.force)
    except ValueError as exc:
        parser.error(str(exc))
    except VmError as exc:
        print(f"ashcheck vm fetch: {exc}", file=sys.stderr)
        return 1
    print(f"ready in {time.monotonic() - start:.1f} s: {assets.origin}; kernel {assets.kernel}")
    return 0


if __name__ == "__main__":
    sys.exit(main_fetch(sys.argv[1:]))
