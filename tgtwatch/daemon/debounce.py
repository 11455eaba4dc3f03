"""Triggers from the watcher and the pure debouncer that turns them into batches."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MIN_BOUND_S = 2.0
BOUND_FACTOR = 10


class TriggerKind(enum.Enum):
    """Why the loop should run a cycle."""

    FILE = "file"  # something happened to a file or directory we watch
    # A file was deleted or moved away. Tools do that just before writing the file again
    # (vim's rename to a backup, install's unlink): its cycle never leads, it waits the
    # quiet period, so the rewrite lands in the same batch and is read once complete.
    GONE = "gone"
    OVERFLOW = "overflow"  # the kernel dropped events: only a full rescan is safe
    ERROR = "error"  # the watcher failed (e.g. inotify watch limit): rescan, keep running
    RESYNC = "resync"  # SIGHUP, the resync timer, a watch (re)armed after a gap


#: Kinds that cannot wait for the quiet period: events were or may have been lost.
IMMEDIATE_KINDS: frozenset[TriggerKind] = frozenset(
    {TriggerKind.OVERFLOW, TriggerKind.ERROR, TriggerKind.RESYNC}
)


@dataclass(frozen=True)
class Trigger:
    """One reason to run a cycle; never a delta (each cycle rescans everything)."""

    kind: TriggerKind
    path: Path | None = None
    detail: str = ""


@dataclass(frozen=True)
class Batch:
    """Triggers coalesced into one cycle."""

    paths: frozenset[Path]
    # An OVERFLOW/ERROR/RESYNC, or a trigger naming no path, was among them: the paths are
    # not the whole story (the cycle reads every file again).
    resync: bool
    kinds: frozenset[TriggerKind]
    count: int
    first_at: float
    last_at: float
    details: tuple[str, ...] = ()  # of the non-FILE triggers, for the journal


def default_bound_s(debounce_s: float) -> float:
    """The longest a batch may wait: a directory written without pause still converges."""
    return max(BOUND_FACTOR * debounce_s, DEFAULT_MIN_BOUND_S)


class Debouncer:
    """Coalesce triggers until `debounce_s` of quiet, bounded by `bound_s` after the first.

    With `leading`, a trigger that finds the debouncer idle is due at once: the watcher
    reports complete events only (a close after write, a move into place, a delete), so
    the first one needs no quiet period. Idle means nothing waits and the last batch was
    taken at least `debounce_s` ago; whatever arrives within that window (a burst, or
    events during the cycle the last batch started) coalesces by the quiet period and
    the bound, as without `leading`. A GONE trigger never leads (see TriggerKind).

    Pure: every method takes the current time (any monotonic clock, in seconds);
    it never sleeps, reads a clock or starts a thread.
    """

    def __init__(
        self, debounce_s: float, bound_s: float | None = None, *, leading: bool = False
    ) -> None:
        if debounce_s < 0:
            raise ValueError(f"debounce must be >= 0, got {debounce_s}")
        bound = default_bound_s(debounce_s) if bound_s is None else bound_s
        if bound < debounce_s:
            raise ValueError(f"bound {bound} is shorter than the debounce {debounce_s}")
        self._quiet = debounce_s
        self._bound = bound
        self._leading = leading
        # When the last batch was taken: the window after it coalesces (None: never).
        self._taken_at: float | None = None
        self._reset()

    @classmethod
    def from_ms(
        cls, debounce_ms: int, bound_ms: int | None = None, *, leading: bool = False
    ) -> Debouncer:
        """Build from the `debounce_ms` setting; times fed to it stay in seconds."""
        bound = None if bound_ms is None else bound_ms / 1000
        return cls(debounce_ms / 1000, bound, leading=leading)

    def _reset(self) -> None:
        self._count = 0
        self._first = 0.0
        self._last = 0.0
        self._immediate_at: float | None = None
        self._resync = False
        self._paths: set[Path] = set()
        self._kinds: set[TriggerKind] = set()
        self._details: list[str] = []

    @property
    def debounce_s(self) -> float:
        return self._quiet

    @property
    def bound_s(self) -> float:
        return self._bound

    @property
    def pending(self) -> int:
        """How many triggers wait in the current batch."""
        return self._count

    @property
    def leading(self) -> bool:
        return self._leading

    def _idle(self, now: float) -> bool:
        """Nothing waits and no batch was taken within the last quiet period."""
        if self._count or self._taken_at is None:
            return self._count == 0
        # A clock that went backwards reads as "just taken": coalesce rather than fire.
        return now >= self._taken_at + self._quiet

    def add(self, trigger: Trigger, now: float) -> None:
        """Add a trigger that arrived at `now`."""
        if self._count == 0:
            if self._leading and trigger.kind is not TriggerKind.GONE and self._idle(now):
                self._immediate_at = now
            self._first = now
            self._last = now
        # A clock that went backwards must not make the batch older than it is.
        self._last = max(self._last, now)
        self._count += 1
        self._kinds.add(trigger.kind)
        if trigger.path is not None:
            self._paths.add(trigger.path)
        else:
            self._resync = True  # a change nobody named: the paths are not the whole story
        if trigger.kind in IMMEDIATE_KINDS:
            self._resync = True
            if self._immediate_at is None:
                self._immediate_at = now
            if trigger.detail:
                self._details.append(trigger.detail)

    def next_deadline(self) -> float | None:
        """When the pending batch is due (the loop's queue timeout), or None if nothing waits."""
        if self._count == 0:
            return None
        due = min(self._last + self._quiet, self._first + self._bound)
        if self._immediate_at is not None:
            due = min(due, self._immediate_at)
        return due

    def is_due(self, now: float) -> bool:
        deadline = self.next_deadline()
        return deadline is not None and now >= deadline

    def take_batch(self, now: float) -> Batch | None:
        """The coalesced batch if it is due at `now` (and start a new one), else None."""
        if not self.is_due(now):
            return None
        batch = Batch(
            paths=frozenset(self._paths),
            resync=self._resync,
            kinds=frozenset(self._kinds),
            count=self._count,
            first_at=self._first,
            last_at=self._last,
            details=tuple(self._details),
        )
        self._reset()
        self._taken_at = now
        return batch
