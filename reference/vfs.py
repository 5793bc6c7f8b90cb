"""Open file descriptions, fd tables, and the generic VFS checks around a driver's file
operations (fs/file.c, fs/read_write.c, fs/ioctl.c, Linux 5.10).

A `File` is a `struct file`: one per open(), shared by dup, fork and binder, carrying the file
position and the driver's `private_data` (for /dev/ashmem, the area). An `FdTable` maps numbers
to files with a per-descriptor FD_CLOEXEC flag and allocates the lowest free number, as
`get_unused_fd_flags` does. A file is released (`f_op->release`) when its last descriptor closes.

The generic layer answers before the driver does, and that order is observable:
- `fdget` refuses O_PATH files (EBADF) for read, write, lseek, ioctl and mmap; `fget_raw` (dup,
  fcntl, close) accepts them;
- a driver without a `.write` gets EINVAL (FMODE_CAN_WRITE clear), without `.mmap` ENODEV,
  without an ioctl handler ENOTTY, without `.llseek` ESPIPE (no_llseek): the defaults below;
- lseek with whence > SEEK_MAX is EINVAL before the driver is asked; read/write counts are
  clamped to MAX_RW_COUNT, and an end (position + count) past LONG_MAX is EINVAL (rw_verify_area);
- ftruncate and fallocate (fs/open.c) want a regular file: every file here is a character device
  (the ashmem driver, /dev/null), so after their argument checks they are EINVAL and ENODEV.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ashcheck.reference.cint import LONG_MAX, MAX_ERRNO, MAX_RW_COUNT, s32
from ashcheck.reference.errors import SyscallError
from ashcheck.spec.constants import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_SUPPORTED_MASK,
    FALLOC_FL_ZERO_RANGE,
)

if TYPE_CHECKING:
    from ashcheck.reference.mm import Vma

SEEK_MAX = 4  # SEEK_HOLE
RLIMIT_NOFILE = 1024  # the usual soft limit: fds 0..1023

IoctlArg = int | bytes | tuple[int, int] | None
"""What an ioctl's third argument points to, as the simulator receives it: an integer passed by
value, the bytes of a user string, a `struct ashmem_pin` as (offset, len), or None for NULL."""
IoctlResult = int | bytes
"""The ioctl's return value, or for a GET-style ioctl the bytes it copied to the user buffer."""


@dataclass(frozen=True)
class Cred:
    """The credentials of the calling task; only what ashmem asks (`capable(CAP_SYS_ADMIN)`)."""

    cap_sys_admin: bool


class FileOperations:
    """struct file_operations. Each default is the generic VFS answer for a NULL slot."""

    regular = False  # S_ISREG of the inode behind it (a character device here)

    def read(self, file: File, count: int) -> bytes:
        raise SyscallError(errno.EINVAL)  # no .read/.read_iter: FMODE_CAN_READ clear

    def write(self, file: File, data: bytes) -> int:
        raise SyscallError(errno.EINVAL)  # no .write/.write_iter: FMODE_CAN_WRITE clear

    def llseek(self, file: File, offset: int, whence: int) -> int:
        raise SyscallError(errno.ESPIPE)  # vfs_llseek falls back to no_llseek

    def ioctl(self, file: File, cmd: int, arg: IoctlArg, cred: Cred) -> IoctlResult:
        raise SyscallError(errno.ENOTTY)  # vfs_ioctl without .unlocked_ioctl

    def mmap(self, file: File, vma: Vma) -> None:
        raise SyscallError(errno.ENODEV)  # do_mmap: !file->f_op->mmap

    def release(self, file: File) -> None:
        """The last reference to `file` is gone."""


class DevNull(FileOperations):
    """/dev/null (drivers/char/mem.c null_fops): what a fresh process has on fds 0, 1 and 2."""

    def read(self, file: File, count: int) -> bytes:
        return b""

    def write(self, file: File, data: bytes) -> int:
        return len(data)

    def llseek(self, file: File, offset: int, whence: int) -> int:
        file.pos = 0  # null_lseek
        return 0


class PathOnly(FileOperations):
    """An O_PATH file (open("/", O_PATH)). fdget refuses it, so no operation reaches it."""


@dataclass(eq=False)
class File:
    """struct file: one open file description."""

    fops: FileOperations
    private_data: object = None
    o_path: bool = False  # FMODE_PATH
    pos: int = 0          # f_pos
    refs: int = 0         # how many descriptors, in all processes, refer to it


@dataclass
class FdEntry:
    file: File
    cloexec: bool


