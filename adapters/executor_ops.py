"""Operations → executor protocol lines, and replies → outcomes, for every executor-backed
adapter (memfd on this host, kernel in a VM, adb on a device).

Two region backends:
- "ashmem": the raw /dev/ashmem ioctls (open + SET_NAME + SET_SIZE for creation, as libcutils'
  ashmem mode does);
- "memfd": libcutils' memfd mode (memfd_create + ftruncate + GROW|SHRINK seals), with the ioctls
  libcutils has no call for answered as the kernel's memfd-ashmem shim answers them
  (mm/memfd-ashmem-shim.c): SET_NAME/SET_SIZE EINVAL, GET_NAME the memfd name, GET_SIZE the file
  size, SET_PROT_MASK a F_SEAL_FUTURE_WRITE seal, pinning a no-op. On a kernel without the shim
  (this host), those answers are computed here from fstat/fcntl/readlink, one call each.
"""

from __future__ import annotations

import errno
import stat
import struct
from collections.abc import Callable
from typing import Any

from ashcheck.adapters.reply import Reply, hexed, unhex
from ashcheck.spec import ops as o
from ashcheck.spec.constants import (
    ASHMEM_IS_PINNED,
    ASHMEM_NOT_PURGED,
    F_ADD_SEALS,
    F_GET_SEALS,
    F_SEAL_FUTURE_WRITE,
    F_SEAL_WRITE,
    FD_CLOEXEC,
    O_CLOEXEC,
    O_RDWR,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    AshmemIoctl,
    abi_number,
    as_long,
)
from ashcheck.spec.outcome import SIGBUS, SIGSEGV, Outcome, emulated, err, fault, indeterminate, ok
from ashcheck.spec.pinning import NO_OP_ANSWER

Send = Callable[[int, str], Reply]  # (proc, request line) → reply


def outcome(reply: Reply, value: Callable[[tuple[str, ...]], Any] = lambda f: None) -> Outcome:
    """The outcome a reply stands for; `value` turns the fields of an `ok` into the value."""
    if reply.status == "ok":
        return ok(value(reply.fields))
    if reply.status == "err":
        return err(int(reply.fields[0]))
    if reply.status == "fault":
        return fault(int(reply.fields[0]))
    raise ProtocolError(f"executor refused a request: {reply.status} {' '.join(reply.fields)}")


class ProtocolError(Exception):
    """The executor called our request malformed: a harness bug, reported as such."""


def first_int(fields: tuple[str, ...]) -> int:
    return int(fields[0], 0)


def ints(fields: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(int(f, 0) for f in fields)


def _ioctl(send: Send, proc: int, fd: int, cmd: int, arg: str) -> Outcome:
    return outcome(send(proc, f"ioctl {fd} {int(cmd)} {arg}"), first_int)


def _pin_arg(offset: int, length: int) -> str:
    return "in " + struct.pack("<II", offset & 0xFFFFFFFF, length & 0xFFFFFFFF).hex()


class AshmemRegions:
    """Regions through the real /dev/ashmem driver, with the request numbers of the executor's ABI
    (`long_bits` 32: the compat numbers a 32-bit process sends)."""

    def __init__(self, device: bytes = b"/dev/ashmem", long_bits: int = 64) -> None:
        self.device = device
        self.long_bits = long_bits

    def perform(self, send: Send, op: o.Op) -> Outcome:
        p = op.proc
        match op:
            case o.CreateRegion(name=name, size=size):
                return outcome(send(p, f"ashmem_region {hexed(self.device)} {hexed(name)} {size}"), first_int)
            case o.OpenAshmem():
                return outcome(send(p, f"open {hexed(self.device)} {O_RDWR | O_CLOEXEC}"), first_int)
            case o.SetName(fd=fd, name=None):
                return _ioctl(send, p, fd, AshmemIoctl.SET_NAME, "null")
            case o.SetName(fd=fd, name=bytes() as name):
                return _ioctl(send, p, fd, AshmemIoctl.SET_NAME, "in " + (name + b"\0").hex())
            case o.GetName(fd=fd):
                reply = send(p, f"ioctl {fd} {int(AshmemIoctl.GET_NAME)} inout {'00' * 256}")
                return outcome(reply, lambda f: unhex(f[1]).split(b"\0", 1)[0])
            case o.SetSize(fd=fd, size=size):
                return _ioctl(send, p, fd, abi_number(AshmemIoctl.SET_SIZE, self.long_bits), f"int {size}")
            case o.GetSize(fd=fd):
                return _ioctl(send, p, fd, AshmemIoctl.GET_SIZE, "int 0")
            case o.SetProtMask(fd=fd, prot=prot):
                return _ioctl(send, p, fd, abi_number(AshmemIoctl.SET_PROT_MASK, self.long_bits), f"int {prot}")
            case o.GetProtMask(fd=fd):
                return _ioctl(send, p, fd, AshmemIoctl.GET_PROT_MASK, "int 0")
            case o.Pin(fd=fd, offset=off, length=n):
                return _ioctl(send, p, fd, AshmemIoctl.PIN, _pin_arg(off, n))
            case o.Unpin(fd=fd, offset=off, length=n):
                return _ioctl(send, p, fd, AshmemIoctl.UNPIN, _pin_arg(off, n))
            case o.GetPinStatus(fd=fd, offset=off, length=n):
                return _ioctl(send, p, fd, AshmemIoctl.GET_PIN_STATUS, _pin_arg(off, n))
            case o.PurgeAllCaches(fd=fd):
                return _ioctl(send, p, fd, AshmemIoctl.PURGE_ALL_CACHES, "int 0")
            case o.IoctlNullArg(fd=fd, cmd=cmd):
                return _ioctl(send, p, fd, AshmemIoctl[cmd], "null")
        raise TypeError(f"not a region operation: {op}")


def memfd_prot_mask(seals: int) -> int:
    """SHIM get_prot_mask: READ|EXEC always, WRITE unless a write seal is set."""
    return PROT_READ | PROT_EXEC | (0 if seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE) else PROT_WRITE)


