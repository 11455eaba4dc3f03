"""`tgtwatch run`: the level-triggered loop of triggers, cycles, readiness, status and watchdog."""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import TextIO

from tgtwatch.config.settings import Settings, SettingsError
from tgtwatch.daemon import publish
from tgtwatch.daemon.debounce import Debouncer, TriggerKind
from tgtwatch.daemon.gate import PublishGate
from tgtwatch.daemon.loop_state import DaemonState, LoopClock
from tgtwatch.daemon.memo import Memo
from tgtwatch.daemon.outcomes import CycleReport
from tgtwatch.daemon.reconcile import START_FAILED, Reconciler
from tgtwatch.daemon.statuses import Statuses
from tgtwatch.daemon.wakeup import Waiter, Wake
from tgtwatch.daemon.watch_events import Watcher
from tgtwatch.daemon.watch_list import WatchList, watch_paths
from tgtwatch.daemon.watched import WatchedPids
from tgtwatch.model.status import InstanceStatus, counted_line
from tgtwatch.model.structs import Desired, DrainStop, InstanceKind, Observed, Reload, Start
from tgtwatch.telemetry import metrics
from tgtwatch.telemetry.notify import NotifyError
from tgtwatch.telemetry.outbox import Outbox, Sender

# In C: a lane's end asks every applied entry; a new file's cycle, every spec's includes.
_PENDING = attrgetter("pending")
# While the first reconcile runs, ask systemd for this much more start time, this often.
EXTEND_BY_S = 30.0
EXTEND_EVERY_S = 10.0
# While targets wait for their sessions to end (pending), look this often: nothing else
# says when the last session leaves. Only then: an idle daemon polls nothing.
PENDING_POLL_S = 2.0
# A cycle that failed outright (a bug, an unreadable /proc) is tried again this soon.
CYCLE_RETRY_S = 5.0
# Built into the running daemon's parts (backend, watcher, state file, lock, every tool
# call): a SIGHUP keeps these and says so.
RESTART_ONLY = ("backend", "state_dir", "watcher", "tool_timeout_s")


