"""plan(desired, applied, observed): the actions that converge the host. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from itertools import count

from tgtwatch.model.drift import drift_of
from tgtwatch.model.lineage import changed_since
from tgtwatch.model.structs import (
    Action,
    Applied,
    AppliedEntry,
    Check,
    Desired,
    DrainStop,
    InstanceKind,
    InstanceSpec,
    Observed,
    ObservedInstance,
    Plan,
    Reload,
    Start,
)


def pending_released(entry: AppliedEntry, running: ObservedInstance) -> bool:
    """Whether targets tgt-admin skipped as busy have lost their sessions, so a reload lands
    (known only of an inspected tgtd: a /proc scan does not count sessions)."""
    if not entry.pending or not running.inspected:
        return False
    sessions = {t.name: t.sessions for t in running.targets}
    return all(sessions.get(name, 0) == 0 for name in entry.pending)


def _for_desired(
    spec: InstanceSpec,
    entry: AppliedEntry | None,
    running: ObservedInstance | None,
    verify: bool,
) -> list[Action]:
    if spec.kind is InstanceKind.DEFAULT:
        # The distribution's unit owns this tgtd: reload it when it runs, never start it,
        # never repair it (only its pending targets are looked at).
        if running is None:
            return []
        if entry is None or entry.sha256 != spec.sha256 or pending_released(entry, running):
            return [Reload(spec, adopt=entry is None)]
        if entry.pending and verify and not running.inspected:
            return [Check(spec)]
        return []
    # `is` first: the same path object nearly always (Path.__eq__ is Python code, and this
    # runs for every port, every cycle).
    if entry is not None and entry.config is not spec.config and entry.config != spec.config:
        # Another file now owns the port (a rename, or a port handed over): the old
        # instance drains before the new one starts, on the same serial lane.
        if running is None:
            return [Start(spec)]
        return [
            DrainStop(
                spec.port,
                running.control_port,
                entry.name,
                entry.config,
                f"{spec.config} now owns port {spec.port}",
            ),
            Start(spec),
        ]
    if running is None:
        return [Start(spec)]
    if running.starting:
        return []
    if entry is None:
        return [Reload(spec, adopt=True)]
    if entry.sha256 != spec.sha256 or (entry.pending and pending_released(entry, running)):
        return [Reload(spec)]
    # Converged by digest; what runs must also be what was applied.
    if running.inspected:
        drift = drift_of(spec, entry, running)
        return [Check(spec, str(drift))] if drift else []
    return [Check(spec)] if verify else []


def plan(
    desired: Desired,
    applied: Applied,
    observed: Observed,
    verify: Collection[int] = (),
    *,
    acting: Mapping[int, list[Action]] | None = None,
    holder: Callable[[str], int | None] | None = None,
) -> Plan:
    """Start, reload, drain or check per port so the host matches the files; idempotent.

    A converged port is compared with what was applied when tgtd was inspected (`observed`
    holds its targets), or checked (a Check action inspects it) when its port is in `verify`.
    `acting`: each desired port's own actions where there are any, made already
    (PortPlans); the ports are taken in the order of `desired`. `holder`: the port whose
    tgtd runs as a name (systemd's unit), from an index kept by the caller (PortPlans).
    """
    # Ports no file wants any more drain first: a file that moved to another port is
    # "DrainStop of the old port, then Start of the new one" (DESIGN.md).
    actions: list[Action] = []
    held: list[AppliedEntry] = []
    # Set differences (C) first: the loops below cost the ports they act on, not every port.
    for port in sorted(applied.entries.keys() - desired.instances.keys()):
        entry = applied.entries[port]
        if entry.kind is InstanceKind.DEFAULT:
            continue
        if desired.is_troubled(entry.config):
            held.append(entry)
            continue
        running = observed.instances.get(port)
        if running is not None:
            actions.append(DrainStop(port, running.control_port, entry.name, entry.config))
    entries, running_at = applied.entries, observed.instances
    if acting is None:
        for port, spec in desired.instances.items():
            found = _for_desired(spec, entries.get(port), running_at.get(port), port in verify)
            if found:
                actions += found
    elif len(acting) == 1:  # a new file's cycle: no order to find among every port
        actions += next(iter(acting.values()))
    elif acting:
        place = dict(zip(desired.instances.keys(), count(), strict=False))
        for port in sorted(acting, key=place.__getitem__):
            actions += acting[port]
    waiting: tuple[tuple[int, int], ...] = ()
    if any(isinstance(a, Start) for a in actions):
        actions, waiting = _hold_starts_of_busy_names(actions, observed, holder)
    foreign = tuple(
        running_at[port]
        for port in sorted(running_at.keys() - desired.instances.keys() - entries.keys())
    )
    return Plan(actions=tuple(actions), foreign=foreign, held=tuple(held), waiting=waiting)


def _hold_starts_of_busy_names(
    actions: list[Action], observed: Observed, holder: Callable[[str], int | None] | None
) -> tuple[list[Action], tuple[tuple[int, int], ...]]:
    """A port change is a drain of the old port and a start of the new one. Where one name
    runs one tgtd at a time (a systemd unit), the start waits, without holding a lane, until
    the old port's tgtd has gone: its drain may last as long as its sessions."""
    if holder is None:
        running_as = {
            r.instance: port for port, r in observed.instances.items() if r.instance is not None
        }
        holder = running_as.get
    kept: list[Action] = []
    waiting: list[tuple[int, int]] = []
    for action in actions:
        blocker = holder(action.name) if isinstance(action, Start) else None
        if blocker is not None and blocker != action.port:
            waiting.append((action.port, blocker))
            continue
        kept.append(action)
    return kept, tuple(waiting)


def _ids(values: Mapping[int, object]) -> dict[int, int]:
    """port -> id(value), made in C: what changed since is then a set difference."""
    return dict(zip(values.keys(), map(id, values.values()), strict=True))


class PortPlans:
    """plan(), made again only for the ports whose spec, applied entry, observed tgtd or
    check changed since the last call (each compared by identity; the last inputs are held,
    so no id is reused while compared). Pure, no I/O: the caller owns it, one per loop.
    With 500 instances, plan() is a Python step per port (~0.5 ms) for every new file.
    """

    def __init__(self) -> None:
        self._last: tuple[Desired, Applied, Observed, frozenset[int]] | None = None
        self._ids: tuple[dict[int, int], dict[int, int], dict[int, int]] = ({}, {}, {})
        self._acting: dict[int, list[Action]] = {}  # ports whose _for_desired is not []
        # The ports whose tgtd runs as each name (systemd's units), kept from the changes.
        self._by_name: dict[str, set[int]] = {}
        self._name_of: dict[int, str] = {}

    def plan(
        self, desired: Desired, applied: Applied, observed: Observed, verify: Collection[int]
    ) -> Plan:
        """plan(desired, applied, observed, verify), equal to it (a property test says so)."""
        checks = frozenset(verify)
        last = self._last
        if last is None:
            ids = (_ids(desired.instances), _ids(applied.entries), _ids(observed.instances))
            dirty: set[int] = ids[0].keys() | ids[2].keys()
            self._acting, self._by_name, self._name_of = {}, {}, {}
        else:
            dirty = set(checks ^ last[3])
            ids = (
                self._changed(desired.instances, changed_since(desired, last[0]), 0, dirty),
                self._changed(applied.entries, changed_since(applied, last[1]), 1, dirty),
                self._changed(observed.instances, changed_since(observed, last[2]), 2, dirty),
            )
        acting = self._acting
        for port in acting.keys() - ids[0].keys():
            del acting[port]
        specs, entries, running_at = desired.instances, applied.entries, observed.instances
        for port in ids[0].keys() & dirty:
            found = _for_desired(
                specs[port], entries.get(port), running_at.get(port), port in checks
            )
            if found:
                acting[port] = found
            else:
                acting.pop(port, None)
        for port in dirty:  # every port whose tgtd came, went or changed is in it
            self._rename(port, running_at.get(port))
        self._last, self._ids = (desired, applied, observed, checks), ids

        def holder(name: str) -> int | None:
            ports = self._by_name.get(name)
            if not ports:
                return None
            if len(ports) == 1:
                return next(iter(ports))
            # Two tgtds as one name: plan() takes the last in observed's order.
            return [p for p in running_at if p in ports][-1]

        return plan(desired, applied, observed, checks, acting=acting, holder=holder)

    def _changed(
        self,
        values: Mapping[int, object],
        since: frozenset[int] | None,
        which: int,
        dirty: set[int],
    ) -> dict[int, int]:
        """The port -> id map of one input, and its changed ports added to `dirty`: the
        ports its lineage names (made from the last one: the others hold the same objects),
        else every port whose object is not the last one's (a pass over every port, in C)."""
        old = self._ids[which]
        if since is not None:
            for port in since:
                value = values.get(port)
                if value is None:
                    old.pop(port, None)
                else:
                    old[port] = id(value)
            dirty |= since
            return old
        new = _ids(values)
        if new != old:  # equal dicts of ints compare in C, without a set of pairs
            dirty.update(port for port, _ in new.items() ^ old.items())
        return new

    def _rename(self, port: int, running: ObservedInstance | None) -> None:
        old = self._name_of.pop(port, None)
        if old is not None:
            self._by_name[old].discard(port)
            if not self._by_name[old]:
                del self._by_name[old]
        if running is not None and running.instance is not None:
            self._name_of[port] = running.instance
            self._by_name.setdefault(running.instance, set()).add(port)
