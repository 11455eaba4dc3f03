"""One tgtd's whole change list: its targets, each with its tid, in tgt-admin's order. Pure."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from tgtwatch.tgt.changes import Change, apply_change, target_changes
from tgtwatch.tgt.records import InstanceRecord


def new_tids(
    applied: InstanceRecord, desired: InstanceRecord, in_use: Collection[int]
) -> dict[str, int]:
    """tids for the targets tgtd does not hold yet: the file's own (controller_tid, a nonzero
    tid in `desired`), else tgt-admin's max + 1, in sorted name order."""
    taken = set(in_use) | {tid for tid, _ in applied.targets.values()}
    tids: dict[str, int] = {}
    for name in sorted(set(desired.targets) - set(applied.targets)):
        explicit = desired.targets[name][0]
        tids[name] = explicit or max(taken, default=0) + 1
        taken.add(tids[name])
    return tids


def instance_changes(
    applied: InstanceRecord, desired: InstanceRecord, *, tids_in_use: Collection[int] = ()
) -> tuple[Change, ...]:
    """What turns the targets `applied` describes into those `desired` describes.

    Kept targets keep their tids; new ones take the file's or tgt-admin's (new_tids).
    """
    changes: list[Change] = []
    for name, (tid, old) in sorted(applied.targets.items(), key=lambda e: e[1][0]):
        new = desired.targets.get(name)
        if new is not None and new[1] == old:
            continue  # most targets of a reload: equal records make no change, skip the diff
        changes += target_changes(tid, old, new[1] if new else None)
    for name, tid in sorted(new_tids(applied, desired, tids_in_use).items(), key=lambda e: e[1]):
        changes += target_changes(tid, None, desired.targets[name][1])
    return tuple(changes)


def apply_instance_change(record: InstanceRecord, change: Change) -> InstanceRecord:
    """The instance record once `change` ran on tgtd."""
    current = record.targets.get(change.target)
    updated = apply_change(current[1] if current else None, change)
    targets = dict(record.targets)
    if updated is None:
        targets.pop(change.target, None)
    else:
        targets[change.target] = (change.tid, updated)
    return replace(record, targets=targets)
