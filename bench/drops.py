# ruff: noqa: B023
"""Issue 15's two drop targets, each side by side with its floor in one run (as root):

    .venv/bin/python bench/drops.py [--running 500] [--reps 10] [--burst 200]

1. drop → serving with N instances running vs with none: `tgtwatch run` (direct backend,
   defaults) with 0, then N instance files present at its start; once READY=1, each rep
   renames one new file in (after debounce_ms of quiet, untimed) and times until iscsi-ls
   lists its target. Beside it, the floor of the same provisioning by the same apply path
   (DirectBackend.start of that file's spec, the native engine, in this process).
   With `--others`, "none" runs beside N tgtds the daemon does not manage (a copy of
   tgtd, whose /proc exe it does not trust, each serving a target as an instance does):
   the host then carries the same load in both figures, and their ratio is the daemon's
   own growth with the count it manages (the floor's shows what the host adds).
2. B files renamed in at once → every one listed: `tgtwatch run` started empty, vs the
   floor: the same B starts by the same apply path on a thread pool of the daemon's lane
   count, all submitted at once. Both sides poll the ports in the same order.
Writes bench/drops.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import (
    DEBOUNCE_MS,
    LANES,
    POOL,
    PROGS,
    atomic_write,
    bench_world,
    cleanup_all,
    cpu_times,
    install_signal_cleanup,
    instance_text,
    iqn,
    lists,
    log,
    sparse,
    stop_ports,
    summary,
    wait_until,
)

from tgtwatch.backends.direct import DirectBackend
from tgtwatch.config.instance_file import instance_from
from tgtwatch.config.tgtconf import parse
from tgtwatch.config.trust import TrustedFiles, TrustPolicy
from tgtwatch.model.structs import InstanceSpec
from tgtwatch.tgt.gateway import TgtPrograms

OUT = Path(__file__).resolve().parent / "drops.json"
POLL = 0.002


def spec_of(conf: Path) -> InstanceSpec:
    spec, problems = instance_from(conf, parse(conf, TrustedFiles(conf.parent, TrustPolicy())))
    assert spec is not None, problems
    return spec


def floor_files(workdir: Path, ports: list[int], prefix: str) -> list[tuple[str, int, Path]]:
    conf_dir = workdir / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for i, port in enumerate(ports):
        name = f"{prefix}{i:03d}"
        conf = conf_dir / f"{name}.conf"
        conf.write_text(instance_text(name, port, [sparse(workdir / f"{name}.img")]))
        conf.chmod(0o644)
        out.append((name, port, conf))
    return out


def idle(pid: int, window: float = 1.0) -> None:
    """Untimed: until the daemon used < 2 % of a core over `window` (after READY=1 it
    still checks each new tgtd on its lanes: "N running" means a daemon at rest)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        before = sum(cpu_times(pid))
        time.sleep(window)
        if sum(cpu_times(pid)) - before < 0.02 * window:
            return
    raise TimeoutError("the daemon never came to rest")


def floor_start(backend: DirectBackend, conf: Path) -> None:
    outcome = backend.start(spec_of(conf), threading.Event())
    assert outcome.result.value == "ok", outcome


@contextlib.contextmanager
def others_running(count: int) -> Iterator[None]:
    """`count` tgtds the daemon does not manage, each serving one target as an instance's
    does, from a copy of tgtd (its /proc exe is not one the daemon trusts: it ignores
    them). Stopped at the end."""
    if count == 0:
        yield
        return
    ports = POOL.take(count)
    workdir = Path(tempfile.mkdtemp(prefix="twothers.", dir="/var/tmp"))
    exe = workdir / "tgtd"
    shutil.copy2(PROGS.tgtd, exe)
    backend = DirectBackend(workdir / "state" / "log", programs=TgtPrograms(tgtd=str(exe)))
    try:
        files = floor_files(workdir, ports, "o")
        with ThreadPoolExecutor(max_workers=LANES) as pool:
            list(pool.map(lambda item: floor_start(backend, item[2]), files))
        log(f"{count} other tgtds running (not managed)")
        yield
    finally:
        stop_ports(ports, executables={str(exe)})
        backend.reap()
        POOL.give_back(ports)
        shutil.rmtree(workdir, ignore_errors=True)


# ---- 1. drop -> serving, N running vs none -----------------------------------------------------


def one_drop(running: int, reps: int, others: int = 0) -> dict[str, Any]:
    """`reps` single drops into a daemon that runs `running` instances, beside `others`
    unmanaged tgtds; plus the floor."""
    with others_running(others), bench_world(f"drop1-{running}") as world:
        ports = POOL.take(running + 2 * reps)
        world.add_ports(ports)
        base, extra, floor_ports = (
            ports[:running],
            ports[running : running + reps],
            ports[running + reps :],
        )
        for i, port in enumerate(base):
            name = f"r{i:03d}"
            conf = world.conf(name)
            conf.write_text(instance_text(name, port, [world.backing(f"{name}.img")]))
            conf.chmod(0o644)
        t0 = time.monotonic()
        daemon = world.start(wait_ready=False)
        daemon.wait_for_notify("READY=1", timeout=900)
        idle(daemon.pid)
        log(f"{running} running, the daemon idle, after {time.monotonic() - t0:.1f} s")
        workdir = world.root / "floor"
        floors = floor_files(workdir, floor_ports, "f")
        backend = DirectBackend(workdir / "state" / "log")
        took: list[float] = []
        floor: list[float] = []
        for rep, port in enumerate(extra):
            name = f"x{rep:03d}"
            text = instance_text(name, port, [world.backing(f"{name}.img")])
            time.sleep(2 * DEBOUNCE_MS / 1000)  # untimed: the drop comes alone (leading edge)
            start = time.monotonic()
            atomic_write(world.conf(name), text, world.staging_dir)
            took.append(wait_until(lambda: lists(port, iqn(name)), 30, name, POLL) - start)
            fname, fport, fconf = floors[rep]
            start = time.monotonic()
            floor_start(backend, fconf)
            floor.append(wait_until(lambda: lists(fport, iqn(fname)), 30, fname, POLL) - start)
        daemon.terminate()
        stop_ports(floor_ports)
        backend.reap()
    log(f"drop with {running} running: {[round(t * 1000) for t in took]} ms")
    return {
        "running": running,
        "others": others,
        "tgtwatch_s": summary(took),
        "floor_s": summary(floor),
    }


