"""The daemon's loop on fakes: readiness, status, debounce, timers, signals, watchdog.

Time is a FakeClock that only the FakeWaiter moves (by the timeout the loop asked for);
lanes run on the real Executor against the FakeBackend, and by default every wait
first lets them end, so the loop sees each lane's end at once.
"""

from __future__ import annotations

import dataclasses
import io
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import THREAD_TIMEOUT_S, FakeWaiter, FakeWatcher, Host, RecordingNotifier, Scripted
from prometheus_client.parser import text_string_to_metric_families

from tgtwatch.config.settings import BackendKind, Settings, SettingsError, WatcherKind
from tgtwatch.daemon.debounce import Trigger, TriggerKind
from tgtwatch.daemon.gate import PUBLISH_DEFER_S
from tgtwatch.daemon.loop import EXTEND_BY_S, EXTEND_EVERY_S, Daemon
from tgtwatch.daemon.wakeup import Wake
from tgtwatch.model.structs import Observed

T1 = "iqn.2026-01.com.example:t1"
FILE = Trigger(TriggerKind.FILE)  # names no path: waits for the quiet, cycle reads everything


def saved(path: Path) -> Trigger:
    """A complete write of `path`, as the watcher reports it (leads when `path` is new)."""
    return Trigger(TriggerKind.FILE, path, "closed_write")


class Rig:
    """A Daemon wired to fakes, and what it did: notifications, cycles, log lines."""

    def __init__(
        self,
        settings: Settings,
        *,
        watchdog: float | None = None,
        sync_lanes: bool = True,
        stop_at: float | None = None,
        **changes: Any,
    ) -> None:
        self.host = Host(settings, **changes)
        self.clock = self.host.clock
        self.backend = self.host.backend
        self.rec = self.host.rec
        self.waiter = FakeWaiter(
            self.clock,
            stop_at=None if stop_at is None else self.clock() + stop_at,
            before_wait=self.settle if sync_lanes else None,
        )
        forward = self.rec.on_lane_done
        assert forward is not None

        def lane_done(port: int) -> None:
            self.waiter.lane_done(port)
            forward(port)

        self.rec.on_lane_done = lane_done
        self.watcher = FakeWatcher(self.waiter.triggers)
        self.notifier = RecordingNotifier()
        self.log = io.StringIO()
        self.next_settings: Settings | SettingsError = self.host.settings
        self.cycles: list[float] = []
        self.changed: list[frozenset[Path] | None] = []  # what each cycle was told changed
        real_cycle = self.rec.cycle

        def counted(changed: Any = None, watched: Any = None) -> Any:
            self.cycles.append(self.clock())
            self.changed.append(None if changed is None else frozenset(changed))
            return real_cycle(changed, watched)

        self.rec.cycle = counted  # type: ignore[method-assign]
        self.daemon = Daemon(
            self.host.settings,
            self.rec,
            self.watcher,
            self.waiter,
            self.notifier,
            reload_settings=self._reload,
            observe_light=lambda: self.backend.observe(()),
            watchdog_interval_s=watchdog,
            log=self.log,
            clock=self.clock,
            wall_clock=self.host.wall,
        )
        self.t0 = self.clock()

    def settle(self) -> None:
        assert self.host.executor.wait(THREAD_TIMEOUT_S), "a lane did not end"

    def _reload(self) -> Settings:
        if isinstance(self.next_settings, SettingsError):
            raise self.next_settings
        return self.next_settings

    def then(
        self, after: float = 0.0, action: Callable[[], object] | None = None, **wake: Any
    ) -> None:
        self.waiter.then(after, action, **wake)

    def stop(self, after: float = 0.0) -> None:
        self.then(after, signals=[signal.SIGTERM])

    def run(self) -> int:
        return self.daemon.run()

    def messages(self, prefix: str = "") -> list[str]:
        return [m for m in self.notifier.messages if m.startswith(prefix)]

    def index(self, message: str) -> int:
        return self.notifier.messages.index(message)

    def cycles_since_start(self) -> list[float]:
        return [round(t - self.t0, 6) for t in self.cycles]

    def close(self) -> None:
        self.host.close()


@pytest.fixture
def make(settings: Settings) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def build(**kw: Any) -> Rig:
        rig = Rig(settings, **kw)
        rigs.append(rig)
        return rig

    yield build
    for rig in rigs:
        rig.close()


