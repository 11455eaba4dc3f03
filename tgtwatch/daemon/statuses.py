"""instance_states() for the daemon's loop: made again only for the ports whose inputs changed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from tgtwatch.daemon.keyed import Changes
from tgtwatch.model.status import InstanceStatus, port_status
from tgtwatch.model.structs import Applied, Desired, InstanceState, Observed, Problem


class Statuses:
    """instance_states()'s answer, kept per port: a port's status is made again when its
    spec, applied entry or observed tgtd is another object, or its failure or wrong
    message another value (and the ports no file wants that were applied, when the
    refused files change). With nothing changed it returns the very same list.

    After a lane's end at 500 ports, instance_states() cost 3-7 ms of CPU on the loop's
    thread while the new tgtd began serving; finding the changed ports is C-level passes
    over the mappings (keyed.Changes), and the list is rebuilt in C from the kept ones."""

    def __init__(self) -> None:
        self._specs = Changes(by_identity=True)
        self._entries = Changes(by_identity=True)
        self._running = Changes(by_identity=True)
        self._failures = Changes(by_identity=False)
        self._wrong = Changes(by_identity=False)
        self._problems: tuple[Problem, ...] | None = None
        self._by_port: dict[int, InstanceStatus] = {}
        self._list: list[InstanceStatus] = []
        self._counts: Counter[InstanceState] = Counter()  # state_counts(self._list)

    def __call__(
        self,
        desired: Desired,
        applied: Applied,
        observed: Observed,
        failures: Mapping[int, str],
        wrong: Mapping[int, str] | None = None,
    ) -> list[InstanceStatus]:
        wrong = wrong or {}
        specs, entries, running = desired.instances, applied.entries, observed.instances
        changed = (
            self._specs.changed(specs)
            | self._entries.changed(entries)
            | self._running.changed(running)
            | self._failures.changed(failures)
            | self._wrong.changed(wrong)
        )
        problems = desired.problems
        if problems is not self._problems and problems != self._problems:
            changed |= entries.keys() - specs.keys()  # only they ask whether a file is refused
        self._problems = problems
        if not changed:
            return self._list
        by_port = self._by_port
        for port in changed:
            status = port_status(
                port,
                specs.get(port),
                entries.get(port),
                running.get(port),
                failures.get(port),
                wrong.get(port),
                desired.is_troubled,
            )
            old = by_port.pop(port, None) if status is None else by_port.get(port)
            if old is not None and old.managed:
                self._counts[old.state] -= 1
            if status is not None:
                by_port[port] = status
                if status.managed:
                    self._counts[status.state] += 1
        self._list = list(map(by_port.__getitem__, sorted(by_port)))
        return self._list

    def counts(self) -> dict[InstanceState, int]:
        """state_counts() of the last answer, kept per change (not counted over all)."""
        return {state: count for state, count in self._counts.items() if count}
