"""Regions: creation, names, size and the prot mask.

Rules (C driver = drivers/staging/android/ashmem.c, Linux 5.10; LC = libcutils ashmem-dev.cpp;
SHIM = mm/memfd-ashmem-shim.c; K510-OBS = observed on Debian 5.10.0-46):

- A region is created by `ashmem_create_region(name, size)` (LC): open + SET_NAME + SET_SIZE on
  /dev/ashmem, or memfd_create(MFD_CLOEXEC|MFD_ALLOW_SEALING) + ftruncate + GROW|SHRINK seals.
  Either way the fd is the lowest free one and has FD_CLOEXEC.
- Every open("/dev/ashmem") is a new region: no name, size 0, mask READ|WRITE|EXEC (ashmem_open).
- Names are C strings: the kernel copies up to the NUL (strncpy_from_user). The C driver keeps at
  most 255 bytes and silently drops the rest; memfd_create rejects names over 249 bytes.
  An empty name resets to the default, which GET_NAME shows as "dev/ashmem".
- Once the region is materialized (first successful mmap; memfd: at birth) SET_NAME and SET_SIZE
  fail with EINVAL. SET_NAME copies the name before it looks, so a bad pointer is EFAULT even then.
- SET_SIZE accepts any value; GET_SIZE returns it as a `long`. The size is the caller's `size_t`
  (ashmem_create_region's, SET_SIZE's unsigned long argument): a 32-bit process passes it cut to
  32 bits, and the driver sees the cut value (compat_ashmem_ioctl translates only the number).
  So does the mask of SET_PROT_MASK.
- An ioctl request the driver does not know is ENOTTY.
- SET_PROT_MASK may only remove bits: a bit not already in the mask, including non-PROT bits,
  is EINVAL. It is global to the region and only affects later mappings. memfd mode can only
  remove WRITE (an F_SEAL_FUTURE_WRITE seal); READ and EXEC stay whatever is asked.
"""

from __future__ import annotations

import errno

from ashcheck.spec.branch import Branch, ebadf, fails
from ashcheck.spec.constants import MAX_ERRNO, MAX_LFS_FILESIZE, PROT_MASK, as_long
from ashcheck.spec.fds import emfile
from ashcheck.spec.ops import (
    CreateRegion,
    GetName,
    GetProtMask,
    GetSize,
    OpenAshmem,
    SetName,
    SetProtMask,
    SetSize,
    UnknownIoctl,
)
from ashcheck.spec.outcome import Outcome, ok
from ashcheck.spec.rules import Rule, declare
from ashcheck.spec.state import Fd, FdKind, Kernel

C = "drivers/staging/android/ashmem.c"
LC = "libcutils ashmem-dev.cpp ashmem_create_region (system/core a3b721a3)"
OBS = "K510-OBS §2 (Debian 5.10.0-46)"
ASHMEM_ONLY = ("ashmem",)
MEMFD_ONLY = ("memfd",)