# --- readiness ----------------------------------------------------------------------------


def test_ready_at_once_when_the_first_cycle_has_nothing_to_do(make: Callable[..., Rig]) -> None:
    rig = make()
    rig.stop()
    assert rig.run() == 0
    assert rig.notifier.messages == ["STATUS=no instances", "READY=1", "STOPPING=1"]
    assert rig.watcher.started and rig.watcher.stopped and rig.waiter.closed


def test_ready_only_after_the_first_cycles_starts_finished(make: Callable[..., Rig]) -> None:
    rig = make(sync_lanes=False)
    rig.host.write("alpha", 3261)
    gate = rig.backend.gate("start", 3261)

    def release() -> None:
        gate.wait_entered()
        assert "READY=1" not in rig.notifier.messages
        gate.open()
        rig.settle()

    rig.then(1.0, release)
    rig.stop()
    assert rig.run() == 0
    ready = rig.index("READY=1")
    assert rig.notifier.messages[ready - 1] == "STATUS=1 running"
    assert rig.messages("STATUS=")[0] == "STATUS=1 stopped"  # the first cycle's own
    assert 3261 in rig.backend.running


def test_extend_timeout_while_the_first_reconcile_is_slow(make: Callable[..., Rig]) -> None:
    rig = make(sync_lanes=False)
    rig.host.write("alpha", 3261)
    gate = rig.backend.gate("start", 3261)

    def release() -> None:
        gate.open()
        rig.settle()

    rig.then(25.0, release)
    rig.stop()
    rig.run()
    extends = rig.messages("EXTEND_TIMEOUT_USEC=")
    assert extends == [f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY_S * 1_000_000)}"] * 3  # 0, 10, 20 s
    # The first start runs on: its cycle's publication waits PUBLISH_DEFER_S (PublishGate).
    assert rig.waiter.timeouts[:3] == [
        PUBLISH_DEFER_S,
        EXTEND_EVERY_S - PUBLISH_DEFER_S,
        EXTEND_EVERY_S,
    ]
    assert rig.index("READY=1") > rig.notifier.messages.index(extends[-1])
    # Once ready, no more extensions.
    assert rig.notifier.messages[-1] == "STOPPING=1"


def test_ready_does_not_wait_for_a_start_held_back_by_its_backoff(
    make: Callable[..., Rig],
) -> None:
    rig = make()
    rig.host.write("alpha", 3261)
    rig.backend.fail("start", 3261, times=100)
    rig.stop(0.5)
    rig.run()
    assert "READY=1" in rig.notifier.messages
    assert rig.messages("STATUS=")[-1] == "STATUS=1 failed"


# --- status -------------------------------------------------------------------------------


def test_status_after_each_cycle_and_not_resent_when_unchanged(make: Callable[..., Rig]) -> None:
    rig = make(stop_at=1000.0, resync_interval_s=100.0)
    rig.host.write("alpha", 3261)

    def add_beta() -> None:
        rig.host.write("beta", 3262)
        rig.watcher.push(FILE)

    rig.then(450.0, add_beta)
    assert rig.run() == 0
    assert len(rig.cycles) > 10
    # Once each start ended; nothing while idle. The cycle's own line (its port stopped)
    # comes first only when its lane ended before it (PublishGate: held while it runs).
    lines = rig.messages("STATUS=")
    assert [line for line in lines if "stopped" not in line] == [
        "STATUS=1 running",
        "STATUS=2 running",
    ]
    assert len(lines) == len(set(lines))


def test_a_problem_shows_in_status(make: Callable[..., Rig]) -> None:
    rig = make()
    rig.host.write("alpha", 3261)
    rig.host.write("beta", 3261)
    rig.stop()
    rig.run()
    assert rig.messages("STATUS=")[-1].startswith("STATUS=1 running, 1 problem (beta.conf: port")


# --- triggers, debounce, timers -----------------------------------------------------------


