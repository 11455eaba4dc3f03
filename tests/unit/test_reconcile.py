"""The Reconciler against a FakeBackend: applied state, troubles, pending, audit, lanes."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import THREAD_TIMEOUT_S, Host

from tgtwatch.backends.base import Outcome, Result
from tgtwatch.config.settings import DrainTimeoutPolicy, Settings
from tgtwatch.daemon.backoff import CRASH_WINDOW_S, MAX_BACKOFF_S, backoff_s
from tgtwatch.daemon.state import StateFile
from tgtwatch.model.applied import pending_targets, running_targets
from tgtwatch.model.records import AuditAction
from tgtwatch.model.structs import (
    Applied,
    AppliedEntry,
    InstanceKind,
    InstanceSpec,
    InstanceState,
    Reload,
    TargetSpec,
)

T1, T2 = "iqn.2026-01.com.example:t1", "iqn.2026-01.com.example:t2"
STORES = {T1: "/srv/t1.img", T2: "/srv/t2.img"}


@pytest.fixture
def host(settings: Settings) -> Iterator[Host]:
    h = Host(settings)
    yield h
    h.close()


def make_host(settings: Settings, **changes: object) -> Host:
    return Host(settings, **changes)  # type: ignore[arg-type]


# --- actions land in the applied state --------------------------------------------------


def test_start_lands_in_the_applied_state_and_the_state_file(host: Host) -> None:
    path = host.write("alpha", 3261, STORES)
    report = host.cycle()
    spec = report.desired.instances[3261]
    assert host.backend.ops() == ["start"]
    assert 3261 in host.backend.running
    got = host.rec.applied.entries[3261]
    assert (got.name, got.config, got.sha256, got.pending) == ("alpha", path, spec.sha256, ())
    assert dict(got.targets) == {t.name: t.digest for t in spec.targets}
    assert got.applied_at == host.wall()
    assert StateFile(host.settings.state_dir).load() == (host.rec.applied, None)
    assert host.actions() == [("start", "alpha", "ok")]
    assert host.statuses()[3261].state is InstanceState.RUNNING


def test_an_unchanged_file_is_no_action(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    os.utime(host.settings.instances_dir / "alpha.conf")  # a touch
    report = host.cycle()
    assert report.plan.actions == ()
    assert host.backend.ops() == ["start"]
    assert len(host.audit.records) == 1


def test_an_edit_reloads_and_lands(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.write("alpha", 3261, {T1: "/srv/other.img"})
    report = host.cycle()
    assert host.backend.ops() == ["start", "reload"]
    assert host.rec.applied.entries[3261].sha256 == report.desired.instances[3261].sha256
    assert StateFile(host.settings.state_dir).load()[0] == host.rec.applied
    assert host.actions() == [("start", "alpha", "ok"), ("reload", "alpha", "ok")]
    assert host.backend.running[3261].targets == {
        T1: report.desired.instances[3261].targets[0].digest
    }


def test_a_deleted_file_drains_stops_and_is_forgotten(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    sha = host.rec.applied.entries[3261].sha256
    host.remove("alpha")
    host.cycle()
    assert host.backend.ops() == ["start", "drain_stop"]
    assert host.backend.running == {}
    assert host.rec.applied.entries == {}
    assert StateFile(host.settings.state_dir).load()[0] == Applied()
    assert host.actions() == [("start", "alpha", "ok"), ("stop", "alpha", "ok")]
    assert host.records(AuditAction.STOP)[0].sha256 == sha
    assert host.statuses() == {}


def test_exactly_one_record_per_action_with_its_fields(host: Host) -> None:
    path = host.write("alpha", 3261, STORES)
    host.clock.advance(0)
    report = host.cycle()
    (record,) = host.audit.records
    assert record.action is AuditAction.START
    assert (record.instance, record.port, record.config) == ("alpha", 3261, str(path))
    assert record.sha256 == report.desired.instances[3261].sha256
    assert record.ts == host.wall()
    assert record.duration_ms == 0  # the fake clock did not move


def test_adopt_a_running_tgtd_never_applied(host: Host) -> None:
    host.backend.foreign(3261, T1)
    host.write("alpha", 3261, STORES)
    report = host.cycle()
    assert report.plan.actions == (Reload(report.desired.instances[3261], adopt=True),)
    assert host.actions() == [("adopt", "alpha", "ok")]
    assert host.rec.applied.entries[3261].sha256 == report.desired.instances[3261].sha256
    host.cycle()
    assert len(host.audit.records) == 1


def test_a_foreign_tgtd_no_file_wants_is_left_alone_and_unmanaged(host: Host) -> None:
    host.backend.foreign(3299)
    report = host.cycle()
    assert report.plan.actions == ()
    assert [f.port for f in report.plan.foreign] == [3299]
    assert host.backend.ops() == []
    status = host.statuses()[3299]
    assert (status.managed, status.state) == (False, InstanceState.RUNNING)


def test_a_port_change_drains_the_old_port_and_starts_the_new(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.write("alpha", 3262, STORES)
    host.cycle()
    assert sorted(host.backend.running) == [3262]
    assert sorted(host.rec.applied.entries) == [3262]
    assert sorted(host.actions()) == [
        ("start", "alpha", "ok"),
        ("start", "alpha", "ok"),
        ("stop", "alpha", "ok"),
    ]


def test_a_rename_drains_then_starts_on_one_lane(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.remove("alpha")
    host.write("beta", 3261, STORES)
    host.cycle()
    assert host.backend.ops() == ["start", "drain_stop", "start"]
    assert host.rec.applied.entries[3261].name == "beta"
    assert host.actions()[1:] == [("stop", "alpha", "ok"), ("start", "beta", "ok")]
    # The old instance was stopped on purpose: no "had died" on the new start.
    assert "died" not in host.audit.records[-1].message


def test_a_partial_drain_ends_its_lane_before_the_start(settings: Settings) -> None:
    host = Host(settings, keep_draining=False, drain_timeout_s=5.0)
    try:
        host.write("alpha", 3261, STORES)
        host.cycle()
        host.backend.connect(3261, T1)
        host.remove("alpha")
        host.write("beta", 3261, STORES)
        host.cycle()
        # Still draining: the port is taken, a Start now could only fail (or worse).
        assert host.backend.ops() == ["start", "drain_stop"]
        assert host.actions()[-1] == ("drain", "alpha", "partial")
        assert host.rec.applied.entries[3261].name == "alpha"
    finally:
        host.close()


# --- failed starts: troubles and backoff -------------------------------------------------


def test_backoff_sequence() -> None:
    assert [backoff_s(n) for n in range(1, 6)] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert backoff_s(40) == MAX_BACKOFF_S


def test_a_failed_start_backs_off_immediate_then_1_2_4_capped(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.backend.fail("start", 3261, "cannot bind", times=100)
    delays = []
    for _ in range(14):
        before = len(host.backend.ops())
        report = host.cycle()
        assert len(host.backend.ops()) == before + 1, report.deferred
        assert 3261 not in host.rec.applied.entries
        retry = host.rec.next_retry()
        assert retry is not None
        delays.append(retry - host.clock())
        if retry > host.clock():
            # Not before its time: a cycle now defers the port and says why.
            report = host.cycle()
            assert report.deferred[3261].startswith("retrying in")
            assert "cannot bind" in report.deferred[3261]
            assert len(host.backend.ops()) == before + 1
            host.clock.set(retry)
    assert delays[:10] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
    assert delays[10:] == [MAX_BACKOFF_S] * 4
    assert host.rec.troubles[3261].failures == 14
    assert host.actions() == [("start", "alpha", "failed")] * 14
    assert host.audit.records[0].output == "start said cannot bind"
    assert host.statuses()[3261].state is InstanceState.FAILED
    assert "cannot bind" in host.statuses()[3261].message
    assert StateFile(host.settings.state_dir).load_failed() == {3261: "start failed: cannot bind"}


def test_a_start_that_finally_succeeds_clears_the_trouble(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.backend.fail("start", 3261, times=2)
    host.cycle()
    host.cycle()
    assert host.rec.failures() == {3261: "start failed: boom"}
    host.clock.advance(1.0)
    host.cycle()
    assert 3261 in host.rec.applied.entries
    assert host.rec.failures() == {}
    assert host.rec.next_retry() is None
    assert StateFile(host.settings.state_dir).load_failed() == {}
    assert host.statuses()[3261].state is InstanceState.RUNNING
    # Retrying a failed start is not a crash: nobody "died".
    assert not any("died" in r.message for r in host.audit.records)


def test_next_retry_is_none_without_troubles(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    assert host.rec.next_retry() is None


def test_the_trouble_of_a_file_that_went_away_is_forgotten(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.backend.fail("start", 3261, times=5)
    host.cycle()
    host.cycle()
    host.remove("alpha")
    host.cycle()
    assert host.rec.failures() == {}
    assert host.rec.next_retry() is None
    assert StateFile(host.settings.state_dir).load_failed() == {}


# --- crashes ------------------------------------------------------------------------------


def test_a_crash_restarts_and_the_audit_says_it_died(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.clock.advance(CRASH_WINDOW_S + 1)
    host.backend.crash(3261)
    host.cycle()
    assert host.backend.ops() == ["start", "start"]
    assert 3261 in host.backend.running
    record = host.audit.records[-1]
    assert (record.action, record.result) == (AuditAction.START, Result.OK)
    assert "had died" in record.message and "alpha" in record.message
    assert host.statuses()[3261].state is InstanceState.RUNNING


def test_quick_crashes_back_off_and_end_failed(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    waits = []
    for _ in range(5):
        host.backend.crash(3261)
        report = host.cycle()
        if 3261 in report.deferred:
            retry = host.rec.next_retry()
            assert retry is not None
            waits.append(retry - host.clock())
            host.clock.set(retry)
            host.cycle()
        else:
            waits.append(0.0)
        assert 3261 in host.backend.running
    assert waits == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert 3261 in host.rec.failures()
    host.backend.crash(3261)
    host.cycle()  # deferred: nothing runs now
    assert host.statuses()[3261].state is InstanceState.FAILED


def test_a_crash_after_a_long_run_restarts_at_once(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    for _ in range(3):
        host.backend.crash(3261)
        host.clock.advance(CRASH_WINDOW_S + 1)
        report = host.cycle()
        assert 3261 not in report.deferred
        assert 3261 in host.backend.running


def test_a_crash_trouble_clears_once_the_tgtd_stays_up(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    for _ in range(4):
        host.backend.crash(3261)
        host.cycle()
        retry = host.rec.next_retry()
        if retry is not None:
            host.clock.set(retry)
            host.cycle()
    assert 3261 in host.rec.failures()
    host.clock.advance(CRASH_WINDOW_S + 1)
    host.cycle()
    assert host.rec.failures() == {}
    assert StateFile(host.settings.state_dir).load_failed() == {}


def test_a_crash_backoff_does_not_hold_back_a_reload(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.backend.crash(3261)
    host.cycle()
    host.backend.crash(3261)
    host.cycle()
    host.clock.set(host.rec.next_retry() or 0)
    host.cycle()  # restarted; the next crash would wait 2 s
    host.write("alpha", 3261, {T1: "/srv/new.img"})
    report = host.cycle()
    assert report.deferred == {}
    assert host.backend.ops()[-1] == "reload"


def test_a_crash_then_a_failing_restart_counts_once_per_attempt(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.clock.advance(CRASH_WINDOW_S + 1)
    host.backend.crash(3261)
    host.backend.fail("start", 3261, times=3)
    delays = []
    for _ in range(3):
        host.cycle()
        retry = host.rec.next_retry()
        assert retry is not None
        delays.append(retry - host.clock())
        host.clock.set(retry)
    assert delays == [1.0, 2.0, 4.0]
    died = [r for r in host.audit.records if "died" in r.message]
    assert len(died) == 1


# --- pending targets ----------------------------------------------------------------------


def _spec(targets: dict[str, str]) -> InstanceSpec:
    return InstanceSpec(
        "alpha",
        InstanceKind.DROPIN,
        3261,
        "0.0.0.0:3261",
        3261,
        Path("/x/alpha.conf"),
        "s",
        tuple(TargetSpec(n, 1, d) for n, d in targets.items()),
    )


def _entry(targets: dict[str, str]) -> AppliedEntry:
    return AppliedEntry(
        "alpha",
        3261,
        Path("/x/alpha.conf"),
        "old",
        1.0,
        (),
        InstanceKind.DROPIN,
        tuple(sorted(targets.items())),
    )


@pytest.mark.parametrize(
    ("running", "wanted", "busy", "pending"),
    [
        ({"a": "1"}, {"a": "1"}, ("a",), ()),  # busy, unchanged: not pending
        ({"a": "1"}, {"a": "2"}, ("a",), ("a",)),  # busy, changed
        ({"a": "1"}, {}, ("a",), ("a",)),  # busy, removed from the file
        ({}, {"a": "1"}, ("a",), ("a",)),  # unknown (adopted): counts as changed
        ({"a": "1", "b": "1"}, {"a": "2", "b": "2"}, ("b",), ("b",)),  # idle a applied
        ({"a": "1"}, {"a": "2"}, (), ()),
    ],
)
def test_pending_targets(
    running: dict[str, str], wanted: dict[str, str], busy: tuple[str, ...], pending: tuple[str, ...]
) -> None:
    assert pending_targets(_spec(wanted), _entry(running), busy) == pending


def test_pending_targets_without_an_entry_are_every_busy_one() -> None:
    assert pending_targets(_spec({"a": "1"}), None, ("a", "b")) == ("a", "b")


def test_running_targets_keep_the_old_digest_of_a_pending_target() -> None:
    spec, entry = _spec({"a": "2", "b": "2"}), _entry({"a": "1", "b": "1", "c": "1"})
    assert running_targets(spec, entry, ("a", "c")) == (("a", "1"), ("b", "2"), ("c", "1"))
    assert running_targets(spec, None, ("a",)) == (("a", ""), ("b", "2"))


def test_a_busy_changed_target_is_pending_then_reloaded_once_its_sessions_end(
    host: Host,
) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.backend.connect(3261, T1)
    host.write("alpha", 3261, {T1: "/srv/t1-new.img", T2: "/srv/t2-new.img"})
    host.cycle()
    entry = host.rec.applied.entries[3261]
    assert entry.pending == (T1,)
    assert host.actions()[1:] == [("reload", "alpha", "partial"), ("pending", "alpha", "partial")]
    assert T1 in host.records(AuditAction.PENDING)[0].message
    assert StateFile(host.settings.state_dir).load()[0].entries[3261].pending == (T1,)
    status = host.statuses()[3261]
    assert (status.state, status.pending) == (InstanceState.PENDING, (T1,))
    # Still in use: nothing to do, no new records.
    report = host.cycle()
    assert report.plan.actions == ()
    assert len(host.audit.records) == 3
    host.backend.disconnect(3261)
    host.rec.recheck((3261,))  # the daemon's pending poll: its check lands the reload
    report = host.cycle()
    assert [a.kind.value for a in report.plan.actions] == ["check"]
    assert host.rec.applied.entries[3261].pending == ()
    assert host.actions()[-1] == ("reload", "alpha", "ok")
    assert host.statuses()[3261].state is InstanceState.RUNNING
    assert host.cycle().plan.actions == ()


def test_a_busy_unchanged_target_is_not_pending(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.backend.connect(3261, T1)
    host.write("alpha", 3261, {T1: STORES[T1], T2: "/srv/t2-new.img"})
    host.cycle()
    assert host.rec.applied.entries[3261].pending == ()
    assert host.actions()[1:] == [("reload", "alpha", "ok")]
    assert host.statuses()[3261].state is InstanceState.RUNNING


# --- rejects ------------------------------------------------------------------------------


def test_a_reject_is_audited_once_per_problem_and_again_when_it_returns(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.write("beta", 3261, STORES)  # conflict: alpha owns 3261
    host.cycle()
    host.cycle()
    rejects = host.records(AuditAction.REJECT)
    assert [(r.instance, r.result) for r in rejects] == [("beta", Result.SKIPPED)]
    assert "3261" in rejects[0].message and "[rule: conflict]" in rejects[0].message
    host.write("beta", 3262, STORES)
    host.cycle()
    host.cycle()
    assert len(host.records(AuditAction.REJECT)) == 1
    host.write("beta", 3261, STORES)
    host.cycle()
    assert len(host.records(AuditAction.REJECT)) == 2


# --- the applied state's bookkeeping ------------------------------------------------------


def _seed(settings: Settings, *entries: AppliedEntry) -> None:
    StateFile(settings.state_dir).save(Applied({e.port: e for e in entries}))


def test_an_applied_entry_nothing_wants_and_nothing_runs_is_forgotten(settings: Settings) -> None:
    gone = AppliedEntry("old", 3270, settings.instances_dir / "old.conf", "x" * 64, 1.0)
    _seed(settings, gone)
    host = Host(settings)
    try:
        assert 3270 in host.rec.applied.entries
        report = host.cycle()
        assert report.plan.actions == ()
        assert host.rec.applied.entries == {}
        assert StateFile(settings.state_dir).load()[0] == Applied()
        assert host.audit.records == []
    finally:
        host.close()


def test_a_refused_files_port_is_held_on_its_last_good_config(host: Host) -> None:
    path = host.write("alpha", 3261, STORES)
    host.cycle()
    os.chmod(path, 0o666)  # world writable: refused
    report = host.cycle()
    assert report.plan.actions == ()
    assert [e.port for e in report.plan.held] == [3261]
    assert 3261 in host.backend.running
    assert host.statuses()[3261].state is InstanceState.RUNNING
    # Even when its tgtd dies, the entry is kept and nothing is started from a refused file.
    host.backend.crash(3261)
    report = host.cycle()
    assert report.plan.actions == ()
    assert 3261 in host.rec.applied.entries
    assert host.statuses()[3261].state is InstanceState.STOPPED
    os.chmod(path, 0o644)
    host.cycle()
    assert 3261 in host.backend.running


def blocked_state_host(settings: Settings, tmp_path: Path) -> tuple[Host, Path]:
    """A Host whose state_dir cannot be made: a file stands where its parent should be."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    return Host(settings, state_dir=blocker / "state"), blocker


