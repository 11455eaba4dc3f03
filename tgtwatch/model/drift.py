"""What runs compared with what was applied: a managed tgtd's drift, and its repair. Pure.

A managed tgtd must be `ready` and hold the targets tgtwatch applied, each with the LUNs of
the config it was applied from. Anything else is drift: a drain interrupted (offline), a
start cut short between "offline" and "ready", a target deleted by hand, a LUN whose
backing store was missing when the target was made.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tgtwatch.model.structs import AppliedEntry, InstanceSpec, ObservedInstance


class Repair(enum.Enum):
    """What brings a drifted tgtd back to what was applied."""

    NONE = "none"
    READY = "ready"  # only the system state: set it ready
    RELOAD = "reload"  # targets or LUNs missing: apply the file again (sets ready too)


@dataclass(frozen=True)
class Drift:
    offline: bool = False
    missing: tuple[str, ...] = ()  # applied targets tgtd does not have
    short: tuple[tuple[str, int, int], ...] = ()  # (target, LUNs it has, LUNs applied)

    def __bool__(self) -> bool:
        return self.offline or bool(self.missing) or bool(self.short)

    @property
    def repair(self) -> Repair:
        if self.missing or self.short:
            return Repair.RELOAD
        return Repair.READY if self.offline else Repair.NONE

    @property
    def targets(self) -> tuple[str, ...]:
        """The targets that do not run as applied."""
        return self.missing + tuple(name for name, _, _ in self.short)

    def __str__(self) -> str:
        parts = ["system state offline (new logins refused)"] if self.offline else []
        parts += [f"target {name} missing" for name in self.missing]
        parts += [f"{name} has {have} of {want} LUNs" for name, have, want in self.short]
        return "; ".join(parts)


def expected_luns(spec: InstanceSpec, entry: AppliedEntry | None) -> dict[str, int | None]:
    """Each target that must run -> the LUNs it must have (None: unknown, it runs a config
    older than the file's, e.g. a target left pending)."""
    wanted = {t.name: t for t in spec.targets}
    if entry is None or not entry.targets:
        # No record of each target (adopted, or a state file from before targets were
        # recorded): the file's own, when it is what was applied.
        if entry is not None and entry.sha256 != spec.sha256:
            return {}
        return {t.name: t.luns for t in spec.targets}
    out: dict[str, int | None] = {}
    for name, digest in entry.targets:
        target = wanted.get(name)
        same = target is not None and digest != "" and digest == target.digest
        out[name] = target.luns if target is not None and same else None
    return out


def drift_of(spec: InstanceSpec, entry: AppliedEntry | None, running: ObservedInstance) -> Drift:
    """How an inspected tgtd differs from what was applied on its port."""
    have = {t.name: t.luns for t in running.targets}
    expected = expected_luns(spec, entry)
    missing = tuple(sorted(name for name in expected if name not in have))
    short = tuple(
        (name, have[name], want)
        for name, want in sorted(expected.items())
        if want is not None and name in have and have[name] < want
    )
    return Drift(running.system_state == "offline", missing, short)


def after_action(spec: InstanceSpec, pending: tuple[str, ...], running: ObservedInstance) -> Drift:
    """What a start or reload did not land: every target of the file must run, each with
    its LUNs, except those left pending (busy: they run their old config)."""
    have = {t.name: t.luns for t in running.targets}
    missing = tuple(sorted(t.name for t in spec.targets if t.name not in have))
    short = tuple(
        (t.name, have[t.name], t.luns)
        for t in sorted(spec.targets, key=lambda t: t.name)
        if t.name in have and t.name not in pending and have[t.name] < t.luns
    )
    return Drift(running.system_state == "offline", missing, short)