def test_a_burst_is_one_cycle_at_once_and_one_after_the_quiet(make: Callable[..., Rig]) -> None:
    rig = make(debounce_ms=250)
    path = rig.host.settings.instances_dir / "a.conf"
    for _ in range(5):
        rig.then(0.1, lambda: rig.watcher.push(saved(path)))
    rig.stop(10.0)
    rig.run()
    # The first cycle at start; the file's first event (0.1 s) leads: a cycle at once; its
    # other four coalesce into one cycle 250 ms after the last (at 0.5 s).
    assert rig.cycles_since_start() == [0.0, 0.1, 0.75]
    assert rig.changed[1:] == [frozenset({path})] * 2


def test_new_files_each_lead_while_a_rewrite_waits_its_quiet(make: Callable[..., Rig]) -> None:
    """Many new files at once run as cycles back to back, none waiting for another
    file's quiet; a file written again within the window waits for its own."""
    rig = make(debounce_ms=250)
    conf = rig.host.settings.instances_dir
    a, b, c, d = (conf / f"{n}.conf" for n in "abcd")
    rig.then(1.0, lambda: rig.watcher.push(saved(a)))
    rig.then(0.1, lambda: (rig.watcher.push(saved(a)), rig.watcher.push(saved(b))))
    rig.then(0.1, lambda: (rig.watcher.push(saved(c)), rig.watcher.push(saved(d))))
    rig.stop(5.0)
    rig.run()
    assert rig.cycles_since_start() == pytest.approx([0.0, 1.0, 1.1, 1.2, 1.35])
    assert rig.changed[1:] == [{a}, {b}, {c, d}, {a}]


def test_a_lone_trigger_cycles_at_once(make: Callable[..., Rig]) -> None:
    rig = make(debounce_ms=250)
    rig.then(3.0, lambda: rig.watcher.push(saved(rig.host.settings.instances_dir / "a.conf")))
    rig.stop(1.0)
    rig.run()
    assert rig.cycles_since_start() == [0.0, 3.0]


def test_a_trigger_naming_no_path_waits_for_the_quiet(make: Callable[..., Rig]) -> None:
    rig = make(debounce_ms=250)
    rig.then(3.0, lambda: rig.watcher.push(FILE))
    rig.stop(1.0)
    rig.run()
    assert rig.cycles_since_start() == [0.0, 3.25]
    assert rig.changed == [None, None]  # nobody named what changed: everything is read


def test_a_never_quiet_stream_still_cycles_within_the_bound(make: Callable[..., Rig]) -> None:
    rig = make(debounce_ms=250)  # bound: max(10 x 0.25 s, 2 s) = 2.5 s
    path = rig.host.settings.instances_dir / "a.conf"
    for _ in range(60):  # a write every 0.1 s for 6 s
        rig.then(0.1, lambda: rig.watcher.push(saved(path)))
    rig.stop(10.0)
    rig.run()
    cycles = rig.cycles_since_start()
    # The first trigger (0.1 s) at once; the stream then coalesces, 2.5 s at most a batch.
    assert cycles[:4] == [0.0, 0.1, 2.7, 5.2]
    assert cycles[-1] == pytest.approx(6.25)  # the tail, after the quiet


@pytest.mark.parametrize("kind", [TriggerKind.OVERFLOW, TriggerKind.ERROR, TriggerKind.RESYNC])
def test_an_overflow_is_an_immediate_cycle(make: Callable[..., Rig], kind: TriggerKind) -> None:
    rig = make(debounce_ms=250)
    rig.then(3.0, lambda: rig.watcher.push(Trigger(kind, detail="lost events")))
    rig.stop(1.0)
    rig.run()
    assert rig.cycles_since_start() == [0.0, 3.0]


def test_an_idle_daemon_cycles_only_at_the_resync_interval(make: Callable[..., Rig]) -> None:
    rig = make(stop_at=3599.0, resync_interval_s=300.0)
    rig.host.write("alpha", 3261)
    assert rig.run() == 0
    assert rig.cycles_since_start() == [300.0 * i for i in range(12)]
    # No busy loop: per resync, one wait as long as the interval and one for its check lane.
    assert len(rig.waiter.timeouts) <= 2 * 12 + 2
    assert rig.backend.ops() == ["start"]
    # What runs is compared with what was applied after the start and at each resync.
    assert rig.backend.inspects == [3261] * 12


