"""What runs (/proc) and what to do (plan()), looked at again only when they may differ."""

from __future__ import annotations

from collections.abc import Collection

from tgtwatch.backends.base import Backend
from tgtwatch.backends.tgtd_procs import alive
from tgtwatch.model.plan import plan
from tgtwatch.model.structs import Applied, Desired, Observed, Plan


class Looks:
    """The last full look at /proc and the last plan(), for one Reconciler's cycles.

    With 500 tgtds a look at all of /proc costs ~30 ms of CPU, and plan() ~1 ms: a cycle
    for an event that changed nothing must cost neither.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._seen: Observed | None = None
        self._pids: frozenset[int] = frozenset()  # of the tgtds in _seen
        self._planned: tuple[Desired, Applied, Observed, frozenset[int], Plan] | None = None

    def observe(
        self, desired: Desired, applied: Applied, watched: Collection[int] | None
    ) -> Observed:
        """What runs, from the last look at /proc while it cannot be stale, else a new look.

        The last look serves while every port a file wants or tgtwatch applied is in it,
        and every tgtd in it is alive: watched ones by the caller's pidfds (an exit calls
        forget()), the others (a tgtd no file wants, the distribution's) by a signal 0.
        A tgtd a lane started is on a port the last look lacks: looked for. A tgtd started
        by hand on a port nothing wants is seen at the next full look (start, resync,
        SIGHUP, overflow, any watched tgtd's exit), as other hand-made changes are.
        `watched` None: always a new look (`apply`; cycles whose events may be lost).
        """
        seen = self._seen
        if (
            watched is None
            or seen is None
            or not desired.instances.keys() <= seen.instances.keys()
            or not applied.entries.keys() <= seen.instances.keys()
            or not all(alive(pid) for pid in self._pids.difference(watched))
        ):
            seen = self._seen = self.backend.observe(())
            self._pids = frozenset(r.pid for r in seen.instances.values() if r.pid is not None)
        return seen

    def forget(self) -> None:
        """The next observe() looks at all of /proc (a watched tgtd exited)."""
        self._seen = None

    def plan(
        self, desired: Desired, applied: Applied, observed: Observed, due: frozenset[int]
    ) -> Plan:
        """plan(), or its last answer when made from the very same inputs (it is pure)."""
        last = self._planned
        if (
            last is not None
            and last[0] is desired
            and last[1] is applied
            and last[2] is observed
            and last[3] == due
        ):
            return last[4]
        result = plan(desired, applied, observed, due)
        self._planned = (desired, applied, observed, due, result)
        return result
