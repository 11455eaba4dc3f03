"""Triggers from the watcher and the pure debouncer that turns them into batches."""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, field
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
    """One reason to run a cycle: the path it names is read again (None: every file)."""

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


class _Group:
    """Triggers gathered for one batch: what a Batch reports of them."""

    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.resync = False
        self.paths: set[Path] = set()
        self.kinds: set[TriggerKind] = set()
        self.details: list[str] = []

    def add(self, trigger: Trigger, now: float) -> None:
        if self.count == 0:
            self.first = now
            self.last = now
        # A clock that went backwards must not make the batch older than it is.
        self.last = max(self.last, now)
        self.count += 1
        self.kinds.add(trigger.kind)
        if trigger.path is not None:
            self.paths.add(trigger.path)
        else:
            self.resync = True  # a change nobody named: the paths are not the whole story
        if trigger.kind in IMMEDIATE_KINDS:
            self.resync = True
            if trigger.detail:
                self.details.append(trigger.detail)


def _batch(groups: list[_Group]) -> Batch:
    groups = [g for g in groups if g.count]
    return Batch(
        paths=frozenset(p for g in groups for p in g.paths),
        resync=any(g.resync for g in groups),
        kinds=frozenset(k for g in groups for k in g.kinds),
        count=sum(g.count for g in groups),
        first_at=min(g.first for g in groups),
        last_at=max(g.last for g in groups),
        details=tuple(d for g in groups for d in g.details),
    )


@dataclass
class _Recent:
    """When each path was last taken in a batch, for `window` seconds (then forgotten)."""

    window: float
    taken: OrderedDict[Path, float] = field(default_factory=OrderedDict)

    def forget_expired(self, now: float) -> None:
        # In order of taking: with a monotonic clock the oldest come first.
        while self.taken:
            path, at = next(iter(self.taken.items()))
            if now < at + self.window:
                return
            del self.taken[path]

    def holds(self, path: Path, now: float) -> bool:
        # A clock that went backwards reads as "just taken": coalesce rather than fire.
        at = self.taken.get(path)
        return at is not None and now < at + self.window

    def remember(self, paths: frozenset[Path], now: float) -> None:
        for path in paths:
            self.taken.pop(path, None)
            self.taken[path] = now
        self.forget_expired(now)


class Debouncer:
    """Coalesce triggers until `debounce_s` of quiet, bounded by `bound_s` after the first.

    With `leading`, a complete event leads, per path: a FILE trigger naming a path that
    neither waits in a batch nor was taken in one within the last `debounce_s` is due at
    once (the watcher reports complete events only: a close after write, a move into
    place, a delete; the first one for a file needs no quiet period). A trigger for a path
    already leading joins it (the take reads the file after both). Every other trigger
    waits: a path seen again within the window (a second save, a storm of rewrites), a
    GONE (see TriggerKind), a trigger naming no path; the waiting group is due after
    `debounce_s` of quiet, bounded by `bound_s` after its first, or at once if an
    OVERFLOW/ERROR/RESYNC is among it. A take while only leading paths are due takes
    those and leaves the waiting group with its own deadline (a leading path never waits
    for another file's quiet, a waiting one is never cut short by another file's event);
    a take when the waiting group is due takes everything pending.

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
        self._leads = _Group()  # due at once
        self._waits = _Group()  # due after the quiet period or the bound
        self._immediate_at: float | None = None  # an OVERFLOW/ERROR/RESYNC waits
        self._recent = _Recent(debounce_s)

    @classmethod
    def from_ms(
        cls, debounce_ms: int, bound_ms: int | None = None, *, leading: bool = False
    ) -> Debouncer:
        """Build from the `debounce_ms` setting; times fed to it stay in seconds."""
        bound = None if bound_ms is None else bound_ms / 1000
        return cls(debounce_ms / 1000, bound, leading=leading)

    @property
    def debounce_s(self) -> float:
        return self._quiet

    @property
    def bound_s(self) -> float:
        return self._bound

    @property
    def pending(self) -> int:
        """How many triggers wait to be taken."""
        return self._leads.count + self._waits.count

    @property
    def leading(self) -> bool:
        return self._leading

    @property
    def remembered(self) -> int:
        """How many recently taken paths are remembered (each for `debounce_s` at most)."""
        return len(self._recent.taken)

    def _leads_now(self, trigger: Trigger, now: float) -> bool:
        path = trigger.path
        if path is None or trigger.kind in IMMEDIATE_KINDS:
            return False
        if path in self._leads.paths:
            return True  # joins the leading batch: its take reads the file after this event
        return (
            self._leading
            and trigger.kind is TriggerKind.FILE
            and path not in self._waits.paths
            and not self._recent.holds(path, now)
        )

    def add(self, trigger: Trigger, now: float) -> None:
        """Add a trigger that arrived at `now`."""
        self._recent.forget_expired(now)
        if self._leads_now(trigger, now):
            self._leads.add(trigger, now)
            return
        self._waits.add(trigger, now)
        if trigger.kind in IMMEDIATE_KINDS and self._immediate_at is None:
            self._immediate_at = now

    def _waits_due_at(self) -> float | None:
        if self._waits.count == 0:
            return None
        due = min(self._waits.last + self._quiet, self._waits.first + self._bound)
        if self._immediate_at is not None:
            due = min(due, self._immediate_at)
        return due

    def next_deadline(self) -> float | None:
        """When a batch is due (the loop's queue timeout), or None if nothing waits."""
        dues = [self._leads.first] if self._leads.count else []
        waits = self._waits_due_at()
        if waits is not None:
            dues.append(waits)
        return min(dues, default=None)

    def is_due(self, now: float) -> bool:
        deadline = self.next_deadline()
        return deadline is not None and now >= deadline

    def take_batch(self, now: float) -> Batch | None:
        """The batch due at `now` (and start gathering the next), else None: everything
        pending if the waiting group is due, else the leading paths only."""
        self._recent.forget_expired(now)
        waits = self._waits_due_at()
        if waits is not None and now >= waits:
            batch = _batch([self._leads, self._waits])
            self._leads, self._waits = _Group(), _Group()
            self._immediate_at = None
        elif self._leads.count and now >= self._leads.first:
            batch = _batch([self._leads])
            self._leads = _Group()
        else:
            return None
        self._recent.remember(batch.paths, now)
        return batch
