"""The guest's initramfs: busybox, the modules, /init and the executor, in one newc cpio archive.

Why initramfs-only (no 9p or virtiofs mount of the host): the executor is one static binary, so
the guest needs nothing from the host's filesystem. That leaves out the 9p modules, the mount, and
its latency on the first exec (kernel-observed.md: ≈1 s for a cold start over 9p), and works the
same for any user, since nothing on the host is exported.

Why uncompressed: gzip makes the ≈2.6 MB archive 1.2 MB, but what qemu saves loading it the guest
spends inflating it under TCG: 1.67 s without, 1.68 s with (medians of 8 boots each, interleaved,
with the stand-in hub). Without compression there is one step less; COMPRESS switches it back on.

The archive is cached by a hash of everything in it and rebuilt only when an input changes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ashcheck.adapters.vm import elf
from ashcheck.adapters.vm.assets import VmAssets, VmError, cache_root, locked, write_atomic

FORMAT = 1  # bump when the layout below changes, to retire cached archives
COMPRESS = False
KEEP = 4  # cached archives kept (several executors may be in use, e.g. across branches)
# Module parameters the guest passes to insmod. binder_linux's default device list is a build
# option; naming it makes /dev/binder certain.
MODULE_PARAMS = {"binder_linux": "devices=binder"}
# The applets /init and a person debugging the guest use; links to the one busybox binary.
APPLETS = ("sh", "mount", "insmod", "cat", "chmod", "usleep", "sleep", "reboot", "uname", "mdev", "ls", "dmesg", "ps")
DIRS = ("bin", "dev", "etc", "etc/ashcheck", "lib", "lib/modules", "proc", "sys")


@dataclass(frozen=True)
class Entry:
    """One member of the archive: a file, a directory, a symlink or a character device."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def newc(entries: Iterable[Entry]) -> bytes:
    """The SVR4 "newc" cpio archive the kernel unpacks into its rootfs (no checksums, mtime 0)."""
    out = io.BytesIO()

    def put(ino: int, entry: Entry) -> None:
        name = entry.name.encode() + b"\0"
        fields = (ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, *entry.rdev, len(name), 0)
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + name)
        out.write(b"\0" * (-out.tell() % 4) + entry.data)
        out.write(b"\0" * (-out.tell() % 4))

    for ino, entry in enumerate(entries, start=1):
        put(ino, entry)
    put(0, Entry("TRAILER!!!", 0))
    return out.getvalue()


def init_script() -> bytes:
    return resources.files("ashcheck.adapters.vm").joinpath("init.sh").read_bytes()


def entries(assets: VmAssets, executor: Path, extra: Mapping[str, bytes] | None = None) -> list[Entry]:
    """The guest's files. Module files are named by load order in /etc/ashcheck/modules; `extra`
    adds executable files (guest path → bytes: the peer suites' programs)."""
    listing = []
    files = [Entry(d, stat.S_IFDIR | 0o755) for d in DIRS]
    files.append(Entry("tmp", stat.S_IFDIR | 0o1777))  # writable by the unprivileged executors too
    files.append(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))  # the kernel opens it before /init
    files.append(Entry("init", stat.S_IFREG | 0o755, init_script()))
    files.append(Entry("bin/busybox", stat.S_IFREG | 0o755, assets.busybox.read_bytes()))
    files += [Entry(f"bin/{a}", stat.S_IFLNK | 0o777, b"busybox") for a in APPLETS]
    files.append(Entry("bin/ashcheck-exec", stat.S_IFREG | 0o755, _guest_executable(executor)))
    for ko in assets.modules:
        files.append(Entry(f"lib/modules/{ko.name}", stat.S_IFREG | 0o644, ko.read_bytes()))
        listing.append(f"{ko.name} {MODULE_PARAMS.get(ko.stem, '')}".rstrip())
    files.append(Entry("etc/ashcheck/modules", stat.S_IFREG | 0o644, "".join(f"{x}\n" for x in listing).encode()))
    for name, data in sorted((extra or {}).items()):
        files += [Entry(d, stat.S_IFDIR | 0o755) for d in _parents(name) if d not in DIRS]
        files.append(Entry(name, stat.S_IFREG | 0o755, data))
    return files


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _guest_executable(path: Path) -> bytes:
    """The executor's bytes, if the guest can run it: the guest has no libc or loader, so a binary
    must be static, x86_64 or i386 (a 32-bit process, through the kernel's IA32 emulation); a
    `#!/bin/sh` script is fine too: the stand-in is one."""
    data = path.read_bytes()
    if data.startswith(b"#!/bin/sh"):
        return data
    from ashcheck.adapters.build import elf_problem

    if all(elf_problem(data, want, static=True) for want in ((64, elf.EM_X86_64, "x86_64"), (32, 3, "i386"))):
        raise VmError(f"{path} cannot run in the guest: the executor must be a static x86_64 or i386 ELF binary")
    return data


def build(assets: VmAssets, executor: Path, extra: Mapping[str, bytes] | None = None) -> Path:
    """The initramfs for `assets` with `executor` as /bin/ashcheck-exec (and the `extra` files), from
    the cache when its inputs are unchanged. Raises VmError for an executor the guest cannot run,
    OSError if an input file cannot be read."""
    members = entries(assets, executor, extra)
    digest = hashlib.sha256(f"{FORMAT} {COMPRESS}".encode())
    for entry in members:
        digest.update(f"{entry.name} {entry.mode} {entry.rdev} {len(entry.data)}\n".encode() + entry.data)
    root = cache_root()
    target = root / "initramfs" / f"{digest.hexdigest()[:20]}.cpio{'.gz' if COMPRESS else ''}"
    with locked(root):
        if not target.is_file():
            archive = newc(members)
            write_atomic(target, gzip.compress(archive, 6, mtime=0) if COMPRESS else archive)
            _prune(target.parent)
        target.touch()  # recently used: kept by _prune
    return target


def _prune(directory: Path) -> None:
    cached = sorted(directory.glob("*.cpio*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in cached[KEEP:]:
        old.unlink(missing_ok=True)


# A hub stand-in for checking the VM without the executor: it answers `* ping` and nothing else.
STANDIN_HUB = b"""#!/bin/sh
# ashcheck hub stand-in: answers `* ping` with `* ok`, anything else with an error, ends on EOF.
while read -r proc request; do
    if [ "$proc $request" = "* ping" ]; then echo "* ok"; else echo "$proc err stand-in hub"; fi
done
"""


def standin_executor() -> Path:
    """A busybox sh script that plays the hub for `* ping` (see STANDIN_HUB), in the cache."""
    return hub_script("standin-hub.sh", STANDIN_HUB)


def hub_script(name: str, text: bytes) -> Path:
    """A busybox sh script to run as the guest's hub, kept in the cache as `name` (rewritten when
    `text` changed)."""
    path = cache_root() / name
    if not path.is_file() or path.read_bytes() != text:
        write_atomic(path, text, 0o755)
    return path
