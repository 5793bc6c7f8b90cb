"""Prepare what the kernel adapter's VM boots: `ashcheck vm fetch [--force]`.

Two stages, each cached under `${XDG_CACHE_HOME:-~/.cache}/ashcheck/vm/` with the sha256 of every
file it produced and the inputs it was made from (manifest.json):

- kernel: the newest `linux-image-5.10.0-*-amd64` of Debian bullseye → `kernel/vmlinux` (the
  uncompressed ELF, booted by PVH) and `kernel/modules/*.ko` (virtio-serial, ashmem_linux,
  binder_linux and what they depend on, uncompressed, in load order);
- busybox: a static x86_64 busybox, the host's own if it is one, else bullseye's busybox-static.

A later call only verifies the checksums. A stage with a missing or corrupted file is rebuilt from
the same package version when the archive still has it. `force` rebuilds both from the newest.

A user's own kernel (`--kernel PATH [--modules DIR]`) skips the kernel stage: see user_assets.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ashcheck.adapters.vm import debian, elf, kernelimage, modules
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

KERNEL_PACKAGES = r"linux-image-5\.10\.0-\d+-amd64(-unsigned)?"
# What the guest needs from the kernel: the virtio-serial port (virtio_pci + virtio_console) and the
# two drivers under test. Their dependencies are added from each module's .modinfo.
ROOT_MODULES = ("virtio_pci", "virtio_console", "ashmem_linux", "binder_linux")
REQUIRED_MODULES = ("ashmem_linux", "binder_linux")  # built-in virtio is fine; these are the point
HOST_BUSYBOXES = ("/bin/busybox", "/usr/bin/busybox")


def _quiet(_: str) -> None:
    pass


def fetch(progress: Progress | None = None, *, force: bool = False) -> VmAssets:
    """The cached Debian 5.10 kernel, its modules and a static busybox, prepared if needed.

    Args:
        progress: called with one line per stage (cached, downloading, converting, …).
        force: rebuild everything from the newest packages, ignoring the cache.
    Raises:
        VmError: a tool, package or the archive is missing; the message says which and what to do.
    """
    say = progress or _quiet
    root = cache_root()
    with locked(root):
        stages = {} if force else read_manifest(root)
        apt = debian.Apt(root / "apt", say)
        for name, build in (("kernel", _build_kernel), ("busybox", _build_busybox)):
            old = stages.get(name)
            if old is not None:
                bad = first_mismatch(root, old["files"])
                if bad is None:
                    say(f"{name}: cached, checksums verified ({old['inputs']['describe']})")
                    continue
                say(f"{name}: {bad} is missing or corrupted; rebuilding")
            stages[name] = build(root, apt, say, None if old is None else old["inputs"])
            write_manifest(root, stages)  # after each stage: a later failure keeps this one
        return _assets(root, stages)


def _assets(root: Path, stages: dict[str, Any]) -> VmAssets:
    kernel = stages["kernel"]
    return VmAssets(
        kernel=root / "kernel" / "vmlinux",
        modules=tuple(root / "kernel" / "modules" / f"{m}.ko" for m in kernel["modules"]),
        busybox=root / "busybox",
        release=kernel["inputs"]["release"],
        origin=kernel["inputs"]["describe"],
    )


# kernel stage -------------------------------------------------------------------------------------
def _choose(apt: debian.Apt, pinned: dict[str, str] | None) -> tuple[str, str]:
    candidates = apt.versions(KERNEL_PACKAGES)
    if not candidates:
        raise VmError(f"no package matching {KERNEL_PACKAGES} in {debian.SUITE}: is the archive a Debian one?")
    if pinned and (pinned["package"], pinned["version"]) in candidates:
        return pinned["package"], pinned["version"]
    return debian.newest(candidates)


def _build_kernel(root: Path, apt: debian.Apt, say: Progress, pinned: dict[str, str] | None) -> dict[str, Any]:
    package, version = _choose(apt, pinned)
    with tempfile.TemporaryDirectory(dir=root, prefix="kernel-") as scratch:
        work = Path(scratch)
        say(f"kernel: downloading {package} {version}")
        deb = apt.download(package, version, work / "deb")
        say(f"kernel: unpacking {deb.name}")
        tree = debian.extract(deb, work / "tree")
        vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))
        trees = sorted((tree / "lib" / "modules").glob("*/kernel"))
        if not vmlinuz or not trees:
            raise VmError(f"{package} {version} has no boot/vmlinuz-* or lib/modules/*/kernel: "
                          "it is not a kernel image package with modules")
        release = trees[0].parent.name
        staged = work / "kernel"
        say(f"kernel: extracting the uncompressed vmlinux from {vmlinuz[0].name}")
        _write_vmlinux(vmlinuz[0], staged / "vmlinux")
        order = _copy_modules(trees[0], release, staged / "modules", say)
        target = root / "kernel"
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)
    files = [f"kernel/{p.relative_to(target)}" for p in sorted(target.rglob("*")) if p.is_file()]
    describe = f"Debian {debian.SUITE} {package} {version}"
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


def _copy_modules(tree: Path, release: str, dest: Path, say: Progress) -> list[str]:
    builtin = _builtin(tree.parent)
    available = modules.index(tree)
    missing = [m for m in REQUIRED_MODULES if m not in available and m not in builtin]
    if missing:
        raise VmError(f"kernel {release} has no {', '.join(missing)} module: the kernel adapter needs a kernel "
                      "with CONFIG_ASHMEM and CONFIG_ANDROID_BINDER_IPC")
    try:
        chosen = modules.closure([m for m in ROOT_MODULES if m not in builtin], available)
        images = {name: modules.read_ko(path) for name, path in chosen.items()}
        order = modules.load_order({n: modules.depends(images[n], chosen[n]) for n in images})
    except modules.ModuleError as exc:
        raise VmError(f"kernel {release}: {exc}") from exc
    for name in order:
        write_atomic(dest / f"{name}.ko", images[name])
    say(f"kernel: {release}, modules in load order: {' '.join(order)}")
    return order


# busybox stage ------------------------------------------------------------------------------------
def _usable_busybox(path: Path) -> bool:
    try:
        data = path.read_bytes()
        return elf.Elf(data).machine == elf.EM_X86_64 and elf.is_static(data)
    except (OSError, ValueError):
        return False


def _build_busybox(root: Path, apt: debian.Apt, say: Progress, _pinned: dict[str, str] | None) -> dict[str, Any]:
    source = next((Path(p) for p in HOST_BUSYBOXES if _usable_busybox(Path(p))), None)
    if source is not None:
        say(f"busybox: using {source} (static x86_64)")
        write_atomic(root / "busybox", source.read_bytes(), 0o755)
        describe = f"{source} of this host"
    else:
        say("busybox: no static x86_64 busybox on this host (package busybox-static); "
            f"downloading {debian.SUITE}'s busybox-static")
        found = apt.versions("busybox-static")
        if not found:
            raise VmError(f"no busybox-static in {debian.SUITE}: install the `busybox-static` package")
        package, version = debian.newest(found)
        with tempfile.TemporaryDirectory(dir=root, prefix="busybox-") as scratch:
            tree = debian.extract(apt.download(package, version, Path(scratch)), Path(scratch) / "tree")
            binary = tree / "bin" / "busybox"
            if not _usable_busybox(binary):
                raise VmError(f"{package} {version} has no static x86_64 bin/busybox: install `busybox-static`")
            write_atomic(root / "busybox", binary.read_bytes(), 0o755)
        describe = f"Debian {debian.SUITE} {package} {version}"
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
            stages["busybox"] = _build_busybox(root, debian.Apt(root / "apt", say), say, None)
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


# command line ------------------------------------------------------------------------------------
def _print(line: str) -> None:
    print(line, flush=True)


def main_fetch(argv: list[str]) -> int:
    """`ashcheck vm fetch [--force] [--kernel PATH [--modules DIR]]`: 0 when ready, 1 on VmError."""
    parser = argparse.ArgumentParser(prog="ashcheck vm fetch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild from the newest packages")
    parser.add_argument("--kernel", type=Path, help="prepare this vmlinux or bzImage instead of Debian's")
    parser.add_argument("--modules", type=Path, help="with --kernel: a directory of .ko files to load")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        assets = user_assets(args.kernel, args.modules, _print) if args.kernel else fetch(_print, force=args.force)
    except VmError as exc:
        print(f"ashcheck vm fetch: {exc}", file=sys.stderr)
        return 1
    print(f"ready in {time.monotonic() - start:.1f} s: {assets.origin}; kernel {assets.kernel}")
    return 0


if __name__ == "__main__":
    sys.exit(main_fetch(sys.argv[1:]))
