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

import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

from ashcheck.adapters.native import NativeAdapter, build_library

SOURCE = Path(__file__).with_name("libcutils_host.c")
INCLUDE = Path("/usr/include/android")  # android-libcutils-dev: <cutils/ashmem.h>
PACKAGE = "android-libcutils"


def _multiarch() -> str:
    """Debian's multiarch triplet of this host's compiler (x86_64-linux-gnu, aarch64-linux-gnu…)."""
    import platform

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


# Why the host library differs from the driver, from ashmem-host.cpp (platform-tools-29.0.6). A region
# is `mkstemp("/tmp/android-ashmem-<pid>-XXXXXXXXX")`, unlinked, then `ftruncate(fd, size)`: a plain
# file, so the ashmem ioctls on it are ENOTTY, and file I/O and mmap follow the file system's rules.
_FILE = "a region is a plain temp file (mkstemp + unlink + ftruncate in ashmem_create_region)"
_NO_NAME = "ashmem_create_region(const char* /*ignored*/, …) drops the name and there is no name call: "
_NO_IOCTL = "; libcutils has no call for it, and the ioctl on a plain file is ENOTTY"
_PROT_NOOP = "ashmem_set_prot_region(int /*fd*/, int /*prot*/) is `return 0`: no mask is kept or enforced"
_PIN_NOOP = ("ashmem_pin_region/ashmem_unpin_region(int /*fd*/, size_t /*offset*/, size_t /*len*/) are `return 0`: "
             "no argument is checked")
DEVIATIONS = {
    "ashmem.create.fd": "ashmem_create_region opens the region with mkstemp(), which does not set O_CLOEXEC",
    "ashmem.maps.name": _NO_NAME + "maps shows the temp file, /tmp/android-ashmem-<pid>-XXXXXXXXX (deleted)",
    "ashmem.get-name.value": _NO_NAME + "GET_NAME" + _NO_IOCTL,
    "ashmem.set-name.c-string": _NO_NAME + "SET_NAME" + _NO_IOCTL,
    "ashmem.set-name.efault-first": _NO_NAME + "SET_NAME" + _NO_IOCTL,
    "ashmem.set-name.empty-resets": _NO_NAME + "SET_NAME" + _NO_IOCTL,
    "ashmem.set-name.mapped": _NO_NAME + "SET_NAME" + _NO_IOCTL,
    "ashmem.set-name.stores": _NO_NAME + "SET_NAME" + _NO_IOCTL,
    "ashmem.set-name.truncates": _NO_NAME + "SET_NAME" + _NO_IOCTL,
    "ashmem.set-size.any": "the size is set once by ashmem_create_region's ftruncate; SET_SIZE" + _NO_IOCTL,
    "ashmem.set-size.mapped": "the size is set once by ashmem_create_region's ftruncate; SET_SIZE" + _NO_IOCTL,
    "ashmem.get-prot-mask.value": _PROT_NOOP + "; GET_PROT_MASK" + _NO_IOCTL,
    "ashmem.set-prot-mask.add": _PROT_NOOP + ": adding bits succeeds",
    "ashmem.mmap.prot-outside-mask": _PROT_NOOP + ": mmap is never refused for its prot",
    "ashmem.mprotect.beyond-mask": _PROT_NOOP + ": mappings keep every VM_MAY* bit",
    "ashmem.pin.unaligned": _PIN_NOOP,
    "ashmem.pin.overflow": _PIN_NOOP,
    "ashmem.pin.beyond-size": _PIN_NOOP + "; GET_PIN_STATUS" + _NO_IOCTL,
    "ashmem.pin.not-mapped": _PIN_NOOP + "; GET_PIN_STATUS" + _NO_IOCTL,
    "ashmem.get-pin-status.value": "nothing is ever unpinned (" + _PIN_NOOP[:40] + "…); GET_PIN_STATUS" + _NO_IOCTL,
    "ashmem.pin.null-arg": "there is no pin call taking a pointer; PIN/UNPIN/GET_PIN_STATUS" + _NO_IOCTL,
    "ashmem.purge.count": "nothing is ever unpinned or purged; PURGE_ALL_CACHES" + _NO_IOCTL,
    "ashmem.purge.eperm": "nothing is ever purged; PURGE_ALL_CACHES" + _NO_IOCTL + ", privileged or not",
    "fd.ebadf": _PIN_NOOP + ", not even the fd: on a closed fd they return 0",
    "ashmem.read.not-mapped": _FILE + ": read() works before any mmap",
    "ashmem.lseek.not-mapped": _FILE + ": lseek() works before any mmap",
    "ashmem.lseek.size-zero": _FILE + ": lseek() works on an empty file",
    "ashmem.write.einval": _FILE + ": write() stores data",
    "ashmem.mmap.too-long": _FILE + ": mmap may pass its end (pages past EOF are SIGBUS)",
    "ashmem.mmap.size-zero": _FILE + ": an empty file can be mapped (every page is past EOF: SIGBUS)",
    "ashmem.mmap.private-anonymous": _FILE + ": MAP_PRIVATE is a copy-on-write view of its data",
}


class LibcutilsHostAdapter(NativeAdapter):
    name: ClassVar[str] = "libcutils-host"
    profile: ClassVar[str] = "ashmem"
    deviations = DEVIATIONS

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
