"""The `libcutils-host` adapter: Debian's host build of libcutils (package android-libcutils,
libcutils/ashmem-host.cpp of AOSP platform/system/core) as a third-party implementation of the
libcutils ashmem API, through the public native-implementation API (adapters/native.py).

libcutils_host.c, beside this file, wraps the library's five calls (<cutils/ashmem.h>, -lcutils)
in ashcheck_impl.h's table; it is compiled at adapter start. The ioctls libcutils has no call
for are made raw on the fd, as a program on this platform would make them.

Profile: `ashmem`. The host library says what it is: "Implementation of the user-space ashmem
API for the simulator, which lacks an ashmem-enabled kernel" (ashmem-host.cpp), and its pin and
unpin answer the driver's constants (ASHMEM_NOT_PURGED, ASHMEM_IS_UNPINNED). Programs built
against it are written for ashmem, so ashmem is the contract they rely on; libcutils' memfd mode
is a different code path (ashmem-dev.cpp) that this library does not contain. The deviations
below are where the host library breaks that contract, each with the reason in its source
(Debian 1:29.0.6, upstream tag platform-tools-29.0.6).
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import ClassVar

from ashcheck.adapters.native import NativeAdapter, build_library

SOURCE = Path(__file__).with_name("libcutils_host.c")
INCLUDE = Path("/usr/include/android")  # android-libcutils-dev: <cutils/ashmem.h>
PACKAGE = "android-libcutils"


@functools.cache
def _multiarch() -> str:
    """Debian's multiarch triplet of this host's compiler (x86_64-linux-gnu, aarch64-linux-gnu…)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is not None:
        done = subprocess.run([cc, "-print-multiarch"], capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    return f"{platform.machine()}-linux-gnu"


def _library_dir() -> Path:
    return Path("/usr/lib") / _multiarch() / "android"  # where Debian puts libcutils.so


def _version() -> str:
    """The installed package's version, for the report (dpkg-query; "unknown" without dpkg)."""
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", PACKAGE],
                              capture_output=True, text=True, timeout=60)
    except OSError:
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