declare(
    Rule("ashmem.create.fd", "ashmem_create_region returns the lowest free fd, with FD_CLOEXEC set", LC),
    Rule("ashmem.create.name-too-long", "memfd mode: a name longer than 249 bytes makes creation "
         "fail with EINVAL (memfd_create's limit)", "mm/memfd.c memfd_create; " + LC, profiles=MEMFD_ONLY),
    Rule("ashmem.create.size-refused", "memfd mode: a size that ftruncate refuses (the caller's size_t, 2^63 "
         "or more, is a negative off_t) makes creation fail with EINVAL, and the memfd already made is "
         "closed: no fd is left (a name too long and EMFILE come first, from memfd_create)",
         "fs/open.c do_sys_ftruncate (length < 0: EINVAL); " + LC + " memfd_create_region (the unique_fd "
         "closes it on every failure)", profiles=MEMFD_ONLY),
    Rule("ashmem.open.fresh", "open(/dev/ashmem) makes a new region: unnamed, size 0, mask RWX",
         C + " ashmem_open, 5.10", needs=("ashmem-device",), profiles=ASHMEM_ONLY),
    Rule("ashmem.set-name.stores", "SET_NAME before the first mmap stores the name; the last call wins",
         C + " set_name, 5.10; " + OBS, profiles=ASHMEM_ONLY),
    Rule("ashmem.set-name.truncates", "a name longer than 255 bytes is silently truncated to 255",
         C + " set_name (len == ASHMEM_NAME_LEN), 5.10; " + OBS, profiles=ASHMEM_ONLY),
    Rule("ashmem.set-name.c-string", "the name ends at the first NUL byte",
         "strncpy_from_user in " + C + " set_name; memfd_create"),
    Rule("ashmem.set-name.empty-resets", "SET_NAME(\"\") resets the name: GET_NAME says dev/ashmem",
         C + " set_name/get_name, 5.10", profiles=ASHMEM_ONLY),
    Rule("ashmem.set-name.mapped", "SET_NAME after the first mmap fails with EINVAL and keeps the name "
         "(memfd: always, 'as if already mapped')", C + " set_name; SHIM; " + OBS),
    Rule("ashmem.set-name.efault-first", "SET_NAME with a NULL pointer is EFAULT, even once mapped: "
         "the copy happens before the mapped check", C + " set_name, 5.10; " + OBS, profiles=ASHMEM_ONLY),
    Rule("ashmem.get-name.value", "GET_NAME returns the name, or dev/ashmem when none is set "
         "(memfd: the memfd name)", C + " get_name; SHIM get_name"),
    Rule("ashmem.set-size.any", "SET_SIZE before the first mmap accepts any size: 0, unaligned, huge (an "
         "unsigned long: a 32-bit process's size arrives cut to 32 bits)",
         C + " ashmem_ioctl SET_SIZE, compat_ashmem_ioctl, 5.10; " + OBS + "; observed with a 32-bit executor "
         "on Debian 5.10.223", profiles=ASHMEM_ONLY),
    Rule("ashmem.set-size.mapped", "SET_SIZE after the first mmap fails with EINVAL; the size stays "
         "(memfd: always)", C + " ashmem_ioctl SET_SIZE; SHIM; " + OBS),
    Rule("ashmem.get-size.value", "GET_SIZE returns the size; through ioctl(2) it is cut to an int, and "
         "a result in [-4095, -1] reads as that errno (a size of 2^63-1 gives EPERM)",
         C + " ashmem_ioctl GET_SIZE; fs/ioctl.c SYSCALL_DEFINE3(ioctl) keeps it in `int error`, 5.10; "
         "observed on Debian 5.10.223 (2^31 → -2^31, 2^32 → 0); SHIM"),
    Rule("ashmem.set-prot-mask.remove", "SET_PROT_MASK to a subset of the mask succeeds; the mask is "
         "the region's, seen through every fd", C + " set_prot_mask, 5.10; " + OBS, profiles=ASHMEM_ONLY),
    Rule("ashmem.set-prot-mask.add", "SET_PROT_MASK with any bit not in the mask (including non-PROT "
         "bits) fails with EINVAL", C + " set_prot_mask, 5.10; " + OBS, profiles=ASHMEM_ONLY),
    Rule("memfd.set-prot-mask.write-only", "memfd mode: only WRITE can be removed (F_SEAL_FUTURE_WRITE); "
         "READ and EXEC are silently kept; re-adding WRITE is EINVAL",
         "libcutils ashmem_set_prot_region memfd path; SHIM set_prot_mask", profiles=MEMFD_ONLY),
    Rule("ashmem.ioctl.unknown", "an ioctl request the driver does not define is ENOTTY (memfd: the shim's "
         "default, or a plain memfd's missing ioctl handler)", C + " ashmem_ioctl (ret starts as -ENOTTY), "
         "5.10; SHIM; fs/ioctl.c vfs_ioctl; K510-OBS §2 (_IO(0x77, 11): ENOTTY)"),
    Rule("ashmem.get-prot-mask.value", "GET_PROT_MASK returns the mask (memfd: READ|EXEC, plus WRITE "
         "unless write-sealed)", C + " ashmem_ioctl GET_PROT_MASK; SHIM"),
)


def _c_string(name: bytes) -> bytes:
    return name.split(b"\0", 1)[0]


def create_region(k: Kernel, op: CreateRegion) -> list[Branch]:
    name = _c_string(op.name)
    profile = k.profile
    if len(name) > profile.name_max and profile.name_too_long_rejected:
        return fails("ashmem.create.name-too-long", errno.EINVAL)
    size = k.ulong(op.size)
    if profile.regular_file and size > MAX_LFS_FILESIZE and emfile(k, op.proc) is None:
        return fails("ashmem.create.size-refused", errno.EINVAL)  # memfd_create's fd is taken first
    # The name's fate shows only later (GET_NAME, maps): creation confirms the fd it returns.
    return _new_fd(k, op.proc, "ashmem.create.fd", name[:profile.name_max], size, profile.born_materialized)


