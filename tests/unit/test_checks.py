"""What runs, checked against what was applied: drift repaired and audited, hung tgtds
reported without holding anything, incomplete starts recorded honestly (FakeBackend)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import Host

from tgtwatch.config.settings import Settings
from tgtwatch.model.records import AuditAction
from tgtwatch.model.structs import InstanceState

T1, T2 = "iqn.2026-01.com.example:t1", "iqn.2026-01.com.example:t2"
STORES = {T1: "/srv/t1.img", T2: "/srv/t2.img"}


@pytest.fixture
def host(settings: Settings) -> Iterator[Host]:
    h = Host(settings)
    yield h
    h.close()


def repairs(host: Host) -> list[tuple[str, str]]:
    return [(r.result.value, r.message) for r in host.records(AuditAction.REPAIR)]


def test_a_new_reconciler_checks_every_tgtd_it_adopts(host: Host, settings: Settings) -> None:
    """A daemon that starts (or `apply`) inspects what runs once: a tgtd left offline (a
    drain interrupted by a restart, then its file restored) is set ready, and audited."""
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.close()
    host.backend.running[3261].system_state = "offline"
    again = Host(settings)
    try:
        again.backend.running = host.backend.running
        report = again.cycle()
        assert [a.kind.value for a in report.plan.actions] == ["check"]
        assert again.backend.ops() == ["set_ready"]
        assert again.backend.running[3261].system_state == "ready"
        [(result, message)] = repairs(again)
        assert result == "ok"
        assert message == (
            "drifted from what was applied: system state offline (new logins refused): set ready"
        )
        assert again.cycle().plan.actions == ()  # checked once, not every cycle
    finally:
        again.close()


def test_status_says_failed_while_a_tgtd_runs_not_as_applied(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.backend.running[3261].system_state = "offline"
    status = host.statuses()[3261]  # the command's view: every tgtd inspected
    assert status.state is InstanceState.FAILED
    assert "drifted from what was applied: system state offline" in status.message


def test_a_recheck_finds_a_target_deleted_by_hand_and_reloads_it(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    del host.backend.running[3261].targets[T2]
    assert host.cycle().plan.actions == ()  # nothing looks until a recheck (resync)
    host.rec.recheck()
    host.cycle()
    assert host.backend.ops() == ["start", "reload"]
    assert T2 in host.backend.running[3261].targets
    [(result, message)] = repairs(host)
    assert result == "ok" and f"target {T2} missing" in message


def test_a_tgtd_that_does_not_answer_is_reported_once_and_retried_with_backoff(
    host: Host,
) -> None:
    """A hung (SIGSTOPped) tgtd: its check fails on its own lane, status says so, one
    record; later checks wait 1 s, 2 s ... and once it answers, it is fine again."""
    host.write("alpha", 3261, STORES)
    host.write("beta", 3262, STORES)
    host.cycle()
    host.backend.hang(3261)
    host.rec.recheck()
    host.cycle()
    assert repairs(host) == [
        ("failed", "tgtd pid 4000 on port 3261 does not answer; left as it is")
    ]
    assert host.statuses()[3261].state is InstanceState.FAILED
    assert host.statuses()[3262].state is InstanceState.RUNNING
    retry = host.rec.next_retry()
    assert retry is not None and retry >= host.clock() + 1.0
    host.cycle()
    assert host.backend.inspects.count(3261) == 2  # not before its retry: 1 + after start
    host.clock.set(retry)
    host.cycle()
    assert host.backend.inspects.count(3261) == 3
    assert len(repairs(host)) == 1  # the same failure is not audited again
    host.backend.unhang(3261)
    host.clock.advance(300.0)
    host.cycle()
    assert host.statuses()[3261].state is InstanceState.RUNNING
    assert host.rec.next_retry() is None


def test_an_incomplete_start_records_the_target_as_not_applied_so_it_goes_pending(
    host: Host,
) -> None:
    """A backing store missing at start: the target is made without that LUN. When the
    store appears and an initiator is logged in, the target is pending (not "converged")
    and lands once its sessions end."""
    two = {T1: "/srv/t1.img", T2: "/srv/t2.img"}
    path = host.write("alpha", 3261, two)
    path.write_text(
        path.read_text().replace(
            "/srv/alpha/t1.img\n", "/srv/alpha/t1.img\n    backing-store /srv/alpha/t1b.img\n"
        )
    )
    host.backend.missing_stores.add("/srv/alpha/t1b.img")
    host.cycle()
    [start] = host.records(AuditAction.START)
    assert start.result.value == "partial", start.message
    assert f"{T1} has 1 of 2 LUNs" in start.message
    entry = host.rec.applied.entries[3261]
    assert dict(entry.targets)[T1] == "" and entry.sha256 == ""
    host.backend.connect(3261, T1)  # an initiator logs in to the short target
    host.backend.missing_stores.clear()  # the store appears
    host.cycle()  # the incomplete start is applied again
    entry = host.rec.applied.entries[3261]
    assert entry.pending == (T1,)
    assert host.statuses()[3261].state is InstanceState.PENDING
    assert host.backend.running[3261].luns[T1] == 1
    host.backend.disconnect(3261)
    host.rec.recheck((3261,))  # the daemon's pending poll
    host.cycle()
    assert host.backend.running[3261].luns[T1] == 2
    assert host.rec.applied.entries[3261].pending == ()
    assert host.statuses()[3261].state is InstanceState.RUNNING


def test_a_drain_stops_when_its_file_comes_back_and_the_port_is_set_ready(
    host: Host,
) -> None:
    """Only deleting a file stops its instance: restored while its drain waits for a
    session, the drain ends, nothing is stopped, and the check sets the port ready."""
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.backend.connect(3261, T1)
    host.remove("alpha")
    host.cycle(wait=False)  # the drain waits for the session (`wait`, no limit)
    host.write("alpha", 3261, STORES)
    host.cycle()  # sees the file back: the drain stops
    assert host.executor.wait(5.0)
    drains = host.records(AuditAction.DRAIN)
    assert drains[-1].message.startswith(f"{host.settings.instances_dir / 'alpha.conf'} is back")
    assert host.records(AuditAction.STOP) == []
    assert host.backend.running[3261].system_state == "offline"
    host.cycle()  # the check after the drain
    assert host.backend.running[3261].system_state == "ready"
    assert [r.result.value for r in host.records(AuditAction.REPAIR)] == ["ok"]
    assert host.backend.running[3261].sessions == {T1: 1}


def test_a_cycle_asks_no_tgtd_anything(host: Host) -> None:
    """The cycle runs on the daemon's loop: it scans /proc only. Details of pending,
    draining or default ports used to be asked there (tgtadm, up to tool_timeout_s each)."""
    host.write("alpha", 3261, STORES)
    host.write("beta", 3262, STORES)
    host.cycle()
    host.backend.connect(3261, T1)
    host.write("alpha", 3261, {T1: "/srv/t1-new.img", T2: "/srv/t2.img"})  # T1 pending
    host.backend.connect(3262, T1)
    host.remove("beta")  # draining (its session stays)
    host.backend.observe_calls.clear()
    host.cycle(wait=False)
    host.rec.recheck()
    host.cycle(wait=False)
    assert host.backend.observe_calls == [(), ()]
    host.backend.disconnect(3262)


def test_a_spent_check_retry_never_keeps_the_daemon_awake(host: Host) -> None:
    """A check put off (its tgtd did not answer) whose port then needs no check (its tgtd
    died and its restart waits for its backoff): the retry time, once passed, must not stay
    the daemon's next wake-up, or the loop spins on it with a zero timeout."""
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.backend.hang(3261)
    host.rec.recheck()
    host.cycle()
    checker = host.rec.checker
    retry = checker.next_at()
    assert retry is not None and retry > host.clock()
    host.backend.crash(3261)
    host.clock.set(retry + 0.5)
    assert checker.due(host.backend.observe(()), host.clock()) == set()
    assert checker.next_at() is None
