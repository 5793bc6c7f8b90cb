"""Boot the guest in qemu and talk to it over virtio-serial ports.

The configuration is the fastest one measured in kernel-observed.md (§4) on these 2-core machines:
TCG (KVM hangs here), `-cpu qemu64` (cheaper to emulate than `max`), q35, the ELF vmlinux booted
by PVH, kernel arguments that skip calibrations and probes a throwaway guest does not need, and a
virtio-serial device with the hub's port and PROC_PORTS process ports (SERIAL_DEVICE). The host side
of each port is a unix socket in a private temp dir, named after its owning process (owned.py) so
that one left by a killed run is removed by the next boot; the kernel console goes to a log file
there, whose tail is quoted when a boot fails.

What /init writes on the hub's port (init.sh): `* vm-version <uname -v>`, then `* vm ashmem=0|1
binder=0|1 release=<uname -r> memory=… ports=<process ports> failed=…`, then the executor's hub
serves `<proc> <request>` lines. `* ping` is answered `* ok`. The hub hands a process port to each
process it spawns (executor.c's `spawn`, channel.Hub).

No qemu outlives its Python process: it is killed by the kernel when the thread that started it
dies (PR_SET_PDEATHSIG, set in the child before exec), and shut down by a weakref finalizer that
also runs at interpreter exit — after a KeyboardInterrupt, too. qemu gets its own process group,
so a Ctrl-C on the terminal reaches Python only, which then shuts qemu down in order.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from ashcheck.adapters.vm import image, owned
from ashcheck.adapters.vm.assets import VmAssets, VmError
from ashcheck.adapters.vm.fetch import kernel_choice, prepare
from ashcheck.adapters.vm.kernels import DEFAULT, KERNELS

PORT_NAME = "ashcheck0"
QEMU = "qemu-system-x86_64"
# The kernel command line. kernel-observed.md's fast arguments (no calibration, no i8042 probing,
# no mitigations), and three more measured here with initcall_debug, medians of 6 boots:
# cryptomgr.notests skips the crypto self-tests (DH and RSA alone ≈0.4 s; 2.27 → 1.77 s),
# rodata=off skips the W+X scan of the kernel mapping, acpi=off the ACPI namespace (both together
# 1.81 → 1.56 s). Without ACPI the guest cannot power off, so /init reboots instead, by triple
# fault (reboot=t), and -no-reboot turns that into qemu's exit. panic=-1 does the same on a panic.
# norandmaps: no address-space randomization in the guest, so that where a mapping lands (which
# decides whether the kernel merges it with a neighbour) is the same on every run and in replays.
# mitigations=off only drops speculation defences (retpolines, RSB filling; PTI with a CPU model
# that says Intel), which a throwaway test VM does not need: no semantics the suite checks depend
# on them. qemu64 says AuthenticAMD, so its kernel has no PTI anyway (Meltdown: "Not affected");
# with kvm64 (Intel) PTI cost +30–70 % on a `* ping` and +8–30 % on a child's ping (issue 13).
FAST_ARGS = ("console=ttyS0 quiet loglevel=1 panic=-1 mitigations=off no_timer_check tsc=reliable "
             "lpj=4000000 i8042.noaux i8042.nokbd i8042.nopnp noreplace-smp nokaslr norandmaps "
             "cryptomgr.notests rodata=off acpi=off reboot=t")
# The hub's port and PROC_PORTS more, one per modelled process (port 0 is a console's, unused): the
# host talks to a process on its own port, so a request no longer passes through the hub, whose
# switches to and from the process under TCG flush qemu's translation caches (issue 13: a child's
# ping through the channel 520 → 210 µs, what a hub's own costs). No ioeventfd: a guest's kick is
# then handled in the vCPU thread instead of going through an eventfd to qemu's main loop
# (measured under TCG: a `* ping` −30–45 %, a child's ping and GET_SIZE −5–15 %). Not 30 ports:
# qemu announces every port at once on the control queue (32 buffers) and drops what does not
# fit; past about 15 ports the `host connected` events are lost, and the guest's writes to such a
# port block for good (seen with 31). The exploration has at most 3 processes; past PROC_PORTS,
# processes are reached through the hub.
PROC_PORTS = 8
SERIAL_DEVICE = f"virtio-serial-pci,max_ports={PROC_PORTS + 2},ioeventfd=off"
CONSOLE_TAIL = 40
WORKDIR_PREFIX = "ashcheck-vm-"  # then the owner (owned.py): those of dead owners are removed
SHUTDOWN_GRACE = 2.0  # seconds for the guest to reboot (= qemu exits) after the host hangs up

_PR_SET_PDEATHSIG = 1
# Resolved in the parent: the child between fork and exec should only make the system call.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def unavailable_reason() -> str | None:
    """None if qemu can be started here, else what to install."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} not found: install the `qemu-system-x86` package"
    return None