def test_an_idle_daemon_with_a_watchdog_pings_and_does_not_cycle_more(
    make: Callable[..., Rig],
) -> None:
    rig = make(stop_at=3599.0, resync_interval_s=300.0, watchdog=15.0)
    assert rig.run() == 0
    assert len(rig.cycles) == 12
    pings = rig.messages("WATCHDOG=1")
    assert 239 <= len(pings) <= 241  # every 15 s for an hour
    assert all(t is not None and t > 0 for t in rig.waiter.timeouts[1:])


def test_watchdog_pings_come_from_the_loop_itself(make: Callable[..., Rig]) -> None:
    rig = make(watchdog=10.0)
    rig.host.write("alpha", 3261)
    # A loop that never iterates (cycles alone, however many) sends no ping.
    for _ in range(5):
        rig.daemon.cycle()
        rig.clock.advance(30.0)
    assert rig.messages("WATCHDOG=1") == []


def test_watchdog_pings_at_the_interval(make: Callable[..., Rig]) -> None:
    rig = make(watchdog=10.0, stop_at=55.0)
    rig.run()
    assert len(rig.messages("WATCHDOG=1")) == 6  # 0, 10, 20, 30, 40, 50
    assert rig.waiter.timeouts[1:-1] == [10.0] * 5


# --- lanes and exits ----------------------------------------------------------------------


def test_a_tgtd_exit_is_an_immediate_cycle_that_restarts_it(make: Callable[..., Rig]) -> None:
    rig = make()
    rig.host.write("alpha", 3261)
    pids: list[int] = []

    def crash() -> None:
        # The tgtd dies; its pidfd wakes the loop.
        pids.append(rig.backend.crash(3261))
        rig.waiter.script.insert(0, Scripted(0.0, Wake(exited=[pids[0]])))

    rig.then(7.0, crash)
    rig.stop(1.0)
    rig.run()
    assert pids and any(pids[0] in watched for watched in rig.waiter.watched)
    assert rig.cycles_since_start() == [0.0, 7.0]
    assert rig.backend.ops() == ["start", "start"]
    assert 3261 in rig.backend.running
    assert "exited" in rig.log.getvalue()
    assert rig.backend.running[3261].pid in rig.waiter.watched[-1]


def test_an_exit_after_an_event_cycle_still_restarts_it(make: Callable[..., Rig]) -> None:
    """The event's cycle reused its look at /proc (the tgtd ran, watched); the exit that
    follows makes the next cycle look again, or the dead tgtd would pass for running."""
    rig = make()
    rig.host.write("alpha", 3261)
    pids: list[int] = []

    def crash() -> None:
        pids.append(rig.backend.crash(3261))
        rig.waiter.script.insert(0, Scripted(0.0, Wake(exited=[pids[0]])))

    rig.then(3.0, lambda: rig.watcher.push(FILE))
    rig.then(4.0, crash)
    rig.stop(1.0)
    rig.run()
    assert len(rig.cycles_since_start()) == 3
    assert rig.backend.ops() == ["start", "start"]
    assert 3261 in rig.backend.running and rig.backend.running[3261].pid != pids[0]


def test_a_lane_ending_for_a_deferred_port_is_a_cycle(make: Callable[..., Rig]) -> None:
    rig = make(sync_lanes=False, debounce_ms=100)
    rig.host.write("alpha", 3261)
    gate = rig.backend.gate("start", 3261)

    def edit() -> None:
        gate.wait_entered()
        rig.watcher.push(saved(rig.host.write("alpha", 3261, {T1: "/srv/t1.img"})))

    def release() -> None:
        gate.open()
        rig.settle()

    rig.then(1.0, edit)
    rig.then(5.0, release)
    rig.then(1.0, rig.settle)
    rig.stop(1.0)
    rig.run()
    # start (held), the edit's cycle defers the port, the lane's end runs the reload now.
    assert rig.cycles_since_start() == [0.0, 1.0, 6.0]  # the edit cycles at once (leading edge)
    assert rig.backend.ops() == ["start", "reload"]


def test_a_failed_start_is_retried_at_once_then_after_its_backoff(
    make: Callable[..., Rig],
) -> None:
    rig = make(stop_at=20.0)
    rig.host.write("alpha", 3261)
    rig.backend.fail("start", 3261, times=3)
    rig.run()
    assert rig.backend.ops() == ["start"] * 4
    # The first retry at once, then 1 s, then 2 s later.
    assert rig.cycles_since_start() == [0.0, 0.0, 1.0, 3.0]
    assert rig.messages("STATUS=")[-1] == "STATUS=1 running"


