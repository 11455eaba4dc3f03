"""What a backend (direct or systemd) offers the reconciler: observe, start, reload, drain-stop."""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from tgtwatch.model.records import AuditResult as Result
from tgtwatch.model.structs import DrainStop, InstanceSpec, Observed

__all__ = ["Backend", "Outcome", "Result"]


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


class Backend(Protocol):
    """Runs tgtd instances. Implementations must be safe to call from several lanes at once."""

    name: str

    def observe(self, detail: Collection[int] | None = None) -> Observed:
        """Every tgtd running now, keyed by portal port.

        Targets and sessions are queried for the ports in `detail` (all when None): asking
        each tgtd costs a process spawn, and a cycle needs them only for a few ports.
        """
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
