"""What the daemon's loop knows between iterations: its state and the deadlines it sleeps to."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tgtwatch.daemon.outcomes import CycleReport


@dataclass
class LoopClock:
    """The deadlines the loop sleeps towards; all in the monotonic clock's seconds."""

    resync_at: float = 0.0
    watchdog_at: float | None = None
    extend_at: float | None = None
    pending_at: float | None = None


@dataclass
class DaemonState:
    """What the loop knows between iterations (owned by one Daemon, never shared)."""

    ready: bool = False
    waiting_for: set[int] = field(default_factory=set)  # ports whose first Start/Reload runs
    reloading: bool = False
    stopping: bool = False
    deferred: set[int] = field(default_factory=set)
    last: CycleReport | None = None
    last_status: str = ""
    save_error: str | None = None  # the state file's write failure last logged
    cycle_seconds: float = 0.0
    cycle_timestamp: float = 0.0
    watched: dict[int, int] = field(default_factory=dict)  # tgtd pid -> port, for messages
    actions: Counter[tuple[str, str]] = field(default_factory=Counter)