def _die_with_parent(parent: int) -> None:
    # Runs in the child before exec. The signal fires when the *thread* that forked exits, so a VM
    # should be booted from a thread that lives as long as it (the main thread, typically).
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def port_name(index: int) -> str:
    """The guest's name of process port `index` (0 ≤ index < PROC_PORTS): /dev/virtio-ports/<it>."""
    return f"{PORT_NAME[:-1]}{index + 1}"


def command(assets: VmAssets, initrd: Path, workdir: Path, memory_mb: int, cpus: int = 1) -> list[str]:
    """The qemu command line: console to workdir/console.log, the hub's port to workdir/port.sock,
    process port i to workdir/p<i>.sock. More than one cpu runs TCG multi-threaded (one host thread
    per vCPU): guest processes truly in parallel, as concurrent histories want."""
    accel = "tcg" if cpus == 1 else "tcg,thread=multi"
    procs = [arg for i in range(PROC_PORTS) for arg in (
        "-chardev", f"socket,id=p{i},path={workdir / f'p{i}.sock'},server=on,wait=off",
        "-device", f"virtserialport,chardev=p{i},name={port_name(i)}")]
    return [
        QEMU, "-accel", accel, "-cpu", "qemu64", "-M", "q35", "-m", str(memory_mb), "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(assets.kernel), "-initrd", str(initrd), "-append", f"{FAST_ARGS} ashcheck_ports={PROC_PORTS}",
        "-chardev", f"file,id=con,path={workdir / 'console.log'}", "-serial", "chardev:con",
        "-device", SERIAL_DEVICE,
        "-chardev", f"socket,id=port,path={workdir / 'port.sock'},server=on,wait=off",
        "-device", f"virtserialport,chardev=port,name={PORT_NAME}",
        *procs,
    ]


def _stop(proc: subprocess.Popen[bytes], sock: socket.socket | None, workdir: Path,
          ports: list[socket.socket] | tuple[()] = ()) -> None:
    """Hang up (the hub ends on EOF and /init reboots: qemu exits), then terminate, then kill; remove workdir.
    A module-level function so the finalizer holds no reference to the Vm."""
    for port in ports:
        port.close()
    if sock is not None:
        sock.close()
    try:
        proc.wait(SHUTDOWN_GRACE if sock is not None else 0)
    except subprocess.TimeoutExpired:
        for sig, wait in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    shutil.rmtree(workdir, ignore_errors=True)


