"""One reconcile cycle: inventory + observe + plan, then the actions on per-port lanes, audited."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from pathlib import Path

from tgtwatch.backends.base import Backend, Outcome, Result
from tgtwatch.config import inventory
from tgtwatch.config.incremental import InstanceCache
from tgtwatch.config.settings import DrainTimeoutPolicy, Settings
from tgtwatch.config.trust import TrustPolicy
from tgtwatch.daemon.backoff import (
    CRASH_WINDOW_S,
    FAILED_AFTER,
    KEEPS_DYING,
    Trouble,
    backoff_s,
    stale_troubles,
)
from tgtwatch.daemon.checks import Checker
from tgtwatch.daemon.lanes import Cancel, Executor
from tgtwatch.daemon.looks import Looks
from tgtwatch.daemon.outcomes import ActionReport, CycleReport, crashed, guarded
from tgtwatch.daemon.recorder import AuditSink, Recorder
from tgtwatch.daemon.state import StateFile, StateWriter
from tgtwatch.model.applied import pending_targets, running_targets
from tgtwatch.model.grace import hold_drains
from tgtwatch.model.records import AuditAction
from tgtwatch.model.structs import (
    Action,
    AppliedEntry,
    Check,
    Desired,
    DrainStop,
    InstanceSpec,
    Observed,
    Reload,
    Start,
)

START_FAILED = "start failed"
RELOAD_FAILED = "reload failed"


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
        # Set at shutdown: every wait in flight ends (each drain also has its own child).
        self.cancel = Cancel()
        # Reentrant: _settle holds it while _save asks failures(). Lanes and the loop share
        # applied, troubles and the retry times through it.
        self._lock = threading.RLock()
        self.applied, self.state_warning = state.load()
        # Why the last write of the state file failed (None: it was written, or not yet).
        self.save_error: str | None = None
        self.writer = StateWriter(state)
        self.troubles: dict[int, Trouble] = {}
        # Ports whose next attempt waits for a time: deferred by their backoff, or whose
        # start just failed (its first retry is due at once). The daemon wakes for these.
        self._retry_at: dict[int, float] = {}
        self._reports: list[ActionReport] = []
        self._started_at: dict[int, float] = {}
        self.recorder = Recorder(audit, wall_clock)
        self.checker = Checker(backend, self.recorder, clock)
        self._drains: dict[int, tuple[DrainStop, threading.Event]] = {}  # lanes draining now
        self._submitted: dict[int, list[Action]] = {}  # what the loop gave each busy lane
        self._files = InstanceCache()  # what each instance file gave when last read
        self._desired = Desired()  # the last cycle's
        self.looks = Looks(backend)  # /proc and plan(), looked at again only when needed
        # Ports whose file vanished, and when a cycle first saw it (the delete grace).
        self._gone_since: dict[int, float] = {}

    # ---- the cycle -------------------------------------------------------------------------

    def cycle(
        self, changed: Collection[Path] | None = None, watched: Collection[int] | None = None
    ) -> CycleReport:
        """Rescan, observe, plan and hand the actions to the lanes (does not wait for them).

        `changed`: the paths the watcher reported since the last cycle; only the instance
        files they touch are read again. None (the default) reads every file.
        `watched`: the tgtd pids whose exit the caller hears of (pidfds) and reports by
        looks.forget(); with it, /proc is scanned whole only when needed (Looks.observe).

        Runs no tool: /proc tells which tgtds run; what each holds is asked on its lane (a
        Check), so one hung tgtd never holds the daemon's loop.
        """
        # Busy first, then applied, then /proc: a lane that ends after this snapshot is on a
        # port deferred below. Read the other way round, a start ending between the scan
        # and `busy` was planned again from a scan that had not seen its tgtd yet.
        busy = self.executor.busy()
        with self._lock:
            applied = self.applied
        desired = inventory.scan(
            self.settings, applied, self.policy, cache=self._files, changed=changed
        )
        self.recorder.rejects(desired, applied)
        self._desired = desired
        observed = self.looks.observe(desired, applied, None if changed is None else watched, busy)
        now = self.clock()
        result = self.looks.plan(
            desired, applied, observed, frozenset(self.checker.due(observed, now))
        )
        # The daemon gives a vanished file a grace before its drain; `apply` acts on the
        # files as they are (it does not wait for a drain either).
        grace_s = self.settings.delete_grace_ms / 1000 if self.keep_draining else 0.0
        graced = hold_drains(result.actions, desired, self._gone_since, now, grace_s)
        self._gone_since = dict(graced.gone_since)
        result = replace(result, actions=graced.actions)
        self._stop_restored_drains(desired)
        self._forget_gone(desired, observed, busy)
        self._forget_troubles(desired, observed)
        by_port: dict[int, list[Action]] = {}
        for action in result.actions:
            by_port.setdefault(action.port, []).append(action)
        deferred: dict[int, str] = {
            port: f"waits for port {blocker} to drain (the same instance runs there)"
            for port, blocker in result.waiting
        }
        wake_on = {blocker for _, blocker in result.waiting}
        # A drain of a vanished file's port brings the daemon back when its lane ends: a
        # drain that failed (a hung tgtd) is tried again then. Without the grace, the cycles
        # of the same burst had deferred the busy port, which did the same by chance.
        wake_on |= graced.gone_since.keys() - graced.held.keys()
        retry_at: dict[int, float] = dict(graced.held)
        for port, due in graced.held.items():
            deferred[port] = f"its file is gone: drains in {due - now:.1f} s unless it comes back"
        submit: list[tuple[int, list[Action]]] = []
        for port, actions in by_port.items():
            if port in busy:
                deferred[port] = "an action is under way on this port"
                # Its lane's end brings the daemon back (lane_done), unless the lane runs
                # these very actions (a failure sets its own retry): not a cycle per start.
                if actions != self._submitted.get(port):
                    wake_on.add(port)
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
        self._submitted = {p: a for p, a in self._submitted.items() if p in busy}
        for port, actions in submit:
            self._submitted[port] = actions
            self.checker.submitted(port)
            self.executor.submit(port, actions, self._run, self.on_lane_done)
        return CycleReport(
            desired, observed, result, deferred, self.state_warning, frozenset(wake_on)
        )

    def observe_now(self, watched: Collection[int]) -> Observed:
        """What runs now, for a lane's end: the last look while it cannot be stale."""
        busy = self.executor.busy()
        with self._lock:
            applied = self.applied
        return self.looks.observe(self._desired, applied, watched, busy)

    def next_retry(self) -> float | None:
        """Monotonic time of the earliest retry waiting for its time (the daemon wakes then
        and runs a cycle); it may be now or past: a failed start's first retry is at once."""
        with self._lock:
            times = [*self._retry_at.values()]
        check = self.checker.next_at()
        return min([*times, check] if check is not None else times, default=None)

    def recheck(self, ports: Iterable[int] | None = None) -> None:
        """Compare what runs on these ports (all when None) with what was applied, on lanes
        the next cycle starts: at each resync, and while targets are pending."""
        self.checker.recheck(ports)

    def _stop_restored_drains(self, desired: Desired) -> None:
        """A drain whose file is back stops waiting (only deleting a file stops its
        instance): the port stays offline until its check sets it ready."""
        with self._lock:
            drains = list(self._drains.items())
        for port, (action, stop) in drains:
            spec = desired.instances.get(port)
            if spec is not None and spec.config == action.config:
                stop.set()

    # ---- running one action ----------------------------------------------------------------

    def _run(self, action: Action) -> Outcome:
        started = self.clock()
        done: Action | None = action
        try:
            if isinstance(action, Check):
                with self._lock:
                    entry = self.applied.entries.get(action.port)
                found, reloaded = self.checker.check(action, entry, self._reload)
                outcome = found or Outcome(Result.OK, "runs as applied")
                done = Reload(action.spec) if reloaded else (action if found else None)
            else:
                outcome = self._dispatch(action, started)
        except Exception as exc:  # a bug of ours: fails this port only
            outcome = crashed(exc)
        if done is not None:
            self._settle(done, outcome)
            with self._lock:
                self._reports.append(ActionReport(done, outcome, self._ms_since(started)))
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
            outcome = guarded(lambda: self.backend.start(action.spec, self.cancel))
            if outcome.result is not Result.FAILED and outcome.pid:
                self.looks.started(action.spec.port, outcome.pid)
            if outcome.result is not Result.FAILED:
                outcome = self.checker.after_action(action.spec, outcome)
            self.recorder.action(
                AuditAction.START, action.spec, outcome, self._ms_since(started), crashed
            )
            return outcome
        if isinstance(action, Reload):
            kind = AuditAction.ADOPT if action.adopt else AuditAction.RELOAD
            return self._reload(action.spec, kind, "")
        if isinstance(action, DrainStop):
            return self._drain(action, started)
        raise AssertionError(f"unhandled action {action!r}")  # pragma: no cover

    def _reload(self, spec: InstanceSpec, kind: AuditAction, note: str) -> Outcome:
        """Apply the file to its running tgtd, audited as `kind` (reload, adopt, repair)."""
        started = self.clock()
        outcome = self._with_pending(spec, guarded(lambda: self.backend.reload(spec)))
        if outcome.result is not Result.FAILED:
            outcome = self.checker.after_action(spec, outcome)
        self.recorder.action(kind, spec, outcome, self._ms_since(started), note)
        if outcome.busy:
            message = "in use, applied once their sessions end: " + ", ".join(outcome.busy)
            self.recorder.action(AuditAction.PENDING, spec, replace(outcome, message=message), 0)
        return outcome

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
        stop = self.cancel.child()  # set alone when the file comes back
        with self._lock:
            self._drains[action.port] = (action, stop)
        try:
            outcome = guarded(lambda: self.backend.drain_stop(action, timeout, force, stop))
            if outcome.draining and self.keep_draining and not stop.is_set():
                # `wait`: say so once, then keep the port offline until its last session leaves.
                self._audit_drop(AuditAction.DRAIN, action, outcome, self._ms_since(started))
                outcome = guarded(lambda: self.backend.drain_stop(action, None, False, stop))
        finally:
            with self._lock:
                self._drains.pop(action.port, None)
            self.cancel.forget(stop)
        if outcome.draining and stop.is_set() and not self.cancel.is_set():
            outcome = replace(
                outcome,
                message=f"{action.config} is back: drain stopped; {outcome.message}",
            )
        if outcome.draining or outcome.result is Result.FAILED:
            self.checker.recheck((action.port,))  # offline, maybe wanted again: look at it
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
                    targets = running_targets(spec, entries.get(spec.port), outcome.busy)
                    # Seen not running as the file asks: recorded as never applied, so a
                    # later reload lands it (or, while it is in use, it is pending).
                    unapplied = set(outcome.unapplied)
                    targets = tuple((n, "" if n in unapplied else d) for n, d in targets)
                    entries[spec.port] = AppliedEntry(
                        spec.name,
                        spec.port,
                        spec.config,
                        # An empty digest never matches: later cycles apply it again.
                        "" if outcome.incomplete else spec.sha256,
                        now,
                        outcome.busy,
                        spec.kind,
                        targets,
                    )
                    if isinstance(action, Start):
                        self._started_at[spec.port] = self.clock()
                    trouble = self.troubles.get(spec.port)
                    if trouble is not None and trouble.message.startswith(
                        (START_FAILED, RELOAD_FAILED)
                    ):
                        del self.troubles[spec.port]
            elif isinstance(action, Check):
                return  # a check that repaired the system state changes no record
            elif not outcome.draining and outcome.result is not Result.FAILED:
                entries.pop(action.port, None)
                self.troubles.pop(action.port, None)
            self.applied = self.applied.made_of(entries, (action.port,))
            self._save()

    def _fail(self, port: int, message: str, kind: str = START_FAILED) -> None:
        """A failed start or reload: retry at once the first time, then after 1 s, 2 s, 4 s ..."""
        previous = self.troubles.get(port)
        failures = (previous.failures if previous else 0) + 1
        not_before = self.clock() + backoff_s(failures)
        self.troubles[port] = Trouble(failures, not_before, f"{kind}: {message}")
        self._retry_at[port] = not_before

    def failures(self) -> dict[int, str]:
        """Ports whose start failed, whose tgtd keeps dying, or does not run as applied."""
        wrong = self.checker.wrong()
        with self._lock:
            return wrong | {
                p: t.message
                for p, t in self.troubles.items()
                if t.failures >= FAILED_AFTER or t.message.startswith((START_FAILED, RELOAD_FAILED))
            }

    def _save(self) -> None:
        self.writer.mark()  # lanes only mark it: written once per batch (StateWriter)

    def save_state(self) -> None:
        """Write the state file if an action changed it since the last write. The daemon
        calls it after each cycle and batch of ended lanes, and at shutdown; `apply` too."""
        with self._lock:
            if not self.writer.take():
                return
            applied, failed = self.applied, self.failures()
        # Outside the lock: lanes settling meanwhile mark it again, for the next call.
        self.state_warning = self.save_error = self.writer.write(applied, failed)

    def _forget_gone(self, desired: Desired, observed: Observed, busy: frozenset[int]) -> None:
        """Drop applied records of ports nothing wants and nothing runs on (`observed` was
        scanned after `busy` was read: a lane ending since may have started a tgtd)."""
        with self._lock:
            entries = self.applied.entries
            # Set differences first (in C): a cycle looks at the few ports nothing wants.
            unwanted = entries.keys() - desired.instances.keys() - observed.instances.keys()
            gone = {p for p in unwanted - busy if not desired.is_troubled(entries[p].config)}
            if gone:
                kept = {p: e for p, e in entries.items() if p not in gone}
                self.applied = self.applied.made_of(kept, gone)
                self._save()

    def _forget_troubles(self, desired: Desired, observed: Observed) -> None:
        """Drop troubles of ports no file wants any more, and of tgtds that stay up now."""
        now = self.clock()
        with self._lock:
            wanted, running = desired.instances, observed.instances
            stale = stale_troubles(self.troubles, wanted, running, self._started_at, now)
            for port in stale:
                del self.troubles[port]
                self._retry_at.pop(port, None)
            if stale:
                self._save()
        self.checker.keep_only(desired.instances)

    def _audit_drop(
        self, kind: AuditAction, action: DrainStop, outcome: Outcome, duration_ms: int
    ) -> None:
        with self._lock:
            entry = self.applied.entries.get(action.port)
        sha256 = entry.sha256 if entry else ""
        self.recorder.drop(kind, action, sha256, outcome, duration_ms)
