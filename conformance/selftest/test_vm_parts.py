"""The kernel adapter's parts that need no VM: choosing a kernel by name or path, its options,
known bugs applied per exact release, leaving modules out, and temporary folders of dead owners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ashcheck.adapters.kernel import KernelAdapter
from ashcheck.adapters.vm import known_bugs, owned
from ashcheck.adapters.vm.assets import VmAssets, VmError
from ashcheck.adapters.vm.fetch import kernel_choice
from ashcheck.adapters.vm.kernels import DEFAULT, KERNELS, DebianKernel
from ashcheck.adapters.vm.qemu import without_modules
from ashcheck.spec import RULES


# choosing a kernel --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", KERNELS)
def test_a_kernel_is_chosen_by_name(name: str) -> None:
    choice = kernel_choice(name)
    assert isinstance(choice, DebianKernel) and choice.name == name
    assert {"virtio_pci", "virtio_console", "binder_linux"} <= set(choice.roots)


def test_the_default_kernel_is_5_10_with_ashmem() -> None:
    choice = kernel_choice(None)
    assert isinstance(choice, DebianKernel) and choice.name == DEFAULT == "5.10"
    assert "ashmem_linux" in choice.drivers
    assert all("ashmem_linux" not in k.drivers for k in KERNELS.values() if k.name != "5.10")


def test_a_kernel_is_chosen_by_path(tmp_path: Path) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(b"whatever: checked when it boots")
    assert kernel_choice(str(image), str(tmp_path)) == image


@pytest.mark.parametrize(("kernel", "modules", "complaint"), [
    ("7.0", None, "neither a kernel of the catalogue"),
    ("/no/such/vmlinux", None, "neither a kernel of the catalogue"),
    ("6.1", "/some/dir", "modules= goes with a kernel given by path"),
])
def test_a_wrong_kernel_option_is_a_usage_error(kernel: str, modules: str | None, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        kernel_choice(kernel, modules)
    options = {"kernel": kernel} | ({"modules": modules} if modules else {})
    with pytest.raises(ValueError, match=complaint):
        KernelAdapter(**options)


def test_regions_takes_auto_ashmem_or_memfd() -> None:
    for regions in ("auto", "ashmem", "memfd"):
        KernelAdapter(kernel="6.1", regions=regions)
    with pytest.raises(ValueError, match="regions='shm'"):
        KernelAdapter(regions="shm")


def test_vm_fetch_refuses_an_unknown_kernel_as_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "ashcheck.conformance.cli", "vm", "fetch", "--kernel", "4.19"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "5.10, 6.1, 6.12" in done.stderr


# known bugs per exact release ---------------------------------------------------------------------
def test_known_bugs_name_spec_rules_their_release_and_a_mechanism() -> None:
    assert known_bugs.KNOWN_BUGS, "the table is empty"
    for release, bugs in known_bugs.KNOWN_BUGS.items():
        assert bugs, release
        for rule, why in bugs.items():
            assert rule in RULES, rule
            assert why.startswith("known bug of ") and f"({release})" in why, why
            assert "mm/" in why, f"{why}: the reason names the kernel code that lets it through"


@pytest.mark.parametrize("release", sorted(known_bugs.KNOWN_BUGS))
def test_known_bugs_apply_to_their_release_and_profile_only(release: str) -> None:
    bugs = known_bugs.KNOWN_BUGS[release]
    assert known_bugs.deviations(release, "memfd") == dict(bugs)  # every entry is a memfd-mode rule
    assert known_bugs.deviations(release, "ashmem") == {}
    # the same kernel with another ABI number, a later Debian build, a user's build: nothing declared
    abi, _, flavour = release.partition("-amd64")
    for other in (f"{release}+", release.replace("-amd64", "-cloud-amd64"), release.upper(), release[:-1],
                  abi + "1-amd64" + flavour, ""):
        assert known_bugs.deviations(other, "memfd") == {}, other


def test_releases_without_known_bugs_declare_nothing() -> None:
    for release in ("6.12.117+deb13-amd64", "6.18.0-1-amd64", "5.10.223-android12-9", "user"):
        assert release not in known_bugs.KNOWN_BUGS
        assert known_bugs.deviations(release, "memfd") == {}


# leaving modules out ------------------------------------------------------------------------------
def _assets(tmp_path: Path, *names: str) -> VmAssets:
    return VmAssets(kernel=tmp_path / "vmlinux", modules=tuple(tmp_path / f"{n}.ko" for n in names),
                    busybox=tmp_path / "busybox", release="5.10.0-32-amd64", origin="test", package="p 1")


def test_without_modules_leaves_out_exactly_those(tmp_path: Path) -> None:
    assets = _assets(tmp_path, "ashmem_linux", "binder_linux", "virtio", "virtio_console")
    kept = without_modules(assets, ["ashmem_linux"])
    assert [m.name for m in kept.modules] == ["binder_linux.ko", "virtio.ko", "virtio_console.ko"]
    assert (kept.kernel, kept.release, kept.package) == (assets.kernel, assets.release, assets.package)


def test_without_a_module_the_guest_does_not_load_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(VmError, match="loads no module ashmem_linux"):
        without_modules(_assets(tmp_path, "binder_linux"), ["ashmem_linux"])


# temporary folders of dead owners ---------------------------------------------------------------
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_folder_names_its_owner_and_outlives_only_a_living_one(tmp_path: Path) -> None:
    mine = owned.make("t-", tmp_path)
    assert mine.name.startswith(f"t-{os.getpid()}.{owned.start_time(os.getpid())}-")
    parent = os.getppid()
    living = tmp_path / f"t-{parent}.{owned.start_time(parent)}-abc"
    reused = tmp_path / f"t-{parent}.{(owned.start_time(parent) or 0) + 1}-abc"  # same pid, another process
    dead = tmp_path / f"t-{_dead_pid()}.1-abc"
    dead_old_style = tmp_path / f"t-{_dead_pid()}-abc"
    other_prefix = tmp_path / f"u-{_dead_pid()}.1-abc"
    not_ours = tmp_path / "t-notapid-abc"
    for folder in (living, reused, dead, dead_old_style, other_prefix, not_ours):
        folder.mkdir()
        (folder / "console.log").write_text("x")
    removed = owned.sweep("t-", tmp_path)
    assert sorted(removed) == sorted([reused, dead, dead_old_style])
    assert all(not f.exists() for f in removed)
    assert all(f.exists() for f in (mine, living, other_prefix, not_ours))


def test_making_a_folder_first_removes_those_of_dead_owners(tmp_path: Path) -> None:
    dead = tmp_path / f"t-{_dead_pid()}.1-abc"
    dead.mkdir()
    owned.make("t-", tmp_path)
    assert not dead.exists()
