"""Just enough ELF reading for the VM: is busybox static, can qemu boot this vmlinux by PVH, and
what does a kernel module depend on.

Only 64-bit little-endian ELF is read: the guest is x86_64, and so are its kernel, its modules and
its busybox. Anything else raises ValueError, which callers turn into a VmError naming the file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

MAGIC = b"\x7fELF"
EM_X86_64 = 62
PT_INTERP = 3
PT_NOTE = 4
# The note by which a kernel announces its 32-bit PVH entry point; qemu's -kernel needs it to boot an
# ELF vmlinux directly (include/xen/interface/elfnote.h).
XEN_ELFNOTE_PHYS32_ENTRY = 18


def is_elf(data: bytes) -> bool:
    return data[:4] == MAGIC


class Elf:
    """The headers of one ELF64 LE image held in memory."""

    def __init__(self, data: bytes) -> None:
        if not is_elf(data):
            raise ValueError("not an ELF file")
        if data[4] != 2 or data[5] != 1:
            raise ValueError("not a 64-bit little-endian ELF file")
        self.data = data
        (self.machine,) = struct.unpack_from("<H", data, 18)
        self._phoff, self._shoff = struct.unpack_from("<QQ", data, 32)
        self._phentsize, self._phnum, self._shentsize, self._shnum, self._shstrndx = struct.unpack_from(
            "<HHHHH", data, 54)

    def segments(self) -> Iterator[tuple[int, int, int]]:
        """(p_type, file offset, file size) of each program header."""
        for i in range(self._phnum):
            base = self._phoff + i * self._phentsize
            p_type, _flags, offset, _vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", self.data, base)
            yield p_type, offset, filesz

    def section(self, wanted: str) -> bytes | None:
        """The contents of the section named `wanted`, or None."""
        if not self._shnum or self._shstrndx >= self._shnum:
            return None
        headers = [struct.unpack_from("<IIQQQQ", self.data, self._shoff + i * self._shentsize)
                   for i in range(self._shnum)]
        _n, _t, _f, _a, str_off, str_size = headers[self._shstrndx]
        names = self.data[str_off:str_off + str_size]
        for name_off, _type, _flags, _addr, offset, size in headers:
            end = names.find(b"\0", name_off)
            if names[name_off:end].decode(errors="replace") == wanted:
                return self.data[offset:offset + size]
        return None


def is_static(data: bytes) -> bool:
    """True for an executable with no program interpreter (static, or static-pie)."""
    return not any(p_type == PT_INTERP for p_type, _, _ in Elf(data).segments())


def has_pvh_note(data: bytes) -> bool:
    """True if the image carries XEN_ELFNOTE_PHYS32_ENTRY, so qemu can boot it with -kernel."""
    elf = Elf(data)
    for p_type, offset, size in elf.segments():
        if p_type != PT_NOTE:
            continue
        pos, end = offset, offset + size
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", data, pos)
            name = data[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and n_type == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            # name and descriptor are each padded to 4 bytes
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def modinfo(data: bytes) -> dict[str, str]:
    """The `key=value` strings of a kernel module's .modinfo section (first value of each key)."""
    raw = Elf(data).section(".modinfo")
    if raw is None:
        raise ValueError("no .modinfo section: not a kernel module")
    info: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, value)
    return info
