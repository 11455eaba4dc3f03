"""Fakes at tgtwatch's own boundaries: a clock, a backend of in-memory tgtds, a waiter.

No processes, no sleeps: the FakeBackend keeps "running" instances in a dict keyed by
port, the FakeWaiter advances the FakeClock by the timeout it was given instead of
sleeping, and everything that would block in real life blocks on a threading.Event the
test controls.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import queue
import signal
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tgtwatch.backends.base import Outcome, Result, Unanswered
from tgtwatch.config.settings import Settings
from tgtwatch.config.trust import TrustPolicy
from tgtwatch.daemon.debounce import Trigger
from tgtwatch.daemon.lanes import Executor
from tgtwatch.daemon.outcomes import CycleReport
from tgtwatch.daemon.reconcile import Reconciler
from tgtwatch.daemon.state import StateFile
from tgtwatch.daemon.wakeup import Wake, drained
from tgtwatch.daemon.watch_events import TriggerQueue
from tgtwatch.model.records import AuditAction, AuditRecord, AuditResult
from tgtwatch.model.status import InstanceStatus, instance_states
from tgtwatch.model.structs import (
    DrainStop,
    InstanceSpec,
    Observed,
    ObservedInstance,
    ObservedTarget,
    TargetSpec,
)
from tgtwatch.telemetry.audit import Auditor
from tgtwatch.telemetry.notify import MessageNotifier, NotifyError

# A bounded real wait for the few places a test waits on a lane thread: never reached
# when the code is right, and it keeps a wrong test from hanging the suite.
THREAD_TIMEOUT_S = 5.0


class FakeClock:
    """A monotonic clock that only moves when told to (thread safe)."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a monotonic clock does not go back ({seconds})")
        with self._lock:
            self._now += seconds

    def set(self, now: float) -> None:
        with self._lock:
            if now < self._now:
                raise ValueError(f"a monotonic clock does not go back ({now} < {self._now})")
            self._now = now


# --- the backend ----------------------------------------------------------------------------


@dataclass
class FakeTgtd:
    """One "running" tgtd."""

    port: int
    control_port: int
    pid: int
    config: str
    sha256: str
    system_state: str = "ready"
    targets: dict[str, str] = field(default_factory=dict)  # name -> digest it runs with
    sessions: dict[str, int] = field(default_factory=dict)  # name -> I_T nexuses
    starting: bool = False
    luns: dict[str, int] = field(default_factory=dict)  # name -> LUNs (1 when not said)
    instance: str | None = None  # one tgtd per name (systemd units): the name it runs for

    def observed(self, detail: bool) -> ObservedInstance:
        targets = (
            tuple(
                ObservedTarget(tid, name, self.luns.get(name, 1), self.sessions.get(name, 0))
                for tid, name in enumerate(sorted(self.targets), start=1)
            )
            if detail
            else ()
        )
        return ObservedInstance(
            port=self.port,
            control_port=self.control_port,
            pid=self.pid,
            system_state=self.system_state if detail else "",
            targets=targets,
            starting=self.starting,
            inspected=detail,
            instance=self.instance,
        )


Step = Callable[[], Outcome | None]  # a scripted step: an Outcome replaces the call's own


