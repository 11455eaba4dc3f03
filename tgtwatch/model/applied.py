"""What each target runs with after an action, and which busy targets wait: pure."""

from __future__ import annotations

from tgtwatch.model.structs import AppliedEntry, InstanceSpec


def pending_targets(
    spec: InstanceSpec, entry: AppliedEntry | None, busy: tuple[str, ...]
) -> tuple[str, ...]:
    """Busy targets whose config differs from what they run (unknown counts as differing)."""
    running = dict(entry.targets) if entry is not None else {}
    wanted = {t.name: t.digest for t in spec.targets}
    return tuple(name for name in busy if name not in running or wanted.get(name) != running[name])


def running_targets(
    spec: InstanceSpec, entry: AppliedEntry | None, pending: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """What each target runs with after an action: the new config, but a pending one its old."""
    running = dict(entry.targets) if entry is not None else {}
    now = {t.name: t.digest for t in spec.targets}
    for name in pending:
        now[name] = running.get(name, "")
    return tuple(sorted(now.items()))