class MemfdRegions:
    """Regions as libcutils' memfd mode makes them, ioctls answered as the memfd-ashmem shim does.
    Only creation is a call of the implementation; every other answer here is computed from what
    fstat, fcntl and readlink say, so it is marked emulated. GET_SIZE is the shim's `long`, as wide
    as the caller's (`long_bits`): a 32-bit caller's 2 GiB is -2^31."""

    def __init__(self, long_bits: int = 64) -> None:
        self.long_bits = long_bits

    def perform(self, send: Send, op: o.Op) -> Outcome:
        if isinstance(op, o.CreateRegion):
            return outcome(send(op.proc, f"memfd_region {hexed(op.name)} {op.size}"), first_int)
        return emulated(self._shim(send, op))

    def _shim(self, send: Send, op: o.Op) -> Outcome:
        p = op.proc
        match op:
            case o.GetSize(fd=fd):
                return self._regular(send, p, fd, lambda st: ok(as_long(st[1], self.long_bits)))
            case o.GetName(fd=fd):
                return self._regular(send, p, fd, lambda _: self._name(send, p, fd))
            case o.SetName(fd=fd) | o.SetSize(fd=fd):
                return self._regular(send, p, fd, lambda _: err(errno.EINVAL))
            case o.GetProtMask(fd=fd):
                return self._seals(send, p, fd, lambda s: ok(memfd_prot_mask(s)))
            case o.SetProtMask(fd=fd, prot=prot):
                return self._seals(send, p, fd, lambda s: self._set_prot(send, p, fd, prot, s))
            case o.Pin(fd=fd):
                return self._regular(send, p, fd, lambda _: ok(ASHMEM_NOT_PURGED))
            case o.Unpin(fd=fd):
                return self._regular(send, p, fd, lambda _: ok(0))
            case o.GetPinStatus(fd=fd):
                return self._regular(send, p, fd, lambda _: ok(ASHMEM_IS_PINNED))
            case o.PurgeAllCaches(fd=fd):
                return self._regular(send, p, fd, lambda _: self._purge(send, p))
            case o.IoctlNullArg(fd=fd, cmd=cmd):
                return self._regular(send, p, fd, lambda _: ok(NO_OP_ANSWER[cmd]))
        raise TypeError(f"not a region operation in memfd mode: {op}")

    @staticmethod
    def _regular(send: Send, p: int, fd: int, then: Callable[[tuple[int, ...]], Outcome]) -> Outcome:
        """Only a memfd answers; an O_PATH fd (here: a directory) is EBADF like any ioctl on it."""
        reply = send(p, f"fstat {fd}")
        if reply.status != "ok":
            return outcome(reply)
        mode, size = int(reply.fields[0]), int(reply.fields[1])
        return then((mode, size)) if stat.S_ISREG(mode) else err(errno.EBADF)

    def _seals(self, send: Send, p: int, fd: int, then: Callable[[int], Outcome]) -> Outcome:
        def with_seals(_: tuple[int, ...]) -> Outcome:
            seals = outcome(send(p, f"fcntl {fd} {F_GET_SEALS} 0"), first_int)
            return then(seals.value) if seals.succeeded else seals
        return self._regular(send, p, fd, with_seals)

    @staticmethod
    def _set_prot(send: Send, p: int, fd: int, prot: int, seals: int) -> Outcome:
        """libcutils ashmem_set_prot_region, memfd path: only WRITE can be removed."""
        if prot & PROT_WRITE:
            return err(errno.EINVAL) if seals & F_SEAL_FUTURE_WRITE else ok(0)
        added = outcome(send(p, f"fcntl {fd} {F_ADD_SEALS} {F_SEAL_FUTURE_WRITE}"), first_int)
        return ok(0) if added.succeeded else added

    @staticmethod
    def _purge(send: Send, p: int) -> Outcome:
        """The shim answers 0 with CAP_SYS_ADMIN, else EPERM; executors drop it with root."""
        uid = outcome(send(p, "info"), lambda f: int(f[1]))
        return uid if not uid.succeeded else ok(0) if uid.value == 0 else err(errno.EPERM)

    @staticmethod
    def _name(send: Send, p: int, fd: int) -> Outcome:
        link = outcome(send(p, f"readlink {hexed(f'/proc/self/fd/{fd}'.encode())}"), lambda f: unhex(f[0]))
        path: bytes = link.value
        if path.startswith(b"/memfd:") and path.endswith(b" (deleted)"):
            return ok(path[len(b"/memfd:"):-len(b" (deleted)")])
        return ok(path)


ANSWERS: dict[str, Callable[[tuple[str, ...]], Any]] = {  # spec/ops.py ANSWERS, as functions
    "none": lambda f: None, "int": first_int, "ints": ints, "bytes": lambda f: unhex(f[0]),
    "cloexec": lambda f: int(f[0]) & FD_CLOEXEC, "zero": lambda f: 0,
}


def common(send: Send, op: o.Op) -> Outcome | None:
    """Operations whose request does not depend on the region backend (their `wire` declares it);
    None if `op` is not one of them. UnknownIoctl is observed in both modes: a memfd has no ioctl
    handler to emulate."""
    if op.wire in (o.REGIONS, o.ADAPTER):
        return None
    return outcome(send(op.proc, op.request()), ANSWERS[op.answer])


__all__ = ["SIGBUS", "SIGSEGV", "AshmemRegions", "MemfdRegions", "ProtocolError", "common", "indeterminate"]
