"""Deleting an instance file drains its tgtd: new logins fail at once, a connected session
keeps working, and the tgtd exits when the last session ends (or when forced)."""

from __future__ import annotations

import time

import pytest
from instances import (
    Initiators,
    InstanceTree,
    iqn,
    iscsi_ls,
    listed_targets,
    process_gone,
)
from tgtd_harness import wait_for

# A drain's polls and its last step (tgt-admin with no config) are the same under both
# engines; only the start before it differs, and other tests cover that (their three
# tgt-admin runs took 31 s).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.engine("native", cost=True, reason="a drain is the same under both engines"),
]


def test_deleted_file_drains_and_stops_within_a_second_of_the_last_session(
    tree: InstanceTree, initiators: Initiators
) -> None:
    port_d = tree.reserve_port()
    port_b = tree.reserve_port()
    tree.write_instance("d", port_d)
    tree.write_instance("b", port_b)
    assert tree.apply().code == 0
    pids = tree.pids()
    perf = initiators.hold(port_d, iqn("d"))
    perf.wait_progress()

    # on_drain_timeout: wait, drain_timeout_s: 1 — apply returns with the port draining.
    tree.remove_instance("d")
    ran = tree.apply()
    assert ran.code == 1, str(ran)
    assert f"drain_stop d port {port_d}: partial" in ran.out, str(ran)
    assert "1 sessions remain" in ran.out and "stays offline" in ran.out, str(ran)
    assert 0.9 <= ran.seconds < 10, str(ran)
    started = time.monotonic()
    refused = iscsi_ls(port_d)
    assert refused.returncode != 0, f"a new login must fail: {refused.stdout}"
    assert time.monotonic() - started < 5, "refused at once, not after a timeout"
    perf.wait_progress(2)
    assert perf.errors() == [], perf.log()
    status = tree.assert_status_matches_tgtd()
    assert (status[port_d]["state"], status[port_d]["sessions"]) == ("draining", 1)
    assert status[port_b]["state"] == "running"
    assert listed_targets(port_b) == [iqn("b")]
    drains = [r for r in tree.audit() if r["port"] == port_d]
    assert [(r["action"], r["result"]) for r in drains[-1:]] == [("drain", "partial")]

    # The daemon-less way to finish: `tgtwatch drain --port N` waits for the session.
    drain, log = tree.spawn("drain", "--port", str(port_d), log_name="drain.log")
    wait_for(lambda: "waiting" in log.read_text(), 10, "drain to wait for the session")
    assert drain.poll() is None, log.read_text()
    assert perf.stop() == 0, perf.log()
    assert perf.errors() == [], perf.log()
    ended = time.monotonic()
    code = drain.wait(10)
    took = time.monotonic() - ended
    assert process_gone(pids[port_d])
    assert took < 1.0, f"tgtd exited {took:.2f} s after the session ended: {log.read_text()}"
    assert code == 0, log.read_text()
    assert f"port {port_d}: ok: tgtd pid {pids[port_d]} drained and exited" in log.read_text()
    records = [(r["action"], r["result"]) for r in tree.audit() if r["port"] == port_d]
    # apply: drain partial; `drain`: drain partial (it waits), then stop ok
    assert records[-3:] == [("drain", "partial"), ("drain", "partial"), ("stop", "ok")], records

    assert tree.pids() == {port_b: pids[port_b]}
    assert port_d not in tree.assert_status_matches_tgtd()
    again = tree.apply()
    assert (again.code, again.out.strip()) == (0, "nothing to do"), str(again)


def test_forced_drain_cuts_the_session_after_the_timeout(
    tree: InstanceTree, initiators: Initiators
) -> None:
    port_f = tree.reserve_port()
    port_b = tree.reserve_port()
    tree.write_instance("f", port_f)
    tree.write_instance("b", port_b)
    assert tree.apply().code == 0
    pids = tree.pids()
    perf = initiators.hold(port_f, iqn("f"))
    perf.wait_progress()

    done = tree.tgtwatch(
        "drain", "--port", str(port_f), "--force", "--timeout", "2", subprocess_=True
    )
    # About 2 s: as tgtwatch measured the drain (the audit record), and on the wall clock,
    # which also counts the interpreter's start (more slack for a loaded host).
    drained_s = tree.audit()[-1]["duration_ms"] / 1000
    assert 1.5 <= drained_s <= 4, f"{drained_s:.2f} s: {done}"
    assert 1.5 <= done.seconds <= 6, str(done)
    assert done.code == 0, str(done)
    assert "1 sessions cut off (force)" in done.out, str(done)
    assert process_gone(pids[port_f])
    # With reconnects disabled (-x 0) the cut-off session is an error iscsi-perf reports:
    # what proves that the other tests' "no error" means an unbroken session.
    wait_for(lambda: perf.proc.poll() is not None, 10, "iscsi-perf to notice")
    assert perf.proc.returncode != 0, perf.log()
    assert perf.errors(), perf.log()
    assert tree.pids() == {port_b: pids[port_b]}, "the other instance keeps running"
    assert listed_targets(port_b) == [iqn("b")]
    record = tree.audit()[-1]
    assert (record["action"], record["instance"], record["result"]) == ("stop", "f", "ok")
    # f.conf still asks for the instance: stopped (the next apply would start it again).
    status = tree.assert_status_matches_tgtd()
    assert (status[port_f]["state"], status[port_f]["pid"]) == ("stopped", None)


def test_force_policy_in_the_settings_makes_apply_cut_sessions(
    tree: InstanceTree, initiators: Initiators
) -> None:
    tree.write_settings(on_drain_timeout="force", drain_timeout_s=2)
    port_f = tree.reserve_port()
    port_b = tree.reserve_port()
    tree.write_instance("f", port_f)
    tree.write_instance("b", port_b)
    assert tree.apply().code == 0
    pids = tree.pids()
    perf = initiators.hold(port_f, iqn("f"))
    perf.wait_progress()

    tree.remove_instance("f")
    ran = tree.apply()
    drained_s = tree.audit()[-1]["duration_ms"] / 1000
    assert 1.5 <= drained_s <= 4, f"{drained_s:.2f} s: {ran}"
    assert 1.5 <= ran.seconds <= 6, str(ran)
    assert ran.code == 0, str(ran)
    assert f"drain_stop f port {port_f}: ok" in ran.out, str(ran)
    assert "1 sessions cut off (force)" in ran.out, str(ran)
    assert process_gone(pids[port_f])
    assert tree.pids() == {port_b: pids[port_b]}
    record = tree.audit()[-1]
    assert (record["action"], record["instance"], record["result"]) == ("stop", "f", "ok")
    status = tree.assert_status_matches_tgtd()
    assert list(status) == [port_b]
    wait_for(lambda: perf.proc.poll() is not None, 10, "iscsi-perf to notice")
