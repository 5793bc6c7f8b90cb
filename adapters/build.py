"""Build the native executor (executor.c → `ashcheck-exec`) on first use, and cache it.

The host build uses `$CC` or `cc`; the Android ABIs (and the host, when it has no C compiler) are
static musl binaries built with `python -m ziglang cc` (pip install ashcheck[cross]). A build lands
in `${XDG_CACHE_HOME:-~/.cache}/ashcheck/executor/<key>-<target>/ashcheck-exec`, where the key
hashes the source, the compiler's identity and the flags, so that editing executor.c or changing
the compiler rebuilds. A build is made in a temporary directory and renamed into place: two
processes racing (pytest-xdist workers) both end with the same complete binary.

Builds are reproducible: the same source, compiler and flags give the same bytes.

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


def cache_key(source: bytes, target: str | None) -> str:
    """16 hex digits of sha256(source, compiler identity, flags)."""
    cc, target_flags = compiler(target)
    digest = hashlib.sha256()
    for part in (source, _identity(tuple(cc)), " ".join((*FLAGS, *target_flags)).encode()):
        digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()[:16]


def executor_path(target: str | None = None) -> Path:
    """The executor binary for `target` (None or "host": this machine; x86_64, aarch64, armv7, x86:
    static musl), built on first use. Raises BuildError."""
    target = None if target == "host" else target
    source = SOURCE.read_bytes()
    final = cache_root() / f"{cache_key(source, target)}-{target or 'host'}"
    binary = final / BINARY
    if binary.exists():  # a directory only appears complete (renamed into place)
        return binary
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    try:
        _compile(source, target, tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not binary.exists():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return binary


def _compile(source: bytes, target: str | None, workdir: Path) -> None:
    """Compile a copy of `source` inside workdir (the same bytes that were hashed)."""
    src = workdir / "executor.c"
    src.write_bytes(source)
    cc, target_flags = compiler(target)
    command = [*cc, *target_flags, *FLAGS, "-o", BINARY, src.name]
    env = dict(os.environ, SOURCE_DATE_EPOCH="0")
    try:
        done = subprocess.run(command, capture_output=True, timeout=BUILD_TIMEOUT, cwd=workdir, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"`{shlex.join(command)}` could not run: {exc}") from exc
    if done.returncode != 0 or not (workdir / BINARY).exists():
        stderr = done.stderr.decode(errors="replace").strip()
        raise BuildError(f"`{shlex.join(command)}` failed with status {done.returncode}:\n{stderr}")
    src.unlink()


def main_build(argv: list[str]) -> int:
    """`ashcheck executor build`: build (or find in the cache) and print the binary's path."""
    parser = argparse.ArgumentParser(prog="ashcheck executor build", description="build the native executor")
    parser.add_argument("--target", choices=["host", *TARGETS], default="host",
                        help="host (this machine, $CC or cc) or a static Android ABI (needs ziglang)")
    parser.add_argument("--out", type=Path, help=f"copy the binary to DIR/{BINARY}")
    args = parser.parse_args(argv)
    try:
        path = executor_path(args.target)
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
