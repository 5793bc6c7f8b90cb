"""Build the native executor (executor.c → `ashcheck-exec`) on first use, and cache it.

The host build uses `$CC` or `cc`; the Android ABIs (and the host, when it has no C compiler) are
static musl binaries built with `python -m ziglang cc` (pip install ashcheck[cross]). A build lands
in `${XDG_CACHE_HOME:-~/.cache}/ashcheck/executor/<key>-<target>/ashcheck-exec`, where the key
hashes the source, the compiler's identity and the flags, so that editing executor.c or changing
the compiler rebuilds. A build is made in a temporary directory and renamed into place: two
processes racing (pytest-xdist workers) both end with the same complete binary.

Builds are reproducible: the same source, compiler and flags give the same bytes.

Variants: "default", and "dlopen": a dynamically linked host executor that can load a native
implementation of the ashmem calls (executor_impl.c, ashcheck_impl.h; adapters/native.py).
The variant is part of the key (its flags) and of the directory name.

CLI: `ashcheck executor build --target x86_64|aarch64|armv7|x86|host [--out DIR]`, or
`python -m ashcheck.adapters.build --target aarch64`; prints the path of the binary.
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
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("executor.c")
INCLUDED = ("executor_impl.c", "ashcheck_impl.h")  # what executor.c #includes: hashed and copied with it
# variant → (compiler flags, libraries); "dlopen" is built for this host with its C compiler only
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "default": ((), ()),
    "dlopen": (("-DASHCHECK_DLOPEN",), ("-ldl",)),
}
BINARY = "ashcheck-exec"
# Android ABI name → zig target triple (static musl: the device has no glibc, the VM no libc at all)
TARGETS = {
    "x86_64": "x86_64-linux-musl",
    "aarch64": "aarch64-linux-musl",
    "armv7": "arm-linux-musleabihf",
    "x86": "x86-linux-musl",
}
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
             "armv7l": "armv7", "armv8l": "armv7", "i386": "x86", "i686": "x86"}
# No -g and stripped: no paths or timestamps enter the binary. The source is compiled by a relative
# name in its build dir rather than through -ffile-prefix-map=<tmpdir>: zig keys its cache of the
# compiled musl on the flags, and a random path there would rebuild musl (≈1 min) every time.
FLAGS = ("-O2", "-s")
BUILD_TIMEOUT = 900  # seconds: zig compiles musl itself the first time it targets an ABI (≈1.5 min)


class BuildError(Exception):
    """The executor could not be built; the message holds the command and the compiler's stderr."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ashcheck" / "executor"


def _zig() -> list[str]:
    if importlib.util.find_spec("ziglang") is None:
        raise BuildError("cross builds need ziglang: pip install 'ashcheck[cross]' (or pip install ziglang)")
    return [sys.executable, "-m", "ziglang", "cc"]


def _host_cc() -> list[str] | None:
    """$CC (may carry flags, e.g. "gcc -m32"), else `cc` on PATH, else None."""
    if cc := os.environ.get("CC"):
        return shlex.split(cc)
    found = shutil.which("cc")
    return [found] if found else None


def _host_target() -> str:
    arch = _MACHINES.get(platform.machine().lower())
    if arch is None:
        raise BuildError(f"no C compiler and no static target for this machine ({platform.machine()})")
    return arch


def compiler(target: str | None) -> tuple[list[str], list[str]]:
    """(compiler command, target flags) for `target` (None: this host)."""
    if target is None:
        cc = _host_cc()
        if cc is not None:
            return cc, []
        target = _host_target()  # no C compiler: a static build for this machine's ABI runs too
    if target not in TARGETS:
        raise BuildError(f"unknown target {target!r}; known: host, {', '.join(TARGETS)}")
    return _zig(), ["-target", TARGETS[target], "-static"]


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


def _variant(target: str | None, variant: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(flags, libraries) of `variant`; the non-default variants need this host's C compiler."""
    if variant not in VARIANTS:
        raise BuildError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if variant != "default" and target is not None:
        raise BuildError(f"the {variant} variant is built for this host only, not {target}")
    if variant != "default" and _host_cc() is None:
        raise BuildError(f"the {variant} variant needs this host's C compiler ($CC or cc): none found")
    return VARIANTS[variant]


def _sources() -> dict[str, bytes]:
    """executor.c and the files it includes, by name."""
    here = Path(__file__).parent
    return {SOURCE.name: SOURCE.read_bytes(), **{name: (here / name).read_bytes() for name in INCLUDED}}


def _joined(files: dict[str, bytes]) -> bytes:
    """The files as one byte string for the key (lengths delimit names and contents)."""
    return b"".join(len(n).to_bytes(8, "little") + n.encode() + len(d).to_bytes(8, "little") + d
                    for n, d in files.items())


def cache_key(source: bytes, target: str | None, variant: str = "default") -> str:
    """16 hex digits of sha256(source, compiler identity, flags, variant)."""
    cc, target_flags = compiler(target)
    flags, libs = _variant(target, variant)
    digest = hashlib.sha256()
    for part in (source, _identity(tuple(cc)), " ".join((*FLAGS, *target_flags, *flags, *libs)).encode(),
                 variant.encode()):
        digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()[:16]


def executor_path(target: str | None = None, variant: str = "default") -> Path:
    """The executor binary for `target` (None or "host": this machine; x86_64, aarch64, armv7, x86:
    static musl), built on first use. `variant` "dlopen": the host executor that can load a native
    implementation (ashcheck_impl.h). Raises BuildError."""
    target = None if target == "host" else target
    files = _sources()
    suffix = "" if variant == "default" else f"-{variant}"
    final = cache_root() / f"{cache_key(_joined(files), target, variant)}-{target or 'host'}{suffix}"
    binary = final / BINARY
    if binary.exists():  # a directory only appears complete (renamed into place)
        return binary
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    try:
        _compile(files, target, tmp, variant)
        try:
            tmp.rename(final)
        except OSError:
            if not binary.exists():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return binary


def _compile(files: dict[str, bytes], target: str | None, workdir: Path, variant: str = "default") -> None:
    """Compile copies of `files` inside workdir (the same bytes that were hashed)."""
    copies = [workdir / name for name in files]
    for copy in copies:
        copy.write_bytes(files[copy.name])
    src = workdir / SOURCE.name
    cc, target_flags = compiler(target)
    flags, libs = _variant(target, variant)
    command = [*cc, *target_flags, *FLAGS, *flags, "-o", BINARY, src.name, *libs]
    env = dict(os.environ, SOURCE_DATE_EPOCH="0")
    try:
        done = subprocess.run(command, capture_output=True, timeout=BUILD_TIMEOUT, cwd=workdir, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"`{shlex.join(command)}` could not run: {exc}") from exc
    if done.returncode != 0 or not (workdir / BINARY).exists():
        stderr = done.stderr.decode(errors="replace").strip()
        raise BuildError(f"`{shlex.join(command)}` failed with status {done.returncode}:\n{stderr}")
    for copy in copies:
        copy.unlink()


def main_build(argv: list[str]) -> int:
    """`ashcheck executor build`: build (or find in the cache) and print the binary's path."""
    parser = argparse.ArgumentParser(prog="ashcheck executor build", description="build the native executor")
    parser.add_argument("--target", choices=["host", *TARGETS], default="host",
                        help="host (this machine, $CC or cc) or a static Android ABI (needs ziglang)")
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
