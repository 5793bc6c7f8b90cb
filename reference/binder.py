"""File descriptors in binder transactions: `binder_translate_fd` in the sender and
`binder_apply_fd_fixups` in the receiver (drivers/android/binder.c, Linux 5.10).

Per BINDER_TYPE_FD object, in the sender, in object order:
1. are fds allowed at all? For a transaction: the target node was created with
   FLAT_BINDER_FLAG_ACCEPTS_FDS. For a reply: the caller's original transaction had
   TF_ACCEPT_FDS. Otherwise EPERM;
2. `fget(fd)`: a descriptor that is not open, or is O_PATH, is EBADF;
3. (the LSM hook: no security module here.)
Any error fails the whole transaction: the sender gets BR_FAILED_REPLY and nothing is delivered.
Then, in the receiver, each file gets a new descriptor: lowest free at delivery, FD_CLOEXEC set
(`get_unused_fd_flags(O_CLOEXEC)`), the *same* open file description (so position, area, every
ashmem property is shared). The same fd listed twice gives two descriptors. The sender's
descriptors are untouched. If the receiver runs out of descriptors, 5.10 closes the ones it had
installed (binder_deferred_fd_close) and the sender sees BR_FAILED_REPLY: nothing stays.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from ashcheck.reference.errors import SyscallError
from ashcheck.reference.vfs import FdTable


def transfer_fds(src: FdTable, dst: FdTable, fds: Sequence[int], allowed: bool) -> tuple[int, ...]:
    """Translate `fds` of `src` and install them in `dst`; the new numbers, in object order.
    Raises SyscallError (the transaction fails) without changing either table."""
    files = []
    for fd in fds:
        if not allowed:
            raise SyscallError(errno.EPERM)  # "got transaction with fd, %d, but target does not allow fds"
        files.append(src.get(fd))            # "got transaction with invalid fd, %d"
    installed: list[int] = []
    try:
        for file in files:
            installed.append(dst.install(file, cloexec=True))
    except SyscallError:
        for fd in installed:
            dst.close(fd)
        raise
    return tuple(installed)
