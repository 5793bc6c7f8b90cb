"""The Debian kernels the kernel adapter boots by name: `--kernel 5.10|6.1|6.12`.

| name | Debian suite | image package             | drivers under test                  |
|------|--------------|---------------------------|-------------------------------------|
| 5.10 | bullseye     | linux-image-5.10.0-N-amd64 | ashmem_linux, binder_linux          |
| 6.1  | bookworm     | linux-image-6.1.0-N-amd64  | binder_linux                        |
| 6.12 | trixie       | linux-image-6.12.N+deb13-amd64 | binder_linux (modules are .ko.xz) |

Why these: 5.10 is the last Debian kernel with ashmem (it left the kernel in 5.18); 6.1 and 6.12
are the next two Debian releases, with binder only, where the adapter runs the memfd profile (as
an Android device with memfd-backed ashmem does) with fd transfer through the real binder. Each is
the newest image of its suite's main component when first fetched, then pinned by the cache.

Every guest also needs the virtio-serial port (virtio_pci, virtio_console); everything these
modules depend on is found from the package's own .modinfo (modules.py), so a new ABI of the same
kernel needs no change here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DebianKernel:
    """One bootable kernel of the catalogue.

    Attributes:
        name: what the user types (`kernel=6.1`).
        suite: the Debian suite that carries it.
        packages: a regex matching the whole name of its image packages (the `-unsigned` twin too).
        drivers: the modules under test, which the package must provide (or build in).
    """

    name: str
    suite: str
    packages: str
    drivers: tuple[str, ...]

    @property
    def roots(self) -> tuple[str, ...]:
        """The modules the guest loads, before their dependencies are added."""
        return ("virtio_pci", "virtio_console", *self.drivers)


KERNELS = {k.name: k for k in (
    DebianKernel("5.10", "bullseye", r"linux-image-5\.10\.0-\d+-amd64(-unsigned)?", ("ashmem_linux", "binder_linux")),
    DebianKernel("6.1", "bookworm", r"linux-image-6\.1\.0-\d+-amd64(-unsigned)?", ("binder_linux",)),
    DebianKernel("6.12", "trixie", r"linux-image-6\.12\.\d+\+deb13-amd64(-unsigned)?", ("binder_linux",)),
)}
DEFAULT = "5.10"


def lookup(name: str) -> DebianKernel:
    """The catalogue entry called `name`. Raises KeyError naming the known ones."""
    try:
        return KERNELS[name]
    except KeyError:
        raise KeyError(f"no kernel named {name!r}: known are {', '.join(KERNELS)}") from None
