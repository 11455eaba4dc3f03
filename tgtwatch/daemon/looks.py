"""What runs (/proc) and what to do (plan()), looked at again only when they may differ."""

from __future__ import annotations

import threading
from collections.abc import Collection
from collections.abc import Set as AbstractSet
from operator import attrgetter
from typing import cast

from tgtwatch.backends.base import Backend
from tgtwatch.backends.tgtd_procs import alive
from tgtwatch.model.plan import PortPlans
from tgtwatch.model.structs import (
    Applied,
    Desired,
    InstanceKind,
    InstanceSpec,
    Observed,
    ObservedInstance,
    Plan,
)

_PID = attrgetter("pid")


class Looks:
    """The last full look at /proc and the last plan(), for one Reconciler's cycles.

    With 500 tgtds a look at all of /proc costs ~30 ms of CPU, and plan() ~1 ms: a cycle
    for an event that changed nothing must cost neither.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._seen: Observed | None = None
        self._pids: frozenset[int] = frozenset()  # of the tgtds in _seen
        self._lock = threading.Lock()  # started() is called by lanes
        self._started: dict[int, int] = {}  # port -> the pid a lane's start reported
        self._planned: tuple[Desired, Applied, Observed, frozenset[int], Plan] | None = None
        self._plans = PortPlans()  # plan(), made again for the ports that changed

    def observe(
        self,
        desired: Desired,
        applied: Applied,
        watched: Collection[int] | None,
        busy: AbstractSet[int] = frozenset(),
    ) -> Observed:
        """What runs, from the last look at /proc while it cannot be stale, else a new look.

        The last look serves while every port a file wants or tgtwatch applied is in it,
        and every tgtd in it is alive: watched ones by the caller's pidfds (an exit calls
        forget()), the others (a tgtd no file wants, the distribution's) by a signal 0.
        A port the last look lacks is looked for: at the pid a lane's start reported
        (started()); not at all where no tgtd can run (a new file's port: no control
        socket, Backend.may_run); else in all of /proc. A tgtd started by hand on a port
        nothing wants is seen at the next full look (start, resync, SIGHUP, overflow, any
        watched tgtd's exit), as other hand-made changes are.
        `watched` None: always a new look (`apply`; cycles whose events may be lost).
        `busy`: ports whose lane runs now: not looked for (a start under way has a control
        socket but no pid reported yet; with 200 files at once, each cycle looked at all
        of /proc for them). Their actions wait for the lane anyway; its end reports the pid.
        """
        seen = self._seen
        if watched is not None and seen is not None:
            wanted = desired.instances.keys() | applied.entries.keys()
            missing = wanted - seen.instances.keys() - busy
            if missing:
                seen = self._look_at_started(seen, missing, desired, applied)
            if seen is not None and all(alive(pid) for pid in self._pids.difference(watched)):
                return seen
        seen = self.backend.observe(())
        self._keep(seen)
        with self._lock:
            for port in seen.instances.keys() & self._started.keys():
                del self._started[port]
        return seen

    def _look_at_started(
        self, seen: Observed, missing: set[int], desired: Desired, applied: Applied
    ) -> Observed | None:
        """`seen` with the tgtds lanes started on the missing ports, each looked at alone
        (one /proc entry), and without those that cannot run (a new file's port, its
        control socket absent); None when another port is missing: look at all of /proc."""
        with self._lock:
            hints = {port: self._started.pop(port) for port in missing & self._started.keys()}
        unseen = missing - hints.keys()
        if unseen:
            if unseen & applied.entries.keys() or self.backend.may_run(
                {desired.instances[port].control_port for port in unseen}
            ):
                return None
            if not hints:
                return seen  # nothing runs there yet: its start is planned from this look
        found = self.backend.observe((), pids=hints.values()).instances
        if not hints.keys() <= found.keys():
            return None  # it died already, or is not on its port: look at everything
        lineage = seen.lineage.after(seen, found.keys())
        return self._keep(Observed({**seen.instances, **found}, lineage))

    def _keep(self, seen: Observed) -> Observed:
        self._seen = seen
        pids = frozenset(map(_PID, seen.instances.values()))  # in C: after every lane's end
        self._pids = cast(frozenset[int], pids - {None})
        return seen

    def started(self, port: int, pid: int) -> None:
        """A lane started a tgtd (pid) on port: the next look reads its /proc entry alone."""
        with self._lock:
            self._started[port] = pid

    def forget(self) -> None:
        """The next observe() looks at all of /proc (a watched tgtd exited)."""
        self._seen = None

    def plan(
        self, desired: Desired, applied: Applied, observed: Observed, due: frozenset[int]
    ) -> Plan:
        """plan(), or its last answer when made from the very same inputs (it is pure);
        else made again for the ports whose inputs changed (PortPlans)."""
        last = self._planned
        if (
            last is not None
            and last[0] is desired
            and last[1] is applied
            and last[2] is observed
            and last[3] == due
        ):
            return last[4]
        result = self._plans.plan(desired, applied, observed, due)
        self._planned = (desired, applied, observed, due, result)
        return result


def managed_pid(
    running: ObservedInstance | None, spec: InstanceSpec | None, applied: bool
) -> int | None:
    """managed_pids() of one port: its tgtd's pid, if a file wants it or tgtwatch applied
    it, and it is not the distribution's (None: not watched)."""
    if running is None or (spec is None and not applied):
        return None
    if spec is not None and spec.kind is InstanceKind.DEFAULT:
        return None
    return running.pid


def managed_pids(observed: Observed, desired: Desired, applied_ports: set[int]) -> list[int]:
    """The tgtds whose death the daemon must notice: wanted by a file or applied by us."""
    return sorted(
        running.pid
        for port, running in observed.instances.items()
        if running.pid is not None
        and (port in desired.instances or port in applied_ports)
        and not (port in desired.instances and desired.instances[port].kind is InstanceKind.DEFAULT)
    )