class _Lines:
    """Lines from the port, with a deadline, noticing when qemu is gone."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        self.sock, self.proc = sock, proc
        self.buffer = bytearray()

    def readline(self, deadline: float | None) -> str:
        while b"\n" not in self.buffer:
            wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if wait <= 0:
                raise VmError("the guest did not answer in time")
            if select.select([self.sock], [], [], wait)[0]:
                try:
                    chunk = self.sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    raise VmError("the guest closed the port")
                self.buffer += chunk
            elif self.proc.poll() is not None:
                raise VmError(f"qemu exited with status {self.proc.returncode}")
        line, _, rest = self.buffer.partition(b"\n")
        self.buffer = bytearray(rest)
        return line.decode(errors="replace")

    def until_pong(self, deadline: float) -> dict[str, str]:
        """Read up to the `* ok` answering the boot's ping; return what `* vm …` reported, with
        `version` from `* vm-version …` (uname -v, which holds spaces)."""
        guest: dict[str, str] = {}
        version = None
        while (line := self.readline(deadline)) != "* ok":
            if line.startswith("* vm "):
                guest = dict(word.partition("=")[::2] for word in line.split()[2:])
            elif line.startswith("* vm-version "):
                version = line[len("* vm-version "):]
        if not guest:
            raise VmError("the hub answered before /init reported the guest (no `* vm …` line)")
        if version is not None:
            guest["version"] = version
        return guest


class Vm:
    """A running guest. Use `Vm.boot(...)`, then `request`/`ping`, then `close()` (or `with`).

    Attributes:
        boot_seconds: from starting qemu to the hub's first `* ok`.
        guest: what /init reported: {"ashmem": "1", "binder": "1", "release": <uname -r>,
            "version": <uname -v>, "memory": …, "failed": <modules that did not load>}.
        socket: the connected port, for a protocol client (blocking, no timeout).
        ports: the connected process ports the guest has (`ports=` of its report), in order:
            ports[i] is /dev/virtio-ports/<port_name(i)> in the guest.
        workdir: the private temp dir (console.log, qemu.log, *.sock), removed by close().
    """

    def __init__(self, proc: subprocess.Popen[bytes], lines: _Lines, workdir: Path,
                 guest: dict[str, str], boot_seconds: float, ports: list[socket.socket]) -> None:
        self.proc, self.socket, self.workdir = proc, lines.sock, workdir
        self.guest, self.boot_seconds = guest, boot_seconds
        count = guest.get("ports", "0")
        self.ports = ports[:int(count) if count.isdigit() else 0]
        self._lines = lines
        self._finalizer = weakref.finalize(self, _stop, proc, lines.sock, workdir, ports)

    @property
    def has_ashmem(self) -> bool:
        return self.guest.get("ashmem") == "1"

    @property
    def has_binder(self) -> bool:
        return self.guest.get("binder") == "1"

    @property
    def memory_bytes(self) -> int | None:
        """The guest's MemTotal + SwapTotal, as its /init read them."""
        value = self.guest.get("memory", "")
        return int(value) if value.isdigit() else None

    @classmethod
    def boot(cls, assets: VmAssets, *, timeout: float = 60, memory_mb: int = 512,
             executor: Path | None = None, cpus: int = 1, extra: Mapping[str, bytes] | None = None) -> Vm:
        """Start a guest and wait until its hub answers `* ping`.

        Args:
            assets: from fetch() or user_assets().
            timeout: seconds until a boot that is not ready is killed.
            memory_mb: guest memory.
            cpus: guest vCPUs.
            executor: the static x86_64 binary to run as the hub; default: the project's executor.
            extra: more executable files for the guest (path → bytes), as image.build takes them.
        Raises:
            VmError: qemu is missing, exited, or was not ready in time; the message quotes the
                last lines of the kernel console and qemu's own errors.
        """
        if reason := unavailable_reason():
            raise VmError(reason)
        initrd = image.build(assets, executor or _default_executor(), extra)
        workdir = owned.make(WORKDIR_PREFIX)  # removing those of dead owners first
        start = time.monotonic()
        with open(workdir / "qemu.log", "wb") as log:
            proc = subprocess.Popen(command(assets, initrd, workdir, memory_mb, cpus), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, process_group=0,
                                    preexec_fn=functools.partial(_die_with_parent, os.getpid()))
        sock: socket.socket | None = None
        ports: list[socket.socket] = []
        try:
            sock = _connect(proc, workdir / "port.sock", start + timeout)
            ports.extend(_connect(proc, workdir / f"p{i}.sock", start + timeout) for i in range(PROC_PORTS))
            sock.sendall(b"* ping\n")  # waits in the socket until the hub reads it
            lines = _Lines(sock, proc)
            guest = lines.until_pong(start + timeout)
        except BaseException as exc:
            message = _failure(exc, proc, workdir, timeout) if isinstance(exc, (VmError, OSError)) else ""
            if sock is not None:
                sock.close()
            _stop(proc, None, workdir, ports)
            if message:
                raise VmError(message) from exc
            raise
        return cls(proc, lines, workdir, guest, time.monotonic() - start, ports)

    def request(self, line: str, timeout: float | None = 30) -> str:
        """Send one protocol line, return the next line the guest sends. Raises VmError when no
        line comes within `timeout` seconds (None: wait forever) or the guest is gone."""
        self.socket.sendall(line.encode() + b"\n")
        return self._lines.readline(None if timeout is None else time.monotonic() + timeout)

    def readline(self, timeout: float | None = 30) -> str:
        """The next line the guest sends (after a request whose answer has several). Raises VmError
        as `request` does."""
        return self._lines.readline(None if timeout is None else time.monotonic() + timeout)

    def ping(self) -> float:
        """One `* ping` round trip, in seconds. Raises VmError on a wrong answer."""
        start = time.perf_counter()
        answer = self.request("* ping")
        if answer != "* ok":
            raise VmError(f"`* ping` was answered {answer!r}")
        return time.perf_counter() - start

    def console_tail(self, lines: int = CONSOLE_TAIL) -> str:
        """The last lines of the kernel console (empty once closed)."""
        return _tail(self.workdir / "console.log", lines)

    @property
    def alive(self) -> bool:
        return self._finalizer.alive and self.proc.poll() is None

    def close(self) -> None:
        """Hang up, let the guest reboot (qemu exits), kill qemu if it does not, remove the temp dir.
        Idempotent."""
        self._finalizer()

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _default_executor() -> Path:
    try:
        from ashcheck.adapters.build import executor_path  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise VmError(f"the executor build is not available ({exc}); pass executor=PATH") from exc
    return Path(executor_path("x86_64"))


