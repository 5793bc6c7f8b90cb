"""struct ashmem_area (drivers/staging/android/ashmem.c, Linux 5.10): the region that one
open("/dev/ashmem") creates, and that every descriptor of that open file description shares.

Fields and defaults as `ashmem_open` sets them: no name, size 0, prot mask
PROT_READ|PROT_WRITE|PROT_EXEC, no backing file, no unpinned ranges. The backing file appears on
the first successful mmap ("materialized"); from then on name and size are frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

from ashcheck.reference.ranges import UnpinnedList
from ashcheck.reference.shmem import ShmemFile
from ashcheck.spec.constants import ASHMEM_NAME_DEF, PROT_MASK

ASHMEM_NAME_PREFIX = b"dev/ashmem/"


@dataclass(eq=False)
class Area:
    unpinned: UnpinnedList
    name: bytes = b""          # what follows ASHMEM_NAME_PREFIX in asma->name; b"" = unset
    size: int = 0              # size_t
    prot_mask: int = PROT_MASK
    file: ShmemFile | None = None

    def full_name(self) -> bytes:
        """The backing file's name: ashmem_mmap uses ASHMEM_NAME_DEF while no name is set."""
        return ASHMEM_NAME_PREFIX + self.name if self.name else ASHMEM_NAME_DEF
