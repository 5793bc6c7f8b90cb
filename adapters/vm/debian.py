"""Packages from one Debian suite (bullseye, bookworm, trixie: kernels.py), fetched with the host's
own apt but a private state directory per suite.

Why a private apt directory: the host's apt configuration, lists and dpkg status stay untouched,
and the host may run any Debian release: each suite gets its own sources list (passed with
`-o Dir::Etc::sourcelist=…`, the host's sources.list.d ignored), lists, status and package cache.
Only the archive's address is borrowed from the host's sources (the entry of its own release), so
whatever mirror or proxy the machine is set up for is used; ASHCHECK_DEBIAN_ARCHIVE overrides it
(e.g. on a non-Debian host that still has apt, or once a suite has moved to archive.debian.org).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from ashcheck.adapters.vm.assets import Progress, VmError

DEFAULT_SUITE = "bullseye"  # where busybox-static comes from when the host has none
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
ARCHIVE_ENV = "ASHCHECK_DEBIAN_ARCHIVE"


def host_codename() -> str:
    """This host's Debian release (VERSION_CODENAME in /etc/os-release), or "" when it names none."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return ""
    found = re.search(r"^VERSION_CODENAME=\"?([^\"\n]*)", text, re.MULTILINE)
    return found.group(1) if found else ""


def _deb822_uris(text: str, codename: str) -> list[str]:
    uris = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if ("deb" in fields.get("types", "").split() and codename in fields.get("suites", "").split()
                and fields.get("enabled", "yes").lower() != "no"):
            uris.extend(fields.get("uris", "").split())
    return uris


def _one_line_uris(text: str, codename: str) -> list[str]:
    uris = []
    for line in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == codename:
            uris.append(words[1])
    return uris


def archive_uri(suite: str) -> str:
    """The Debian archive URI of the host's apt entry for its own release (or $ASHCHECK_DEBIAN_ARCHIVE),
    to read `suite` from. Raises VmError when the host's sources name none."""
    if os.environ.get(ARCHIVE_ENV):
        return os.environ[ARCHIVE_ENV]
    codename = host_codename()
    etc = Path("/etc/apt")
    for source in sorted(etc.glob("sources.list.d/*.sources")):
        if uris := _deb822_uris(source.read_text(errors="replace"), codename):
            return uris[0]
    for source in [etc / "sources.list", *sorted(etc.glob("sources.list.d/*.list"))]:
        if source.is_file() and (uris := _one_line_uris(source.read_text(errors="replace"), codename)):
            return uris[0]
    raise VmError(f"no apt source for this host's release ({codename or 'unknown'}) in /etc/apt: "
                  f"set {ARCHIVE_ENV} to a Debian archive URI that carries {suite}")


def _dpkg_compare(a: str, b: str) -> int:
    """Debian version ordering, as dpkg itself decides it."""
    if a == b:
        return 0
    newer = subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0
    return 1 if newer else -1


def newest(candidates: list[tuple[str, str]], prefer: str = "-unsigned") -> tuple[str, str]:
    """The (package, version) with the highest version; on a tie, the name ending in `prefer`."""
    def compare(x: tuple[str, str], y: tuple[str, str]) -> int:
        return _dpkg_compare(x[1], y[1]) or int(x[0].endswith(prefer)) - int(y[0].endswith(prefer))

    return max(candidates, key=functools.cmp_to_key(compare))


class Apt:
    """apt-get / apt-cache on a private state directory `root`, reading only `suite`/main amd64
    (and its source packages if `sources`)."""

    def __init__(self, root: Path, progress: Progress, suite: str = DEFAULT_SUITE, *, sources: bool = False) -> None:
        self.root = root
        self.suite = suite
        self.sources = sources
        self.progress = progress
        self._updated = False
        self._uri = ""
        self.stderr = ""  # of the last command, for messages

    def _options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::sourcelist={self.root / 'sources.list'}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={self.root / 'lists'}",
            "-o", f"Dir::State::status={self.root / 'status'}",  # empty: the host's packages don't count
            "-o", f"Dir::Cache={self.root / 'cache'}",
            "-o", "APT::Architecture=amd64",  # the guest's architecture, whatever the host's
            "-o", "APT::Architectures=amd64",
            "-o", "Acquire::Languages=none",
        ]

    def _run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        if shutil.which(tool) is None:
            raise VmError(f"`{tool}` not found: the kernel adapter fetches its Debian kernels with apt "
                          "(a Debian-like host with the `apt` package)")
        done = subprocess.run([tool, *self._options(), *args], cwd=cwd, capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            self._fail(f"{tool} {' '.join(args)}", done.stderr or done.stdout)
        self.stderr = done.stderr
        return done.stdout

    def _fail(self, what: str, output: str) -> None:
        tail = "\n".join(output.strip().splitlines()[-8:])
        raise VmError(f"`{what}` failed with the {self.suite} sources of {self._uri}:\n{tail}")

    def update(self) -> None:
        """Fetch the suite's package lists once per instance."""
        if self._updated:
            return
        if not KEYRING.is_file():
            raise VmError(f"{KEYRING} is missing: install the `debian-archive-keyring` package")
        self._uri = archive_uri(self.suite)
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "status").write_text("")
        kinds = ("deb", "deb-src") if self.sources else ("deb",)
        (self.root / "sources.list").write_text("".join(f"{kind} [signed-by={KEYRING}] {self._uri} {self.suite} main\n"
                                                        for kind in kinds))
        self.progress(f"apt: reading the {self.suite} package lists from {self._uri}")
        self._run("apt-get", "update")
        # apt-get update exits 0 when it could not fetch a list, and only warns: look for the list.
        if not any((self.root / "lists").glob(f"*_dists_{self.suite}_main_binary-amd64_Packages*")):
            self._fail("apt-get update", self.stderr + "\n(no package list was fetched: is the archive reachable?)")
        self._updated = True

    def versions(self, pattern: str) -> list[tuple[str, str]]:
        """(package, version) for every package whose whole name matches the regex `pattern`."""
        self.update()
        prefix = re.match(r"[\w.+-]*", pattern)
        names = [n for n in self._run("apt-cache", "pkgnames", prefix.group(0) if prefix else "").split()
                 if re.fullmatch(pattern, n)]
        if not names:
            return []
        shown = self._run("apt-cache", "show", *names)
        return re.findall(r"^Package: (\S+)\n(?:.+\n)*?Version: (\S+)", shown, re.MULTILINE)

    def download(self, package: str, version: str, dest: Path) -> Path:
        """The .deb of package=version, downloaded into `dest`."""
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        self._run("apt-get", "download", f"{package}={version}", cwd=dest)
        debs = sorted(dest.glob(f"{package}_*.deb"))
        if not debs:
            raise VmError(f"apt-get download {package}={version} left no .deb in {dest}")
        return debs[0]


    def source(self, package: str, dest: Path) -> list[Path]:
        """The files of source package `package` (newest in the suite: .dsc, tarballs), downloaded
        into `dest`, not unpacked."""
        assert self.sources, "an Apt made with sources=True"
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        self._run("apt-get", "source", "--download-only", package, cwd=dest)
        return sorted(dest.glob(f"{package}_*"))


def extract(deb: Path, dest: Path) -> Path:
    """Unpack a .deb's files (not its scripts) under `dest`, as dpkg would install them."""
    if shutil.which("dpkg-deb") is None:
        raise VmError("`dpkg-deb` not found: install the `dpkg` package")
    done = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise VmError(f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()}")
    return dest
