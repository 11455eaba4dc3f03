"""One reconcile cycle: inventory + observe + plan, then the actions on per-port lanes, audited."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from tgtwatch.backends.base import Backend, Outcome, Result
from tgtwatch.config import inventory
from tgtwatch.config.settings import DrainTimeoutPolicy, Settings
from tgtwatch.config.trust import TrustPolicy
from tgtwatch.daemon.backoff import CRASH_WINDOW_S, FAILED_AFTER, Trouble, backoff_s
from tgtwatch.daemon.lanes import Executor
from tgtwatch.daemon.state import StateError, StateFile
from tgtwatch.model.applied import pending_targets, running_targets
from tgtwatch.model.plan import plan
from tgtwatch.model.records import AuditAction, AuditRecord
from tgtwatch.model.structs import (
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

START_FAILED = "start failed"
RELOAD_FAILED = "reload failed"
KEEPS_DYING = "tgtd keeps dying after start"


def _crashed(exc: Exception) -> Outcome:
    return Outcome(Result.FAILED, f"{type(exc).__name__}: {exc}")


def _guarded(call: Callable[[], Outcome]) -> Outcome:
    """A backend call whose exception (a bug, an unexpected OS error) is a failed outcome,
    so it is audited like any failure and fails this port only."""
    try:
        return call()
    except Exception as exc:
        return _crashed(exc)


class AuditSink(Protocol):
    """What the reconciler needs from the audit trail (tgtwatch.telemetry.audit.Auditor fits)."""

    def record(self, record: AuditRecord) -> None: ...


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
        # Reentrant: _settle holds it while _save asks failures(). Lanes and the loop share
        # applied, troubles and the retry times through it.
        self._lock = threading.RLock()
        self.applied, self.state_warning = state.load()
        self.troubles: dict[int, Trouble] = {}
        # Ports whose next attempt waits for a time: deferred by their backoff, or whose
        # start just failed (its first retry is due at once). The daemon wakes for these.
        self._retry_at: dict[int, float] = {}
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
        self._forget_troubles(desired, observed)
        by_port: dict[int, list[Action]] = {}
        for action in result.actions:
            by_port.setdefault(action.port, []).append(action)
        deferred: dict[int, str] = {}
        busy = self.executor.busy()
        now = self.clock()
        retry_at: dict[int, float] = {}
        submit: list[tuple[int, list[Action]]] = []
        for port, actions in by_port.items():
            if port in busy:
                # Its lane's end brings the daemon back (lane_done): no timed retry needed.
                deferred[port] = "an action is under way on this port"
                continue
            with self._lock:
                trouble = self.troubles.get(port)
            # The backoff holds back (re)starts only: a reload or a drain of a tgtd that
            # runs now has nothing to do with why it kept failing to start or dying.
            starts = any(isinstance(a, Start) for a in actions)
            held = starts or (trouble is not None and trouble.message.startswith(RELOAD_FAILED))
            if trouble is not None and held and now < trouble.not_before:
                deferred[port] = f"retrying in {trouble.not_before - now:.1f} s: {trouble.message}"
                retry_at[port] = trouble.not_before
                continue
            submit.append((port, actions))
        with self._lock:
            # Before any lane starts (its failure sets its own retry): a start that failed
            # since `busy` was read keeps its retry; every other is submitted below,
            # deferred above, or no longer wanted.
            retry_at.update({p: t for p, t in self._retry_at.items() if p in busy})
            self._retry_at = retry_at
        for port, actions in submit:
            self.executor.submit(port, actions, self._run, self.on_lane_done)
        return CycleReport(desired, observed, result, deferred, self.state_warning)

    def next_retry(self) -> float | None:
        """Monotonic time of the earliest retry waiting for its time (the daemon wakes then
        and runs a cycle); it may be now or past: a failed start's first retry is at once."""
        with self._lock:
            return min(self._retry_at.values(), default=None)

    # ---- running one action ----------------------------------------------------------------

    def _run(self, action: Action) -> Outcome:
        started = self.clock()
        try:
            outcome = self._dispatch(action, started)
        except Exception as exc:  # a bug of ours: fails this port only
            outcome = _crashed(exc)
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
            outcome = _guarded(lambda: self.backend.start(action.spec, self.cancel))
            self._audit(AuditAction.START, action.spec, outcome, self._ms_since(started), crashed)
            return outcome
        if isinstance(action, Reload):
            outcome = self._with_pending(
                action.spec, _guarded(lambda: self.backend.reload(action.spec))
            )
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
        timeout = self.settings.drain_timeout_s
        outcome = _guarded(lambda: self.backend.drain_stop(action, timeout, force, self.cancel))
        if outcome.draining and self.keep_draining and not self.cancel.is_set():
            # `wait`: say so once, then keep the port offline until its last session leaves.
            self._audit_drop(AuditAction.DRAIN, action, outcome, self._ms_since(started))
            outcome = _guarded(lambda: self.backend.drain_stop(action, None, False, self.cancel))
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
            if trouble is not None and trouble.message.startswith(START_FAILED):
                return ""  # a retry of a start that failed: it did not die again
            failures = trouble.failures if trouble else 0
            if started is not None and now - started > CRASH_WINDOW_S:
                failures = 0
            # This restart is at once; should it die again, the next one waits 1 s, 2 s ...
            self.troubles[spec.port] = Trouble(
                failures + 1, now + backoff_s(failures + 2), KEEPS_DYING
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
                    # The applied entry keeps the old digest: the retry reloads again (an
                    # initiator logging in during tgt-admin --update makes it fail, exit 22).
                    kind = START_FAILED if isinstance(action, Start) else RELOAD_FAILED
                    self._fail(spec.port, outcome.message, kind)
                else:
                    entries[spec.port] = AppliedEntry(
                        spec.name,
                        spec.port,
                        spec.config,
                        # An empty digest never matches: later cycles apply it again.
                        "" if outcome.incomplete else spec.sha256,
                        now,
                        outcome.busy,
                        spec.kind,
                        running_targets(spec, entries.get(spec.port), outcome.busy),
                    )
                    if isinstance(action, Start):
                        self._started_at[spec.port] = self.clock()
                    trouble = self.troubles.get(spec.port)
                    if trouble is not None and trouble.message.startswith(
                        (START_FAILED, RELOAD_FAILED)
                    ):
                        del self.troubles[spec.port]
            elif not outcome.draining and outcome.result is not Result.FAILED:
                entries.pop(action.port, None)
                self.troubles.pop(action.port, None)
            self.applied = Applied(entries)
            self._save()

    def _fail(self, port: int, message: str, kind: str = START_FAILED) -> None:
        """A failed start or reload: retry at once the first time, then after 1 s, 2 s, 4 s ..."""
        previous = self.troubles.get(port)
        failures = (previous.failures if previous else 0) + 1
        not_before = self.clock() + backoff_s(failures)
        self.troubles[port] = Trouble(failures, not_before, f"{kind}: {message}")
        self._retry_at[port] = not_before

    def failures(self) -> dict[int, str]:
        """Ports whose start failed or whose tgtd keeps dying, with why."""
        with self._lock:
            return {
                p: t.message
                for p, t in self.troubles.items()
                if t.failures >= FAILED_AFTER or t.message.startswith((START_FAILED, RELOAD_FAILED))
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

    def _forget_troubles(self, desired: Desired, observed: Observed) -> None:
        """Drop troubles of ports no file wants any more, and of tgtds that stay up now."""
        now = self.clock()
        with self._lock:
            stale = [
                port
                for port, trouble in self.troubles.items()
                if port not in desired.instances
                or (
                    trouble.message == KEEPS_DYING
                    and port in observed.instances
                    and now - self._started_at.get(port, now) > CRASH_WINDOW_S
                )
            ]
            for port in stale:
                del self.troubles[port]
                self._retry_at.pop(port, None)
            if stale:
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
        if spec.notes:  # e.g. a backing store shared on purpose (allow-in-use yes)
            message += "; " + "; ".join(spec.notes)
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
        # The port a file ran on keeps its last good config: name it (None for a new file).
        with self._lock:
            port = next(
                (p for p, e in self.applied.entries.items() if e.config == problem.path), None
            )
        self.audit.record(
            AuditRecord(
                action=AuditAction.REJECT,
                instance=problem.path.name.removesuffix(".conf"),
                port=port,
                config=str(problem.path),
                sha256="",
                result=Result.SKIPPED,
                duration_ms=0,
                message=problem.report(),
                output="",
                ts=self.wall_clock(),
            )
        )
