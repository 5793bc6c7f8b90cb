"""Build the native executor (executor.c → `ashcheck-exec`) on first use, cache it, and check what
the cache holds before it is used.

Targets, and what builds them:
- `host`: this machine (the memfd adapter). The system C compiler: `$CC` if set, else `musl-gcc`,
  else `cc`; static when it has a static C library (musl, or glibc's libc.a from libc6-dev),
  dynamic otherwise. With no C compiler at all, ziglang builds a static binary for this machine.
- `x86_64`: a static x86_64 Linux binary (the kernel adapter's VM, whose guest has no libc). On an
  x86_64 host, the system C compiler with a static C library; elsewhere, ziglang.
- Android ABIs `aarch64`, `armv7`, `x86`, and `android-x86_64` (also spelled `android-aarch64`,
  `android-armv7`, `android-x86`): static musl binaries cross-built by `python -m ziglang cc`
  (pip install 'ashcheck[cross]'). ziglang is needed for these only.

`unavailable_reason(target)` says, cheaply and without building, whether a build could run here.

Variants: "default", and "dlopen": a dynamically linked host executor (glibc's `cc` or `$CC`, never
musl-gcc: the native libraries it loads link glibc) that can load a native implementation of the
ashmem calls (executor_impl.c, ashcheck_impl.h; adapters/native.py). The source of every build is
executor.c together with the files it includes; the variant is part of the key and of the folder.

The cache: `${XDG_CACHE_HOME:-~/.cache}/ashcheck/executor/<key>-<target>/ashcheck-exec`, where the
key hashes the source, the compiler's identity (its version banner and the static C library it
links), the flags and the target, so that editing executor.c or changing the compiler rebuilds. A
build is made in a temporary directory and renamed into place (atomically): processes racing
(pytest-xdist workers) end with the same complete binary. Builds are reproducible.

What the cache holds is checked before it is trusted. Every binary is compiled with its version,
the first 16 hex digits of sha256(executor.c), and holds the string "ashcheck-exec version
<version>". A cached binary must be a complete ELF file of the target's class and machine, static
where the target needs it, holding its version; where this machine can run it, it is started and
must answer `version` with it. A cached binary that fails (truncated, random bytes, a script,
another version) is rebuilt once, with one line saying so; a fresh build that fails is a
BuildError (an AdapterUnavailable) that blames the build, not the user.

CLI: `ashcheck executor build --target host|x86_64|aarch64|armv7|x86|android-x86_64 [--out DIR]`,
or `python -m ashcheck.adapters.build --target aarch64`; prints the path of the binary.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ashcheck.adapters.base import AdapterUnavailable

SOURCE = Path(__file__).with_name("executor.c")
INCLUDED = ("executor_impl.c", "ashcheck_impl.h")  # what executor.c #includes: hashed and copied with it
# variant → (compiler flags, libraries)
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "default": ((), ()),
    "dlopen": (("-DASHCHECK_DLOPEN",), ("-ldl",)),
}
BINARY = "ashcheck-exec"
HOST, VM = "host", "x86_64"
ANDROID = {  # Android ABI → zig target triple (static musl: the device has no glibc)
    "aarch64": "aarch64-linux-musl",
    "armv7": "arm-linux-musleabihf",
    "x86": "x86-linux-musl",
    "android-x86_64": "x86_64-linux-musl",
}
ALIASES = {"android-aarch64": "aarch64", "android-armv7": "armv7", "android-x86": "x86"}
TARGETS = (HOST, VM, *ANDROID)
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
             "armv7l": "armv7", "armv8l": "armv7", "i386": "x86", "i686": "x86"}
_ZIG_TRIPLES = {"x86_64": "x86_64-linux-musl", **{k: v for k, v in ANDROID.items() if k != "android-x86_64"}}
# (ELF class in bits, e_machine, the host architecture that runs it) of each static target
_ELF = {VM: (64, 62, "x86_64"), "android-x86_64": (64, 62, "x86_64"), "aarch64": (64, 183, "aarch64"),
        "armv7": (32, 40, "armv7"), "x86": (32, 3, "x86")}
PT_LOAD, PT_INTERP = 1, 3
VERSION_PREFIX = b"ashcheck-exec version "
# No -g and stripped: no paths or timestamps enter the binary. The source is compiled by a relative
# name in its build dir rather than through -ffile-prefix-map=<tmpdir>: zig keys its cache of the
# compiled musl on the flags, and a random path there would rebuild musl (≈1 min) every time. For
# the same reason the version is written into the compiled copy of the source, not given by -D.
FLAGS = ("-O2", "-s")
BUILD_TIMEOUT = 900  # seconds: zig compiles musl itself the first time it targets an ABI (≈1.5 min)
RUN_CHECK_TIMEOUT = 10.0  # seconds for a cached binary to answer `version`


class BuildError(AdapterUnavailable):
    """The executor cannot be built or cached here: the adapter that needs it cannot start. The
    message says why (the command and the compiler's stderr, or what to install)."""


@dataclass(frozen=True)
class Toolchain:
    """How a target is built here."""

    command: tuple[str, ...]  # the compiler, with arguments of its own ($CC may carry some)
    flags: tuple[str, ...]    # target flags: -static, -target <triple>
    static: bool
    runs_here: bool           # this machine can start the binary (so the check does)
    libc: str = ""            # the static C library it links, part of the cache key


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ashcheck" / "executor"


def sources() -> dict[str, bytes]:
    """executor.c and the files it includes, by name: what is compiled, hashed and versioned."""
    here = Path(__file__).parent
    return {SOURCE.name: SOURCE.read_bytes(), **{name: (here / name).read_bytes() for name in INCLUDED}}


def _joined(files: dict[str, bytes]) -> bytes:
    """The files as one byte string (lengths delimit names and contents)."""
    return b"".join(len(n).to_bytes(8, "little") + n.encode() + len(d).to_bytes(8, "little") + d
                    for n, d in files.items())


def version(source: bytes | None = None) -> str:
    """The executor's version: 16 hex digits of sha256 of its sources (or of `source`)."""
    return hashlib.sha256(_joined(sources()) if source is None else source).hexdigest()[:16]


def _canonical(target: str | None) -> str:
    target = HOST if target is None else ALIASES.get(target, target)
    if target not in TARGETS:
        raise BuildError(f"unknown target {target!r} for the executor; known: {', '.join(TARGETS)}")
    return target


def _host_arch() -> str | None:
    return _MACHINES.get(platform.machine().lower())


def _zig() -> tuple[str, ...] | None:
    return (sys.executable, "-m", "ziglang", "cc") if importlib.util.find_spec("ziglang") else None


def _host_cc() -> list[str] | None:
    """This host's glibc C compiler, for what links against the system's libraries (the dlopen
    variant, native libraries): $CC (it may carry flags), else `cc` on PATH, else None."""
    if cc := os.environ.get("CC"):
        return shlex.split(cc)
    found = shutil.which("cc")
    return [found] if found else None


def _c_compilers() -> list[tuple[str, ...]]:
    """$CC (it may carry flags, e.g. "gcc -m32") if set; else musl-gcc and cc, those on PATH."""
    if cc := os.environ.get("CC"):
        return [tuple(shlex.split(cc))]
    return [(found,) for name in ("musl-gcc", "cc") if (found := shutil.which(name))]


@functools.cache
def _static_libc(cc: tuple[str, ...]) -> str:
    """The libc.a that `cc -static` links, or "" if it has none (`-print-file-name` then echoes
    the bare name back)."""
    try:
        done = subprocess.run([*cc, "-print-file-name=libc.a"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    path = done.stdout.strip()
    return os.path.realpath(path) if done.returncode == 0 and os.path.isabs(path) and os.path.isfile(path) else ""


def toolchain(target: str | None = HOST, variant: str = "default") -> Toolchain:
    """How `target` (and `variant`) is built on this machine. Raises BuildError saying what to install."""
    target = _canonical(target)
    if variant not in VARIANTS:
        raise BuildError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if variant != "default":
        host_cc = _host_cc()
        if target != HOST or host_cc is None:
            raise BuildError(f"the {variant} executor is built for this host only, with its C compiler ($CC or "
                             "cc): " + ("none found: apt install gcc" if host_cc is None else f"not for {target}"))
        flags, _ = VARIANTS[variant]
        return Toolchain(tuple(host_cc), flags, False, True)
    arch, zig = _host_arch(), _zig()
    if target in ANDROID:
        if zig is None:
            raise BuildError(f"the Android executor ({target}) is cross-built with ziglang: "
                             "pip install 'ashcheck[cross]' (or pip install ziglang)")
        return Toolchain(zig, ("-target", ANDROID[target], "-static"), True, arch == _ELF[target][2])
    compilers = _c_compilers() if target == HOST or arch == "x86_64" else []
    for cc in compilers:
        if libc := _static_libc(cc):
            return Toolchain(cc, ("-static",), True, True, libc)
    if target == HOST and compilers:  # no static C library: a dynamic build runs here all the same
        return Toolchain(compilers[0], (), False, True)
    if zig is not None and (target == VM or arch in _ZIG_TRIPLES):
        triple = _ZIG_TRIPLES[VM if target == VM else str(arch)]
        return Toolchain(zig, ("-target", triple, "-static"), True, target == HOST or arch == "x86_64")
    if target == HOST:
        raise BuildError("the executor needs a C compiler: apt install gcc libc6-dev (Debian, Ubuntu), "
                         "or pip install ziglang")
    if arch != "x86_64":
        raise BuildError(f"the VM's static x86_64 executor is cross-built on this {platform.machine()} host "
                         "with ziglang: pip install 'ashcheck[cross]'")
    if not compilers:
        raise BuildError("the VM's static x86_64 executor needs a C compiler: apt install gcc libc6-dev "
                         "(or musl-tools), or pip install ziglang")
    raise BuildError(f"the VM's static x86_64 executor needs a static C library, and `{shlex.join(compilers[0])} "
                     "-print-file-name=libc.a` finds none: apt install libc6-dev (glibc's libc.a) or musl-tools, "
                     "or pip install ziglang")


def unavailable_reason(target: str = HOST, variant: str = "default") -> str | None:
    """None if the executor for `target` can be built (or is cached) here, else why not. Cheap: it
    looks for the compiler and the static C library and at the cache folder; it builds nothing."""
    try:
        tc = toolchain(target, variant)
    except BuildError as exc:
        return str(exc)
    root = cache_root()
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return None
    with contextlib.suppress(BuildError, OSError):  # unwritable, but what we need may be there
        if (_cache_dir(_joined(sources()), _canonical(target), tc, variant) / BINARY).is_file():
            return None
    return f"the executor cache {root} cannot be written ({existing} is not a writable folder): set XDG_CACHE_HOME"


@functools.cache
def _identity(cc: tuple[str, ...]) -> bytes:
    """What identifies a compiler: its version banner (zig: the ziglang package version)."""
    if cc[1:3] == ("-m", "ziglang"):
        return b"ziglang " + importlib.metadata.version("ziglang").encode()
    try:
        done = subprocess.run([*cc, "--version"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"the C compiler {shlex.join(cc)} does not run: {exc}") from exc
    return shlex.join(cc).encode() + b"\0" + done.stdout


def cache_key(source: bytes, target: str | None = HOST, variant: str = "default") -> str:
    """16 hex digits of sha256(source, compiler identity, static libc, flags, target, variant)."""
    target = _canonical(target)
    return _key(source, target, toolchain(target, variant), variant)


def _key(source: bytes, target: str, tc: Toolchain, variant: str = "default") -> str:
    libc = b""
    if tc.libc:
        st = os.stat(tc.libc)
        libc = f"{tc.libc} {st.st_size} {st.st_mtime_ns}".encode()
    digest = hashlib.sha256()
    libs = " ".join(VARIANTS[variant][1])
    for part in (source, _identity(tc.command), libc, " ".join((*FLAGS, *tc.flags)).encode(),
                 f"{target} {variant} {libs}".encode()):
        digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()[:16]


def _cache_dir(source: bytes, target: str, tc: Toolchain, variant: str = "default") -> Path:
    suffix = "" if variant == "default" else f"-{variant}"
    return cache_root() / f"{_key(source, target, tc, variant)}-{target}{suffix}"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def executor_path(target: str | None = HOST, variant: str = "default", *,
                  say: Callable[[str], None] = _say) -> Path:
    """The executor binary for `target` (see the module doc; None is the host) and `variant`,
    built on first use, and checked before it is returned. A cached binary that fails the check is
    rebuilt once, and `say` gets one line about it. Raises BuildError (no compiler, a failed
    build, an unwritable cache, a fresh build that fails the check)."""
    target = _canonical(target)
    tc = toolchain(target, variant)
    files = sources()
    source = _joined(files)
    final = _cache_dir(source, target, tc, variant)
    binary = final / BINARY
    if binary.exists():
        problem = check(binary, target, version(source), tc)
        if problem is None:
            return binary
        say(f"ashcheck: the cached executor {binary} is unusable ({problem}); rebuilding it")
    try:
        final.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    except OSError as exc:
        raise BuildError(f"the executor cache {cache_root()} cannot be written ({exc}): "
                         "set XDG_CACHE_HOME to a writable folder") from exc
    try:
        command = _compile(files, tc, tmp, VARIANTS[variant][1])
        if problem := check(tmp / BINARY, target, version(source), tc):
            raise BuildError(f"the executor just built by `{shlex.join(command)}` is unusable: {problem}. The "
                             "compiler or its C library is at fault here, not the cache nor your setup; another "
                             "compiler may do (CC=..., musl-gcc from musl-tools, or pip install ziglang)")
        os.replace(tmp / BINARY, binary)  # atomic: a racing process sees the old file or this one
    except OSError as exc:
        raise BuildError(f"the executor cache {cache_root()} cannot be written ({exc}): "
                         "set XDG_CACHE_HOME to a writable folder") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return binary


def _compile(files: dict[str, bytes], tc: Toolchain, workdir: Path, libs: tuple[str, ...] = ()) -> list[str]:
    """Compile copies of `files` (executor.c with its version written in, and what it includes)
    inside workdir; return the command."""
    for name, data in files.items():
        (workdir / name).write_bytes(data)
    src = workdir / SOURCE.name
    src.write_bytes(f'#define ASHCHECK_EXEC_VERSION "{version(_joined(files))}"\n#line 1 "executor.c"\n'.encode()
                    + files[SOURCE.name])
    command = [*tc.command, *tc.flags, *FLAGS, "-o", BINARY, src.name, *libs]
    env = dict(os.environ, SOURCE_DATE_EPOCH="0")
    try:
        done = subprocess.run(command, capture_output=True, timeout=BUILD_TIMEOUT, cwd=workdir, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"`{shlex.join(command)}` could not run: {exc}") from exc
    if done.returncode != 0 or not (workdir / BINARY).exists():
        stderr = done.stderr.decode(errors="replace").strip()
        raise BuildError(f"`{shlex.join(command)}` failed with status {done.returncode}:\n{stderr}")
    return command


def check(binary: Path, target: str, expected: str, tc: Toolchain) -> str | None:
    """None if `binary` is a usable executor of version `expected` for `target`, else what is
    wrong with it. Where this machine can run it, it is started and asked its version."""
    try:
        data = binary.read_bytes()
    except OSError as exc:
        return f"it cannot be read: {exc}"
    if problem := elf_problem(data, _ELF.get(target), static=tc.static):
        return problem
    if VERSION_PREFIX + expected.encode() not in data:
        found = re.search(re.escape(VERSION_PREFIX) + rb"([0-9a-z]{1,16})", data)
        return f"it is version {found.group(1).decode()}, not {expected}" if found else "it holds no executor version"
    if tc.runs_here:
        from ashcheck.adapters.channel import Executor, ExecutorError

        try:
            Executor(binary, timeout=RUN_CHECK_TIMEOUT, version=expected).close()
        except ExecutorError as exc:
            return str(exc)
    return None


def elf_problem(data: bytes, want: tuple[int, int, str] | None, *, static: bool) -> str | None:
    """What keeps `data` from being a complete ELF executable (of `want`: class bits, e_machine),
    or None. Truncation shows as a header, segment or section table past the end of the file."""
    if data[:4] != b"\x7fELF":
        return "it is a script, not an ELF binary" if data[:2] == b"#!" else "it is not an ELF binary"
    bits = {1: 32, 2: 64}.get(data[4]) if len(data) > 5 else None
    if bits is None or data[5] != 1 or len(data) < (64 if bits == 64 else 52):
        return "it is truncated or not a little-endian ELF file"
    machine = struct.unpack_from("<H", data, 18)[0]
    if want is not None and (bits, machine) != want[:2]:
        return f"it is an ELF file for machine {machine} ({bits}-bit), not for {want[2]}"
    if bits == 64:
        phoff, shoff = struct.unpack_from("<QQ", data, 32)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 54)
    else:
        phoff, shoff = struct.unpack_from("<II", data, 28)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 42)
    if phnum == 0 or phoff + phnum * phentsize > len(data) or (shoff and shoff + shnum * shentsize > len(data)):
        return f"it is truncated ({len(data)} bytes: its header tables lie past the end)"
    types = []
    for i in range(phnum):
        base = phoff + i * phentsize
        if bits == 64:
            p_type, _, offset, _, _, filesz = struct.unpack_from("<IIQQQQ", data, base)
        else:
            p_type, offset, _, _, filesz = struct.unpack_from("<IIIII", data, base)
        if p_type == PT_LOAD and offset + filesz > len(data):
            return f"it is truncated ({len(data)} bytes, a segment ends at {offset + filesz})"
        types.append(p_type)
    if PT_LOAD not in types:
        return "it has nothing to load"
    if static and PT_INTERP in types:
        return "it is dynamically linked, and must be static"
    return None


def main_build(argv: list[str]) -> int:
    """`ashcheck executor build`: build (or find in the cache) and print the binary's path."""
    parser = argparse.ArgumentParser(prog="ashcheck executor build", description="build the native executor")
    parser.add_argument("--target", choices=[*TARGETS, *ALIASES], default=HOST,
                        help="host (this machine, the system C compiler), x86_64 (static, for the VM), or a "
                             "static Android ABI (needs ziglang)")
    parser.add_argument("--variant", choices=list(VARIANTS), default="default",
                        help="dlopen: a host executor that can load a native implementation (ashcheck_impl.h)")
    parser.add_argument("--out", type=Path, help=f"copy the binary to DIR/{BINARY}")
    args = parser.parse_args(argv)
    try:
        path = executor_path(args.target, args.variant)
    except BuildError as exc:
        print(f"ashcheck: {exc}", file=sys.stderr)
        return 1
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        copy = args.out / BINARY
        with contextlib.suppress(FileNotFoundError):
            copy.unlink()  # it may be running (ETXTBSY on overwrite)
        shutil.copy2(path, copy)
        path = copy
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main_build(sys.argv[1:]))
