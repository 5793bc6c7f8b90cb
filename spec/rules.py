"""The rule registry: every behaviour the spec states has a stable id, a summary and a source.

Rule ids are dotted (`ashmem.mmap.size-zero`): area, operation, case. They are the unit of
reporting (per rule × adapter: pass, fail, xfail, skip, unknown) and the keys of adapters'
declared deviations, so an id, once published, is never reused for another meaning.

Sources name the driver function and kernel version, a library file and commit, or an
observation on a real kernel (K510-OBS = ../shared/semantics/kernel-observed.md, Debian
bullseye 5.10.0-46-amd64 with ashmem_linux and binder_linux under qemu).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    id: str
    summary: str
    source: str
    needs: tuple[str, ...] = ()  # capability values (adapters.base.Capability) the rule needs
    profiles: tuple[str, ...] = ("ashmem", "memfd")  # profiles in which the rule applies


RULES: dict[str, Rule] = {}

# Ids that were published once and are gone: never to be declared again with another meaning.
RETIRED = {
    "memfd.seal.merge-bypass": "a seal bypass is a failure of memfd.seal.mmap / memfd.seal.mprotect, not an "
                               "allowed outcome",
    "memfd.write.sealed": "renamed memfd.seal.write",
}


def declare(*rules: Rule) -> None:
    """Register rules; a duplicate or retired id is a programming error."""
    for r in rules:
        if r.id in RULES or r.id in RETIRED:
            raise ValueError(f"rule {r.id} declared twice, or retired")
        RULES[r.id] = r


def rule_ids(profile: str) -> list[str]:
    return sorted(r.id for r in RULES.values() if profile in r.profiles)
