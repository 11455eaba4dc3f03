"""What a backend (direct or systemd) offers the reconciler: observe, start, reload, drain-stop."""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from tgtwatch.model.records import AuditResult as Result
from tgtwatch.model.structs import DrainStop, InstanceSpec, Observed, ObservedInstance

__all__ = ["Backend", "Outcome", "Result", "Unanswered"]


@dataclass(frozen=True)
class Outcome:
    """How an action ended; `result` is the audit trail's TGTWATCH_RESULT."""

    result: Result
    message: str
    output: str = ""  # what the failing command printed
    pid: int | None = None
    busy: tuple[str, ...] = ()  # targets tgt-admin left untouched because they are in use
    draining: bool = False  # DrainStop only: sessions remain, the port stays offline
    # Start/Reload: tgt-admin exited 0 but skipped something (a backing store missing or
    # open elsewhere): not what the file asks for, so it is applied again by later cycles.
    incomplete: bool = False
    # Start/Reload: targets seen not running as the file asks after the action (missing, or
    # short of LUNs): recorded as not applied, so a later reload lands them.
    unapplied: tuple[str, ...] = ()


class Unanswered(Exception):
    """A tgtd runs on the port but does not answer on its control socket (hung, stopped)."""


class Backend(Protocol):
    """Runs tgtd instances. Implementations must be safe to call from several lanes at once."""

    name: str

    def observe(
        self, detail: Collection[int] | None = None, pids: Collection[int] | None = None
    ) -> Observed:
        """Every tgtd running now, keyed by portal port.

        Targets and sessions are queried for the ports in `detail` (all when None): asking
        each tgtd costs a process spawn, and a cycle needs them only for a few ports.
        `pids`: look at these /proc entries only (a tgtd a lane just started), not all.
        """
        ...

    def may_run(self, control_ports: Collection[int]) -> bool:
        """False only when no tgtd can run on any of these control ports (a cheap look that
        spares a look at all of /proc for a port no tgtd was seen on)."""
        ...

    def inspect(self, spec: InstanceSpec, pid: int | None = None) -> ObservedInstance | None:
        """The tgtd on spec's port, asked for its state, targets, LUNs and sessions (never
        from the loop's thread: it may wait out a tool timeout); None when none runs.
        `pid`, when known, is where to look first.

        Raises Unanswered when it runs but does not answer. A tgtd still starting (systemd:
        its unit activating) comes back with `starting` set.
        """
        ...

    def set_ready(self, spec: InstanceSpec) -> Outcome:
        """System state ready: new logins accepted again (drift: left offline)."""
        ...

    def start(self, spec: InstanceSpec, cancel: threading.Event) -> Outcome: ...

    def reload(self, spec: InstanceSpec) -> Outcome: ...

    def drain_stop(
        self, action: DrainStop, timeout_s: float | None, force: bool, cancel: threading.Event
    ) -> Outcome:
        """Offline, wait for sessions up to timeout_s (None: no limit), remove, exit.

        On timeout without `force` the port stays offline and the outcome says draining.
        """
        ...
