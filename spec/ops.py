"""Operations: the adapter contract in syscall terms.

One frozen dataclass per operation. Processes and mappings are named by small integers the model
chooses (`proc`, `map_id`); file descriptors are the real numbers the implementation returned,
because which number comes back (lowest free) is itself specified. Each operation prints like the
strace line it stands for, so a shrunk counterexample reads like a syscall trace.

Each operation is declared once, here: its fields, `spec` (the function of ashcheck.spec that gives
its allowed outcomes), and `wire` (how the native executor performs it: a request line over its
fields, whose `ok` reply becomes the result as `answer` says; or REGIONS where the request depends
on how regions are made, ashmem ioctls or the memfd shim; or ADAPTER where the executor adapter
does it with its transport: processes, binder). The simulator's handler is `SimAdapter._<name>`
(`snake_name`). Self-tests check every declaration resolves: a spec function, a simulator handler,
an encoder whose verbs and argument counts are in executor.c's table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from ashcheck.spec.constants import F_GETFD, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, O_PATH, ashmem_io
from ashcheck.spec.outcome import _jsonable, _unjson

REGIONS = "regions"  # `wire`: encoded by the region backend (adapters/executor_ops.py)
ADAPTER = "adapter"  # `wire`: carried out by the executor adapter itself (processes, binder)
ANSWERS = ("none", "int", "ints", "bytes", "cloexec", "zero")  # what an `ok` reply's fields become


def hexed(data: bytes) -> str:
    """A byte string as a request argument: lowercase hex, `-` for empty."""
    return data.hex() or "-"


@dataclass(frozen=True)
class Op:
    """Base of all operations. `proc` is the process that performs the call."""

    call: ClassVar[str] = ""
    spec: ClassVar[str] = ""
    wire: ClassVar[str] = ADAPTER
    answer: ClassVar[str] = "none"
    proc: int

    @classmethod
    def snake_name(cls) -> str:
        """`GetPinStatus` → `get_pin_status`: the simulator's handler is `_` + this."""
        return "".join(f"_{c.lower()}" if c.isupper() else c for c in cls.__name__).lstrip("_")

    def wire_fields(self) -> dict[str, object]:
        """The values `wire` is formatted with: the fields, bytes in hex, booleans as 0 or 1."""
        return {f.name: _wire_arg(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def request(self) -> str:
        """The executor's request line for this operation (a `wire` template only)."""
        assert self.wire not in (REGIONS, ADAPTER), f"{type(self).__name__} has no request of its own"
        return self.wire.format(**self.wire_fields())

    def __str__(self) -> str:
        """Positional fields, then the optional ones that differ from their default, by name."""
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "proc":
                continue
            if f.default is dataclasses.MISSING:
                shown.append(_arg(value))
            elif value != f.default:
                shown.append(f"{f.name}={_arg(value)}")
        return f"p{self.proc}: {self.call}({', '.join(shown)})"

    def to_json(self) -> dict[str, Any]:
        return {"op": type(self).__name__,
                "args": {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Op:
        cls = OPS[data["op"]]
        return cls(**{k: _unjson(v) for k, v in data["args"].items()})


def _wire_arg(value: object) -> object:
    if isinstance(value, bytes):
        return hexed(value)
    return int(value) if isinstance(value, bool) else value


def _arg(value: Any) -> str:
    if isinstance(value, bytes) and len(value) > 24:
        return f"{value[:16]!r}…({len(value)} bytes)"
    return repr(value)


# --- processes ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spawn(Op):
    """Start process `proc`. Result: the fds it already has (stdio, transport), as a sorted tuple.
    `privileged` = has CAP_SYS_ADMIN; `accepts_fds` = its binder node is created with
    FLAT_BINDER_FLAG_ACCEPTS_FDS."""
    call: ClassVar[str] = "spawn"
    spec = "fds.spawn"
    wire = ADAPTER
    proc: int
    privileged: bool = True
    accepts_fds: bool = True


@dataclass(frozen=True)
class Exit(Op):
    call: ClassVar[str] = "exit"
    spec = "fds.exit_"
    wire = ADAPTER
    proc: int


@dataclass(frozen=True)
class SetFdLimit(Op):
    """setrlimit(RLIMIT_NOFILE, {limit, hard limit unchanged}): no new fd at or above `limit`.
    Result: 0."""
    call: ClassVar[str] = "setrlimit_nofile"
    spec = "fds.set_fd_limit"
    wire = "setrlimit {limit}"
    answer = "zero"
    proc: int
    limit: int


@dataclass(frozen=True)
class ListFds(Op):
    """Observation: the sorted tuple of open fd numbers of `proc`."""
    call: ClassVar[str] = "list_fds"
    spec = "fds.list_fds"
    wire = "fds"
    answer = "ints"
    proc: int


# --- creating regions --------------------------------------------------------------------------

@dataclass(frozen=True)
class CreateRegion(Op):
    """libcutils `ashmem_create_region(name, size)`: the way every profile creates a region."""
    call: ClassVar[str] = "ashmem_create_region"
    spec = "regions.create_region"
    wire = REGIONS
    proc: int
    name: bytes
    size: int


@dataclass(frozen=True)
class OpenAshmem(Op):
    """`open("/dev/ashmem", O_RDWR|O_CLOEXEC)`: a fresh, unnamed, zero-size region."""
    call: ClassVar[str] = "open_ashmem"
    spec = "regions.open_ashmem"
    wire = REGIONS
    proc: int


@dataclass(frozen=True)
class OpenPath(Op):
    """`open("/", O_PATH)`: an fd that binder must refuse to send."""
    call: ClassVar[str] = "open_path"
    spec = "fds.open_path"
    wire = f"open {hexed(b'/')} {O_PATH}"
    answer = "int"
    proc: int


# --- the ashmem ioctls -------------------------------------------------------------------------

@dataclass(frozen=True)
class SetName(Op):
    """ASHMEM_SET_NAME. `name` None passes a NULL pointer."""
    call: ClassVar[str] = "ASHMEM_SET_NAME"
    spec = "regions.set_name"
    wire = REGIONS
    proc: int
    fd: int
    name: bytes | None


@dataclass(frozen=True)
class GetName(Op):
    call: ClassVar[str] = "ASHMEM_GET_NAME"
    spec = "regions.get_name"
    wire = REGIONS
    proc: int
    fd: int


@dataclass(frozen=True)
class SetSize(Op):
    call: ClassVar[str] = "ASHMEM_SET_SIZE"
    spec = "regions.set_size"
    wire = REGIONS
    proc: int
    fd: int
    size: int


@dataclass(frozen=True)
class GetSize(Op):
    call: ClassVar[str] = "ASHMEM_GET_SIZE"
    spec = "regions.get_size"
    wire = REGIONS
    proc: int
    fd: int


@dataclass(frozen=True)
class SetProtMask(Op):
    call: ClassVar[str] = "ASHMEM_SET_PROT_MASK"
    spec = "regions.set_prot_mask"
    wire = REGIONS
    proc: int
    fd: int
    prot: int


@dataclass(frozen=True)
class GetProtMask(Op):
    call: ClassVar[str] = "ASHMEM_GET_PROT_MASK"
    spec = "regions.get_prot_mask"
    wire = REGIONS
    proc: int
    fd: int


@dataclass(frozen=True)
class Pin(Op):
    call: ClassVar[str] = "ASHMEM_PIN"
    spec = "pinning.pin"
    wire = REGIONS
    proc: int
    fd: int
    offset: int
    length: int


@dataclass(frozen=True)
class Unpin(Op):
    call: ClassVar[str] = "ASHMEM_UNPIN"
    spec = "pinning.unpin"
    wire = REGIONS
    proc: int
    fd: int
    offset: int
    length: int


@dataclass(frozen=True)
class GetPinStatus(Op):
    call: ClassVar[str] = "ASHMEM_GET_PIN_STATUS"
    spec = "pinning.get_pin_status"
    wire = REGIONS
    proc: int
    fd: int
    offset: int
    length: int


@dataclass(frozen=True)
class IoctlNullArg(Op):
    """ioctl(fd, ASHMEM_PIN / ASHMEM_UNPIN / ASHMEM_GET_PIN_STATUS, NULL): the struct ashmem_pin
    pointer is NULL. `cmd` is the ioctl's name without the ASHMEM_ prefix."""
    call: ClassVar[str] = "ioctl_null"
    spec = "pinning.null_arg"
    wire = REGIONS
    proc: int
    fd: int
    cmd: str


@dataclass(frozen=True)
class UnknownIoctl(Op):
    """ioctl(fd, _IO(0x77, nr), 0): a request number the driver does not know."""
    call: ClassVar[str] = "ioctl_unknown"
    spec = "regions.unknown_ioctl"
    wire = "ioctl {fd} {request} int 0"
    answer = "int"
    proc: int
    fd: int
    nr: int

    def wire_fields(self) -> dict[str, object]:
        return {**super().wire_fields(), "request": ashmem_io(self.nr)}


@dataclass(frozen=True)
class PurgeAllCaches(Op):
    call: ClassVar[str] = "ASHMEM_PURGE_ALL_CACHES"
    spec = "pinning.purge_all_caches"
    wire = REGIONS
    proc: int
    fd: int


# --- memory ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mmap(Op):
    """mmap(hint, length, prot, MAP_SHARED or MAP_PRIVATE [| MAP_NORESERVE], fd, offset),
    remembered as `map_id`.

    `near` names an existing mapping of the same process: the address hint is then the page range
    right below it (`above` False) or right above it (`above` True), so that the kernel may merge
    the two. A hint is only a hint: where the range is taken, the kernel places the mapping
    elsewhere. Addresses are not modelled, so no outcome depends on it; it exists to make the
    implementation meet the cases where a new mapping lands next to an older one."""
    call: ClassVar[str] = "mmap"
    spec = "memory.mmap"
    wire = "mmap {map_id} {fd} {length} {prot} {flags} {offset}{hint}"
    proc: int
    fd: int
    map_id: int
    length: int
    prot: int
    shared: bool
    offset: int = 0
    noreserve: bool = False
    near: int | None = None
    above: bool = False

    def wire_fields(self) -> dict[str, object]:
        flags = (MAP_SHARED if self.shared else MAP_PRIVATE) | (MAP_NORESERVE if self.noreserve else 0)
        hint = "" if self.near is None else f" {self.near} {1 if self.above else -1}"  # a hint, not MAP_FIXED
        return {**super().wire_fields(), "flags": flags, "hint": hint}


@dataclass(frozen=True)
class Munmap(Op):
    call: ClassVar[str] = "munmap"
    spec = "memory.munmap"
    wire = "munmap {map_id}"
    proc: int
    map_id: int


@dataclass(frozen=True)
class Mprotect(Op):
    call: ClassVar[str] = "mprotect"
    spec = "memory.mprotect"
    wire = "mprotect {map_id} {prot}"
    proc: int
    map_id: int
    prot: int


@dataclass(frozen=True)
class Load(Op):
    """Read `length` bytes at `offset` inside mapping `map_id` (a fault is an outcome)."""
    call: ClassVar[str] = "load"
    spec = "memory.load"
    wire = "load {map_id} {offset} {length}"
    answer = "bytes"
    proc: int
    map_id: int
    offset: int
    length: int


@dataclass(frozen=True)
class Store(Op):
    """Write `data` at `offset` inside mapping `map_id`, byte by byte, in ascending order."""
    call: ClassVar[str] = "store"
    spec = "memory.store"
    wire = "store {map_id} {offset} {data}"
    proc: int
    map_id: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class MapsName(Op):
    """Observation: the pathname column of the mapping's line in /proc/self/maps."""
    call: ClassVar[str] = "maps_name"
    spec = "memory.maps_name"
    wire = "maps_name {map_id}"
    answer = "bytes"
    proc: int
    map_id: int


# --- file descriptors --------------------------------------------------------------------------

@dataclass(frozen=True)
class Dup(Op):
    call: ClassVar[str] = "dup"
    spec = "fds.dup"
    wire = "dup {fd}"
    answer = "int"
    proc: int
    fd: int


@dataclass(frozen=True)
class Close(Op):
    call: ClassVar[str] = "close"
    spec = "fds.close"
    wire = "close {fd}"
    proc: int
    fd: int


@dataclass(frozen=True)
class Lseek(Op):
    call: ClassVar[str] = "lseek"
    spec = "fileio.lseek"
    wire = "lseek {fd} {offset} {whence}"
    answer = "int"
    proc: int
    fd: int
    offset: int
    whence: int


@dataclass(frozen=True)
class Read(Op):
    call: ClassVar[str] = "read"
    spec = "fileio.read"
    wire = "read {fd} {count}"
    answer = "bytes"
    proc: int
    fd: int
    count: int


@dataclass(frozen=True)
class Write(Op):
    call: ClassVar[str] = "write"
    spec = "fileio.write"
    wire = "write {fd} {data}"
    answer = "int"
    proc: int
    fd: int
    data: bytes


@dataclass(frozen=True)
class Ftruncate(Op):
    """ftruncate(fd, length). Result: 0."""
    call: ClassVar[str] = "ftruncate"
    spec = "resize.ftruncate"
    wire = "ftruncate {fd} {length}"
    answer = "zero"
    proc: int
    fd: int
    length: int


@dataclass(frozen=True)
class Fallocate(Op):
    """fallocate(fd, mode, offset, length): FALLOC_FL_* `mode` (0 allocates; KEEP_SIZE | PUNCH_HOLE
    punches a hole). Result: 0."""
    call: ClassVar[str] = "fallocate"
    spec = "resize.fallocate"
    wire = "fallocate {fd} {mode} {offset} {length}"
    answer = "zero"
    proc: int
    fd: int
    mode: int
    offset: int
    length: int


@dataclass(frozen=True)
class GetFdFlags(Op):
    """fcntl(fd, F_GETFD): 1 when FD_CLOEXEC is set."""
    call: ClassVar[str] = "fcntl_getfd"
    spec = "fds.get_fd_flags"
    wire = f"fcntl {{fd}} {F_GETFD} 0"
    answer = "cloexec"
    proc: int
    fd: int


# --- binder ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BinderSend(Op):
    """A transaction from `proc` to the node of `dst` carrying one BINDER_TYPE_FD object per fd.
    Result: the tuple of fds that appeared in `dst`, or BR_FAILED_REPLY."""
    call: ClassVar[str] = "binder_transaction"
    spec = "binder.send"
    wire = ADAPTER
    proc: int
    dst: int
    fds: tuple[int, ...]


@dataclass(frozen=True)
class BinderReply(Op):
    """`proc` calls `replier` (TF_ACCEPT_FDS iff `accept_fds`); the reply carries `fds` of the
    replier. Result: (what the caller got: a tuple of fds or BR_FAILED_REPLY,
    what the replier got: BR_TRANSACTION_COMPLETE or BR_FAILED_REPLY)."""
    call: ClassVar[str] = "binder_reply"
    spec = "binder.reply"
    wire = ADAPTER
    proc: int
    replier: int
    fds: tuple[int, ...]
    accept_fds: bool


OPS: dict[str, type[Op]] = {cls.__name__: cls for cls in Op.__subclasses__()}
