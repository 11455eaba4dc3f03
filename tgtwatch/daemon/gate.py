"""When the loop publishes: not while starts it just handed to lanes run, but within a bound."""

from __future__ import annotations

from collections.abc import Iterable

# While starts or reloads the loop submitted run, the state file, statuses, STATUS=,
# metrics, status.json and the pidfds watched wait at most this long (then are made, and
# wait again).
# Building them at 500 instances costs 12-15 ms of CPU on the loop's thread, which the
# lanes' starts then wait for (the interpreter lock, 2 cores): a burst of 200 starts
# published 200 times. A lane's end that leaves no such start running publishes at once.
PUBLISH_DEFER_S = 0.25


class PublishGate:
    """Says when a publication may run (owned by one Daemon's loop thread, never shared).

    A drain, a check or a deferred action does not hold it back: a drain that waits
    hours shows as draining at once, or within `bound_s` of its cycle while starts run.
    """

    def __init__(self, bound_s: float = PUBLISH_DEFER_S) -> None:
        self.bound_s = bound_s
        self._starting: set[int] = set()  # ports whose submitted start/reload may run
        self.due: float | None = None  # a publication held back is made by then

    def started(self, ports: Iterable[int]) -> None:
        """These ports' starts or reloads were just handed to lanes."""
        self._starting.update(ports)

    def open(self, busy: frozenset[int], now: float) -> bool:
        """Publish now? Yes when none of those starts runs any more, or the oldest change
        held back has waited `bound_s`; otherwise it is held back until `due`."""
        self._starting &= busy
        if not self._starting or (self.due is not None and now >= self.due):
            self.due = None
            return True
        if self.due is None:
            self.due = now + self.bound_s
        return False