@dataclass
class Gate:
    """Hold a backend call until the test opens the gate."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def open(self) -> None:
        self.release.set()

    def wait_entered(self) -> None:
        if not self.entered.wait(THREAD_TIMEOUT_S):
            raise AssertionError("the gated call never started")


class FakeBackend:
    """The Backend protocol over a dict of running instances; scriptable per call.

    - ``fail(op, port)``: the next call(s) of ``op`` on ``port`` fail (nothing changes);
    - ``explode(op, port, exc)``: the next call raises (a bug in a backend);
    - ``gate(op, port)``: the next call blocks until the returned Gate is opened;
    - ``connect(port, target, n)``: sessions on a target (a reload then reports it busy,
      a drain waits for it);
    - ``crash(port)``: the tgtd vanishes; ``foreign(port)``: a tgtd tgtwatch never started;
    - ``units = True``: one tgtd per instance name, as systemd's tgtd@NAME: observed with
      its name, and a start waits (as a unit would) until no other port runs that name;
    - ``hang(port)``: its tgtd stops answering (``inspect`` raises Unanswered) until
      ``unhang(port)``; ``inspects`` lists every port inspected (not in ``calls``).

    Drains with sessions advance the clock by the timeout they were given (no sleep);
    a drain without a timeout blocks until ``disconnect`` ends the sessions or cancel.
    """

    name = "fake"

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.running: dict[int, FakeTgtd] = {}
        self.calls: list[tuple[str, int]] = []
        self.observe_calls: list[Collection[int] | None] = []
        self.inspects: list[int] = []
        self.hung: set[int] = set()
        # Backing stores that do not exist: a start or reload makes their targets without
        # them (tgt-admin skips a missing store and exits 0).
        self.missing_stores: set[str] = set()
        self.units = False
        self._pids = itertools.count(4000)
        self._lock = threading.Condition()
        self._script: dict[tuple[str, int], list[Step]] = {}
        self._gates: dict[tuple[str, int], list[Gate]] = {}

    # ---- scripting -----------------------------------------------------------------------

    def script(self, op: str, port: int, *steps: Step) -> None:
        with self._lock:
            self._script.setdefault((op, port), []).extend(steps)

    def fail(self, op: str, port: int, message: str = "boom", times: int = 1) -> None:
        outcome = Outcome(Result.FAILED, message, output=f"{op} said {message}")
        self.script(op, port, *([lambda: outcome] * times))

    def explode(self, op: str, port: int, exc: BaseException) -> None:
        def step() -> Outcome | None:
            raise exc

        self.script(op, port, step)

    def gate(self, op: str, port: int) -> Gate:
        gate = Gate()
        with self._lock:
            self._gates.setdefault((op, port), []).append(gate)
        return gate

    def connect(self, port: int, target: str, sessions: int = 1) -> None:
        with self._lock:
            self.running[port].sessions[target] = sessions
            self._lock.notify_all()

    def disconnect(self, port: int, target: str | None = None) -> None:
        with self._lock:
            tgtd = self.running[port]
            if target is None:
                tgtd.sessions.clear()
            else:
                tgtd.sessions.pop(target, None)
            self._lock.notify_all()

    def crash(self, port: int) -> int:
        with self._lock:
            return self.running.pop(port).pid

    def foreign(self, port: int, *targets: str) -> FakeTgtd:
        with self._lock:
            tgtd = FakeTgtd(
                port, port, next(self._pids), "", "", targets=dict.fromkeys(targets, "")
            )
            self.running[port] = tgtd
            return tgtd

    def hang(self, port: int) -> None:
        with self._lock:
            self.hung.add(port)

    def unhang(self, port: int) -> None:
        with self._lock:
            self.hung.discard(port)

    def ops(self, port: int | None = None) -> list[str]:
        return [op for op, p in self.calls if port is None or p == port]

    # ---- the protocol --------------------------------------------------------------------

    def observe(
        self, detail: Collection[int] | None = None, pids: Collection[int] | None = None
    ) -> Observed:
        with self._lock:
            self.observe_calls.append(None if detail is None else tuple(detail))
            return Observed(
                {
                    port: tgtd.observed(detail is None or port in detail)
                    for port, tgtd in sorted(self.running.items())
                    if pids is None or tgtd.pid in pids
                }
            )

    def may_run(self, control_ports: Collection[int]) -> bool:
        with self._lock:
            return any(t.control_port in control_ports for t in self.running.values())

    def inspect(self, spec: InstanceSpec, pid: int | None = None) -> ObservedInstance | None:
        with self._lock:
            self.inspects.append(spec.port)
            tgtd = self.running.get(spec.port)
            if tgtd is not None and spec.port in self.hung:
                raise Unanswered(f"tgtd pid {tgtd.pid} on port {spec.port} does not answer")
            return tgtd.observed(True) if tgtd is not None else None

    def set_ready(self, spec: InstanceSpec) -> Outcome:
        scripted = self._enter("set_ready", spec.port)
        if scripted is not None:
            return scripted
        with self._lock:
            tgtd = self.running.get(spec.port)
            if tgtd is None:
                return Outcome(Result.FAILED, f"nothing runs on port {spec.port}")
            tgtd.system_state = "ready"
            return Outcome(Result.OK, "set ready", pid=tgtd.pid)

    def start(self, spec: InstanceSpec, cancel: threading.Event) -> Outcome:
        scripted = self._enter("start", spec.port)
        if scripted is not None:
            return scripted
        with self._lock:
            while self.units and not cancel.is_set() and self._runs_elsewhere(spec):
                self._lock.wait(0.01)
            if spec.port in self.running:
                return Outcome(Result.FAILED, f"port {spec.port} already in use")
            tgtd = FakeTgtd(
                spec.port,
                spec.control_port,
                next(self._pids),
                str(spec.config),
                spec.sha256,
                targets={t.name: t.digest for t in spec.targets},
                luns={t.name: self._luns(t) for t in spec.targets},
                instance=spec.name if self.units else None,
            )
            self.running[spec.port] = tgtd
            return Outcome(Result.OK, f"started pid {tgtd.pid}", pid=tgtd.pid)

    def reload(self, spec: InstanceSpec) -> Outcome:
        scripted = self._enter("reload", spec.port)
        if scripted is not None:
            return scripted
        with self._lock:
            tgtd = self.running.get(spec.port)
            if tgtd is None:
                return Outcome(Result.FAILED, f"nothing runs on port {spec.port}")
            # Like tgt-admin --update ALL: every target with a session is left as it is
            # (and reported in use, changed or not); idle ones are replaced or deleted.
            busy = tuple(sorted(n for n, count in tgtd.sessions.items() if count > 0))
            wanted = {t.name: t.digest for t in spec.targets}
            targets = {n: d for n, d in tgtd.targets.items() if n in busy}
            targets.update({n: d for n, d in wanted.items() if n not in busy})
            tgtd.targets = targets
            luns = {n: c for n, c in tgtd.luns.items() if n in busy}
            luns.update({t.name: self._luns(t) for t in spec.targets if t.name not in busy})
            tgtd.luns = luns
            tgtd.system_state = "ready"  # as DirectBackend.reload does
            tgtd.config, tgtd.sha256 = str(spec.config), spec.sha256
            return Outcome(Result.OK, "updated", pid=tgtd.pid, busy=busy)

    def drain_stop(
        self, action: DrainStop, timeout_s: float | None, force: bool, cancel: threading.Event
    ) -> Outcome:
        scripted = self._enter("drain_stop", action.port)
        if scripted is not None:
            return scripted
        with self._lock:
            tgtd = self.running.get(action.port)
            if tgtd is None:
                return Outcome(Result.OK, "not running")
            tgtd.system_state = "offline"
            if timeout_s is None:
                while self._has_sessions(tgtd) and not cancel.is_set():
                    self._lock.wait(0.01)
            elif self._has_sessions(tgtd) and not force and self.clock is not None:
                self.clock.advance(timeout_s)  # the whole timeout passes, nobody sleeps
            if self._has_sessions(tgtd) and not force:
                return Outcome(
                    Result.PARTIAL,
                    f"{sum(tgtd.sessions.values())} sessions remain; port stays offline",
                    pid=tgtd.pid,
                    draining=True,
                )
            del self.running[action.port]
            return Outcome(Result.OK, "stopped", pid=tgtd.pid)

    # ---- internals -----------------------------------------------------------------------

    def _runs_elsewhere(self, spec: InstanceSpec) -> bool:
        return any(t.instance == spec.name and p != spec.port for p, t in self.running.items())

    def _luns(self, target: TargetSpec) -> int:
        return sum(1 for store in target.stores if store not in self.missing_stores)

    @staticmethod
    def _has_sessions(tgtd: FakeTgtd) -> bool:
        return any(count > 0 for count in tgtd.sessions.values())

    def _enter(self, op: str, port: int) -> Outcome | None:
        with self._lock:
            self.calls.append((op, port))
            gates = self._gates.get((op, port))
            gate = gates.pop(0) if gates else None
            steps = self._script.get((op, port))
            step = steps.pop(0) if steps else None
        if gate is not None:
            gate.entered.set()
            if not gate.release.wait(THREAD_TIMEOUT_S):
                raise AssertionError(f"gate {op} {port} never opened")
        return step() if step is not None else None


# --- the waiter -----------------------------------------------------------------------------


@dataclass
class Scripted:
    """A wake that arrives `after` seconds into the wait that is under way when it is due.

    `action` runs when it arrives, before the waiter collects what is queued: the test's
    own code, run from inside the loop (push triggers, open a gate, assert on the past).
    """

    after: float
    wake: Wake = field(default_factory=Wake)
    action: Callable[[], object] | None = None


class IdleForever(AssertionError):
    """The loop waited without a timeout and nothing was scripted: it would hang."""


class FakeWaiter:
    """The Waiter protocol over a script of wakes and a FakeClock: time passes, nobody sleeps.

    ``wait(timeout)`` delivers what is queued now (triggers from the watcher, finished
    lanes); otherwise the next scripted wake if it is due within the timeout (advancing the
    clock to it); otherwise it advances the clock by the whole timeout and returns an
    empty Wake. Every timeout asked for is kept in ``timeouts``.
    """

    def __init__(
        self,
        clock: FakeClock,
        script: Iterable[Scripted | Wake] = (),
        *,
        stop_at: float | None = None,
        before_wait: Callable[[], object] | None = None,
    ) -> None:
        self.clock = clock
        self.script: list[Scripted] = [
            s if isinstance(s, Scripted) else Scripted(0.0, s) for s in script
        ]
        # Once the clock would pass stop_at, the next wake is a SIGTERM: run() returns.
        self.stop_at = stop_at
        # Called first in every wait: e.g. let the lanes end, so the loop sees them at once.
        self.before_wait = before_wait
        self.timeouts: list[float | None] = []
        self.watched: list[list[int]] = []
        self.closed = False
        self._queue: queue.Queue[Trigger] = queue.Queue()
        self._lanes: queue.SimpleQueue[int] = queue.SimpleQueue()

    # ---- scripting -----------------------------------------------------------------------

    def then(
        self,
        after: float = 0.0,
        action: Callable[[], object] | None = None,
        **wake: list[int] | list[Trigger],
    ) -> None:
        self.script.append(Scripted(after, Wake(**wake), action))  # type: ignore[arg-type]

    # ---- the protocol --------------------------------------------------------------------

    @property
    def triggers(self) -> queue.Queue[Trigger]:
        return self._queue

    def watch_pids(self, pids: Iterable[int]) -> None:
        self.watched.append(sorted(pids))

    def lane_done(self, port: int) -> None:
        self._lanes.put(port)

    def close(self) -> None:
        self.closed = True

    def wait(self, timeout: float | None) -> Wake:
        self.timeouts.append(timeout)
        if self.before_wait is not None:
            self.before_wait()
        if timeout is not None:
            timeout = max(0.0, timeout)
        wake = self._queued()
        if wake.triggers or wake.lanes_done:
            return wake
        if self.script and (timeout is None or self.script[0].after <= timeout):
            scripted = self.script[0]
            if not self._stop_before(scripted.after):
                self.script.pop(0)
                self.clock.advance(scripted.after)
                if scripted.action is not None:
                    scripted.action()
                return self._merge(scripted.wake, self._queued())
        if self.stop_at is not None and self._stop_before(timeout):
            self.clock.set(max(self.clock(), self.stop_at))
            return Wake(signals=[signal.SIGTERM])
        if timeout is None:
            raise IdleForever("wait(None) with nothing scripted")
        if self.script:
            self.script[0].after -= timeout
        self.clock.advance(timeout)
        return wake

    def _stop_before(self, after: float | None) -> bool:
        return self.stop_at is not None and (after is None or self.clock() + after > self.stop_at)

    def _queued(self) -> Wake:
        return Wake(triggers=drained(self._queue), lanes_done=drained(self._lanes))

    @staticmethod
    def _merge(first: Wake, second: Wake) -> Wake:
        return Wake(
            signals=first.signals + second.signals,
            triggers=first.triggers + second.triggers,
            lanes_done=first.lanes_done + second.lanes_done,
            exited=first.exited + second.exited,
        )


def sessions_of(observed: Observed) -> Mapping[int, int]:
    return {port: inst.sessions for port, inst in observed.instances.items()}


# --- a reconciler on a tmp_path tree ---------------------------------------------------------


def conf_text(port: int, targets: Mapping[str, str]) -> str:
    """An instance file: target name -> its backing store (change the store, change the digest)."""
    body = f'SOCKET_OPTS="{port}"\nPORTAL_OPTS="0.0.0.0:{port}"\n'
    for name, store in targets.items():
        body += f"<target {name}>\n    backing-store {store}\n</target>\n"
    return body


class Host:
    """A Reconciler with a FakeBackend, a RecordingAuditor and a StateFile under tmp_path.

    Instance files are real files in settings.instances_dir (inventory reads them); lanes
    run on the real Executor, and ``cycle()`` waits for them unless told not to.
    """

    def __init__(self, settings: Settings, *, keep_draining: bool = True, **changes: Any) -> None:
        self.settings = dataclasses.replace(settings, **changes)
        self.clock = FakeClock()
        self.wall = FakeClock(1_700_000_000.0)
        self.backend = FakeBackend(self.clock)
        self.audit = RecordingAuditor(clock=self.wall)
        self.state = StateFile(self.settings.state_dir)
        self.executor = Executor()
        self.done: list[int] = []
        self._done = threading.Condition()
        self.rec = Reconciler(
            self.settings,
            self.backend,
            self.state,
            self.audit,
            self.executor,
            wall_clock=self.wall,
            clock=self.clock,
            policy=TrustPolicy(owner_uid=os.getuid()),
            on_lane_done=self._lane_done,
            keep_draining=keep_draining,
        )
        self.last: CycleReport | None = None

    def _lane_done(self, port: int) -> None:
        with self._done:
            self.done.append(port)
            self._done.notify_all()

    def wait_lane(self, port: int) -> None:
        """Block (bounded) until a lane for `port` has ended."""
        with self._done:
            if not self._done.wait_for(lambda: port in self.done, THREAD_TIMEOUT_S):
                raise AssertionError(f"no lane ended for port {port}")

    def write(self, name: str, port: int, targets: Mapping[str, str] | None = None) -> Path:
        """NAME.conf; each instance's stores under a directory of its own (/srv/NAME/...):
        two instances may not export one path."""
        path = self.settings.instances_dir / f"{name}.conf"
        mine = {t: f"/srv/{name}/{s.removeprefix('/srv/')}" for t, s in (targets or {}).items()}
        path.write_text(conf_text(port, mine))
        os.chmod(path, 0o644)
        return path

    def remove(self, name: str) -> None:
        (self.settings.instances_dir / f"{name}.conf").unlink()

    def cycle(self, wait: bool = True) -> CycleReport:
        report = self.rec.cycle()
        if wait:
            assert self.executor.wait(THREAD_TIMEOUT_S), "lanes did not end"
            # As the daemon's loop does once the lanes it waited for have ended.
            self.rec.save_state()
        self.last = report
        return report

    def statuses(self) -> dict[int, InstanceStatus]:
        assert self.last is not None
        observed = self.backend.observe(None)
        rec = self.rec
        states = instance_states(
            self.last.desired, rec.applied, observed, rec.failures(), rec.checker.wrong()
        )
        return {s.port: s for s in states}

    def actions(self) -> list[tuple[str, str, str]]:
        """(action, instance, result) of every audit record so far."""
        return [(a.value, i, r.value) for a, i, r in self.audit.actions()]

    def records(self, action: AuditAction) -> list[Any]:
        return [r for r in self.audit.records if r.action is action]

    def close(self) -> None:
        self.rec.cancel.set()
        self.executor.shutdown(wait=True)


# --- the audit trail ---------------------------------------------------------------------


class ListSink:
    """Keeps records in memory: the fake other layers' tests assert on."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def write(self, record: AuditRecord) -> None:
        self.records.append(record.redacted())


