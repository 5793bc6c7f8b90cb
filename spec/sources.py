"""Where the spec's facts come from: every source a rule cites, as a full citation.

A rule's `source` is short ("drivers/staging/android/ashmem.c ashmem_mmap, 5.10; K510-OBS §2 (Debian
5.10.0-46)"): parts separated by ';', each naming a place in one body of text (a driver at a version,
a library at a commit, an observation of a real kernel). `cite` resolves each part to one entry of
the table below, so that a report can print, under its rules, what "K510-OBS" or "SHIM" is and
where to read it. A self-test resolves every part of every rule's source: a new tag, or a source
written in a new way, must be added here.

The labels of the research notes (semantics/ashmem.md §0, semantics/binder-fd.md §0: K-5x, ACK-C,
RUST, LC, SHIM, DEB, C-5.10, R-6.18, …) are kept as tags, with the same repository and commit, so
that a rule can cite them by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    tag: str        # the short name a rule's source uses (or a name given here to a form it uses)
    title: str      # what it is
    where: str      # where to read it: repository @ commit and path, a URL, or a document
    pattern: str    # regular expression: a part of a rule's source that cites this one

    def citation(self) -> str:
        return f"{self.title}. {self.where}"


def _tag(name: str) -> str:
    return rf"(?<![\w-]){re.escape(name)}(?![\w-])"


ASHMEM_NOTES = "ashcheck research notes, semantics/ashmem.md"
BINDER_NOTES = "ashcheck research notes, semantics/binder-fd.md"

# First match wins: the specific tags before the forms that name a file of a source tree.
SOURCES: tuple[Source, ...] = (
    Source("K510-OBS", "Observed on Debian bullseye's Linux 5.10.0-46-amd64 with ashmem_linux and binder_linux, "
           "driven from Python inside a qemu guest: §2 the ashmem ioctls, mmap and fd calls, §3 fd transfer "
           "over binder (82 ashmem checks, 0 differences from the driver source)",
           "ashcheck research notes, semantics/kernel-observed.md", _tag("K510-OBS")),
    Source("K510-223", "Observed by ashcheck's kernel adapter on Debian bullseye's linux-image 5.10.0-32-amd64 "
           "(package 5.10.223-1) with ashmem_linux and binder_linux in a qemu guest (`ashcheck run --adapter "
           "kernel`), from 64-bit and from 32-bit (`abi=x86`) processes", "README.md, sections 'Confirmed on the "
           "real 5.10 driver' and '32-bit processes and the Android binaries'",
           r"observed (with a 32-bit executor )?on Debian 5\.10\.223"),
    Source("SHIM", "The 2025 memfd-ashmem shim of the Android common kernel (Isaac J. Manjarres): the ashmem "
           "ioctls on memfds", "BayLibre/android_kernel_common @ 23141235691baa488c80c0880a80b485a733307c, "
           "mm/memfd-ashmem-shim.c and mm/memfd-ashmem-shim.h (label SHIM in " + ASHMEM_NOTES + " §0, §6.3)",
           _tag("SHIM")),
    Source("LC", "libcutils, AOSP system/core (ashmem-dev.cpp: ashmem_create_region, ashmem_set_prot_region, "
           "ashmem_pin_region; memfd mode and /dev/ashmem)",
           "aosp-mirror/platform_system_core @ a3b721a32242006b59cb12bd62c9133632af3a2d (2025-03-26), "
           "libcutils/ashmem-dev.cpp, include/cutils/ashmem.h (label LC in " + ASHMEM_NOTES + " §0, §6)",
           _tag("LC") + r"|libcutils"),
    Source("DEB", "Debian bookworm's host libcutils (android-libcutils 1:29.0.6-28, Android 10 era, "
           "libcutils/ashmem-host.cpp)", "https://packages.debian.org/bookworm/android-libcutils "
           "(label DEB in " + ASHMEM_NOTES + " §0, §6.2)", _tag("DEB")),
    Source("CTS", "Android CTS: SharedMemoryTest and MemoryFileTest",
           "msft-mirror-aosp/platform.cts @ ba953098 / dd0f54d2, tests/tests/os/src/android/os/cts/"
           "SharedMemoryTest.java, MemoryFileTest.java (label CTS in " + ASHMEM_NOTES + " §0)", _tag("CTS")),
    Source("RUST", "The Rust ashmem driver of the Android common kernel (module `ashmem`)",
           "BayLibre/android_kernel_common @ 1668dc5205e780e1607710b558da770adf4fa7d7, "
           "drivers/staging/android/ashmem.rs, ashmem_range.rs (label RUST in " + ASHMEM_NOTES + " §0, §9)",
           _tag("RUST")),
    Source("ACK-C", "The C ashmem driver of the Android common kernel, 6.1+ era (ASHMEM_GET_FILE_ID, "
           "is_ashmem_file)", "BayLibre/android_kernel_common @ 0461ef62f32993b617fcbbf74a30f6bfafafcaea, "
           "drivers/staging/android/ashmem.c (label ACK-C in " + ASHMEM_NOTES + " §0)", _tag("ACK-C")),
    Source("K-4x", "The staging ashmem driver, v3.12–v4.16 era (no mmap length check)",
           "torvalds/linux @ 002397c4c72d5082a10a4a81946966b5bb3a200f, drivers/staging/android/ashmem.c "
           "(label K-4x in " + ASHMEM_NOTES + " §0)", _tag("K-4x")),
    Source("ashmem.md", "Research notes of the ashcheck project: Android ashmem, exact semantics, with a source "
           "for every row ('probed' rows were run on Linux 6.18, x86_64, 4 KiB pages)", ASHMEM_NOTES,
           r"ashmem\.md"),
    Source("C-5.10", "The binder driver of vanilla Linux 5.10.89 (label C-5.10 in " + BINDER_NOTES + " §0)",
           "Prashant446/linux-5.10.89 @ 871a80bc5, drivers/android/binder.c",
           _tag("C-5.10") + r"|drivers/android/binder\.c|\bbinder_\w+"),
    Source("C-6.18", "The C binder driver of the 6.18 development tree (label C-6.18 in " + BINDER_NOTES + " §0)",
           "torvalds/linux @ 63740349eba78f242bcbf60d5244d7f2b2600853, drivers/android/binder.c", _tag("C-6.18")),
    Source("R-6.18", "Rust Binder, merged in Linux 6.18 by eafedbc7c050 (label R-6.18 in " + BINDER_NOTES + " §0)",
           "torvalds/linux, drivers/android/binder/", _tag("R-6.18")),
    Source("ASHMEM-5.10", "The staging ashmem driver as in Linux 5.10, the C driver the `ashmem` profile "
           "describes (the function named; label K-5x in " + ASHMEM_NOTES + " §0)",
           "torvalds/linux @ a4307700608e43dcf9b8abf1ee74f68227e9c61a, drivers/staging/android/ashmem.c",
           _tag("K-5x") + r"|drivers/staging/android/ashmem\.c|\bashmem_\w+"),
    Source("LINUX-5.10", "Linux 5.10: the file and function named (mm/, fs/, kernel/, arch/; memfd_create is "
           "mm/memfd.c)",
           "https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git/tree/?h=linux-5.10.y",
           r"^(mm|fs|kernel|arch)\b|^memfd_create\b"),
    Source("MAN", "Linux man-pages: fcntl(2) (file seals, F_SEAL_FUTURE_WRITE) and memfd_create(2)",
           "https://man7.org/linux/man-pages/man2/fcntl.2.html, "
           "https://man7.org/linux/man-pages/man2/memfd_create.2.html", r"^man 2\b"),
    Source("LIBC-MMAP", "The C libraries' mmap for 32-bit ABIs: musl src/mman/mmap.c (OFF_MASK: offsets mmap2 "
           "cannot express are EINVAL; a length of PTRDIFF_MAX or more ENOMEM) and bionic libc/bionic/mmap.cpp "
           "mmap64 (a negative offset EINVAL; a length rounding past PTRDIFF_MAX ENOMEM)",
           "git.musl-libc.org/musl src/mman/mmap.c; android.googlesource.com platform/bionic libc/bionic/mmap.cpp",
           r"^(musl src/mman/mmap\.c|bionic libc/bionic/mmap\.cpp)"),
    Source("MEMFD-TEST", "The kernel's memfd selftest, tools/testing/selftests/memfd/memfd_test.c, each "
           "kernel's own version (the test named), run against the same kernels by `ashcheck peers`",
           "Debian's linux-source-5.10 (5.10.223-1), linux-source-6.1 (6.1.176-1), linux-source-6.12 (6.12.117-1); "
           "docs/peers.md", r"^memfd_test\b"),
    Source("HERLIHY-WING", "Herlihy and Wing, Linearizability: a correctness condition for concurrent objects, "
           "ACM TOPLAS 12(3), 1990 (the check: Wing and Gong's search with Lowe's memo, as in Knossos and "
           "Porcupine)", "https://doi.org/10.1145/78969.78972", _tag("HERLIHY-WING")),
    Source("ADAPTER", "ashcheck's adapter contract: what every adapter does for the suite",
           "adapters/base.py, class Adapter", r"^the adapter contract$"),
)

BY_TAG = {s.tag: s for s in SOURCES}


def parts(source: str) -> list[str]:
    """The parts of a rule's source, in order."""
    return [p.strip() for p in source.split(";") if p.strip()]


def resolve(part: str) -> Source | None:
    """The citation one part of a rule's source refers to, or None if the table has none."""
    return next((s for s in SOURCES if re.search(s.pattern, part)), None)


def cite(source: str) -> list[str]:
    """The tags of the citations a rule's source refers to, in order, once each. Parts that resolve to
    nothing are left out (the self-test keeps there being none)."""
    tags = [s.tag for s in map(resolve, parts(source)) if s is not None]
    return list(dict.fromkeys(tags))