class Daemon:
    """Wires the watcher, the reconciler, systemd notifications and the audit trail."""

    def __init__(
        self,
        settings: Settings,
        reconciler: Reconciler,
        watcher: Watcher,
        waiter: Waiter,
        notifier: Sender,
        *,
        reload_settings: Callable[[], Settings],
        reap: Callable[[], None] = lambda: None,
        observe_light: Callable[[], Observed],
        watchdog_interval_s: float | None,
        log: TextIO,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.reconciler = reconciler
        self.watcher = watcher
        self.waiter = waiter
        # Never blocks the loop: what systemd cannot take now is kept and retried.
        self.notifier = Outbox(notifier, clock=clock, sleep=sleep)
        self.reload_settings = reload_settings
        self.reap = reap  # collects exited children of ours (the direct backend's tgtds)
        self._reaped_for: tuple[object, ...] = (None, None, None)
        self.observe_light = observe_light
        self.watchdog_interval_s = watchdog_interval_s
        self.log = log
        self.clock = clock
        self.wall_clock = wall_clock
        self.debouncer = Debouncer.from_ms(settings.debounce_ms, leading=True)
        # A cycle that changed nothing (its inputs the same objects) repeats no O(n) pass.
        self._pids = WatchedPids()
        self._watched_paths: list[Path] | None = None
        self._pending = Memo(lambda applied: any(map(_PENDING, applied.entries.values())))
        self._statuses, self._line = Statuses(), Memo(counted_line)  # per port, per change
        self._watch_list = WatchList()
        self.publisher = publish.Publisher(settings.state_dir, log)
        self.gate = PublishGate()
        self.state = DaemonState()
        self.deadlines = LoopClock()

    # ---- public ----------------------------------------------------------------------------

    def run(self) -> int:
        """Until SIGTERM/SIGINT: exit 0, leaving every tgtd running.

        Whatever ends the loop, an exception included, shuts its parts down: the watcher's
        and the lanes' threads would otherwise keep a process with a dead loop alive (a
        drain waits for its sessions without limit) until systemd's watchdog killed it.
        """
        try:
            now = self.clock()
            self.watcher.start(self.watch_paths(None))
            if self.watchdog_interval_s:
                self.deadlines.watchdog_at = now
            self.deadlines.extend_at = now
            self.cycle()
            # Nothing to start or reload: the first reconcile is already done.
            self._check_ready(self.clock())
            while not self.state.stopping:
                self.iterate()
        except Exception as exc:
            self._say(f"stopping after an internal error: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.shutdown()
        return 0

    def iterate(self) -> None:
        """Wait for the next thing to happen, then act on it."""
        now = self.clock()
        deadline = self.next_deadline(now)
        wake = self.waiter.wait(None if deadline is None else deadline - now)
        self.handle(wake)

    def handle(self, wake: Wake) -> None:
        now = self.clock()
        run_cycle = False
        # The paths events named: the next cycle reads only the files they touch. None:
        # events may be missing (SIGHUP, resync, overflow), so every file is read again.
        changed: set[Path] | None = set()
        for signum in wake.signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.state.stopping = True
                self._notify(self.notifier.stopping)
                return
            if signum == signal.SIGHUP:
                self._reload(now)
                run_cycle = True
                changed = None
        for trigger in wake.triggers:
            if trigger.kind in (TriggerKind.ERROR, TriggerKind.OVERFLOW) and trigger.detail:
                # Events may be lost: say so (the rescan that follows catches up).
                self._say(f"watcher: {trigger.detail}; rescanning")
            self.debouncer.add(trigger, now)
        if wake.exited:
            # A tgtd died: the very fault this design isolates. Restart it now, not at resync.
            # (Also after a drain's tgtd exits: the cycle is cheap and a crash mistaken for
            # a drain's exit would otherwise wait for the resync.)
            self._report_exits(wake.exited)
            self.reconciler.looks.forget()  # the cycle looks at all of /proc again
            run_cycle = True
        if any(port in self.state.deferred for port in wake.lanes_done):
            run_cycle = True
        batch = self.debouncer.take_batch(now)
        if batch is not None:
            run_cycle = True
            if batch.resync or changed is None:
                changed = None
            else:
                changed |= batch.paths
        if now >= self.deadlines.resync_at:
            # Every managed tgtd is compared with what was applied again (on lanes), and
            # every file is read again (what no event reports: a chmod, a lost event).
            self.reconciler.recheck()
            run_cycle = True
            changed = None
        if self.deadlines.pending_at is not None and now >= self.deadlines.pending_at:
            entries = self.reconciler.applied.entries
            self.reconciler.recheck(p for p, e in entries.items() if e.pending)
            run_cycle = True
        retry = self.reconciler.next_retry()
        if retry is not None and now >= retry:
            run_cycle = True
        self._ping(now)
        retry_notes = self.notifier.retry_at()
        if retry_notes is not None and now >= retry_notes:
            self._notify(self.notifier.flush)
        if run_cycle:
            self.cycle(changed)
        elif wake.lanes_done:
            observed = self.observe_light()
            self.refresh(observed)
            if self._died_unwatched(wake.lanes_done, observed):
                self.cycle()
        elif self.gate.due is not None and now >= self.gate.due:
            self.refresh(self.observe_light())  # what was held back while starts ran
        self._check_ready(now)

    def _died_unwatched(self, ports: list[int], observed: Observed) -> bool:
        """A lane ended and its wanted port runs no tgtd: it died before we watched its pid
        (a zombie is not in `observed`, so no pidfd was ever opened for it). Look again now,
        not at the resync: the cycle restarts it or schedules its retry."""
        last = self.state.last
        if last is None:
            return False
        busy = self.reconciler.executor.busy()
        troubles = dict(self.reconciler.troubles)

        def start_failed(port: int) -> bool:  # its retry is already scheduled
            trouble = troubles.get(port)
            return trouble is not None and trouble.message.startswith(START_FAILED)

        return any(
            port in last.desired.instances
            and last.desired.instances[port].kind is not InstanceKind.DEFAULT
            and port not in observed.instances
            and port not in busy
            and not start_failed(port)
            for port in ports
        )

    def next_deadline(self, now: float) -> float | None:
        candidates = [self.deadlines.resync_at]
        due = self.debouncer.next_deadline()
        if due is not None:
            candidates.append(due)
        if self.deadlines.watchdog_at is not None:
            candidates.append(self.deadlines.watchdog_at)
        if not self.state.ready and self.deadlines.extend_at is not None:
            candidates.append(self.deadlines.extend_at)
        if self.deadlines.pending_at is not None:
            candidates.append(self.deadlines.pending_at)
        retry = self.reconciler.next_retry()
        if retry is not None:
            candidates.append(retry)
        retry_notes = self.notifier.retry_at()
        if retry_notes is not None:
            candidates.append(retry_notes)
        if self.gate.due is not None:
            candidates.append(self.gate.due)
        return min(candidates)

    # ---- the cycle -------------------------------------------------------------------------

    def cycle(self, changed: set[Path] | None = None) -> None:
        """One reconcile; `changed` as Reconciler.cycle (None: read every file)."""
        started = self.clock()
        try:
            # Pids watched by pidfds (an exit: looks.forget): /proc is looked at if needed.
            report = self.reconciler.cycle(changed, self.state.watched.keys())
        except Exception as exc:  # keep serving: every port's tgtd runs on without us
            self._say(
                f"cycle failed, trying again in {CYCLE_RETRY_S:g} s: {type(exc).__name__}: {exc}"
            )
            self.deadlines.resync_at = self.clock() + CYCLE_RETRY_S
            return
        self.state.cycle_seconds = self.clock() - started
        self.state.cycle_timestamp = self.wall_clock()
        self.state.last = report
        self.state.deferred = set(report.wake_on)
        self.deadlines.resync_at = self.clock() + self.settings.resync_interval_s
        self.deadlines.pending_at = None  # refresh() sets it again while targets are pending
        # Only lanes this cycle started, and none that drains first: a drain waits for
        # the last session to leave, without limit, and READY=1 must not wait for that.
        draining = {a.port for a in report.plan.actions if isinstance(a, DrainStop)}
        starts = {
            a.port
            for a in report.plan.actions
            if isinstance(a, Start | Reload)
            and a.port not in report.deferred
            and a.port not in draining
        }
        self.gate.started(starts)
        if not self.state.ready or self.state.reloading:
            self.state.waiting_for |= starts
        settings = self.settings
        paths = self._watch_list.paths(settings.instances_dir, settings.tgt_dir, report.desired)
        # Equal, not the same list: a new file changes desired, rarely the watched paths
        # (re-arming hands off to the watcher thread while the new start runs).
        if paths != self._watched_paths or changed is None:  # a resync re-arms, too
            self.watcher.set_paths(paths)
            self._watched_paths = paths
        self.refresh(report.observed)

    def refresh(self, observed: Observed) -> None:
        """The state file, STATUS=, metrics and the pidfds of the tgtds we manage, after a
        cycle or a batch of lanes. While starts the loop just submitted run, all of it
        waits (PublishGate, at most PUBLISH_DEFER_S): its passes over every port would run
        on the loop's thread beside the start; a crash before the write loses nothing
        (the next start adopts what runs), a lane's end looks for a tgtd that died unwatched."""
        if not self.gate.open(self.reconciler.executor.busy(), self.clock()):
            return
        self.reconciler.save_state()
        if not self._pending(self.reconciler.applied):
            self.deadlines.pending_at = None
        elif self.deadlines.pending_at is None:
            self.deadlines.pending_at = self.clock() + PENDING_POLL_S
        last = self.state.last
        if last is None:
            return
        inputs = (observed, last.desired, self.reconciler.applied)
        if any(a is not b for a, b in zip(inputs, self._reaped_for, strict=True)):
            # A tgtd that exited changes one of them; waitid() walks every child of ours in
            # the kernel (~0.1 ms at 500): not on a cycle that changed nothing.
            self._reaped_for = inputs
            self.reap()
        watched = self._pids(*inputs)
        if watched is not self.state.watched:
            self.state.watched = watched
            self.waiter.watch_pids(watched)
        self._say_save_error()
        self._count_actions()
        self.publish(last, observed)

    def publish(self, last: CycleReport, observed: Observed) -> None:
        """STATUS=, metrics and status.json: O(instances), so held back while starts the
        loop just submitted run (PublishGate), at most PUBLISH_DEFER_S."""
        statuses = self.statuses(last.desired, observed)
        line = self._line(
            self._statuses.counts(), last.desired.problems, self.reconciler.save_error
        )
        if line != self.state.last_status:
            self.state.last_status = line
            self._notify(lambda: self.notifier.status(line))
        if self.settings.metrics_file is not None:
            self._write_metrics(statuses, last.desired)
        self.publisher.write(last, statuses, self.reconciler)

    def _say_save_error(self) -> None:
        """One line when writing the state file starts failing, and one when it works again."""
        error = self.reconciler.save_error
        if error == self.state.save_error:
            return
        if error is not None:
            self._say(f"{error}; what runs is unchanged, but a restart would not know it")
        else:
            self._say(f"state: {self.reconciler.state.path} written again")
        self.state.save_error = error

    def statuses(self, desired: Desired, observed: Observed) -> list[InstanceStatus]:
        rec = self.reconciler
        return self._statuses(desired, rec.applied, observed, rec.failures(), rec.checker.wrong())

    def watch_paths(self, desired: Desired | None) -> list[Path]:
        """The directories the watcher arms for `desired` (watch_list.watch_paths)."""
        return watch_paths(self.settings.instances_dir, self.settings.tgt_dir, desired)

    # ---- readiness, notifications ----------------------------------------------------------

    def _check_ready(self, now: float) -> None:
        if self.state.ready and not self.state.reloading:
            return
        busy = self.reconciler.executor.busy()
        self.state.waiting_for &= busy
        if self.state.waiting_for:
            extend_at = self.deadlines.extend_at
            if not self.state.ready and extend_at is not None and now >= extend_at:
                usec = int(EXTEND_BY_S * 1_000_000)
                self._notify(lambda: self.notifier.extend_timeout(usec))
                self.deadlines.extend_at = now + EXTEND_EVERY_S
            return
        self.state.ready = True
        self.state.reloading = False
        self._notify(self.notifier.ready)

    def _ping(self, now: float) -> None:
        """WATCHDOG=1 from the loop itself: a wedged loop stops the pings."""
        if self.deadlines.watchdog_at is None or self.watchdog_interval_s is None:
            return
        if now >= self.deadlines.watchdog_at:
            self._notify(self.notifier.watchdog)
            self.deadlines.watchdog_at = now + self.watchdog_interval_s

    def _reload(self, now: float) -> None:
        self.state.reloading = True
        self._notify(lambda: self.notifier.reloading(time.monotonic_ns() // 1000))
        try:
            settings = self.reload_settings()
        except SettingsError as exc:
            self._say(f"settings not reloaded, keeping the old ones: {exc}")
            return
        kept = {
            name: getattr(self.settings, name)
            for name in RESTART_ONLY
            if getattr(settings, name) != getattr(self.settings, name)
        }
        if kept:
            self._say(
                f"settings: a change of {', '.join(kept)} takes effect when tgtwatch restarts"
            )
            settings = dataclasses.replace(settings, **kept)
        self.settings = settings
        self.reconciler.settings = settings
        self.debouncer = Debouncer.from_ms(settings.debounce_ms, leading=True)

    def _report_exits(self, pids: list[int]) -> None:
        """Say which tgtds died on their own; a tgtd we drained or tore down is no news."""
        last = self.state.last
        desired = last.desired.instances if last is not None else {}
        busy = self.reconciler.executor.busy()
        for pid in pids:
            port = self.state.watched.get(pid)
            if port is None:
                self._say(f"tgtd pid {pid} exited")
            elif port in desired and port not in busy:
                spec = desired[port]
                self._say(f"tgtd pid {pid} of {spec.name} on port {port} exited; restarting it")

    def _notify(self, send: Callable[[], None]) -> None:
        try:
            send()
        except NotifyError as exc:
            self._say(str(exc))

    def _say(self, message: str) -> None:
        print(f"tgtwatch: {message}", file=self.log, flush=True)

    def _count_actions(self) -> None:
        for report in self.reconciler.take_reports():
            self.state.actions[(report.action.kind.value, report.outcome.result.value)] += 1

    def _write_metrics(self, statuses: list[InstanceStatus], desired: Desired) -> None:
        assert self.settings.metrics_file is not None
        snapshot = metrics.MetricsSnapshot(
            statuses=tuple(statuses),
            actions=dict(self.state.actions),
            problems=len(desired.problems),
            last_cycle_seconds=self.state.cycle_seconds,
            last_cycle_timestamp=self.state.cycle_timestamp,
            state_save_failing=self.reconciler.save_error is not None,
            held=len(self.state.last.plan.held) if self.state.last is not None else 0,
        )
        try:
            metrics.write(self.settings.metrics_file, snapshot)
        except OSError as exc:
            self._say(f"{self.settings.metrics_file}: cannot write metrics: {exc.strerror}")

    def shutdown(self) -> None:
        """Abandon waits in flight (drains stay offline, resumed next start); tgtds keep running.

        Every step runs even when one before it fails (after an error, a part may be broken).
        """
        self.reconciler.cancel.set()
        steps = (
            self.watcher.stop,
            lambda: self.reconciler.executor.shutdown(wait=True),
            self.reconciler.save_state,  # what the lanes ended with before the exit
        )
        for step in (*steps, self.waiter.close, self.notifier.close):
            try:
                step()
            except Exception as exc:
                self._say(f"shutdown: {type(exc).__name__}: {exc}")