def test_an_unwritable_state_file_is_a_warning_not_a_crash(
    settings: Settings, tmp_path: Path
) -> None:
    host, blocker = blocked_state_host(settings, tmp_path)
    try:
        host.write("alpha", 3261, STORES)
        host.cycle()
        assert 3261 in host.backend.running
        assert 3261 in host.rec.applied.entries
        assert host.rec.state_warning is not None
        assert "cannot write the state" in host.rec.state_warning
        assert host.cycle().state_warning == host.rec.state_warning
        blocker.unlink()
        host.write("alpha", 3261, {T1: "/srv/x.img"})
        assert host.cycle().state_warning is not None  # said before the reload saved
        assert host.rec.state_warning is None
    finally:
        host.close()


# --- lanes --------------------------------------------------------------------------------


def test_a_port_with_a_lane_under_way_is_deferred_not_submitted_twice(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    gate = host.backend.gate("start", 3261)
    host.cycle(wait=False)
    gate.wait_entered()
    for _ in range(3):
        report = host.cycle(wait=False)
        assert report.deferred == {3261: "an action is under way on this port"}
    gate.open()
    assert host.executor.wait(THREAD_TIMEOUT_S)
    assert host.backend.ops() == ["start"]
    assert host.cycle().plan.actions == ()


def test_a_lane_running_what_is_planned_again_does_not_bring_a_cycle_at_its_end(
    host: Host,
) -> None:
    # 200 files at once: each start's end had run a whole cycle over the growing set. A
    # lane that runs the very actions planned needs none (a failure sets its own retry);
    # a lane whose port now wants something else does.
    host.write("alpha", 3261, STORES)
    gate = host.backend.gate("start", 3261)
    host.cycle(wait=False)
    gate.wait_entered()
    report = host.cycle(wait=False)
    assert report.deferred == {3261: "an action is under way on this port"}
    assert 3261 not in report.wake_on
    host.write("alpha", 3261, {T1: "/srv/other.img"})  # the file changed under the start
    assert 3261 in host.cycle(wait=False).wake_on
    gate.open()
    assert host.executor.wait(THREAD_TIMEOUT_S)
    assert [a.kind.value for a in host.cycle().plan.actions] == ["reload"]


def test_a_long_lane_on_one_port_does_not_delay_another(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.write("beta", 3262, STORES)
    gate = host.backend.gate("start", 3261)
    host.cycle(wait=False)
    gate.wait_entered()
    host.wait_lane(3262)
    assert 3262 in host.backend.running and 3261 not in host.backend.running
    gate.open()
    assert host.executor.wait(THREAD_TIMEOUT_S)


def test_one_ports_failure_never_stops_another(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.write("beta", 3262, STORES)
    host.backend.fail("start", 3261)
    host.cycle()
    assert sorted(host.backend.running) == [3262]
    assert sorted(host.actions()) == [("start", "alpha", "failed"), ("start", "beta", "ok")]


@pytest.mark.parametrize("op", ["start", "reload", "drain_stop"])
def test_a_bug_in_a_backend_call_fails_that_port_only_and_is_audited(host: Host, op: str) -> None:
    host.write("alpha", 3261, STORES)
    host.write("beta", 3262, STORES)
    if op != "start":
        host.cycle()
        if op == "reload":
            host.write("alpha", 3261, {T1: "/srv/new.img"})
            host.write("beta", 3262, {T1: "/srv/new.img"})
        else:
            host.remove("alpha")
            host.remove("beta")
    before = len(host.audit.records)
    host.backend.explode(op, 3261, RuntimeError("a bug"))
    host.cycle()
    new = host.audit.records[before:]
    assert sorted((r.port, r.result) for r in new) == [(3261, Result.FAILED), (3262, Result.OK)]
    failed = next(r for r in new if r.port == 3261)
    assert "RuntimeError: a bug" in failed.message
    results = {r.action.port: r.outcome.result for r in host.rec.take_reports()}
    assert results[3261] is Result.FAILED


def test_take_reports_hands_each_report_once(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    (report,) = host.rec.take_reports()
    assert (report.action.kind.value, report.outcome.result) == ("start", Result.OK)
    assert host.rec.take_reports() == []


# --- drains -------------------------------------------------------------------------------


def test_without_keep_draining_a_drain_returns_after_its_timeout(settings: Settings) -> None:
    host = Host(settings, keep_draining=False, drain_timeout_s=7.0)
    try:
        host.write("alpha", 3261, STORES)
        host.cycle()
        host.backend.connect(3261, T1, 2)
        host.remove("alpha")
        started = host.clock()
        host.cycle()
        assert host.clock() - started == 7.0
        assert host.backend.running[3261].system_state == "offline"
        (drain,) = host.records(AuditAction.DRAIN)
        assert (drain.result, drain.duration_ms) == (Result.PARTIAL, 7000)
        assert host.records(AuditAction.STOP) == []
        assert 3261 in host.rec.applied.entries  # still ours: the next cycle drains on
        assert host.statuses()[3261].state is InstanceState.DRAINING
    finally:
        host.close()


def test_force_stops_despite_sessions(settings: Settings) -> None:
    host = Host(
        settings,
        keep_draining=False,
        drain_timeout_s=1.0,
        on_drain_timeout=DrainTimeoutPolicy.FORCE,
    )
    try:
        host.write("alpha", 3261, STORES)
        host.cycle()
        host.backend.connect(3261, T1)
        host.remove("alpha")
        host.cycle()
        assert host.backend.running == {}
        assert host.actions()[-1] == ("stop", "alpha", "ok")
    finally:
        host.close()


def test_keep_draining_waits_for_the_last_session_and_ends_with_stop(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.backend.connect(3261, T1)
    host.remove("alpha")
    waiting = threading.Event()

    def second_call() -> Outcome | None:
        waiting.set()
        return None  # then the fake's own drain: wait for the sessions

    host.backend.script("drain_stop", 3261, lambda: None, second_call)
    report = host.cycle(wait=False)
    assert [a.kind.value for a in report.plan.actions] == ["drain_stop"]
    assert waiting.wait(THREAD_TIMEOUT_S)
    assert host.actions()[-1] == ("drain", "alpha", "partial")
    assert host.cycle(wait=False).deferred == {3261: "an action is under way on this port"}
    assert host.statuses()[3261].state is InstanceState.DRAINING
    host.backend.disconnect(3261)
    assert host.executor.wait(THREAD_TIMEOUT_S)
    assert host.actions()[1:] == [("drain", "alpha", "partial"), ("stop", "alpha", "ok")]
    assert host.backend.running == {}
    assert host.rec.applied.entries == {}


def test_cancel_abandons_a_drain_and_keeps_the_port(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.backend.connect(3261, T1)
    host.remove("alpha")
    host.cycle(wait=False)
    host.rec.cancel.set()
    assert host.executor.wait(THREAD_TIMEOUT_S)
    assert host.actions()[-1] == ("drain", "alpha", "partial")
    assert 3261 in host.rec.applied.entries
    assert host.backend.running[3261].system_state == "offline"


def test_a_failed_reload_keeps_the_old_digest_and_is_retried_with_backoff(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    old = host.rec.applied.entries[3261].sha256
    host.write("alpha", 3261, {T1: "/srv/changed.img"})
    host.backend.fail("reload", 3261, "this target is still active", times=2)
    host.cycle()
    assert host.rec.applied.entries[3261].sha256 == old  # tgtd still runs the old config
    assert "reload failed" in host.statuses()[3261].message
    assert host.rec.next_retry() == host.clock()  # the first retry is immediate
    host.cycle()  # fails again: now 1 s
    retry = host.rec.next_retry()
    assert retry == host.clock() + 1.0
    assert host.cycle().deferred[3261].startswith("retrying in")
    host.clock.set(retry)
    host.cycle()
    assert host.rec.applied.entries[3261].sha256 != old
    assert host.statuses()[3261].message == ""
    assert host.actions()[-3:] == [
        ("reload", "alpha", "failed"),
        ("reload", "alpha", "failed"),
        ("reload", "alpha", "ok"),
    ]


def test_a_store_shared_on_purpose_is_said_in_the_start_record(host: Host) -> None:
    d = host.settings.instances_dir
    for name, port, extra in (("alpha", 3261, ""), ("beta", 3262, "    allow-in-use yes\n")):
        path = d / f"{name}.conf"
        path.write_text(
            f'SOCKET_OPTS="{port}"\n<target iqn.2026-01.com.example:{name}>\n'
            f"    backing-store /srv/shared.img\n{extra}</target>\n"
        )
        os.chmod(path, 0o644)
    host.cycle()
    starts = {r.instance: r.message for r in host.records(AuditAction.START)}
    assert "shared" not in starts["alpha"]
    assert (
        "/srv/shared.img shared with alpha target iqn.2026-01.com.example:alpha LUN 1"
        in (starts["beta"])
    )


# --- a lane that ends while the cycle looks -------------------------------------------------


def test_a_start_ending_during_the_scan_is_not_planned_again(host: Host) -> None:
    """The cycle reads which lanes are busy before it scans /proc: a start that ends between
    the two is deferred, not planned again from a scan that never saw its tgtd."""
    host.write("alpha", 3261, STORES)
    gate = host.backend.gate("start", 3261)
    host.cycle(wait=False)
    gate.wait_entered()
    real = host.backend.observe

    def scan_then_the_start_ends(detail: object = None) -> object:
        seen = real(detail)  # type: ignore[arg-type]
        gate.open()  # the start lane ends right after the scan
        assert host.executor.wait(THREAD_TIMEOUT_S)
        return seen

    host.backend.observe = scan_then_the_start_ends  # type: ignore[method-assign]
    report = host.cycle()
    assert host.backend.ops() == ["start"]
    assert 3261 in report.deferred
    assert host.actions() == [("start", "alpha", "ok")]


# --- saving the state ---------------------------------------------------------------------


class CountingStateFile(StateFile):
    """A StateFile that counts its writes."""

    writes = 0

    def save_bytes(self, body: bytes) -> None:
        type(self).writes += 1
        super().save_bytes(body)


def test_the_state_is_written_once_for_every_action_ended_since_the_last_write(
    host: Host,
) -> None:
    counting = CountingStateFile(host.settings.state_dir)
    CountingStateFile.writes = 0
    host.rec.writer.file = counting
    ports = range(3261, 3266)
    for port in ports:
        host.write(f"i{port}", port, {T1: f"/srv/{port}.img"})
    host.cycle(wait=False)
    assert host.executor.wait(THREAD_TIMEOUT_S)
    assert CountingStateFile.writes == 0  # the lanes only marked it
    host.rec.save_state()
    assert CountingStateFile.writes == 1
    assert set(counting.load()[0].entries) == set(ports)
    host.rec.save_state()
    assert CountingStateFile.writes == 1  # nothing changed since: nothing written


def test_a_failed_write_of_the_state_is_tried_again_without_a_new_action(
    settings: Settings, tmp_path: Path
) -> None:
    host, blocker = blocked_state_host(settings, tmp_path)
    try:
        host.write("alpha", 3261, STORES)
        host.cycle()
        assert host.rec.save_error is not None
        blocker.unlink()
        host.rec.save_state()
        assert host.rec.save_error is None
        assert 3261 in StateFile(blocker / "state").load()[0].entries
    finally:
        host.close()
