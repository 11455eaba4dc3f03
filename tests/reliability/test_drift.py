"""What runs is checked against what was applied: a tgtd left offline, a target deleted by
hand, a LUN whose backing store was missing at start. Each is found (at adoption, at a
resync, after an action), repaired, and the repair audited; nothing busy is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from instances import Initiators
from rel_harness import REAL, RelWorld, dh

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def tgtadm(port: int, *args: str) -> None:
    done = dh.run_tool([REAL.tgtadm, "-C", str(port), *args])
    assert done.returncode == 0, done


def test_a_tgtd_left_offline_is_set_ready_when_the_daemon_adopts_it(world: RelWorld) -> None:
    """What a drain interrupted by a restart leaves (its file then restored), or a daemon
    killed between a start's "offline" and "ready": a tgtd that refuses every login. The
    digest matches, so the plan alone never saw it; the check at adoption does."""
    port = world.reserve_port()
    world.write_instance("a", port)
    first = world.start()
    pid = world.pids()[port]
    assert first.terminate() == 0
    tgtadm(port, "--op", "update", "--mode", "sys", "--name", "State", "-v", "offline")
    assert world.targets_on(port)[1] == "offline"
    daemon = world.start()
    record = daemon.wait_for_record(action="repair", instance="a", result="ok", timeout=30)
    assert "system state offline" in (record.get("MESSAGE") or ""), record.fields
    assert world.targets_on(port) == ([f"{dh.iqn('a')}/1"], "ready")
    assert world.pids()[port] == pid  # repaired in place, not restarted
    assert dh.lun_answers(port, dh.iqn("a"), 1)


def test_a_target_deleted_by_hand_is_put_back_at_the_resync(world: RelWorld) -> None:
    world.write_settings(resync_interval_s=1)
    port = world.reserve_port()
    world.write_instance("a", port)
    daemon = world.start()
    pid = world.pids()[port]
    tgtadm(port, "--op", "delete", "--mode", "target", "--tid", "1")
    assert world.targets_on(port)[0] == []
    record = daemon.wait_for_record(action="repair", instance="a", result="ok", timeout=30)
    assert f"target {dh.iqn('a')} missing" in (record.get("MESSAGE") or ""), record.fields
    assert world.targets_on(port) == ([f"{dh.iqn('a')}/1"], "ready")
    assert world.pids()[port] == pid


def test_a_lun_missing_at_start_lands_once_its_store_appears(
    world: RelWorld, tmp_path: Path, engine: str
) -> None:
    """A backing store missing at start: the target is made with one LUN of two. Before,
    every target was recorded as applied: once the store appeared the busy target was
    skipped and the record said converged, for good. Now the start says what is missing;
    when the store appears the native engine adds the LUN live, under the session, and
    with tgt-admin the target is pending while its initiator stays and gets its LUN once
    it leaves."""
    port = world.reserve_port()
    target = dh.iqn("a")
    first, second = world.backing("a-1.img"), world.backing_dir / "a-2.img"
    world.write_instance("a", port, {target: [first, second]})
    daemon = world.start()
    start = daemon.wait_for_record(action="start", instance="a")
    assert start.get("TGTWATCH_RESULT") == "partial", start.fields
    if engine == "native":
        assert f"missing stores: {second}" in (start.get("MESSAGE") or ""), start.fields
    else:
        assert f"{target} has 1 of 2 LUNs" in (start.get("MESSAGE") or ""), start.fields
    initiators = Initiators(tmp_path)
    try:
        perf = initiators.hold(port, target)
        world.backing("a-2.img")  # the store appears
        world.write_settings(resync_interval_s=300)  # a SIGHUP: a cycle applies it again
        daemon.proc.send_signal(1)
        if engine == "native":
            record = daemon.wait_for_record(action="reload", instance="a", timeout=30)
            assert f"{target} new LUN 2" in (record.get("MESSAGE") or ""), record.fields
            assert world.targets_on(port) == ([f"{target}/2"], "ready")  # under the session
            perf.wait_progress()
            assert perf.errors() == [], perf.log()
        else:
            record = daemon.wait_for_record(action="pending", instance="a", timeout=30)
            assert target in (record.get("MESSAGE") or "")
            dh.wait_for(
                lambda: world.status().get("a", {}).get("state") == "pending", 30, "pending"
            )
            assert world.targets_on(port)[0] == [f"{target}/1"]  # busy: left as it is
    finally:
        initiators.stop_all()
    if engine == "tgt-admin":
        daemon.wait_for_record(action="reload", instance="a", result="ok", timeout=30)
    assert world.targets_on(port) == ([f"{target}/2"], "ready")
    dh.wait_for(lambda: world.status().get("a", {}).get("state") == "running", 30, "running")
