"""`tgtwatch apply` against real tgtds and a real initiator (issue "Run real instances").

Each test builds its own tree (tests/integration/instances.py) on ports 13100-13199;
every tgtd it causes is stopped by the `tree` fixture's finalizer.
"""

from __future__ import annotations

import os
import signal

import pytest
from instances import (
    InstanceTree,
    assert_lun_answers,
    iqn,
    iscsi_inq,
    listed_targets,
    process_gone,
    reap_orphans,
)
from tgtd_harness import wait_for

pytestmark = pytest.mark.integration

NAMES = ("alpha", "beta", "gamma")


def sample_like(tree: InstanceTree) -> dict[str, int]:
    """Three instances as in sample-conf: alpha and beta one target, gamma two (3 LUNs)."""
    ports = {name: tree.reserve_port() for name in NAMES}
    tree.write_instance("alpha", ports["alpha"])
    tree.write_instance("beta", ports["beta"])
    tree.write_instance(
        "gamma",
        ports["gamma"],
        {
            iqn("gamma", 1): [tree.backing("gamma-1.img")],
            iqn("gamma", 2): [tree.backing("gamma-2a.img"), tree.backing("gamma-2b.img")],
        },
    )
    return ports


def targets_of(name: str) -> list[str]:
    return [iqn(name, 1), iqn(name, 2)] if name == "gamma" else [iqn(name, 1)]


def test_apply_starts_every_instance_then_does_nothing(tree: InstanceTree) -> None:
    ports = sample_like(tree)

    # The real executable, as an operator (or the unit) runs it.
    ran = tree.apply(subprocess_=True)
    assert ran.code == 0, str(ran)
    for name in NAMES:
        assert f"start {name} port {ports[name]}: ok" in ran.out, str(ran)
    pids = tree.pids()
    assert sorted(pids) == sorted(ports.values())
    for name, port in ports.items():
        assert listed_targets(port) == targets_of(name)
        for target in targets_of(name):
            assert_lun_answers(port, target, 1)
    assert_lun_answers(ports["gamma"], iqn("gamma", 2), 2)
    # The audit log has one `start ok` per instance, with the contract's keys.
    records = tree.audit()
    assert sorted((r["action"], r["instance"], r["result"]) for r in records) == [
        ("start", name, "ok") for name in NAMES
    ]
    keys = {"ts", "action", "instance", "port", "config", "sha256", "result", "duration_ms"}
    for record in records:
        assert keys | {"message"} <= set(record), record
        assert record["config"] == str(tree.instances_dir / f"{record['instance']}.conf")
        assert record["port"] == ports[record["instance"]]
        assert len(record["sha256"]) == 64
    # Without a journal socket the records are also on stderr, one line each.
    assert ran.err.count("tgtwatch audit: ") == 3, ran.err
    assert ran.err.count("action=start") == 3, ran.err

    status = tree.assert_status_matches_tgtd()
    assert {s["name"]: s["state"] for s in status.values()} == dict.fromkeys(NAMES, "running")

    again = tree.apply(subprocess_=True)
    assert again.code == 0, str(again)
    assert again.out.strip() == "nothing to do", str(again)
    assert tree.audit() == records, "a no-op apply writes no audit record"
    assert tree.pids() == pids


def test_adding_a_lun_reloads_only_that_instance(tree: InstanceTree) -> None:
    ports = sample_like(tree)
    assert tree.apply().code == 0
    before = tree.pids()
    assert iscsi_inq(ports["beta"], iqn("beta"), 2).returncode != 0

    tree.write_instance(
        "beta", ports["beta"], {iqn("beta"): [tree.backing("beta-1.img"), tree.backing("b2.img")]}
    )
    ran = tree.apply()
    assert ran.code == 0, str(ran)
    assert f"reload beta port {ports['beta']}: ok" in ran.out, str(ran)
    assert ran.out.count("\n") == 1, f"only beta is touched: {ran}"
    assert_lun_answers(ports["beta"], iqn("beta"), 2)
    assert_lun_answers(ports["beta"], iqn("beta"), 1)
    assert tree.pids() == before, "every tgtd keeps its pid, beta's too"
    assert tree.audit()[-1]["action"] == "reload"
    tree.assert_status_matches_tgtd()


def test_killed_tgtd_is_started_again(tree: InstanceTree) -> None:
    ports = sample_like(tree)
    assert tree.apply().code == 0
    before = tree.pids()
    victim = before[ports["beta"]]

    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: process_gone(victim), 10, f"tgtd {victim} to die")
    reap_orphans()
    status = tree.assert_status_matches_tgtd()
    assert status[ports["beta"]]["state"] == "stopped"

    ran = tree.apply()
    assert ran.code == 0, str(ran)
    assert f"start beta port {ports['beta']}: ok" in ran.out, str(ran)
    after = tree.pids()
    assert after[ports["beta"]] != victim
    assert {p: after[p] for p in after if p != ports["beta"]} == {
        p: before[p] for p in before if p != ports["beta"]
    }, "the others keep their pids"
    record = tree.audit()[-1]
    assert (record["action"], record["instance"], record["result"]) == ("start", "beta", "ok")
    assert "had died" in record["message"], record
    assert listed_targets(ports["beta"]) == [iqn("beta")]
    tree.assert_status_matches_tgtd()


def test_corrupt_state_file_adopts_what_runs(tree: InstanceTree) -> None:
    ports = sample_like(tree)
    assert tree.apply().code == 0
    before = tree.pids()
    state = tree.state_dir / "applied.json"
    state.write_text('{"version": 1, "ports": {"13')  # cut off mid-write

    ran = tree.apply()
    assert "corrupt state" in ran.err and str(state) in ran.err, str(ran)
    assert ran.code == 0, str(ran)
    adopted = [r for r in tree.audit() if r["action"] == "adopt"]
    assert sorted((r["instance"], r["result"]) for r in adopted) == [(n, "ok") for n in NAMES]
    assert tree.pids() == before, "adopted, not restarted"
    for name, port in ports.items():
        assert listed_targets(port) == targets_of(name)

    again = tree.apply()
    assert (again.code, again.out.strip()) == (0, "nothing to do"), str(again)
    tree.assert_status_matches_tgtd()
