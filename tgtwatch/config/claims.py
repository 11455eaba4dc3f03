"""Each backing store to one instance: the allowed roots, and no path another instance exports.

The instance that keeps a contested store is the one that already exports it: the
default instance first, then a file applied and unchanged since, then one applied at
all, then the first in sorted order. Another file naming the store is refused, unless
its LUN says `allow-in-use yes`; then it is accepted and its records say it shares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from tgtwatch.config.stores import StoreFacts, StoreProbe, store_problem
from tgtwatch.model.structs import Applied, InstanceKind, InstanceSpec, Problem, Rule


def rank(spec: InstanceSpec, applied: Applied) -> tuple[int, str]:
    if spec.kind is InstanceKind.DEFAULT:
        return (0, "")
    entry = applied.entries.get(spec.port)
    if entry is not None and entry.config == spec.config:
        return (1 if entry.sha256 == spec.sha256 else 2, str(spec.config))
    return (3, str(spec.config))


def check_stores(
    specs: Sequence[InstanceSpec],
    applied: Applied,
    probe: StoreProbe,
    roots: Sequence[Path],
    owner_uid: int = 0,
    judge: Callable[[str, StoreFacts], str | None] | None = None,
) -> tuple[list[InstanceSpec], list[Problem]]:
    """The specs whose stores may be used (with notes on shared ones), and the problems
    of the others. The default instance's stores are the distribution's: they are not
    held to the roots, but nobody else may take them. `judge`: store_problem with these
    roots and owner, or one that remembers its verdicts (incremental.InstanceCache)."""
    claims: dict[str, str] = {}
    accepted: list[InstanceSpec] = []
    problems: list[Problem] = []
    for spec in sorted(specs, key=lambda s: rank(s, applied)):
        tree = spec.tree
        if tree is None:
            accepted.append(spec)
            continue
        mine: dict[str, str] = {}
        found: list[Problem] = []
        notes: list[str] = []
        for target in tree.targets:
            for lun in target.luns:
                where = f"target {target.name}: LUN {lun.number}: "
                line = lun.line if lun.file == spec.config else None
                facts = probe.facts(lun.path)
                if spec.kind is InstanceKind.DROPIN:
                    why = (
                        judge(lun.path, facts)
                        if judge is not None
                        else store_problem(lun.path, facts, roots, owner_uid)
                    )
                    if why is not None:
                        found.append(Problem(spec.config, Rule.STORE, where + why, line))
                        continue
                key = facts.resolved or lun.path
                other = mine.get(key) or claims.get(key)
                label = f"{spec.name} target {target.name} LUN {lun.number}"
                if other is not None and not lun.allow_in_use:
                    found.append(
                        Problem(
                            spec.config,
                            Rule.STORE,
                            f"{where}{lun.path} is already exported by {other} "
                            "(say `allow-in-use yes` to share it)",
                            line,
                        )
                    )
                elif other is not None:
                    notes.append(f"{lun.path} shared with {other} (allow-in-use yes)")
                mine.setdefault(key, label)
        if found:
            problems += found
            continue
        for key, label in mine.items():
            claims.setdefault(key, label)
        accepted.append(replace(spec, notes=tuple(notes)) if notes else spec)
    return accepted, problems
