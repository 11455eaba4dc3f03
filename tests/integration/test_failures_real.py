"""Failure paths of `apply`: clear messages, nothing half-started, no harm to other ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from instances import (
    InstanceTree,
    iqn,
    iscsi_inq,
    listed_targets,
    tgtd_pids,
)

from tgtwatch.tgt import gateway as g

pytestmark = pytest.mark.integration


def bystander(tree: InstanceTree) -> tuple[int, int]:
    """An instance started before the failure: (port, pid). It must not notice anything."""
    port = tree.reserve_port()
    tree.write_instance("b", port)
    ran = tree.apply()
    assert ran.code == 0, str(ran)
    return port, tree.pids()[port]


def assert_bystander_untouched(tree: InstanceTree, port: int, pid: int) -> None:
    assert tree.pids()[port] == pid
    assert listed_targets(port) == [iqn("b")]


@pytest.mark.engine("native", cost=True, reason="tgtd fails before any engine step")
def test_portal_taken_by_another_program(tree: InstanceTree) -> None:
    port_b, pid_b = bystander(tree)
    port = tree.reserve_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        # A test's earlier connections may linger in TIME_WAIT on this port; the squatter
        # still holds the listening address alone (SO_REUSEADDR shares no listen socket).
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        tree.write_instance("x", port)
        ran = tree.apply()
        assert ran.code == 1, str(ran)
        assert f"start x port {port}: failed" in ran.out, str(ran)
        # tgtd falls back to 3260 when it cannot bind: the backend notices and undoes that.
        assert f"could not bind portal 127.0.0.1:{port}" in ran.out, str(ran)
        assert "was stopped" in ran.out, str(ran)
        assert tgtd_pids([port]) == {}, "no tgtd is left on the control port"
        assert not any(p == port for p in tree.pids())
        record = tree.audit()[-1]
        assert (record["action"], record["instance"], record["result"]) == ("start", "x", "failed")
        assert f"127.0.0.1:{port}" in record["message"]
        status = tree.assert_status_matches_tgtd()
        assert (status[port]["state"], status[port]["pid"]) == ("failed", None), status[port]
        assert f"127.0.0.1:{port}" in status[port]["message"]
    assert_bystander_untouched(tree, port_b, pid_b)


def lun_stores(port: int) -> dict[int, str | None]:
    """LUN number -> backing store of the one target on `port`, as tgtd shows it."""
    (target,) = g.TgtControl(port).target_details()
    return {lun.number: lun.backing_store for lun in target.data_luns}


def test_missing_backing_file_is_a_partial_start(tree: InstanceTree, engine: str) -> None:
    port_b, pid_b = bystander(tree)
    port = tree.reserve_port()
    missing, present = tree.backing_dir / "never-created.img", tree.backing("present.img")
    tree.write_instance("x", port, {iqn("x"): [missing, present]})
    ran = tree.apply()
    # The store is not there: the start is partial, and says which store is missing.
    assert ran.code == 1, str(ran)
    assert f"start x port {port}: partial" in ran.out, str(ran)
    if engine == "native":
        assert f"missing stores: {missing}" in ran.out, str(ran)
    else:
        assert f"skipped device {missing}: it does not exist" in ran.out, str(ran)
        assert f"{iqn('x')} has 1 of 2 LUNs" in ran.out, str(ran)
    record = tree.audit()[-1]
    assert (record["action"], record["instance"], record["result"]) == ("start", "x", "partial")
    assert str(missing) in record["message"]
    # The target exists, without the missing LUN: the present store keeps LUN 2.
    assert listed_targets(port) == [iqn("x")]
    assert lun_stores(port) == {2: str(present)}
    assert iscsi_inq(port, iqn("x"), 1).returncode != 0
    tree.assert_status_matches_tgtd()
    assert_bystander_untouched(tree, port_b, pid_b)
    # Once the backing file exists, the next apply completes it (the file did not change).
    with missing.open("wb") as disk:
        disk.truncate(16 * 1024 * 1024)
    again = tree.apply()
    assert again.code == 0, str(again)
    assert f"reload x port {port}: ok" in again.out, str(again)
    assert iscsi_inq(port, iqn("x"), 1).returncode == 0
    assert lun_stores(port) == {1: str(missing), 2: str(present)}
    assert_bystander_untouched(tree, port_b, pid_b)


@pytest.mark.engine("native", cost=True, reason="tgtd fails before any engine step")
def test_tgtd_exiting_during_start(tree: InstanceTree, monkeypatch: pytest.MonkeyPatch) -> None:
    port_b, pid_b = bystander(tree)
    port = tree.reserve_port()
    bindir = tree.root / "bin"
    bindir.mkdir()
    fake = bindir / "tgtd"
    fake.write_text('#!/bin/sh\necho "tgtd: the flux capacitor is missing" >&2\nexit 1\n')
    fake.chmod(0o755)
    # TgtPrograms finds tgtd on PATH: this one exits at once (tgtadm stays the real one).
    monkeypatch.setenv("PATH", f"{bindir}:{Path('/usr/bin')}:{Path('/bin')}")
    tree.write_instance("x", port)
    ran = tree.apply()
    assert ran.code == 1, str(ran)
    line = next(x for x in ran.out.splitlines() if x.startswith(f"start x port {port}"))
    assert ": failed " in line, str(ran)
    assert "tgtd exited with code 1 during start" in line, line
    assert "the flux capacitor is missing" in line, "tgtd's output is in the message"
    record = tree.audit()[-1]
    assert (record["action"], record["result"]) == ("start", "failed")
    assert "the flux capacitor is missing" in record["message"]
    assert tgtd_pids([port]) == {}
    monkeypatch.undo()
    status = tree.assert_status_matches_tgtd()
    assert status[port]["state"] == "failed", status[port]
    assert_bystander_untouched(tree, port_b, pid_b)