# --- signals ------------------------------------------------------------------------------


def test_sighup_reloads_settings_and_says_reloading_then_ready(make: Callable[..., Rig]) -> None:
    rig = make()
    rig.host.write("alpha", 3261)
    rig.next_settings = dataclasses.replace(rig.host.settings, resync_interval_s=50.0)
    rig.then(5.0, signals=[signal.SIGHUP])
    rig.stop(120.0)
    rig.run()
    fields = rig.notifier.fields()
    reloading = next(i for i, f in enumerate(fields) if f.get("RELOADING") == "1")
    assert int(fields[reloading]["MONOTONIC_USEC"]) > 0
    assert fields[reloading + 1 :].count({"READY": "1"}) == 1
    assert rig.daemon.settings.resync_interval_s == 50.0
    assert rig.rec.settings.resync_interval_s == 50.0
    assert rig.cycles_since_start() == [0.0, 5.0, 55.0, 105.0]


def test_sighup_ready_waits_for_the_reloads_it_started(make: Callable[..., Rig]) -> None:
    rig = make(sync_lanes=False)
    rig.host.write("alpha", 3261)
    rig.then(0.0, rig.settle)

    gate = rig.backend.gate("reload", 3261)

    def hup_edit() -> None:
        rig.host.write("alpha", 3261, {T1: "/srv/t1.img"})

    def release() -> None:
        assert rig.notifier.messages[-1].startswith("RELOADING=1")
        gate.open()
        rig.settle()

    rig.then(1.0, hup_edit, signals=[signal.SIGHUP])
    rig.then(2.0, release)
    rig.stop(1.0)
    rig.run()
    msgs = rig.notifier.messages
    reloading = next(i for i, m in enumerate(msgs) if m.startswith("RELOADING=1"))
    assert "READY=1" in msgs[reloading:]
    assert rig.backend.ops() == ["start", "reload"]


