"""How the simulated kernel fails inside itself, and how that reaches the caller.

Where the C driver does `return -EINVAL`, the simulator raises `SyscallError(EINVAL)`; where a
load or store would take a signal, it raises `Fault(SIGSEGV)` or `Fault(SIGBUS)`. Both are caught
at the syscall boundary (kernel.py) and become the outcomes `err(EINVAL)` / `fault(SIGBUS)`: they
never leave the Kernel. Anything else that escapes (ValueError, TypeError) is a harness bug, such
as an operation naming a process or mapping the caller never created.
"""

from __future__ import annotations

import errno as _errno


class SyscallError(Exception):
    """A system call fails with `errno` (the C driver's negative return value)."""

    def __init__(self, errno: int) -> None:
        super().__init__(_errno.errorcode.get(errno, str(errno)))
        self.errno = errno


class Fault(Exception):
    """A memory access takes signal `signo` (SIGSEGV: no permission; SIGBUS: past EOF)."""

    def __init__(self, signo: int) -> None:
        super().__init__(signo)
        self.signo = signo
