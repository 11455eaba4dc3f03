#!/usr/bin/env python3
"""tgtd's control socket spoken directly vs through tgtadm, side by side in one run.

`.venv/bin/python bench/ipc_vs_tgtadm.py [--ops 200] [--runs 20]`

1. Operations: the same request N times on one tgtd, alternating the two paths in blocks
   of 10: `show --mode sys` (what every observation asks), `State offline/ready`, `bind /
   unbind -I`, a LUN `new / delete`, and an account `new / delete` (which only the socket
   may carry: tgtadm would show the secret in /proc). Per-operation median [min-max].
2. Provisioning one target, from spawning tgtd until `iscsi-ls` lists it: tgtd start, its
   control socket polled (connect every 1 ms), offline, new target, new LUN, bind ALL,
   ready. Three ways, interleaved run by run: tgt-admin -e (the current floor), bare
   tgtadm calls, and the socket.
Ports 14000-14999; every tgtd is stopped by control port, also on error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
from common import POOL, log, summary  # noqa: E402

from tgtwatch.tgt import ipc_ops as ops  # noqa: E402
from tgtwatch.tgt.ipc import Request  # noqa: E402
from tgtwatch.tgt.ipc_client import TgtdSocket  # noqa: E402

IQN = "iqn.2026-11.bench.tgtwatch:ipc"
SECRET = "bench-only-secret-1"


def tgtadm(port: int, argv: Sequence[str]) -> None:
    done = subprocess.run(
        [common.PROGS.tgtadm, "-C", str(port), *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tgtadm {' '.join(argv)}: {done.stderr}")


# (name, [tgtadm argv, ...], [request, ...]): each pair of steps leaves tgtd as it was.
def operations(backing: Path) -> list[tuple[str, list[list[str]], list[Request]]]:
    lun = ["--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "5", "-b", str(backing)]
    return [
        ("show --mode sys", [["--op", "show", "--mode", "sys"]], [ops.show_system()]),
        (
            "State offline / ready",
            [
                ["--op", "update", "--mode", "sys", "--name", "State", "-v", v]
                for v in ("offline", "ready")
            ],
            [ops.set_state("offline"), ops.set_state("ready")],
        ),
        (
            "bind / unbind -I",
            [
                ["--op", verb, "--mode", "target", "--tid", "1", "-I", "10.9.9.9"]
                for verb in ("bind", "unbind")
            ],
            [ops.bind_address(1, "10.9.9.9"), ops.unbind_address(1, "10.9.9.9")],
        ),
        (
            "LUN new / delete",
            [lun, ["--op", "delete", "--mode", "logicalunit", "--tid", "1", "--lun", "5"]],
            [ops.new_lun(1, 5, str(backing)), ops.delete_lun(1, 5)],
        ),
        (
            "account new / delete",
            [
                ["--op", "new", "--mode", "account", "--user", "u", "--password", SECRET],
                ["--op", "delete", "--mode", "account", "--user", "u"],
            ],
            [ops.new_account("u", SECRET), ops.delete_account("u")],
        ),
    ]


def time_ops(port: int, backing: Path, n: int) -> dict[str, Any]:
    """Each kind n times per path, in blocks of 10 rounds whose path order alternates."""
    client = TgtdSocket(port, 10)
    out: dict[str, Any] = {}
    for name, argvs, requests in operations(backing):
        per: dict[str, list[float]] = {"tgtadm": [], "socket": []}
        rounds = max(1, n // len(argvs))
        for block in range(0, rounds, 10):
            order = ("tgtadm", "socket") if block % 20 == 0 else ("socket", "tgtadm")
            for path in order:
                for _ in range(min(10, rounds - block)):
                    for argv, request in zip(argvs, requests, strict=True):
                        started = time.perf_counter()
                        if path == "tgtadm":
                            tgtadm(port, argv)
                        else:
                            client.call(request)
                        per[path].append(time.perf_counter() - started)
        out[name] = {k: summary(v) for k, v in per.items()}
    return out


def provision(
    way: str, port: int, backing: Path, conf: Path, workdir: Path
) -> tuple[float, float, float]:
    """Seconds from spawning tgtd until its socket answers, until it is ready with its
    target (the part the three ways differ in), and until iscsi-ls lists the target."""
    iqn = f"{IQN}-{port}"
    started = time.monotonic()
    with (workdir / f"tgtd-{port}.log").open("ab") as out:
        proc = subprocess.Popen(
            [common.PROGS.tgtd, "-f", "--iscsi", f"portal=127.0.0.1:{port}", "-C", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        common.wait_until(
            lambda: common.socket_answers(port) or proc.poll() is not None,
            10,
            "the control socket",
            interval=0.001,
        )
        answered = time.monotonic()
        if way == "socket":
            client = TgtdSocket(port, 10)
            for request in (
                ops.set_state("offline"),
                ops.new_target(1, iqn),
                ops.new_lun(1, 1, str(backing)),
                ops.bind_address(1, "ALL"),
                ops.set_state("ready"),
            ):
                client.call(request)
        elif way == "tgtadm":
            for argv in (
                ["--op", "update", "--mode", "sys", "--name", "State", "-v", "offline"],
                ["--op", "new", "--mode", "target", "--tid", "1", "-T", iqn],
                [
                    "--op",
                    "new",
                    "--mode",
                    "logicalunit",
                    "--tid",
                    "1",
                    "--lun",
                    "1",
                    "-b",
                    str(backing),
                ],
                ["--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"],
                ["--op", "update", "--mode", "sys", "--name", "State", "-v", "ready"],
            ):
                tgtadm(port, argv)
        else:
            conf.write_text(f"<target {iqn}>\n    backing-store {backing}\n</target>\n")
            common.tgtadm_state(port, "offline")
            subprocess.run(
                [common.PROGS.tgt_admin, "-C", str(port), "-e", "-c", str(conf)],
                check=True,
                capture_output=True,
            )
            common.tgtadm_state(port, "ready")
        loaded = time.monotonic()
        common.wait_until(lambda: common.lists(port, iqn), 10, f"{iqn} listed")
        return answered - started, loaded - answered, time.monotonic() - started
    finally:
        common.stop_port(port)
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=200, help="operations per kind and path")
    parser.add_argument("--runs", type=int, default=20, help="provisionings per way")
    parser.add_argument("--out", type=Path, default=HERE / "ipc_results.json")
    args = parser.parse_args()
    common.install_signal_cleanup()
    POOL.reserve(4)
    workdir = Path(tempfile.mkdtemp(prefix="twbench-ipc.", dir="/var/tmp"))
    backing = common.sparse(workdir / "lun.img", 1 << 20)
    results: dict[str, Any] = {
        "ops": {},
        "provision": {},
        "loadavg_start": Path("/proc/loadavg").read_text().strip(),
    }
    try:
        (port,) = POOL.take(1)
        tgtd = common.FloorTgtd(port, workdir / "base.conf", workdir / "base.log")
        (workdir / "base.conf").write_text(
            f"<target {IQN}>\n    backing-store {backing}\n</target>\n"
        )
        tgtd.start()
        log(f"{args.ops} operations of each kind, each path, on port {port}")
        results["ops"] = time_ops(port, backing, args.ops)
        common.stop_port(port)
        tgtd.wait()
        POOL.give_back([port])
        ways = ("tgt-admin", "tgtadm", "socket")
        times: dict[str, list[tuple[float, float, float]]] = {w: [] for w in ways}
        log(f"{args.runs} provisionings each way, interleaved")
        for run in range(args.runs + 1):  # run 0 warms the caches up, not counted
            order = ways if run % 2 else tuple(reversed(ways))
            for way in order:
                (p,) = POOL.take(1)
                try:
                    took = provision(way, p, backing, workdir / f"{way}.conf", workdir)
                finally:
                    POOL.give_back([p])
                if run:
                    times[way].append(took)
        results["provision"] = {
            w: {
                "socket_answers": summary([t[0] for t in v]),
                "load": summary([t[1] for t in v]),
                "listed": summary([t[2] for t in v]),
            }
            for w, v in times.items()
        }
    finally:
        common.cleanup_all()
        shutil.rmtree(workdir, ignore_errors=True)
        POOL.release()
    print(f"\n{'operation':<24} {'tgtadm':>22} {'socket':>22} {'ratio':>7}")
    for name, paths in results["ops"].items():
        a, s = paths["tgtadm"], paths["socket"]
        print(f"{name:<24} {us(a):>22} {us(s):>22} {a['median'] / s['median']:>6.0f}x")
    head = ("provision", "spawn -> socket", "offline..ready", "spawn -> listed")
    print("\n{:<10} {:>20} {:>20} {:>20}".format(*head))
    for way, p in results["provision"].items():
        print(
            f"{way:<10} {common.fmt_ms(p['socket_answers']):>20} {us(p['load']):>20} "
            f"{common.fmt_ms(p['listed']):>20}"
        )
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def us(s: dict[str, Any]) -> str:
    return f"{s['median'] * 1e6:.0f} us [{s['min'] * 1e6:.0f}-{s['max'] * 1e6:.0f}]"


if __name__ == "__main__":
    raise SystemExit(main())
