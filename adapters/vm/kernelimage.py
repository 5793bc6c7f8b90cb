"""From a bzImage to the uncompressed ELF vmlinux that qemu boots by PVH.

Why: qemu loads an ELF vmlinux that carries the PVH note straight into guest memory and jumps to
its 32-bit entry point, skipping the real-mode setup code and the in-guest decompression of a
bzImage. kernel-observed.md measured 7.3 s → 3.7 s for that alone under TCG.

How (the job of the kernel's scripts/extract-vmlinux, done precisely instead of by scanning): the
bzImage setup header (boot protocol ≥ 2.08, Documentation/x86/boot.rst) says where the compressed
payload starts and how long it is; the payload is the compressed vmlinux, recognized by its magic.
"""

from __future__ import annotations

import bz2
import lzma
import shutil
import struct
import subprocess
import zlib

from ashcheck.adapters.vm import elf

SETUP_SECTS = 0x1F1
HEADER_MAGIC = (0x202, b"HdrS")
VERSION = 0x206
PAYLOAD = 0x248  # payload_offset, payload_length (u32 each), from boot protocol 2.08


class ImageError(ValueError):
    """The file is neither an ELF vmlinux nor a bzImage whose payload can be decompressed."""


def _xz(payload: bytes) -> bytes:
    # The kernel appends the uncompressed size after the stream: the decompressor object stops at
    # the end of the stream and leaves those bytes aside.
    return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(payload)


def _lzma(payload: bytes) -> bytes:
    return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(payload)


def _gzip(payload: bytes) -> bytes:
    return zlib.decompressobj(wbits=31).decompress(payload)


def _bzip2(payload: bytes) -> bytes:
    return bz2.BZ2Decompressor().decompress(payload)


def _zstd(payload: bytes) -> bytes:
    # No zstd in the standard library before 3.14: use the zstd command. The CLI rejects the
    # 4-byte size the kernel appends, so it gets the frame without it.
    tool = shutil.which("zstd")
    if tool is None:
        raise ImageError("the kernel payload is zstd-compressed: install the `zstd` package")
    done = subprocess.run([tool, "-dcq"], input=payload[:-4], capture_output=True, check=False)
    if done.returncode != 0:
        raise ImageError(f"zstd could not decompress the payload: {done.stderr.decode(errors='replace')}")
    return done.stdout


DECOMPRESSORS = (
    (b"\xfd7zXZ\x00", "xz", _xz),
    (b"\x1f\x8b", "gzip", _gzip),
    (b"\x28\xb5\x2f\xfd", "zstd", _zstd),
    (b"BZh", "bzip2", _bzip2),
    (b"\x5d\x00\x00", "lzma", _lzma),
)


def payload_of(bzimage: bytes) -> bytes:
    """The compressed vmlinux inside a bzImage, located by its setup header."""
    offset, magic = HEADER_MAGIC
    if len(bzimage) < 0x250 or bzimage[offset:offset + len(magic)] != magic:
        raise ImageError("no bzImage setup header (HdrS) found")
    if struct.unpack_from("<H", bzimage, VERSION)[0] < 0x208:
        raise ImageError("boot protocol older than 2.08: the payload is not described")
    setup_sects = bzimage[SETUP_SECTS] or 4  # 0 means 4, for historical reasons
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, PAYLOAD)
    start = (setup_sects + 1) * 512 + payload_offset
    return bzimage[start:start + payload_length]


def vmlinux_from(image: bytes) -> bytes:
    """The ELF vmlinux in `image`: returned as is if it already is ELF, else decompressed from the
    bzImage payload. Raises ImageError naming the compression when it cannot."""
    if elf.is_elf(image):
        return image
    payload = payload_of(image)
    for magic, name, decompress in DECOMPRESSORS:
        if payload.startswith(magic):
            try:
                vmlinux = decompress(payload)
            except (lzma.LZMAError, zlib.error, OSError, EOFError) as exc:
                raise ImageError(f"the {name} payload does not decompress: {exc}") from exc
            if not elf.is_elf(vmlinux):
                raise ImageError(f"the {name} payload decompressed to something that is not ELF")
            return vmlinux
    raise ImageError(f"unsupported payload compression (starts with {payload[:6].hex()}); "
                     "give an uncompressed vmlinux with --kernel instead")
