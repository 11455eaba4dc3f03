# ruff: noqa: B023
# ruff: noqa: E501
"""Provisioning, reload, drain-and-stop and crash recovery of one instance:
tgtwatch (direct backend, `tgtwatch run` as a process) vs the by-hand floor, interleaved A/B.

One run = create (rename the file in → iscsi-ls lists the target), edit (a second LUN →
iscsi-inq answers on LUN 2), delete (→ the port refuses connections and the tgtd is gone).
The floor does the same by hand: tgtd, poll its socket, offline, tgt-admin -e, ready;
tgt-admin --update ALL; offline, tgt-admin --update ALL -c /dev/null, delete system.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from common import (
    PROGS,
    FloorTgtd,
    _check,
    atomic_write,
    bench_world,
    gone,
    inquiry,
    instance_text,
    iqn,
    lists,
    log,
    refuses,
    sparse,
    summary,
    tgtd_pid,
    wait_until,
)

TIMEOUT = 30


def lun2(port: int, name: str) -> bool:
    """LUN 2 is there: first via the control socket (creates no iSCSI session), then
    iscsi-inq. Polling iscsi-inq alone logs in *during* tgtwatch's reload, and a login in the
    middle of `tgt-admin --update ALL` makes it fail (exit 22, "this target is still active");
    tgtwatch does not retry that reload (README, findings)."""
    shown = _check([PROGS.tgtadm, "-C", str(port), "--op", "show", "--mode", "target"])
    return "LUN: 2" in shown and inquiry(port, iqn(name), 2)


def settle(port: int) -> None:
    """Untimed: wait until the probe's iSCSI session has left tgtd. Editing while tgtd still
    tears it down makes `tgt-admin --update ALL` fail with "this target is still active"
    (exit 22) — for the floor and tgtwatch alike (see README: tgtwatch does not retry)."""
    wait_until(
        lambda: (
            "I_T nexus:"
            not in _check([PROGS.tgtadm, "-C", str(port), "--op", "show", "--mode", "target"])
        ),
        10,
        "no sessions",
    )


def _tgtwatch_run(world: Any, name: str, port: int) -> dict[str, float]:
    conf = world.conf(name)
    b1, b2 = world.backing(f"{name}-1.img"), world.backing(f"{name}-2.img")
    t0 = time.monotonic()
    atomic_write(conf, instance_text(name, port, [b1]), world.staging_dir)
    t1 = wait_until(lambda: lists(port, iqn(name)), TIMEOUT, f"{name} listed")
    pid = tgtd_pid(port)
    settle(port)
    t2 = time.monotonic()
    atomic_write(conf, instance_text(name, port, [b1, b2]), world.staging_dir)
    t3 = wait_until(lambda: lun2(port, name), TIMEOUT, f"{name} LUN 2")
    assert pid is not None and tgtd_pid(port) == pid, "reload changed the tgtd pid"
    t4 = time.monotonic()
    conf.unlink()
    t5 = wait_until(lambda: refuses(port) and gone(pid), TIMEOUT, f"{name} stopped")
    return {"provision": t1 - t0, "reload": t3 - t2, "drain": t5 - t4}


def _floor_run(workdir: Path, name: str, port: int) -> dict[str, float]:
    conf = workdir / "conf" / f"{name}.conf"
    b1 = sparse(workdir / "backing" / f"{name}-1.img")
    b2 = sparse(workdir / "backing" / f"{name}-2.img")
    staging = workdir / "staging"
    conf.parent.mkdir(parents=True, exist_ok=True)
    tgtd = FloorTgtd(port, conf, workdir / f"tgtd-{port}.log")
    t0 = time.monotonic()
    atomic_write(conf, instance_text(name, port, [b1]), staging)
    tgtd.start()
    t1 = wait_until(lambda: lists(port, iqn(name)), TIMEOUT, f"floor {name} listed")
    settle(port)
    t2 = time.monotonic()
    atomic_write(conf, instance_text(name, port, [b1, b2]), staging)
    tgtd.reload()
    t3 = wait_until(lambda: lun2(port, name), TIMEOUT, f"floor {name} LUN 2")
    t4 = time.monotonic()
    conf.unlink()
    tgtd.stop()
    assert tgtd.proc is not None
    pid = tgtd.proc.pid
    t5 = wait_until(lambda: refuses(port) and gone(pid), TIMEOUT, f"floor {name} stopped")
    return {"provision": t1 - t0, "reload": t3 - t2, "drain": t5 - t4}


def _recovery_tgtwatch(world: Any, name: str, port: int) -> float:
    pid = tgtd_pid(port)
    assert pid is not None
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    return (
        wait_until(
            lambda: lists(port, iqn(name)) and tgtd_pid(port) not in (None, pid),
            TIMEOUT,
            f"{name} recovered",
        )
        - t0
    )


def _recovery_floor(tgtd: FloorTgtd, name: str) -> float:
    assert tgtd.proc is not None
    t0 = time.monotonic()
    os.kill(tgtd.proc.pid, signal.SIGKILL)
    tgtd.proc.wait()  # the by-hand operator notices the death (waitpid) and restarts
    tgtd.start()
    return wait_until(lambda: lists(tgtd.port, iqn(name)), TIMEOUT, "floor recovered") - t0


def run(runs: int, recovery_runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs}
    raw: dict[str, dict[str, list[float]]] = {
        "tgtwatch": {"provision": [], "reload": [], "drain": []},
        "floor": {"provision": [], "reload": [], "drain": []},
    }
    rec: dict[str, list[float]] = {"tgtwatch": [], "floor": []}
    with bench_world("life") as world:
        tw_port = world.reserve_port()
        fl_port = world.reserve_port()
        workdir = world.root / "floor"
        world.start()
        # warm-up, not recorded (first inotify watch, page cache of perl modules)
        _tgtwatch_run(world, "warm", tw_port)
        _floor_run(workdir, "warm", fl_port)
        for i in range(runs):
            order = ("tgtwatch", "floor") if i % 2 == 0 else ("floor", "tgtwatch")
            for who in order:
                name = f"v{i}"
                got = (
                    _tgtwatch_run(world, name, tw_port)
                    if who == "tgtwatch"
                    else _floor_run(workdir, name, fl_port)
                )
                for k, v in got.items():
                    raw[who][k].append(v)
            log(
                f"lifecycle run {i + 1}/{runs}: tgtwatch {raw['tgtwatch']['provision'][-1] * 1000:.0f}"
                f" ms, floor {raw['floor']['provision'][-1] * 1000:.0f} ms"
            )
        # Crash recovery. tgtwatch counts a tgtd that dies within 60 s of its start as
        # crash-looping (reconcile.CRASH_WINDOW_S: 2nd death waits 0.5 s, 3rd 1 s, ...), so
        # each tgtwatch run kills a different instance's tgtd once: the first-crash path,
        # which is what a tgtd dying after some uptime gets. The by-hand floor has no guard.
        rec_ports = [world.reserve_port() for _ in range(recovery_runs)]
        for j, p in enumerate(rec_ports):
            atomic_write(
                world.conf(f"crash{j}"),
                instance_text(f"crash{j}", p, [world.backing(f"crash{j}.img")]),
                world.staging_dir,
            )
        for j, p in enumerate(rec_ports):
            wait_until(lambda: lists(p, iqn(f"crash{j}")), TIMEOUT, "crash instance up")
        conf = workdir / "conf" / "crash.conf"
        atomic_write(
            conf,
            instance_text("crash", fl_port, [world.backing("crashf.img")]),
            workdir / "staging",
        )
        floor = FloorTgtd(fl_port, conf, workdir / "crash.log")
        floor.start()
        time.sleep(0.5)
        for i in range(recovery_runs):
            order = ("tgtwatch", "floor") if i % 2 == 0 else ("floor", "tgtwatch")
            for who in order:
                if who == "tgtwatch":
                    rec[who].append(_recovery_tgtwatch(world, f"crash{i}", rec_ports[i]))
                else:
                    rec[who].append(_recovery_floor(floor, "crash"))
                time.sleep(0.2)
        log(
            f"recovery: tgtwatch {[round(x * 1000) for x in rec['tgtwatch']]} ms, "
            f"floor {[round(x * 1000) for x in rec['floor']]} ms"
        )
        floor.stop()
    for who, d in raw.items():
        out[who] = {k: summary(v) for k, v in d.items()}
    out["recovery"] = {who: summary(v) for who, v in rec.items()}
    return out
