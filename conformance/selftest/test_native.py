"""Native implementations (adapters/ashcheck_impl.h): the executor's impl_load/impl verbs, the
dlopen build variant, build_library, NativeAdapter, and the README's example as printed.

A test library (below) answers each call with something that shows what it was given, so the
tests see that arguments cross the interface intact (64-bit sizes, NULL names, NUL-terminated
names) and that results map to outcomes by the system-call convention.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ashcheck.adapters import build
from ashcheck.adapters.base import AdapterUnavailable, Capability
from ashcheck.adapters.channel import Executor, Reply
from ashcheck.adapters.native import NativeAdapter, build_library, include_dir
from ashcheck.conformance.selftest.test_readme import readme
from ashcheck.spec import ops as o
from ashcheck.spec.outcome import Kind, err, ok

ENOSPC, EINVAL, EFAULT, ENOTTY = 28, 22, 14, 25
NO_PURGE: dict[type[o.Op], str] = {o.PurgeAllCaches: "no purge in the test library"}

TEST_LIBRARY = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ashcheck_impl.h"

#ifndef VERSION
#define VERSION ASHCHECK_IMPL_VERSION
#endif

static int64_t create_region(const char *name, size_t size)
{
	if (size == 7)
		return -ENOSPC;
	int fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}
static int64_t set_prot_region(int fd, int prot) { return prot == 99 ? -EINVAL : 100 + prot; }
static int64_t pin_region(int fd, size_t offset, size_t len) { return (int64_t)(offset + 2 * len); }
static int64_t get_size_region(int fd) { return -2147479552; }  /* an int-truncated size, not an error */
static int64_t set_name(int fd, const char *name) { return name ? (int64_t)strlen(name) : -EFAULT; }
static int64_t get_name(int fd, char *buf, size_t len) { strcpy(buf, "from-the-library"); return (int64_t)len; }

#ifndef NO_TABLE
const struct ashcheck_impl ashcheck_impl = {
	.version = VERSION,
	.size = sizeof(struct ashcheck_impl),
	.name = "test-impl 1.0",
#ifndef NO_CREATE
	.create_region = create_region,
#endif
	.set_prot_region = set_prot_region,
	.pin_region = pin_region,
	.get_size_region = get_size_region,
	.set_name = set_name,
	.get_name = get_name,
};
#endif
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache of this module's own: the test libraries' paths are random, so are their keys."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root))
        yield root


@pytest.fixture(scope="module")
def source(cache: Path) -> Path:
    path = cache.parent / "test_impl.c"
    path.write_text(TEST_LIBRARY)
    return path


@pytest.fixture(scope="module")
def library(source: Path) -> Path:
    return build_library(source)


@pytest.fixture(scope="module")
def dlopen_exe(cache: Path) -> Path:
    return build.executor_path(variant="dlopen")


def h(data: bytes) -> str:
    return data.hex() or "-"


def message(reply: Reply) -> str:
    assert reply.status == "bad", reply
    return reply.message()


# ---- the executor ------------------------------------------------------------------------------

def test_the_executor_calls_the_library(dlopen_exe: Path, library: Path) -> None:
    with Executor(dlopen_exe) as ex:
        assert "no library loaded" in message(ex.request("impl get_size_region 0"))
        loaded = ex.request(f"impl_load {h(bytes(library))}")
        assert loaded.status == "ok", loaded
        assert loaded.int(0) == 1 and loaded.bytes(1) == b"test-impl 1.0"
        assert set(loaded.fields[2:]) == {"create_region", "set_prot_region", "pin_region", "get_size_region",
                                          "set_name", "get_name"}
        assert "loaded already" in message(ex.request(f"impl_load {h(bytes(library))}"))
        fd = ex.request(f"impl create_region {h(b'na' + bytes([0]) + b'me')} 8192")
        assert fd.status == "ok" and fd.int() == 3
        assert ex.request(f"readlink {h(b'/proc/self/fd/3')}").bytes() == b"/memfd:na (deleted)"  # a C string
        assert ex.request("impl create_region - 7") == Reply("err", (str(ENOSPC),))
        assert ex.request("impl pin_region 3 0x100000000 5").int() == 2**32 + 10  # size_t, not u32
        assert ex.request("impl get_size_region 3").int() == -2147479552
        assert ex.request("impl set_prot_region 3 99") == Reply("err", (str(EINVAL),))
        assert ex.request("impl set_prot_region 3 1").int() == 101
        assert ex.request("impl set_name 3 null") == Reply("err", (str(EFAULT),))
        assert ex.request(f"impl set_name 3 {h(b'four')}").int() == 4
        name = ex.request("impl get_name 3")
        assert name.int() == 256 and name.bytes(1).split(b"\0")[0] == b"from-the-library" and len(name.bytes(1)) == 256
        assert "NULL in this library" in message(ex.request("impl get_prot_mask 3"))
        assert "no slot named" in message(ex.request("impl frobnicate 3"))
        assert "takes 3 arguments" in message(ex.request("impl pin_region 3 0"))
        assert ex.request("fds").fields == ("0", "1", "2", "3")  # loading left no fd behind


@pytest.mark.parametrize(("flags", "says"), [
    (("-DNO_TABLE",), "defines no symbol ashcheck_impl"),
    (("-DVERSION=2",), "interface version 2"),
    (("-DNO_CREATE",), "create_region is missing"),
])
def test_a_library_that_cannot_serve_is_refused_with_the_reason(dlopen_exe: Path, source: Path,
                                                                 flags: tuple[str, ...], says: str) -> None:
    wrong = build_library(source, cflags=flags)
    with Executor(dlopen_exe) as ex:
        assert says in message(ex.request(f"impl_load {h(bytes(wrong))}"))
        assert "no library loaded" in message(ex.request("impl get_size_region 0"))


def test_dlopen_errors_and_static_executors(dlopen_exe: Path, library: Path, cache: Path) -> None:
    with Executor(dlopen_exe) as ex:
        assert "dlopen" in message(ex.request(f"impl_load {h(b'/nonexistent/lib.so')}"))
    with Executor(build.executor_path()) as ex:  # the default build has no dlopen
        assert "not built in the dlopen variant" in message(ex.request(f"impl_load {h(bytes(library))}"))


# ---- building ----------------------------------------------------------------------------------

def test_the_dlopen_variant_has_its_own_key_and_place(dlopen_exe: Path) -> None:
    files = build.sources()
    assert set(files) == {"executor.c", *build.INCLUDED}
    joined = build._joined(files)
    assert build.cache_key(joined, None, "dlopen") != build.cache_key(joined, None)
    changed = build._joined({**files, "ashcheck_impl.h": files["ashcheck_impl.h"] + b"\n"})
    assert build.cache_key(changed, None, "dlopen") != build.cache_key(joined, None, "dlopen")
    assert dlopen_exe.parent.name.endswith("-host-dlopen")
    with pytest.raises(build.BuildError, match="host only"):
        build.executor_path("aarch64", variant="dlopen")
    with pytest.raises(build.BuildError, match="unknown variant"):
        build.executor_path(variant="jit")


def test_build_library_is_cached_by_content(source: Path, library: Path, tmp_path: Path) -> None:
    assert build_library(source) == library
    edited = tmp_path / source.name
    edited.write_text(TEST_LIBRARY.replace("test-impl 1.0", "test-impl 1.1"))
    assert build_library(edited) != library  # another source, another key
    assert build_library(source, cflags=("-DVERSION=1",)) != library  # other flags, another key
    broken = tmp_path / "broken.c"
    broken.write_text("int x = ;\n")
    with pytest.raises(build.BuildError, match=r"(?s)failed with status.*error"):
        build_library(broken)
    assert (include_dir() / "ashcheck_impl.h").is_file()


# ---- the adapter -------------------------------------------------------------------------------

@pytest.fixture
def adapter(library: Path) -> Iterator[NativeAdapter]:
    class Declaring(NativeAdapter):
        unsupported = NO_PURGE

    a = Declaring(library=str(library))
    a.start()
    try:
        a.reset()
        yield a
    finally:
        a.close()


def test_the_adapter_calls_the_library_and_a_program_does_the_rest(adapter: NativeAdapter) -> None:
    assert adapter.perform(o.Spawn(0)) == ok((0, 1, 2))
    assert adapter.perform(o.CreateRegion(0, b"r", 4096)) == ok(3)
    assert adapter.perform(o.CreateRegion(0, b"r", 7)) == err(ENOSPC)
    assert adapter.perform(o.GetName(0, 3)) == ok(b"from-the-library")       # a slot
    assert adapter.perform(o.SetName(0, 3, None)) == err(EFAULT)
    assert adapter.perform(o.Pin(0, 3, 4096, 4096)) == ok(3 * 4096)
    assert adapter.perform(o.GetSize(0, 3)) == ok(-2147479552)
    assert adapter.perform(o.GetProtMask(0, 3)) == err(ENOTTY)               # NULL: the raw ioctl on a memfd
    assert adapter.perform(o.Unpin(0, 3, 0, 0)) == err(ENOTTY)
    assert adapter.perform(o.Mmap(0, 3, 0, 4096, 3, True)) == ok(None)       # the executor's own calls
    assert adapter.perform(o.Store(0, 0, 0, b"abc")) == ok(None)
    assert adapter.perform(o.Read(0, 3, 3)) == ok(b"abc")
    skipped = adapter.perform(o.PurgeAllCaches(0, 3))
    assert skipped.kind is Kind.INDETERMINATE and "unsupported" in str(skipped.value)


def test_binder_on_the_host_is_marked_emulated(adapter: NativeAdapter) -> None:
    adapter.perform(o.Spawn(0))
    adapter.perform(o.Spawn(1, accepts_fds=False))
    adapter.perform(o.CreateRegion(0, b"r", 4096))
    sent = adapter.perform(o.BinderSend(0, 0, (3,)))
    assert sent.succeeded and sent.emulated and sent.value == (4,)
    refused = adapter.perform(o.BinderSend(0, 1, (3,)))
    assert refused.emulated and refused.value == "BR_FAILED_REPLY"
    assert not adapter.perform(o.Dup(0, 3)).emulated


def test_identity_and_capabilities(adapter: NativeAdapter, library: Path) -> None:
    who = adapter.identity()
    assert who["implementation"] == "test-impl 1.0" and who["library"] == str(library)
    assert who["calls"] == "create_region get_name get_size_region pin_region set_name set_prot_region"
    assert who["kernel"] == os.uname().release
    assert {Capability.MULTI_PROCESS, Capability.FD_TRANSFER, Capability.UNPRIVILEGED} <= adapter.capabilities
    assert (Capability.ASHMEM_DEVICE in adapter.capabilities) == os.path.exists("/dev/ashmem")


def test_options_and_reasons(library: Path) -> None:
    assert "library=PATH.so" in str(NativeAdapter().why_unavailable())
    assert "library=PATH.so" in str(NativeAdapter.unavailable_reason())
    assert "does not exist" in str(NativeAdapter(library="/nonexistent.so").why_unavailable())
    assert NativeAdapter(library=str(library)).why_unavailable() is None
    assert NativeAdapter(library=str(library), profile="memfd").profile == "memfd"
    with pytest.raises(ValueError, match="profile"):
        NativeAdapter(profile="windows")
    with pytest.raises(ValueError, match="unknown option"):
        NativeAdapter(librari="typo")
    with pytest.raises(AdapterUnavailable, match="does not exist"):
        NativeAdapter(library="/nonexistent.so").start()


def test_a_library_that_cannot_load_makes_the_adapter_unavailable(source: Path) -> None:
    a = NativeAdapter(library=str(build_library(source, cflags=("-DVERSION=7",))))
    with pytest.raises(AdapterUnavailable, match="interface version 7"):
        a.start()
    a.close()


# ---- the README --------------------------------------------------------------------------------

def test_the_readme_native_example_runs_as_printed(tmp_path: Path, cache: Path) -> None:
    text = readme()
    c = re.search(r"<!-- example-native-c[^\n]*-->\n```c\n(.*?)```", text, re.S)
    py = re.search(r"<!-- example-native-adapter[^\n]*-->\n```python\n(.*?)```", text, re.S)
    assert c and py, "the README lost its native example"
    package = tmp_path / "my_ashmem"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "my_ashmem.c").write_text(c.group(1))
    (package / "adapter.py").write_text(py.group(1))
    report = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "XDG_CACHE_HOME": str(cache)}
    done = subprocess.run([sys.executable, "-m", "ashcheck.conformance.cli", "run", "--adapter",
                           "my_ashmem.adapter:MyNativeAdapter", "--profile", "quick", "--report", str(report)],
                          capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = {r["rule"]: r["status"] for r in json.loads((report / "report.json").read_text())["results"]}
    assert results["ashmem.create.fd"] == "xfail"  # the deviation it declares is observed
    assert results["memfd.set-prot-mask.write-only"] == "pass"  # a call of the library, confirmed
    assert list(results.values()).count("pass") >= 35