# ---- 2. B files at once ----------------------------------------------------------------------


def burst_tgtwatch(n: int) -> float:
    with bench_world(f"burst{n}") as world:
        ports = POOL.take(n)
        world.add_ports(ports)
        idle(world.start().pid)
        items = []
        for i, port in enumerate(ports):
            name = f"b{i:03d}"
            path = world.staging_dir / f"{name}.conf"
            path.write_text(instance_text(name, port, [world.backing(f"{name}.img")]))
            path.chmod(0o644)
            items.append((name, port))
        start = time.monotonic()
        for name, _ in items:
            (world.staging_dir / f"{name}.conf").replace(world.conf(name))
        for name, port in items:
            wait_until(lambda: lists(port, iqn(name)), 600, name, POLL)
        took = time.monotonic() - start
        world.daemons[0].terminate()
    return took


def burst_floor(n: int) -> float:
    ports = POOL.take(n)
    workdir = Path(tempfile.mkdtemp(prefix="twdrops.", dir="/var/tmp"))
    try:
        files = floor_files(workdir, ports, "b")
        backend = DirectBackend(workdir / "state" / "log")
        with ThreadPoolExecutor(max_workers=LANES) as pool:
            start = time.monotonic()
            futures = [pool.submit(floor_start, backend, conf) for _, _, conf in files]
            for name, port, _ in files:
                wait_until(lambda: lists(port, iqn(name)), 600, name, POLL)
            took = time.monotonic() - start
            for f in futures:
                f.result()
        backend.reap()
        return took
    finally:
        stop_ports(ports)
        POOL.give_back(ports)
        shutil.rmtree(workdir, ignore_errors=True)


def ms(s: dict[str, float]) -> str:
    return f"{s['median'] * 1000:.1f} ms [{s['min'] * 1000:.1f}-{s['max'] * 1000:.1f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--running", type=int, default=500)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument(
        "--burst-reps",
        type=int,
        default=5,
        help="burst pairs (tgtwatch and floor, the order alternating): one pair is noise",
    )
    parser.add_argument(
        "--others",
        action="store_true",
        help="run 'none' beside --running tgtds the daemon does not manage (same host load)",
    )
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--skip-drop", action="store_true")
    args = parser.parse_args()
    install_signal_cleanup()
    others = args.running if args.others else 0
    POOL.reserve(max(others + 2 * args.reps, args.running + 2 * args.reps, args.burst))
    out: dict[str, Any] = {"lanes": LANES}
    try:
        if not args.skip_drop:
            none = one_drop(0, args.reps, others)
            many = one_drop(args.running, args.reps)
            ratio = many["tgtwatch_s"]["median"] / none["tgtwatch_s"]["median"]
            out["drop"] = {"none": none, "many": many, "ratio": ratio}
        if not args.skip_burst:
            pairs = []
            for rep in range(args.burst_reps):
                runs = [("tw", burst_tgtwatch), ("floor", burst_floor)]
                took = {kind: run(args.burst) for kind, run in runs[:: 1 if rep % 2 else -1]}
                pairs.append((took["tw"], took["floor"]))
                log(f"burst rep {rep}: tgtwatch {took['tw']:.2f} s, floor {took['floor']:.2f} s")
            tws, fls = [tw for tw, _ in pairs], [fl for _, fl in pairs]
            out["burst"] = {
                "n": args.burst,
                "reps": args.burst_reps,
                "tgtwatch_s": statistics.median(tws),
                "floor_s": statistics.median(fls),
                "ratio": statistics.median(tw / fl for tw, fl in pairs),
                "pairs": pairs,
            }
    finally:
        cleanup_all()
    if "drop" in out:
        d = out["drop"]
        for key in ("none", "many"):
            r = d[key]
            beside = f" (beside {r['others']} unmanaged)" if r.get("others") else ""
            print(
                f"drop -> listed with {r['running']:>3} running{beside}: tgtwatch "
                f"{ms(r['tgtwatch_s'])}, floor {ms(r['floor_s'])}"
            )
        print(f"ratio {args.running} running / none: {d['ratio']:.3f} (target <= 1.10)")
    if "burst" in out:
        b = out["burst"]
        print(
            f"{b['n']} at once -> all listed, median of {b['reps']} pairs: tgtwatch "
            f"{b['tgtwatch_s']:.2f} s, floor {b['floor_s']:.2f} s, median ratio "
            f"{b['ratio']:.3f} (target <= 1.2); pairs "
            + ", ".join(f"{tw:.2f}/{fl:.2f}" for tw, fl in b["pairs"])
        )
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
