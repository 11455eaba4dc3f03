"""One reconcile cycle: inventory + observe + plan, then the actions on per-port lanes, audited."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from tgtwatch import inventory
from tgtwatch.audit import AuditAction, AuditRecord
from tgtwatch.backend import Backend, Outcome, Result
from tgtwatch.executor import Executor
from tgtwatch.plan import plan
from tgtwatch.settings import DrainTimeoutPolicy, Settings
from tgtwatch.state import StateError, StateFile
from tgtwatch.structs import (
    Action,
    Applied,
    AppliedEntry,
    Desired,
    DrainStop,
    InstanceSpec,
    Observed,
    Plan,
    Problem,
    Reload,
    Start,
)
from tgtwatch.trust import TrustPolicy

# A tgtd that dies within this long of its start counts as crash-looping.
CRASH_WINDOW_S = 60.0
MAX_BACKOFF_S = 300.0
FAILED_AFTER = 3  # consecutive failures before status says `failed`


class AuditSink(Protocol):
    """What the reconciler needs from the audit trail (tgtwatch.audit.Auditor fits)."""

    def record(self, record: AuditRecord) -> None: ...


def pending_targets(
    spec: InstanceSpec, entry: AppliedEntry | None, busy: tuple[str, ...]
) -> tuple[str, ...]:
    """Busy targets whose config differs from what they run (unknown counts as differing)."""
    running = dict(entry.targets) if entry is not None else {}
    wanted = {t.name: t.digest for t in spec.targets}
    return tuple(name for name in busy if name not in running or wanted.get(name) != running[name])


def running_targets(
    spec: InstanceSpec, entry: AppliedEntry | None, pending: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """What each target runs with after an action: the new config, but a pending one its old."""
    running = dict(entry.targets) if entry is not None else {}
    now = {t.name: t.digest for t in spec.targets}
    for name in pending:
        now[name] = running.get(name, "")
    return tuple(sorted(now.items()))


def backoff_s(failures: int) -> float:
    """Delay before the next attempt: the first retry is immediate, then 1 s, 2 s, 4 s ..."""
    if failures <= 1:
        return 0.0
    return float(min(MAX_BACKOFF_S, 0.5 * 2 ** (failures - 1)))


@dataclass(frozen=True)
class Trouble:
    """A port whose start keeps failing or whose tgtd keeps dying."""

    failures: int
    not_before: float
    message: str


@dataclass(frozen=True)
class ActionReport:
    action: Action
    outcome: Outcome
    duration_ms: int


@dataclass(frozen=True)
class CycleReport:
    desired: Desired
    observed: Observed
    plan: Plan
    deferred: dict[int, str] = field(default_factory=dict)  # port -> why not now
    state_warning: str | None = None


class Reconciler:
    """Owns the applied state and the per-port trouble records of one tgtwatch process."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        state: StateFile,
        audit: AuditSink,
        executor: Executor,
        *,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        policy: TrustPolicy | None = None,
        on_lane_done: Callable[[int], None] | None = None,
        keep_draining: bool = True,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.state = state
        self.audit = audit
        self.executor = executor
        self.wall_clock = wall_clock
        self.clock = clock
        self.policy = policy or TrustPolicy()
        self.on_lane_done = on_lane_done
        # The daemon keeps a drain past its timeout going (`wait`); `apply` must return.
        self.keep_draining = keep_draining
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self.applied, self.state_warning = state.load()
        self.troubles: dict[int, Trouble] = {}
        self._reports: list[ActionReport] = []
        self._started_at: dict[int, float] = {}
        self._rejected: set[str] = set()

    # ---- the cycle -------------------------------------------------------------------------

    def cycle(self) -> CycleReport:
        """Rescan, observe, plan and hand the actions to the lanes (does not wait for them)."""
        with self._lock:
            applied = self.applied
        desired = inventory.scan(self.settings, applied, self.policy)
        self._audit_rejects(desired)
        detail = {p for p, e in applied.entries.items() if e.pending or p not in desired.instances}
        detail |= {p for p, s in desired.instances.items() if s.kind.value == "default"}
        observed = self.backend.observe(detail)
        result = plan(desired, applied, observed)
        self._forget_gone(desired, observed)
        by_port: dict[int, list[Action]] = {}
        for action in result.actions:
            by_port.setdefault(action.port, []).append(action)
        deferred: dict[int, str] = {}
        busy = self.executor.busy()
        now = self.clock()
        for port, actions in by_port.items():
            if port in busy:
                deferred[port] = "an action is under way on this port"
                continue
            trouble = self.troubles.get(port)
            if trouble is not None and now < trouble.not_before:
                deferred[port] = f"retrying in {trouble.not_before - now:.1f} s: {trouble.message}"
                continue
            self.executor.submit(port, actions, self._run, self.on_lane_done)
        return CycleReport(desired, observed, result, deferred, self.state_warning)

    def next_retry(self) -> float | None:
        """Monotonic time of the earliest deferred retry, for the daemon's wake-up."""
        waiting = [t.not_before for t in self.troubles.values() if t.not_before > self.clock()]
        return min(waiting) if waiting else None

    # ---- running one action ----------------------------------------------------------------

    def _run(self, action: Action) -> Outcome:
        started = self.clock()
        try:
            outcome = self._dispatch(action, started)
        except Exception as exc:  # a bug or an unexpected OS error fails this port only
            outcome = Outcome(Result.FAILED, f"{type(exc).__name__}: {exc}")
        self._settle(action, outcome)
        with self._lock:
            self._reports.append(ActionReport(action, outcome, self._ms_since(started)))
        return outcome

    def take_reports(self) -> list[ActionReport]:
        """The actions finished since the last call (the caller owns them now)."""
        with self._lock:
            reports, self._reports = self._reports, []
        return reports

    def _ms_since(self, started: float) -> int:
        return int((self.clock() - started) * 1000)

    def _dispatch(self, action: Action, started: float) -> Outcome:
        if isinstance(action, Start):
            crashed = self._crash_note(action.spec)
            outcome = self.backend.start(action.spec, self.cancel)
            self._audit(AuditAction.START, action.spec, outcome, self._ms_since(started), crashed)
            return outcome
        if isinstance(action, Reload):
            outcome = self._with_pending(action.spec, self.backend.reload(action.spec))
            kind = AuditAction.ADOPT if action.adopt else AuditAction.RELOAD
            self._audit(kind, action.spec, outcome, self._ms_since(started))
            if outcome.busy:
                self._audit(
                    AuditAction.PENDING,
                    action.spec,
                    replace(
                        outcome,
                        message="in use, applied once their sessions end: "
                        + ", ".join(outcome.busy),
                    ),
                    0,
                )
            return outcome
        return self._drain(action, started)

    def _with_pending(self, spec: InstanceSpec, outcome: Outcome) -> Outcome:
        """Keep only the busy targets whose config really changed: tgt-admin reports every
        target with a session as in use, changed or not. Those are pending: PARTIAL."""
        with self._lock:
            entry = self.applied.entries.get(spec.port)
        pending = pending_targets(spec, entry, outcome.busy)
        if not pending:
            return replace(outcome, busy=())
        result = Result.FAILED if outcome.result is Result.FAILED else Result.PARTIAL
        message = f"{outcome.message}; in use, left as they were: {', '.join(pending)}"
        return replace(outcome, result=result, busy=pending, message=message)

    def _drain(self, action: DrainStop, started: float) -> Outcome:
        force = self.settings.on_drain_timeout is DrainTimeoutPolicy.FORCE
        outcome = self.backend.drain_stop(action, self.settings.drain_timeout_s, force, self.cancel)
        if outcome.draining and self.keep_draining and not self.cancel.is_set():
            # `wait`: say so once, then keep the port offline until its last session leaves.
            self._audit_drop(AuditAction.DRAIN, action, outcome, self._ms_since(started))
            outcome = self.backend.drain_stop(action, None, False, self.cancel)
        kind = AuditAction.DRAIN if outcome.draining else AuditAction.STOP
        self._audit_drop(kind, action, outcome, self._ms_since(started))
        return outcome

    def _crash_note(self, spec: InstanceSpec) -> str:
        """Note a Start of a port whose tgtd died; back off if it keeps dying."""
        with self._lock:
            entry = self.applied.entries.get(spec.port)
        if entry is None or entry.config != spec.config:
            return ""
        now = self.clock()
        started = self._started_at.get(spec.port)
        trouble = self.troubles.get(spec.port)
        failures = trouble.failures if trouble else 0
        if started is not None and now - started > CRASH_WINDOW_S:
            failures = 0
        self.troubles[spec.port] = Trouble(
            failures + 1, now + backoff_s(failures + 2), "tgtd keeps dying after start"
        )
        return f"tgtd for {spec.name} on port {spec.port} had died; restarted"

    def _settle(self, action: Action, outcome: Outcome) -> None:
        """Record what now runs in the applied state, and the port's trouble."""
        now = self.wall_clock()
        with self._lock:
            entries = dict(self.applied.entries)
            if isinstance(action, Start | Reload):
                spec = action.spec
                if outcome.result is Result.FAILED:
                    if isinstance(action, Start):
                        self._fail(spec.port, outcome.message)
                else:
                    entries[spec.port] = AppliedEntry(
                        spec.name,
                        spec.port,
                        spec.config,
                        spec.sha256,
                        now,
                        outcome.busy,
                        spec.kind,
                        running_targets(spec, entries.get(spec.port), outcome.busy),
                    )
                    if isinstance(action, Start):
                        self._started_at[spec.port] = self.clock()
                        trouble = self.troubles.get(spec.port)
                        if trouble is not None and trouble.message.startswith("start failed"):
                            del self.troubles[spec.port]
            elif not outcome.draining and outcome.result is not Result.FAILED:
                entries.pop(action.port, None)
                self.troubles.pop(action.port, None)
            self.applied = Applied(entries)
            self._save()

    def _fail(self, port: int, message: str) -> None:
        previous = self.troubles.get(port)
        failures = (previous.failures if previous else 0) + 1
        self.troubles[port] = Trouble(
            failures, self.clock() + backoff_s(failures + 1), f"start failed: {message}"
        )

    def failures(self) -> dict[int, str]:
        """Ports whose start failed or whose tgtd keeps dying, with why."""
        return {
            p: t.message
            for p, t in self.troubles.items()
            if t.failures >= FAILED_AFTER or t.message.startswith("start failed")
        }

    def _save(self) -> None:
        try:
            self.state.save(self.applied, self.failures())
        except StateError as exc:
            self.state_warning = str(exc)
        else:
            self.state_warning = None

    def _forget_gone(self, desired: Desired, observed: Observed) -> None:
        """Drop applied records of ports nothing wants and nothing runs on."""
        busy = self.executor.busy()
        with self._lock:
            gone = [
                port
                for port, entry in self.applied.entries.items()
                if port not in desired.instances
                and port not in observed.instances
                and port not in busy
                and not desired.is_troubled(entry.config)
            ]
            if gone:
                self.applied = Applied(
                    {p: e for p, e in self.applied.entries.items() if p not in gone}
                )
                self._save()

    # ---- audit -----------------------------------------------------------------------------

    def _audit(
        self,
        kind: AuditAction,
        spec: InstanceSpec,
        outcome: Outcome,
        duration_ms: int,
        note: str = "",
    ) -> None:
        message = f"{note}: {outcome.message}" if note else outcome.message
        self.audit.record(
            AuditRecord(
                action=kind,
                instance=spec.name,
                port=spec.port,
                config=str(spec.config),
                sha256=spec.sha256,
                result=outcome.result,
                duration_ms=duration_ms,
                message=message,
                output=outcome.output,
                ts=self.wall_clock(),
            )
        )

    def _audit_drop(
        self, kind: AuditAction, action: DrainStop, outcome: Outcome, duration_ms: int
    ) -> None:
        with self._lock:
            entry = self.applied.entries.get(action.port)
        self.audit.record(
            AuditRecord(
                action=kind,
                instance=action.name,
                port=action.port,
                config=str(action.config),
                sha256=entry.sha256 if entry else "",
                result=outcome.result,
                duration_ms=duration_ms,
                message=outcome.message,
                output=outcome.output,
                ts=self.wall_clock(),
            )
        )

    def _audit_rejects(self, desired: Desired) -> None:
        """One `reject` record when a problem first appears, not on every cycle."""
        current = {str(p): p for p in desired.problems}
        for text in sorted(set(current) - self._rejected):
            self._audit_problem(current[text])
        self._rejected = set(current)

    def _audit_problem(self, problem: Problem) -> None:
        self.audit.record(
            AuditRecord(
                action=AuditAction.REJECT,
                instance=problem.path.name.removesuffix(".conf"),
                port=None,
                config=str(problem.path),
                sha256="",
                result=Result.SKIPPED,
                duration_ms=0,
                message=f"{problem} [rule: {problem.rule.value}]",
                output="",
                ts=self.wall_clock(),
            )
        )
