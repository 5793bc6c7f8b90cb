"""The `native` adapter: a native implementation of the ashmem calls (a C library: libcutils, a
vendor's ashmem library, a reimplementation), loaded into the executor processes on this host.

The implementation is a shared library that defines `const struct ashcheck_impl ashcheck_impl`
(adapters/ashcheck_impl.h: a versioned table of the libcutils-level calls, and a name for the
report). Every modelled process is one executor (build.py's "dlopen" variant), which dlopen()s
the library as it starts, still with the harness's privileges (the library file need not be
readable by the unprivileged uid), and then drops them if the process is unprivileged.

- Region operations call the library: `ashmem_create_region`, `ashmem_set_prot_region`, pin,
  unpin, `ashmem_get_size_region`, and the optional calls for the other ioctls. An operation whose
  slot is NULL is what a program on this platform would do without the call: the raw ioctl on
  the fd, observed as the kernel answers it.
- Everything else (mmap, loads, stores, dup, close, read, fcntl, /proc/self/maps) is the
  executor's own system calls, as for the `memfd` adapter.
- There is no binder on this host: fds travel by SCM_RIGHTS, and binder's rules (acceptance,
  close-on-exec, refused O_PATH fds) are applied by the adapter and the executor. Those outcomes
  are computed rather than observed, so they are marked `emulated`.

Use it as it is (`--adapter native --adapter-option library=PATH.so [--adapter-option
profile=memfd]`), or subclass it to name your implementation and declare what it knowingly does
differently (`deviations`) and what it cannot do at all (`unsupported`):

    class MyAdapter(NativeAdapter):
        name = "my-ashmem"
        profile = "ashmem"
        library = "/opt/my/libmy_ashmem_ashcheck.so"      # or override library_path()
        deviations = {"ashmem.maps.name": "our regions show as /my-ashmem/<name>"}
        unsupported = {ops.PurgeAllCaches: "no purge call, and no ioctl either"}

Options: `library=PATH` (overrides the class's), `profile=ashmem|memfd`, `timeout=SECONDS` per
request (default 10). `build_library(source)` compiles a one-file wrapper with this host's C
compiler against ashcheck_impl.h (cached); `python -m ashcheck.adapters.native --include-dir`
prints where the header is, for your own build.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ashcheck.adapters import build
from ashcheck.adapters.base import AdapterUnavailable, Capability
from ashcheck.adapters.executor_adapter import ExecutorAdapter, TransportLost
from ashcheck.adapters.executor_ops import AshmemRegions, Send, first_int, outcome
from ashcheck.adapters.memfd import HostTransport
from ashcheck.adapters.reply import Reply, hexed, unhex
from ashcheck.spec import ops as o
from ashcheck.spec.constants import O_CLOEXEC, O_RDWR
from ashcheck.spec.outcome import Outcome, emulated, indeterminate

HEADER = Path(__file__).with_name("ashcheck_impl.h")
PROFILES = ("ashmem", "memfd")


def include_dir() -> Path:
    """The directory that holds ashcheck_impl.h (give it to your compiler with -I)."""
    return HEADER.parent


# building a wrapper ----------------------------------------------------------------------------

def build_library(source: str | Path, *, cflags: Sequence[str] = (), libs: Sequence[str] = ()) -> Path:
    """Compile the C file `source` into a shared library for NativeAdapter, on first use.

    `cflags` go before the source (-I, -D), `libs` after it (-L, -l, -Wl,...). The compiler is this
    host's ($CC or cc); the source's own directory is on the include path. The library lands in
    `${XDG_CACHE_HOME:-~/.cache}/ashcheck/native/<key>-<stem>/lib<stem>.so`, where the key hashes the
    source file, ashcheck_impl.h, the compiler's identity, the flags and the libraries: editing any
    of them rebuilds (headers of your own that the source includes are not hashed; a library made of
    several files is better built by your own build and given as `library=`).

    Returns the library's path. Raises BuildError with the compiler's output."""
    src = Path(source).resolve()
    cc = build._host_cc()
    if cc is None:
        raise build.BuildError("building a native library needs this host's C compiler ($CC or cc): none found")
    flags = ["-shared", "-fPIC", "-O2", f"-I{include_dir()}", f"-I{src.parent}", *cflags]
    name = f"{'' if src.stem.startswith('lib') else 'lib'}{src.stem}.so"
    digest = hashlib.sha256()
    for part in (src.read_bytes(), HEADER.read_bytes(), build._identity(tuple(cc)),
                 shlex.join([*flags, "--", *libs, "-o", name]).encode()):
        digest.update(len(part).to_bytes(8, "little") + part)
    final = build.cache_root().parent / "native" / f"{digest.hexdigest()[:16]}-{src.stem}"
    library = final / name
    if library.exists():  # a directory only appears complete (renamed into place)
        return library
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    try:
        command = [*cc, *flags, "-o", str(tmp / library.name), str(src), *libs]
        try:
            done = subprocess.run(command, capture_output=True, timeout=build.BUILD_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise build.BuildError(f"`{shlex.join(command)}` could not run: {exc}") from exc
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace").strip()
            raise build.BuildError(f"`{shlex.join(command)}` failed with status {done.returncode}:\n{stderr}")
        try:
            tmp.rename(final)
        except OSError as exc:
            if not library.exists():  # not a lost race with another process: a real failure
                raise build.BuildError(f"cannot move the library into {final}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return library


# the executors ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Loaded:
    """What an executor found in the library: interface version, the library's name for itself,
    and the slots it fills."""

    version: int
    name: str
    slots: frozenset[str]


class LibraryError(TransportLost):
    """The executor could not load the library (dlopen's message, a missing or wrong table)."""


class LibraryTransport(HostTransport):
    """Executors on this host (one socketpair each) that load `library` as they start."""

    def __init__(self, binary: Path, library: Path, timeout: float) -> None:
        super().__init__(binary, timeout)
        self.library = library

    def spawn(self, proc: int, uid: int | None) -> None:
        self.spawn_loaded(proc, uid)

    def spawn_loaded(self, proc: int, uid: int | None = None) -> Loaded:
        """Start the executor of `proc`, load the library (as the harness: the file may be
        unreadable to `uid`), then drop to `uid`. Returns what the library provides. Raises
        LibraryError (cannot load) or TransportLost."""
        super().spawn(proc, None)
        try:
            reply = self.request(proc, f"impl_load {hexed(os.fsencode(self.library))}")
            if reply.status != "ok":
                raise LibraryError(f"cannot load {self.library}: {_message(reply)}")
            if uid is not None:
                dropped = self.request(proc, f"setuid {uid}")
                if dropped.status != "ok":
                    raise TransportLost(f"executor of process {proc} could not drop to uid {uid}: "
                                        f"{dropped.status} {' '.join(dropped.fields)}")
        except BaseException:
            self.kill(proc)
            raise
        version, name, *slots = reply.fields
        return Loaded(int(version), unhex(name).decode(errors="replace"), frozenset(slots))


def _message(reply: Reply) -> str:
    """The text of a `bad` reply (hex), or the reply itself."""
    try:
        return unhex(reply.fields[0]).decode(errors="replace")
    except (IndexError, ValueError):
        return " ".join((reply.status, *reply.fields))


class NativeRegions(AshmemRegions):
    """Region operations through the library's calls; a NULL slot is the raw ioctl a program
    without that call would make (AshmemRegions), answered by the kernel."""

    def __init__(self, slots: frozenset[str]) -> None:
        super().__init__(b"/dev/ashmem")
        self.slots = slots

    def perform(self, send: Send, op: o.Op) -> Outcome:
        call = self._call(op)
        if call is None or call[0] not in self.slots:
            return super().perform(send, op)
        slot, args = call
        reply = send(op.proc, " ".join(["impl", slot, *map(str, args)]))
        if slot == "get_name":
            return outcome(reply, lambda f: unhex(f[1]).split(b"\0", 1)[0])
        return outcome(reply, first_int)

    @staticmethod
    def _call(op: o.Op) -> tuple[str, tuple[str | int, ...]] | None:
        """(slot, arguments) of the library call that performs `op`, or None (no call can)."""
        match op:
            case o.CreateRegion(name=name, size=size):
                return "create_region", (hexed(name), size)
            case o.SetProtMask(fd=fd, prot=prot):
                return "set_prot_region", (fd, prot)
            case o.Pin(fd=fd, offset=off, length=n):
                return "pin_region", (fd, off, n)
            case o.Unpin(fd=fd, offset=off, length=n):
                return "unpin_region", (fd, off, n)
            case o.GetSize(fd=fd):
                return "get_size_region", (fd,)
            case o.SetName(fd=fd, name=name):
                return "set_name", (fd, "null" if name is None else hexed(name))
            case o.GetName(fd=fd):
                return "get_name", (fd,)
            case o.SetSize(fd=fd, size=size):
                return "set_size", (fd, size)
            case o.GetProtMask(fd=fd):
                return "get_prot_mask", (fd,)
            case o.GetPinStatus(fd=fd, offset=off, length=n):
                return "get_pin_status", (fd, off, n)
            case o.PurgeAllCaches(fd=fd):
                return "purge_all_caches", (fd,)
        return None  # open("/dev/ashmem"), ioctls with a NULL argument: no library call does these


# the adapter -----------------------------------------------------------------------------------

class NativeAdapter(ExecutorAdapter):
    """A native implementation in a shared library (ashcheck_impl.h), run in executors on this host.

    Class attributes a subclass sets: `name`, `profile` ("ashmem": judged as the C driver, what
    callers of the libcutils API expect; "memfd": libcutils' memfd mode), `library` (the .so, unless
    `library_path` is overridden), `deviations` and `unsupported` (see Adapter)."""

    name: ClassVar[str] = "native"
    profile: ClassVar[str] = "ashmem"
    library: ClassVar[str | None] = None

    def __init__(self, **options: str) -> None:
        self.library_option = options.pop("library", None)
        wanted = options.pop("profile", None)
        if wanted is not None and wanted not in PROFILES:
            raise ValueError(f"profile must be {' or '.join(PROFILES)}, not {wanted!r}")
        if wanted is not None:
            self.profile = wanted  # type: ignore[misc]
        self.timeout = float(options.pop("timeout", "10"))
        super().__init__(**options)
        self.loaded: Loaded | None = None
        self.library_file: Path | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return cls._host_reason() or cls._library_reason(None)

    def why_unavailable(self) -> str | None:
        if self.library_option is None:
            return self.unavailable_reason()
        return self._host_reason() or self._library_reason(self.library_option)

    @staticmethod
    def _host_reason() -> str | None:
        if not sys.platform.startswith("linux"):
            return "native implementations run in executors on a Linux host"
        if build._host_cc() is None:
            return "no C compiler ($CC or cc): the executor that loads libraries is built with it"
        return None

    @classmethod
    def _library_reason(cls, option: str | None) -> str | None:
        if option is None and cls.library_path is not NativeAdapter.library_path:
            return None  # a subclass that provides its library says in unavailable_reason what it needs
        configured = option or cls.library
        if configured is None:
            return ("it needs --adapter-option library=PATH.so (a shared library that defines "
                    f"`ashcheck_impl`, see {HEADER})")
        return None if Path(configured).is_file() else f"the library {configured} does not exist"

    def library_path(self) -> Path:
        """The shared library to load when no `library` option is given: the class's `library`.
        Override it to build the library at start (see `build_library`). Raises AdapterUnavailable
        or BuildError."""
        if self.library is None:
            raise AdapterUnavailable(self.why_unavailable() or "no library given")
        return Path(self.library)

    def start(self) -> None:
        try:
            library = Path(self.library_option or self.library_path()).resolve()
            binary = build.executor_path(variant="dlopen")
        except build.BuildError as exc:
            raise AdapterUnavailable(str(exc)) from exc
        if not library.is_file():
            raise AdapterUnavailable(f"the library {library} does not exist")
        self.library_file = library
        transport = LibraryTransport(binary, library, self.timeout)
        self.transport = transport
        self.capabilities = frozenset({Capability.MULTI_PROCESS, Capability.FD_TRANSFER, Capability.MAPS_NAME,
                                       Capability.CONCURRENT}
                                      | self._probe(transport))

    def _probe(self, t: LibraryTransport) -> set[Capability]:
        """Load the library once (its table, its slots), and learn the process's privileges, page
        size and word size, and whether a program here could open /dev/ashmem."""
        try:
            self.loaded = t.spawn_loaded(-1)
        except LibraryError as exc:
            raise AdapterUnavailable(str(exc)) from exc
        try:
            self.regions = NativeRegions(self.loaded.slots)
            info = t.request(-1, "info")
            uid, self.page_size, self.long_bits = (int(f) for f in info.fields[1:4])
            found = {Capability.PRIVILEGED, Capability.UNPRIVILEGED} if uid == 0 else {Capability.UNPRIVILEGED}
            device = outcome(t.request(-1, f"open {hexed(b'/dev/ashmem')} {O_RDWR | O_CLOEXEC}"), first_int)
            if device.succeeded:
                found.add(Capability.ASHMEM_DEVICE)
        finally:
            t.kill(-1)
        return found

    def identity(self) -> dict[str, str]:
        loaded = self.loaded
        if loaded is None:
            return {}
        return {"implementation": loaded.name or "(the library gives no name)",
                "library": str(self.library_file),
                "interface": f"ashcheck_impl.h version {loaded.version}",
                "calls": " ".join(sorted(loaded.slots)),
                "kernel": platform.release()}

    def perform(self, op: o.Op) -> Outcome:
        why = self.unsupported.get(type(op))
        if why is not None:  # the suite does not send these; if it does, nothing is claimed
            return indeterminate(f"{op.call} is declared unsupported ({why}) and was not performed")
        return super().perform(op)

    def _perform(self, op: o.Op) -> Outcome:
        got = super()._perform(op)
        if isinstance(op, (o.BinderSend, o.BinderReply)):
            return emulated(got)  # SCM_RIGHTS with binder's rules applied here: no binder ran
        return got


def main(argv: list[str]) -> int:
    """`python -m ashcheck.adapters.native --include-dir | --build SOURCE.c [compiler args]`."""
    parser = argparse.ArgumentParser(prog="python -m ashcheck.adapters.native",
                                     description="the C interface for native implementations")
    parser.add_argument("--include-dir", action="store_true", help="print the directory of ashcheck_impl.h")
    parser.add_argument("--build", metavar="SOURCE", type=Path,
                        help="compile SOURCE into a shared library (cached) and print its path")
    parser.add_argument("libs", nargs="*", help="with --build: arguments after the source (-L, -l)")
    args = parser.parse_args(argv)
    if args.include_dir:
        print(include_dir())
    if args.build is not None:
        try:
            print(build_library(args.build, libs=args.libs))
        except build.BuildError as exc:
            print(f"ashcheck: {exc}", file=sys.stderr)
            return 1
    if not (args.include_dir or args.build):
        parser.print_usage(sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