def test_bad_settings_on_sighup_keep_the_old_ones_and_log_one_line(
    make: Callable[..., Rig],
) -> None:
    rig = make()
    old = rig.daemon.settings
    rig.next_settings = SettingsError("/etc/tgtwatch/tgtwatch.yaml: debounce_ms: must be >= 0")
    rig.then(5.0, signals=[signal.SIGHUP])
    rig.stop()
    rig.run()
    assert rig.daemon.settings is old and rig.rec.settings is old
    lines = rig.log.getvalue().splitlines()
    assert lines == [
        "tgtwatch: settings not reloaded, keeping the old ones: "
        "/etc/tgtwatch/tgtwatch.yaml: debounce_ms: must be >= 0"
    ]
    msgs = rig.notifier.messages
    reloading = next(i for i, m in enumerate(msgs) if m.startswith("RELOADING=1"))
    assert msgs[reloading + 1 :] == ["READY=1", "STOPPING=1"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("backend", BackendKind.SYSTEMD),
        ("state_dir", Path("/elsewhere")),
        ("watcher", WatcherKind.PYINOTIFY),
        ("tool_timeout_s", 99.0),
    ],
)
def test_a_change_the_running_parts_hold_waits_for_a_restart(
    make: Callable[..., Rig], key: str, value: object
) -> None:
    """The backend, watcher, state file and lock were built from these: a SIGHUP keeps the
    old value (and says so in one line) but takes every other change."""
    rig = make()
    rig.next_settings = dataclasses.replace(rig.host.settings, debounce_ms=10, **{key: value})
    rig.then(1.0, signals=[signal.SIGHUP])
    rig.stop()
    rig.run()
    assert getattr(rig.daemon.settings, key) == getattr(rig.host.settings, key)
    assert getattr(rig.rec.settings, key) == getattr(rig.host.settings, key)
    assert rig.daemon.settings.debounce_ms == 10
    assert rig.log.getvalue().splitlines() == [
        f"tgtwatch: settings: a change of {key} takes effect when tgtwatch restarts"
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_says_stopping_and_run_returns_0_leaving_tgtds(
    make: Callable[..., Rig], signum: int
) -> None:
    rig = make()
    rig.host.write("alpha", 3261)
    rig.then(3.0, signals=[signum])
    assert rig.run() == 0
    assert rig.notifier.messages[-1] == "STOPPING=1"
    assert 3261 in rig.backend.running
    assert rig.rec.cancel.is_set()
    assert rig.waiter.closed and rig.watcher.stopped


def test_a_lost_notification_is_logged_not_fatal(make: Callable[..., Rig]) -> None:
    rig = make()
    rig.notifier.fail = OSError(111, "Connection refused")
    rig.stop()
    assert rig.run() == 0
    assert "Connection refused" in rig.log.getvalue()


# --- next_deadline ------------------------------------------------------------------------


def test_next_deadline_is_the_earliest_of_every_timer(make: Callable[..., Rig]) -> None:
    rig = make(watchdog=20.0, resync_interval_s=300.0, debounce_ms=250)
    d = rig.daemon
    now = rig.clock()
    d.state.ready = True
    d.deadlines.resync_at = now + 300.0
    d.deadlines.watchdog_at = now + 20.0
    assert d.next_deadline(now) == now + 20.0
    a = saved(rig.host.settings.instances_dir / "a.conf")
    d.debouncer.add(a, now)
    assert d.next_deadline(now) == now  # a new path leads: due at once
    d.debouncer.take_batch(now)
    d.debouncer.add(a, now)  # within the quiet period after its batch: coalesces
    assert d.next_deadline(now) == pytest.approx(now + 0.25)
    d.debouncer.take_batch(now + 1.0)
    assert d.next_deadline(now) == now + 20.0
    d.deadlines.watchdog_at = None
    assert d.next_deadline(now) == now + 300.0
    # A start that failed twice waits 1 s for its retry.
    rig.host.write("alpha", 3261)
    rig.backend.fail("start", 3261, times=2)
    rig.host.cycle()
    rig.host.cycle()
    assert d.next_deadline(now) == now + 1.0
    # Not ready: the EXTEND_TIMEOUT deadline counts too.
    d.state.ready = False
    d.deadlines.extend_at = now + 0.5
    assert d.next_deadline(now) == now + 0.5


def test_ready_does_not_wait_for_a_drain_that_waits_for_sessions(
    settings: Settings,
) -> None:
    # alpha ran on 3261 before tgtwatch restarted; meanwhile its file became beta's.
    seed = Host(settings)
    seed.write("alpha", 3261, {T1: "/srv/t1.img"})
    seed.cycle()
    seed.close()
    rig = Rig(settings, sync_lanes=False, drain_timeout_s=1.0)
    try:
        rig.backend.running = seed.backend.running
        rig.backend.connect(3261, T1)
        rig.host.remove("alpha")
        rig.host.write("beta", 3261)
        rig.stop(60.0)
        assert rig.run() == 0
        assert "READY=1" in rig.notifier.messages
        assert len(rig.messages("EXTEND_TIMEOUT_USEC=")) <= 1
        assert rig.backend.ops() == ["drain_stop", "drain_stop"]  # still draining at the end
    finally:
        rig.close()


def test_metrics_are_written_after_cycles_and_lanes(
    make: Callable[..., Rig], tmp_path: Path
) -> None:
    path = tmp_path / "tgtwatch.prom"
    rig = make(metrics_file=path)
    rig.host.write("alpha", 3261)
    rig.stop(1.0)
    rig.run()
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }
    assert got[("tgtwatch_instances", (("state", "running"),))] == 1
    assert got[("tgtwatch_actions", (("action", "start"), ("result", "ok")))] == 1


# --- pending targets and failing cycles --------------------------------------------------


def test_pending_targets_are_looked_at_until_their_sessions_end(make: Callable[..., Rig]) -> None:
    rig = make(resync_interval_s=300.0)
    rig.host.write("alpha", 3261, {T1: "/srv/a.img"})

    def edit_while_in_use() -> None:
        rig.backend.connect(3261, T1)
        rig.host.write("alpha", 3261, {T1: "/srv/b.img"})
        rig.waiter.triggers.put(FILE)

    rig.then(1.0, edit_while_in_use)
    rig.then(10.0, lambda: rig.backend.disconnect(3261))
    rig.stop(20.0)
    rig.run()
    # Polled every PENDING_POLL_S while the edit waits; once applied, back to idle.
    cycles = rig.cycles_since_start()
    assert len(cycles) >= 5, cycles
    assert all(c < 14.0 for c in cycles), cycles
    assert rig.rec.applied.entries[3261].pending == ()
    assert rig.backend.ops().count("reload") >= 2


