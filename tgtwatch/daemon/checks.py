"""What runs, checked against what was applied: when a port is due, the check, the repair.

Every tgtd tgtwatch manages is inspected (its state, targets, LUNs, sessions) after each
action on its port, when the daemon starts (adoption), when its pid changes (systemd or an
operator restarted it), at each resync, and while targets wait for their sessions to end.
The inspection runs on a lane, never on the loop's thread: a hung tgtd costs its own
check a tool timeout, nothing else. A drifted tgtd is repaired and the repair audited.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import replace

from tgtwatch.backends.base import Backend, Outcome, Result, Unanswered
from tgtwatch.daemon.backoff import backoff_s
from tgtwatch.daemon.recorder import Recorder
from tgtwatch.model.drift import Drift, Repair, after_action, drift_of
from tgtwatch.model.plan import pending_released
from tgtwatch.model.records import AuditAction
from tgtwatch.model.structs import AppliedEntry, Check, InstanceKind, InstanceSpec, Observed

# A unit still activating (systemd loads its targets) is looked at again this soon.
STARTING_RECHECK_S = 1.0

ReloadAction = Callable[[InstanceSpec, AuditAction, str], Outcome]


class Checker:
    """Which ports are due a check, and what each check found (thread safe)."""

    def __init__(self, backend: Backend, recorder: Recorder, clock: Callable[[], float]) -> None:
        self.backend = backend
        self.recorder = recorder
        self.clock = clock
        self._lock = threading.Lock()
        self._verified: dict[int, int] = {}  # port -> the tgtd pid found as applied
        self._not_before: dict[int, float] = {}  # port -> its next check waits until then
        self._failures: dict[int, int] = {}  # port -> checks in a row that could not repair
        self._wrong: dict[int, str] = {}  # port -> what is wrong with it now
        self._last_due: tuple[Observed, dict[int, int], dict[int, float], set[int]] | None = None

    # ---- when ------------------------------------------------------------------------------

    def due(self, observed: Observed, now: float) -> set[int]:
        """Ports whose tgtd is not known to run as applied: never inspected, a new pid, or
        asked for again (recheck), and not waiting for a retry."""
        with self._lock:
            # A retry time that has come is spent: the port is due now (or was found fine,
            # or is gone); kept, it would wake the daemon again and again.
            for port in [p for p, t in self._not_before.items() if t <= now]:
                del self._not_before[port]
            last = self._last_due
            # The same look at /proc and the same tables: the same answer (dict compares run
            # in C; with 500 tgtds the pass below costs a no-op cycle 0.2 ms).
            if (
                last is not None
                and last[0] is observed
                and last[1] == self._verified
                and last[2] == self._not_before
            ):
                return set(last[3])
            due = {
                port
                for port, running in observed.instances.items()
                if running.pid is not None
                and self._verified.get(port) != running.pid
                and port not in self._not_before
            }
            self._last_due = (observed, dict(self._verified), dict(self._not_before), due)
            return set(due)

    def recheck(self, ports: Iterable[int] | None = None) -> None:
        """Inspect these ports (all when None) at the next cycle."""
        with self._lock:
            if ports is None:
                self._verified.clear()
            else:
                for port in ports:
                    self._verified.pop(port, None)

    def submitted(self, port: int) -> None:
        """A lane now runs for this port: its retry time is spent."""
        with self._lock:
            self._not_before.pop(port, None)

    def next_at(self) -> float | None:
        with self._lock:
            return min(self._not_before.values(), default=None)

    def wrong(self) -> dict[int, str]:
        """Ports whose tgtd does not run as applied and could not be repaired, with why."""
        with self._lock:
            return dict(self._wrong)

    def keep_only(self, ports: Iterable[int]) -> None:
        """Forget ports no file wants any more."""
        keep = set(ports)
        with self._lock:
            for table in (self._verified, self._not_before, self._failures, self._wrong):
                for port in table.keys() - keep:
                    del table[port]

    def _fine(self, port: int, pid: int | None) -> None:
        with self._lock:
            if pid is not None:
                self._verified[port] = pid
            self._not_before.pop(port, None)
            self._failures.pop(port, None)
            self._wrong.pop(port, None)

    def _later(self, port: int, delay: float) -> None:
        with self._lock:
            self._verified.pop(port, None)
            self._not_before[port] = self.clock() + delay

    def _failed(self, port: int, why: str) -> bool:
        """Record a check that could not repair; retry with backoff. True: news (audit it)."""
        with self._lock:
            failures = self._failures.get(port, 0) + 1
            self._failures[port] = failures
            self._verified.pop(port, None)
            self._not_before[port] = self.clock() + max(1.0, backoff_s(failures + 1))
            news = self._wrong.get(port) != why
            self._wrong[port] = why
            return news

    # ---- after an action -------------------------------------------------------------------

    def after_action(self, spec: InstanceSpec, outcome: Outcome) -> Outcome:
        """Inspect the tgtd a start or reload left: targets it lacks, or short of LUNs, are
        not applied (busy ones wait for their sessions: pending). Sets it ready if needed."""
        try:
            running = self.backend.inspect(spec, outcome.pid)
        except Unanswered:
            self.recheck((spec.port,))  # the next cycle's check says what is wrong
            return outcome
        if running is None or running.starting:
            return outcome  # it died already (its exit brings the daemon back), or settles
        drift = after_action(spec, outcome.busy, running)
        if drift.offline and self.backend.set_ready(spec).result is not Result.FAILED:
            drift = replace(drift, offline=False)
        if not drift:
            self._fine(spec.port, running.pid)
            return outcome
        in_use = {t.name for t in running.targets if t.sessions}
        waiting = tuple(n for n in drift.targets if n in in_use and n not in outcome.busy)
        result = Result.FAILED if outcome.result is Result.FAILED else Result.PARTIAL
        return replace(
            outcome,
            result=result,
            message=f"{outcome.message}; but {drift}",
            busy=outcome.busy + waiting,
            incomplete=outcome.incomplete or any(n not in in_use for n in drift.targets),
            unapplied=drift.targets,
        )

    # ---- the check lane --------------------------------------------------------------------

    def check(
        self, action: Check, entry: AppliedEntry | None, reload: ReloadAction
    ) -> tuple[Outcome | None, bool]:
        """Inspect, then repair drift or land released pending targets. The outcome of what
        was done (None: nothing), and whether the file was applied again (a reload)."""
        spec = action.spec
        started = self.clock()
        try:
            running = self.backend.inspect(spec)
        except Unanswered as exc:
            outcome = Outcome(Result.FAILED, f"{exc}; left as it is")
            if self._failed(spec.port, str(exc)):
                self.recorder.action(AuditAction.REPAIR, spec, outcome, self._ms(started))
            return outcome, False
        if running is None:
            self._fine(spec.port, None)  # gone: the next cycle starts it
            return None, False
        if running.starting:
            self._later(spec.port, STARTING_RECHECK_S)
            return None, False
        if entry is None or entry.sha256 != spec.sha256 or entry.config != spec.config:
            return None, False  # the plan reloads it, or another file owns the port now
        if pending_released(entry, running):
            note = "sessions ended, landing " + ", ".join(entry.pending)
            return self._reloaded(spec, reload(spec, AuditAction.RELOAD, note))
        drift = drift_of(spec, entry, running)
        if not drift or spec.kind is InstanceKind.DEFAULT:
            self._fine(spec.port, running.pid)
            return None, False
        return self._repair(spec, drift, reload, started)

    def _repair(
        self, spec: InstanceSpec, drift: Drift, reload: ReloadAction, started: float
    ) -> tuple[Outcome, bool]:
        note = f"drifted from what was applied: {drift}"
        if drift.repair is Repair.RELOAD:
            outcome, _ = self._reloaded(spec, reload(spec, AuditAction.REPAIR, note))
            if outcome.result is Result.FAILED:
                self._failed(spec.port, f"{note}; repair failed: {outcome.message}")
            return outcome, True
        outcome = self.backend.set_ready(spec)
        if outcome.result is Result.FAILED:
            self._failed(spec.port, f"{note}; repair failed: {outcome.message}")
        else:
            self._fine(spec.port, outcome.pid)
        self.recorder.action(AuditAction.REPAIR, spec, outcome, self._ms(started), note)
        return outcome, False

    def _reloaded(self, spec: InstanceSpec, outcome: Outcome) -> tuple[Outcome, bool]:
        if outcome.result is not Result.FAILED and not outcome.unapplied:
            self._fine(spec.port, None)
        return outcome, True

    def _ms(self, started: float) -> int:
        return int((self.clock() - started) * 1000)