def _sweep_workdirs() -> list[Path]:
    """Remove the temp dirs of VMs whose Python process is gone (each boot does it first). A process
    killed by SIGKILL cannot clean up (qemu dies with it, by PDEATHSIG); the next boot does it instead."""
    return owned.sweep(WORKDIR_PREFIX)


def _connect(proc: subprocess.Popen[bytes], path: Path, deadline: float) -> socket.socket:
    """Connect to qemu's listening socket as soon as qemu has created it."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
        if proc.poll() is not None:
            raise VmError(f"qemu exited with status {proc.returncode} before opening the port")
        if time.monotonic() > deadline:
            raise VmError("qemu did not open the port in time")
        time.sleep(0.005)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _failure(exc: BaseException, proc: subprocess.Popen[bytes], workdir: Path, timeout: float) -> str:
    """The boot failure message: why, what qemu said, and the end of the kernel console."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(0.5 if isinstance(exc, VmError) and "closed" in str(exc) else 0)  # ending on its own?
    if proc.poll() is None:
        why = f"{exc} (boot timeout {timeout:g} s); qemu was killed"
    else:  # the port closing, or nothing to read, follows from that
        why = f"qemu exited with status {proc.returncode}" + ("" if isinstance(exc, VmError) else f" ({exc})")
    parts = [f"the VM did not boot: {why}"]
    if qemu := _tail(workdir / "qemu.log", 10):
        parts.append(f"qemu said:\n{qemu}")
    console = _tail(workdir / "console.log", CONSOLE_TAIL)
    parts.append(f"last {CONSOLE_TAIL} lines of the kernel console:\n{console}" if console else
                 "the kernel console is empty (a quiet boot shows only panics and /init's own errors there)")
    return "\n\n".join(parts)


def main_boot_check(argv: list[str]) -> int:
    """`ashcheck vm boot-check [--kernel NAME|PATH [--modules DIR]] [--without MODULE] [--standin] [--pings N]`:
    boot, ping, print the boot time, what the guest offers and the ping round trip, shut down.
    0 ok, 1 VmError, 2 usage error."""
    parser = argparse.ArgumentParser(prog="ashcheck vm boot-check", description=main_boot_check.__doc__)
    parser.add_argument("--standin", action="store_true", help="a shell stand-in instead of the executor's hub")
    parser.add_argument("--kernel", default=DEFAULT, metavar="|".join([*KERNELS, "PATH"]),
                        help=f"a Debian kernel by name (default {DEFAULT}), or your own vmlinux or bzImage")
    parser.add_argument("--modules", type=Path, help="with --kernel PATH: a directory of .ko files to load")
    parser.add_argument("--without", action="append", default=[], metavar="MODULE",
                        help="do not load this module (e.g. ashmem_linux: the 5.10 guest in memfd mode)")
    parser.add_argument("--pings", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    try:
        choice = kernel_choice(args.kernel, args.modules)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        assets = without_modules(prepare(choice, args.modules), args.without)
        with Vm.boot(assets, timeout=args.timeout,
                     executor=image.standin_executor() if args.standin else None) as vm:
            rtt = statistics.median(vm.ping() for _ in range(max(1, args.pings)))
            print(f"booted {assets.origin} in {vm.boot_seconds:.2f} s; guest: "
                  f"{' '.join(f'{k}={v}' for k, v in sorted(vm.guest.items()) if k != 'version')}; "
                  f"ping {rtt * 1e6:.0f} µs; uname -v: {vm.guest.get('version', '?')}")
    except VmError as exc:
        print(f"ashcheck vm boot-check: {exc}", file=sys.stderr)
        return 1
    return 0


def without_modules(assets: VmAssets, names: list[str] | tuple[str, ...]) -> VmAssets:
    """`assets` whose guest does not load the modules `names` (e.g. ashmem_linux, for a 5.10 guest
    with binder only). Raises VmError for a name the guest would not have loaded anyway, so that a
    typo does not pass for a module left out."""
    loaded = {m.name.removesuffix(".ko") for m in assets.modules}
    unknown = sorted(set(names) - loaded)
    if unknown:
        raise VmError(f"the guest of {assets.origin} loads no module {', '.join(unknown)} "
                      f"(it loads {', '.join(sorted(loaded)) or 'none'})")
    kept = tuple(m for m in assets.modules if m.name.removesuffix(".ko") not in names)
    return replace(assets, modules=kept)


if __name__ == "__main__":
    sys.exit(main_boot_check(sys.argv[1:]))