def test_a_cycle_that_fails_is_logged_and_tried_again(make: Callable[..., Rig]) -> None:
    rig = make(resync_interval_s=300.0)
    failures = [RuntimeError("cannot read /proc")]
    real = rig.rec.backend.observe

    def flaky(detail: object = None) -> Observed:
        if failures:
            raise failures.pop()
        return real(detail)  # type: ignore[arg-type]

    rig.rec.backend.observe = flaky  # type: ignore[method-assign]
    rig.host.write("alpha", 3261)
    rig.stop(30.0)
    assert rig.run() == 0
    assert (
        "cycle failed, trying again in 5 s: RuntimeError: cannot read /proc" in rig.log.getvalue()
    )
    assert rig.cycles_since_start()[:2] == [0.0, 5.0]
    assert 3261 in rig.backend.running


# --- an exception in the loop -------------------------------------------------------------


def test_an_exception_in_the_loop_still_shuts_every_part_down(settings: Settings) -> None:
    """A bug that escapes the loop must not leave the watcher's and the lanes' threads
    running a process whose loop is dead (a drain waits for its sessions without limit)."""
    seed = Host(settings)
    seed.write("alpha", 3261, {T1: "/srv/t1.img"})
    seed.cycle()
    seed.close()
    rig = Rig(settings, sync_lanes=False)
    try:
        rig.backend.running = seed.backend.running
        rig.backend.connect(3261, T1)
        rig.host.remove("alpha")  # its drain waits for the session, without limit

        def bug() -> None:
            assert rig.host.executor.busy() == {3261}
            raise RuntimeError("a bug in the loop")

        rig.then(1.0, bug)
        with pytest.raises(RuntimeError, match="a bug in the loop"):
            rig.run()
        assert rig.watcher.stopped and rig.waiter.closed
        assert rig.rec.cancel.is_set()
        assert rig.host.executor.busy() == frozenset()  # the drain was abandoned, not left
        assert 3261 in rig.backend.running  # tgtds keep running
        assert "stopping after an internal error: RuntimeError: a bug in the loop" in (
            rig.log.getvalue()
        )
    finally:
        rig.close()


# --- the state file -----------------------------------------------------------------------


