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
   With `--paired`, both daemons are up at once and the reps alternate between them
   (paired_drops): the figure least moved by a shared host's load.
2. B files renamed in at once → every one listed: `tgtwatch run` started empty, vs the
   floor: the same B starts by the same apply path on a thread pool of the daemon's lane
   count, all submitted at once. Both sides poll the ports in the same order.
Writes bench/drops.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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


def write_running(world: Any, ports: list[int]) -> None:
    """One instance file per port in the world's instances_dir, each its own store."""
    for i, port in enumerate(ports):
        name = f"r{i:03d}"
        conf = world.conf(name)
        conf.write_text(instance_text(name, port, [world.backing(f"{name}.img")]))
        conf.chmod(0o644)


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
        write_running(world, base)
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


def paired_drops(running: int, reps: int) -> dict[str, Any]:
    """Drop -> listed into a daemon running `running` instances and into one running none,
    both up at once: each rep drops one file into each (the order alternating), then the
    floor. The first daemon's tgtds run from a copy of tgtd, first on its PATH: the other
    daemon does not trust that binary and ignores those tgtds, as it ignores any tgtd that
    is not one it may manage. Both daemons then run beside the same processes, and each
    rep compares two drops a second apart (a shared host's load moves within a minute)."""
    workdir = Path(tempfile.mkdtemp(prefix="twpair.", dir="/var/tmp"))
    bindir = workdir / "bin"
    bindir.mkdir()
    exe = bindir / "tgtd"
    shutil.copy2(PROGS.tgtd, exe)
    env = {"PATH": f"{bindir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}"}
    ports = POOL.take(running + 3 * reps)
    base, many_x = ports[:running], ports[running : running + reps]
    none_x, floor_ports = ports[running + reps : running + 2 * reps], ports[running + 2 * reps :]
    try:
        with bench_world(f"pair-{running}") as many_w, bench_world("pair-0") as none_w:
            many_w.add_ports([*base, *many_x])
            none_w.add_ports([*none_x, *floor_ports])
            write_running(many_w, base)
            t0 = time.monotonic()
            many = many_w.start(wait_ready=False, env=env)
            many.wait_for_notify("READY=1", timeout=900)
            none = none_w.start(wait_ready=False)
            none.wait_for_notify("READY=1", timeout=60)
            idle(many.pid)
            idle(none.pid)
            log(f"{running} running and none, both idle, after {time.monotonic() - t0:.1f} s")
            floors = floor_files(workdir, floor_ports, "f")
            backend = DirectBackend(workdir / "state" / "log")
            took: dict[str, list[float]] = {"many": [], "none": []}
            drops: dict[str, list[tuple[str, float, float]]] = {"many": [], "none": []}
            floor: list[float] = []
            for rep in range(reps):
                sides = [("many", many_w, many_x[rep]), ("none", none_w, none_x[rep])]
                for kind, world, port in sides[:: 1 if rep % 2 else -1]:
                    name = f"{kind[0]}{rep:03d}"
                    text = instance_text(name, port, [world.backing(f"{name}.img")])
                    time.sleep(2 * DEBOUNCE_MS / 1000)  # untimed: each drop comes alone
                    start = time.monotonic()
                    atomic_write(world.conf(name), text, world.staging_dir)
                    waited = wait_until(lambda: lists(port, iqn(name)), 30, name, POLL)
                    took[kind].append(waited - start)
                    drops[kind].append((name, start, waited))
                fname, fport, fconf = floors[rep]
                start = time.monotonic()
                floor_start(backend, fconf)
                floor.append(wait_until(lambda: lists(fport, iqn(fname)), 30, fname, POLL) - start)
            phases = {
                kind: _phases(daemon, drops[kind])
                for kind, daemon in (("many", many), ("none", none))
            }
            many.terminate()
            none.terminate()
            backend.reap()
    finally:  # the worlds stop the tgtds they trust; these run from the copy
        stop_ports([*base, *many_x], executables={str(exe)})
        shutil.rmtree(workdir, ignore_errors=True)
    ratios = [m / n for m, n in zip(took["many"], took["none"], strict=True)]
    log(f"paired drops, {running} running / none: {[round(r, 2) for r in ratios]}")
    return {
        "running": running,
        "many_s": summary(took["many"]),
        "none_s": summary(took["none"]),
        "floor_s": summary(floor),
        "median_ratio": statistics.median(ratios),
        "ratio_of_medians": statistics.median(took["many"]) / statistics.median(took["none"]),
        "ratios": ratios,
        "phases_ms": phases,
    }


def _phases(daemon: Any, drops: list[tuple[str, float, float]]) -> dict[str, float]:
    """Medians, in ms, of where each drop's time went, from its start record (its arrival
    at the bench, monotonic, and the lane's duration, whole ms): the rename to the lane's
    start (the daemon's loop), the lane (tgtd spawned, loaded, set ready, checked), and the
    record to the initiator's listing."""
    loop, lane, after = [], [], []
    for name, renamed, listed in drops:
        record = daemon.wait_for_record(action="start", instance=name, timeout=30)
        duration = int(record.fields["TGTWATCH_DURATION_MS"]) / 1000
        loop.append(record.at - duration - renamed)
        lane.append(duration)
        after.append(listed - record.at)
    return {
        "rename_to_lane": statistics.median(loop) * 1000,
        "lane": statistics.median(lane) * 1000,
        "record_to_listed": statistics.median(after) * 1000,
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
    parser.add_argument(
        "--paired",
        action="store_true",
        help="the drop into --running and into none by two daemons up at once, rep by rep",
    )
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--skip-drop", action="store_true")
    args = parser.parse_args()
    install_signal_cleanup()
    others = args.running if args.others else 0
    POOL.reserve(max(others + 2 * args.reps, args.running + 3 * args.reps, args.burst))
    out: dict[str, Any] = {"lanes": LANES}
    try:
        if args.paired and not args.skip_drop:
            out["paired"] = paired_drops(args.running, args.reps)
        elif not args.skip_drop:
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
    if "paired" in out:
        p = out["paired"]
        print(
            f"drop -> listed, two daemons up at once, {len(p['ratios'])} reps: "
            f"{p['running']} running {ms(p['many_s'])}, none {ms(p['none_s'])}, "
            f"floor {ms(p['floor_s'])}; median of the reps' ratios {p['median_ratio']:.3f}, "
            f"ratio of the medians {p['ratio_of_medians']:.3f} (target <= 1.10)"
        )
        for kind, split in p["phases_ms"].items():
            print(f"  {kind}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in split.items()))
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