class FdTable:
    """One process's descriptors (struct files_struct)."""

    def __init__(self) -> None:
        self.entries: dict[int, FdEntry] = {}
        self.limit = RLIMIT_NOFILE  # the soft RLIMIT_NOFILE (setrlimit changes it)

    def fds(self) -> tuple[int, ...]:
        return tuple(sorted(self.entries))

    def install(self, file: File, cloexec: bool) -> int:
        """get_unused_fd_flags + fd_install: the lowest free number, or EMFILE."""
        fd = next(n for n in range(len(self.entries) + 1) if n not in self.entries)
        if fd >= self.limit:
            raise SyscallError(errno.EMFILE)
        self.entries[fd] = FdEntry(file, cloexec)
        file.refs += 1
        return fd

    def get_raw(self, fd: int) -> FdEntry:
        """fget_raw / fdget_raw: any open descriptor, O_PATH included."""
        entry = self.entries.get(fd)
        if entry is None:
            raise SyscallError(errno.EBADF)
        return entry

    def get(self, fd: int) -> File:
        """fget / fdget: an open descriptor that is not O_PATH."""
        file = self.get_raw(fd).file
        if file.o_path:
            raise SyscallError(errno.EBADF)
        return file

    def close(self, fd: int) -> None:
        """close_fd + fput: releasing the file when this was its last descriptor."""
        file = self.get_raw(fd).file
        del self.entries[fd]
        file.refs -= 1
        if file.refs == 0:
            file.fops.release(file)

    def close_all(self) -> None:
        """exit_files: every descriptor, in ascending order."""
        for fd in self.fds():
            self.close(fd)


# --- the generic entry points --------------------------------------------------------------------

def sys_read(files: FdTable, fd: int, count: int) -> bytes:
    file = files.get(fd)
    if count > LONG_MAX or file.pos + count > LONG_MAX:  # rw_verify_area: the end must be a loff_t
        raise SyscallError(errno.EINVAL)
    return file.fops.read(file, min(count, MAX_RW_COUNT))


def sys_write(files: FdTable, fd: int, data: bytes) -> int:
    file = files.get(fd)
    if type(file.fops).write is FileOperations.write:  # a NULL .write: FMODE_CAN_WRITE, before
        return file.fops.write(file, data)              # rw_verify_area (the default answers)
    if file.pos + len(data) > LONG_MAX:  # rw_verify_area: the end must be a loff_t
        raise SyscallError(errno.EINVAL)
    return file.fops.write(file, data[:MAX_RW_COUNT])


def sys_lseek(files: FdTable, fd: int, offset: int, whence: int) -> int:
    file = files.get(fd)
    if not 0 <= whence <= SEEK_MAX:  # `unsigned int whence`: negative values are huge
        raise SyscallError(errno.EINVAL)
    return file.fops.llseek(file, offset, whence)


def sys_ftruncate(files: FdTable, fd: int, length: int) -> int:
    """do_sys_ftruncate: the length before the fd; then only a regular file can be truncated."""
    if length < 0:
        raise SyscallError(errno.EINVAL)
    file = files.get(fd)
    if not file.fops.regular:
        raise SyscallError(errno.EINVAL)
    raise SyscallError(errno.EOPNOTSUPP)  # no regular file is modelled


def sys_fallocate(files: FdTable, fd: int, mode: int, offset: int, length: int) -> int:
    """ksys_fallocate (the fd first), then vfs_fallocate's checks in their order (the modes of
    COLLAPSE, INSERT and UNSHARE, which the suite does not draw, left out)."""
    file = files.get(fd)
    if offset < 0 or length <= 0:
        raise SyscallError(errno.EINVAL)
    punch = mode & FALLOC_FL_PUNCH_HOLE
    if mode & ~FALLOC_FL_SUPPORTED_MASK or (punch and mode & FALLOC_FL_ZERO_RANGE) or \
            (punch and not mode & FALLOC_FL_KEEP_SIZE):
        raise SyscallError(errno.EOPNOTSUPP)
    if not file.fops.regular:  # neither a regular file nor a block device
        raise SyscallError(errno.ENODEV)
    raise SyscallError(errno.EOPNOTSUPP)  # no regular file is modelled


def sys_ioctl(files: FdTable, fd: int, cmd: int, arg: IoctlArg, cred: Cred) -> IoctlResult:
    """The driver returns a long, but SYSCALL_DEFINE3(ioctl) keeps it in `int error`: the result is
    cut to an int, and one in [-4095, -1] reaches userspace as that errno (observed on 5.10.223)."""
    file = files.get(fd)
    result = file.fops.ioctl(file, cmd, arg, cred)
    if isinstance(result, bytes):
        return result
    result = s32(result)
    if -MAX_ERRNO <= result < 0:
        raise SyscallError(-result)
    return result