def test_a_failed_state_write_is_logged_in_status_and_metrics(
    make: Callable[..., Rig], tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the state directory should be")
    metrics_path = tmp_path / "tgtwatch.prom"
    rig = make(state_dir=blocker / "state", metrics_file=metrics_path)
    rig.host.write("alpha", 3261)

    def saving_failed() -> None:
        assert "state not saved (" in rig.messages("STATUS=")[-1]
        assert gauge() == 1
        blocker.unlink()
        rig.host.write("beta", 3262)
        rig.watcher.push(FILE)

    def gauge() -> float:
        text = metrics_path.read_text()
        return next(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "tgtwatch_state_save_failing"
        )

    rig.then(1.0, saving_failed)
    rig.stop(5.0)
    rig.run()
    lines = rig.log.getvalue().splitlines()
    failed = [line for line in lines if "cannot write the state" in line]
    assert len(failed) == 1, lines  # said once, not after every lane
    assert failed[0].endswith("what runs is unchanged, but a restart would not know it")
    assert lines[-1] == f"tgtwatch: state: {blocker / 'state' / 'applied.json'} written again"
    statuses = rig.messages("STATUS=")
    assert any("state not saved" in m and "cannot write the state" in m for m in statuses)
    assert statuses[-1] == "STATUS=2 running"
    assert gauge() == 0


# --- sd_notify when systemd does not read -------------------------------------------------


def test_a_deaf_notify_socket_never_stalls_the_loop_and_is_caught_up(
    make: Callable[..., Rig],
) -> None:
    """systemd's queue is full: every send fails with EAGAIN at once. The loop keeps its
    timers (cycles, watchdog), keeps the latest STATUS and the rest in order, retries with
    backoff (not a spin), and delivers everything once systemd reads again."""
    rig = make(watchdog=10.0, stop_at=200.0, resync_interval_s=60.0)
    rig.notifier.fail = OSError(11, "Resource temporarily unavailable")
    rig.host.write("alpha", 3261)

    def edit() -> None:
        rig.watcher.push(saved(rig.host.write("beta", 3262)))

    def hear() -> None:
        assert rig.notifier.messages == []
        kept = [m for m in rig.daemon.notifier.kept if not m.startswith("EXTEND_TIMEOUT_USEC=")]
        assert kept[0] == "READY=1"
        rig.notifier.fail = None

    rig.then(30.0, edit)
    rig.then(20.0, signals=[signal.SIGHUP])
    rig.then(50.0, hear)
    assert rig.run() == 0
    assert rig.cycles_since_start()[:4] == [0.0, 30.0, 50.0, 110.0]  # on time while deaf
    assert len(rig.waiter.timeouts) < 120  # retries back off to 1 s: no spin
    # (An EXTEND_TIMEOUT_USEC= may be kept too, when the first start outlived its cycle.)
    msgs = [m for m in rig.notifier.messages if not m.startswith("EXTEND_TIMEOUT_USEC=")]
    assert msgs[:2] == ["READY=1", "STATUS=2 running"]  # the latest STATUS only
    reloading = next(i for i, m in enumerate(msgs) if m.startswith("RELOADING=1"))
    assert msgs[reloading + 1] == "READY=1"
    assert msgs[-1] == "STOPPING=1"


def test_ready_after_a_restart_does_not_wait_for_port_moves_draining(settings: Settings) -> None:
    """One tgtd per name (systemd): files moved to new ports while tgtwatch was down. Their
    starts wait for the old ports' drains (sessions: without limit); READY=1 must not."""
    seed = Host(settings)
    seed.backend.units = True
    seed.write("alpha", 3261, {T1: "/srv/a.img"})
    seed.cycle()
    seed.close()
    rig = Rig(settings, sync_lanes=False, drain_timeout_s=1.0)
    try:
        rig.backend.units = True
        rig.backend.running = seed.backend.running
        rig.backend.connect(3261, T1)
        rig.host.write("alpha", 3271, {T1: "/srv/a.img"})
        rig.stop(60.0)
        assert rig.run() == 0
        assert "READY=1" in rig.notifier.messages
        assert len(rig.messages("EXTEND_TIMEOUT_USEC=")) <= 1
        assert "start" not in rig.backend.ops()
    finally:
        rig.close()


def test_a_file_batch_names_its_paths_and_lost_events_read_everything(
    make: Callable[..., Rig],
) -> None:
    rig = make(debounce_ms=250, resync_interval_s=300.0)
    path = rig.host.settings.instances_dir / "a.conf"
    rig.then(1.0, lambda: rig.watcher.push(Trigger(TriggerKind.FILE, path, "closed_write")))
    rig.then(1.0, lambda: rig.watcher.push(Trigger(TriggerKind.OVERFLOW, detail="lost")))
    rig.stop(1.0)
    rig.run()
    assert rig.cycles_since_start() == [0.0, 1.0, 2.0]
    # Start: everything; the close: that file only; an overflow: everything.
    assert rig.changed == [None, frozenset({path}), None]


def test_children_are_reaped_when_what_runs_changed_not_at_a_no_op_cycle(
    make: Callable[..., Rig],
) -> None:
    # waitid() walks every child of ours in the kernel (~0.1 ms at 500): a cycle that
    # changed nothing (a file rewritten with the same content) must not pay it.
    rig = make(debounce_ms=250)
    reaped: list[float] = []
    rig.daemon.reap = lambda: reaped.append(rig.clock())
    path = rig.host.write("alpha", 3261)
    rig.then(1.0, lambda: rig.watcher.push(saved(path)))  # a start: what runs changes
    rig.then(1.0, lambda: rig.watcher.push(saved(path)))  # the same content again
    rig.stop(1.0)
    rig.run()
    assert rig.cycles_since_start() == [0.0, 1.0, 2.0]
    assert 3261 in rig.backend.running
    assert reaped and all(t <= rig.t0 + 1.0 for t in reaped)  # none at 2.0, the no-op