def open_ashmem(k: Kernel, op: OpenAshmem) -> list[Branch]:
    return _new_fd(k, op.proc, "ashmem.open.fresh", b"", 0, materialized=False)


def _new_fd(k: Kernel, proc: int, rule: str, name: bytes, size: int, materialized: bool) -> list[Branch]:
    if (full := emfile(k, proc)) is not None:  # the fd is taken before the file is made
        return full
    fd = k.procs[proc].lowest_free()

    def effect(_: Outcome) -> None:
        region = k.new_region(name, size, PROT_MASK, materialized)
        k.install(proc, Fd(FdKind.REGION, region.rid, cloexec=True, origin="create"))

    return [Branch(rule, ok(fd), effect)]


def set_name(k: Kernel, op: SetName) -> list[Branch]:
    region = k.region_of(op.proc, op.fd)
    if region is None:
        return ebadf()
    if op.name is None and not k.profile.born_materialized:  # the shim says EINVAL without reading it
        return fails("ashmem.set-name.efault-first", errno.EFAULT)
    if region.materialized or op.name is None:  # a NULL name gets here only in memfd mode
        return fails("ashmem.set-name.mapped", errno.EINVAL)
    name = _c_string(op.name)
    rule = ("ashmem.set-name.truncates" if len(name) > k.profile.name_max
            else "ashmem.set-name.c-string" if b"\0" in op.name
            else "ashmem.set-name.empty-resets" if not name else "ashmem.set-name.stores")

    def effect(_: Outcome) -> None:
        region.name = name[:k.profile.name_max]

    return [Branch(rule, ok(0), effect)]


def get_name(k: Kernel, op: GetName) -> list[Branch]:
    region = k.region_of(op.proc, op.fd)
    if region is None:
        return ebadf()
    shown = region.name or k.profile.default_name or b""
    return [Branch("ashmem.get-name.value", ok(shown))]


def set_size(k: Kernel, op: SetSize) -> list[Branch]:
    region = k.region_of(op.proc, op.fd)
    if region is None:
        return ebadf()
    if region.materialized:
        return fails("ashmem.set-size.mapped", errno.EINVAL)

    def effect(_: Outcome) -> None:
        region.size = k.ulong(op.size)

    return [Branch("ashmem.set-size.any", ok(0), effect)]


def get_size(k: Kernel, op: GetSize) -> list[Branch]:
    region = k.region_of(op.proc, op.fd)
    if region is None:
        return ebadf()
    if not k.profile.ioctl_returns_int:
        return [Branch("ashmem.get-size.value", ok(as_long(region.size, k.long_bits)))]
    value = as_long(region.size, 32)
    if -MAX_ERRNO <= value < 0:  # the C library takes it for an error code
        return fails("ashmem.get-size.value", -value)
    return [Branch("ashmem.get-size.value", ok(value))]


def set_prot_mask(k: Kernel, op: SetProtMask) -> list[Branch]:
    region = k.region_of(op.proc, op.fd)
    if region is None:
        return ebadf()
    profile = k.profile
    prot = (k.ulong(op.prot) & ~profile.prot_ignored) | profile.prot_unremovable
    memfd_style = bool(profile.prot_unremovable)
    if region.prot_mask & prot != prot:
        return fails("memfd.set-prot-mask.write-only" if memfd_style else "ashmem.set-prot-mask.add",
                     errno.EINVAL)

    def effect(_: Outcome) -> None:
        region.prot_mask = prot

    rule = "memfd.set-prot-mask.write-only" if memfd_style else "ashmem.set-prot-mask.remove"
    return [Branch(rule, ok(0), effect)]


def get_prot_mask(k: Kernel, op: GetProtMask) -> list[Branch]:
    region = k.region_of(op.proc, op.fd)
    if region is None:
        return ebadf()
    return [Branch("ashmem.get-prot-mask.value", ok(region.prot_mask))]


def unknown_ioctl(k: Kernel, op: UnknownIoctl) -> list[Branch]:
    if k.region_of(op.proc, op.fd) is None:
        return ebadf()
    return fails("ashmem.ioctl.unknown", errno.ENOTTY)