# Why the host library differs from the driver, each from ashmem-host.cpp (platform-tools-29.0.6): a
# region is `mkstemp("/tmp/android-ashmem-<pid>-XXXXXXXXX")`, unlinked, then `ftruncate(fd, size)`, a
# plain file; the ashmem ioctls on it are ENOTTY, and file I/O and mmap follow the file's rules.
_FILE = "a region is a plain file (mkstemp + unlink + ftruncate): "
_NO_NAME_SET = "no call sets a name (ashmem_create_region's is `/*ignored*/`); SET_NAME on the file is ENOTTY"
_NO_SET_SIZE = "the size is fixed by ashmem_create_region's ftruncate; SET_SIZE on the file is ENOTTY"
_PIN_NOOP = "ashmem_pin_region/ashmem_unpin_region are `return 0`, arguments unchecked"
DEVIATIONS = {
    "ashmem.create.fd": "ashmem_create_region opens the file with mkstemp(), which does not set O_CLOEXEC",
    "ashmem.maps.name": "the name is `/*ignored*/`: maps shows /tmp/android-ashmem-<pid>-XXXXXXXXX (deleted)",
    "ashmem.get-name.value": "the name is `/*ignored*/` and no call reads one; GET_NAME on the file is ENOTTY",
    "ashmem.set-name.c-string": _NO_NAME_SET,
    "ashmem.set-name.efault-first": _NO_NAME_SET,
    "ashmem.set-name.empty-resets": _NO_NAME_SET,
    "ashmem.set-name.mapped": _NO_NAME_SET,
    "ashmem.set-name.stores": _NO_NAME_SET,
    "ashmem.set-name.truncates": _NO_NAME_SET,
    "ashmem.set-size.any": _NO_SET_SIZE,
    "ashmem.set-size.mapped": _NO_SET_SIZE,
    "ashmem.get-prot-mask.value": "no mask is kept (ashmem_set_prot_region is `return 0`); GET_PROT_MASK is ENOTTY",
    "ashmem.set-prot-mask.add": "ashmem_set_prot_region(int /*fd*/, int /*prot*/) is `return 0`: adding bits succeeds",
    "ashmem.mmap.prot-outside-mask": "ashmem_set_prot_region is `return 0`: no mask restricts mmap",
    "ashmem.mprotect.beyond-mask": "ashmem_set_prot_region is `return 0`: no mask restricts mprotect",
    "ashmem.pin.unaligned": _PIN_NOOP,
    "ashmem.pin.overflow": _PIN_NOOP,
    "ashmem.pin.beyond-size": _PIN_NOOP + "; GET_PIN_STATUS on the file is ENOTTY",
    "ashmem.pin.not-mapped": _PIN_NOOP + "; GET_PIN_STATUS on the file is ENOTTY",
    "ashmem.pin.null-arg": "libcutils' pin calls take no pointer; PIN/UNPIN/GET_PIN_STATUS on the file are ENOTTY",
    "ashmem.get-pin-status.value": "nothing is unpinned (ashmem_unpin_region is `return 0`); GET_PIN_STATUS is ENOTTY",
    "ashmem.purge.count": "nothing is ever purged and no call purges; PURGE_ALL_CACHES on the file is ENOTTY",
    "ashmem.purge.eperm": "no call purges; PURGE_ALL_CACHES on the file is ENOTTY, for unprivileged callers too",
    "fd.ebadf": "ashmem_set_prot_region, _pin_region and _unpin_region ignore the fd: a closed one gives 0",
    "ashmem.read.not-mapped": _FILE + "read() works before any mmap",
    "ashmem.lseek.not-mapped": _FILE + "lseek() works before any mmap",
    "ashmem.lseek.size-zero": _FILE + "lseek() works on an empty one",
    "ashmem.write.einval": _FILE + "write() stores data",
    "ashmem.mmap.too-long": _FILE + "mmap may pass its end (pages past EOF are SIGBUS)",
    "ashmem.mmap.size-zero": _FILE + "an empty one can be mapped (every page is SIGBUS)",
    "ashmem.mmap.private-anonymous": _FILE + "MAP_PRIVATE is a copy-on-write view of its data",
    "ashmem.ftruncate.einval": _FILE + "ftruncate() resizes it",
    "ashmem.fallocate.enodev": _FILE + "fallocate() punches holes and allocates in it",
}


@functools.cache
def tmp_max_offset() -> int:
    """The largest offset lseek accepts on a file in /tmp, where the library makes its regions: the
    file system's s_maxbytes (ext4 with 4 KiB blocks: 16 TiB - 4 KiB; tmpfs: MAX_LFS_FILESIZE),
    measured by a search over SEEK_SET on a scratch file, since the kernel does not export it."""
    low, high = 0, (1 << 63) - 1  # lseek(low) succeeds; the answer is at most high
    with tempfile.TemporaryFile(dir="/tmp") as scratch:
        fd = scratch.fileno()
        while low < high:
            mid = (low + high + 1) // 2
            try:
                os.lseek(fd, mid, os.SEEK_SET)
                low = mid
            except OSError:
                high = mid - 1
    return low


class LibcutilsHostAdapter(NativeAdapter):
    name: ClassVar[str] = "libcutils-host"
    profile: ClassVar[str] = "ashmem"
    deviations = DEVIATIONS

    def __init__(self, **options: str) -> None:
        super().__init__(**options)
        # its regions are files in /tmp: lseek stops at that file system's limit, not shmem's
        self.max_file_offset = tmp_max_offset()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        reason = cls._host_reason()
        if reason is not None:
            return reason
        if not (INCLUDE / "cutils" / "ashmem.h").is_file() or not (_library_dir() / "libcutils.so").exists():
            return (f"Debian's host libcutils is not installed ({INCLUDE}/cutils/ashmem.h, "
                    f"{_library_dir()}/libcutils.so): apt-get install android-libcutils-dev")
        return None

    def library_path(self) -> Path:
        libdir = _library_dir()
        version = _version().replace("\\", "").replace('"', "")
        return build_library(SOURCE, cflags=(f"-I{INCLUDE}", f'-DLIBCUTILS_VERSION="{version}"'),
                             libs=(f"-L{libdir}", f"-Wl,-rpath,{libdir}", "-lcutils"))