class RecordingAuditor(Auditor):
    """An Auditor that only remembers: pass it wherever an Auditor is expected in tests."""

    def __init__(self, clock: Callable[[], float] = lambda: 0.0) -> None:
        self._list = ListSink()
        self.errors = io.StringIO()
        super().__init__([self._list], clock=clock, errors=self.errors)

    @property
    def records(self) -> list[AuditRecord]:
        return self._list.records

    def actions(self) -> list[tuple[AuditAction, str, AuditResult]]:
        """(action, instance, result) per record: the usual thing to assert."""
        return [(r.action, r.instance, r.result) for r in self.records]


# --- the watcher -------------------------------------------------------------------------


class FakeWatcher:
    """A Watcher for the loop's unit tests: replays scripted trigger batches on demand."""

    def __init__(self, triggers: TriggerQueue, script: Sequence[Sequence[Trigger]] = ()) -> None:
        self._triggers = triggers
        self._script = [tuple(batch) for batch in script]
        self.path_history: list[tuple[Path, ...]] = []
        self.started = False
        self.stopped = False

    def start(self, paths: Sequence[Path]) -> None:
        if self.started:
            raise RuntimeError("watcher already started")
        self.started = True
        self.path_history.append(tuple(paths))

    def set_paths(self, paths: Sequence[Path]) -> None:
        self.path_history.append(tuple(paths))

    def stop(self) -> None:
        self.stopped = True

    @property
    def paths(self) -> tuple[Path, ...]:
        """The directories last asked for."""
        return self.path_history[-1] if self.path_history else ()

    @property
    def remaining(self) -> int:
        return len(self._script)

    def push(self, *triggers: Trigger) -> None:
        """Deliver triggers now, as a backend thread would."""
        for trigger in triggers:
            self._triggers.put(trigger)

    def play_next(self) -> bool:
        """Deliver the next scripted batch; False when the script is exhausted."""
        if not self._script:
            return False
        self.push(*self._script.pop(0))
        return True


# --- sd_notify ---------------------------------------------------------------------------


class RecordingNotifier(MessageNotifier):
    """A fake at our own boundary: records the exact datagrams a SystemdNotifier would send.

    With ``fail`` set, every send raises it (wrapped in ``NotifyError``) after recording
    nothing, so callers' handling of a lost notification can be tested.
    """

    def __init__(self, fail: OSError | None = None) -> None:
        self.messages: list[str] = []
        self.fail = fail

    def send(self, message: str) -> None:
        if self.fail is not None:
            raise NotifyError("recording", message, self.fail)
        self.messages.append(message)

    def fields(self) -> list[dict[str, str]]:
        """Each message as its KEY=VALUE pairs."""
        return [dict(line.partition("=")[::2] for line in m.split("\n")) for m in self.messages]
