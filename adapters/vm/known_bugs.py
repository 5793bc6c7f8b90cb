"""Known bugs of exact kernel releases, declared as the kernel adapter's deviations.

A seal is a contract (spec rules memfd.seal.*): a kernel that lets a new shared mapping of a
write-sealed memfd be, or become, writable fails the rule. Where a kernel release is known to do
so, the adapter declares the rule as a deviation *of that release only*, keyed by its exact
`uname -r`, with the mechanism: the report then says "known bug of <release>", and any other
release (a newer Debian kernel, a user's kernel) that shows a bypass fails.

Every entry was observed by replaying, in the guest in memfd mode, each way a new mapping can meet
an older one of the same file (conformance/selftest/seal_meetings.py; test_vm.py keeps this table
and those replays in agreement, both ways):

| release (Debian package)            | new writable mmap | mprotect to writable | store changes the file | write() |
|-------------------------------------|-------------------|----------------------|------------------------|---------|
| 5.10.0-32-amd64 (5.10.223-1)        | bypassed          | bypassed             | yes, after either      | EPERM   |
| 6.1.0-50-amd64 (6.1.176-1)          | bypassed          | held                 | yes, after the mmap    | EPERM   |
| 6.12.117+deb13-amd64 (6.12.117-1)   | held              | held                 | —                      | EPERM   |

Each bypass needs the new mapping to land right below or right above an older shared mapping of
the same memfd, made before the seal, with the same prot, and file-contiguous with it; a mapping
that is not contiguous (or of another prot) always met the seal. 5.10's ashmem driver keeps its
prot mask in every meeting (its mappings' file is the backing shmem file, a new mapping's is
/dev/ashmem: they never merge), so these are memfd-mode bugs only.
"""

from __future__ import annotations

from collections.abc import Mapping

from ashcheck.spec import RULES

_MERGE = ("a new MAP_SHARED mapping made after F_SEAL_FUTURE_WRITE that lands right below or right above an "
          "older shared mapping of the same memfd, file-contiguous with it and with the same prot, is merged "
          "into it by mm/mmap.c ")

KNOWN_BUGS: Mapping[str, Mapping[str, str]] = {
    "5.10.0-32-amd64": {
        "memfd.seal.mmap": "known bug of Debian 5.10.223-1 (5.10.0-32-amd64): " + _MERGE + "mmap_region (vma_merge, "
                           "before call_mmap) so shmem_mmap's seal_check_future_write never sees it: with PROT_WRITE "
                           "next to a writable one it succeeds, and stores through it change the sealed file",
        "memfd.seal.mprotect": "known bug of Debian 5.10.223-1 (5.10.0-32-amd64): " + _MERGE + "mmap_region "
                               "(vma_merge, before call_mmap), so shmem_mmap never clears its VM_MAYWRITE: a "
                               "read-only one can be mprotect'ed writable, and stores through it change the "
                               "sealed file",
    },
    "6.1.0-50-amd64": {
        "memfd.seal.mmap": "known bug of Debian 6.1.176-1 (6.1.0-50-amd64): " + _MERGE + "__mmap_region (\"attempt "
                           "to expand an old mapping\": vma_expand, before call_mmap) so shmem_mmap's seal_check_write "
                           "never refuses it: with PROT_WRITE next to a writable one it succeeds, and stores through "
                           "it change the sealed file (a read-only one is not merged: do_mmap clears its VM_MAYWRITE "
                           "first, is_readonly_sealed, so mprotect holds)",
    },
}


def deviations(release: str, profile: str) -> dict[str, str]:
    """The known bugs of the kernel whose `uname -r` is exactly `release`, for the rules of `profile`
    (rule id → reason); {} for a release not in the table."""
    return {rule: why for rule, why in KNOWN_BUGS.get(release, {}).items() if profile in RULES[rule].profiles}
