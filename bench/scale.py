# ruff: noqa: B023
"""Scale: N instance files present when tgtwatch starts (time to READY=1, peak RSS) vs the
floor of starting the same tgtds by a script with the same parallelism (8 lanes); 200 files
dropped at once (time until every port answers) vs the same floor; and the idle cost of the
daemon with 100 instances and nothing changing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import (
    LANES,
    POOL,
    FloorTgtd,
    bench_world,
    cpu_times,
    ctxt_switches,
    instance_text,
    iqn,
    lists,
    log,
    proc_status,
    sparse,
    stop_ports,
    summary,
    wait_until,
)


def _write_files(world: Any, ports: list[int], prefix: str, staged: bool) -> list[tuple[str, int]]:
    """Instance files for every port; when `staged`, only written to staging (moved later)."""
    items = []
    for i, port in enumerate(ports):
        name = f"{prefix}{i:03d}"
        # a sparse file each: tgtwatch refuses a store another instance exports
        text = instance_text(name, port, [world.backing(f"{name}.img")])
        path = (world.staging_dir if staged else world.instances_dir) / f"{name}.conf"
        path.write_text(text)
        path.chmod(0o644)
        items.append((name, port))
    return items


def _floor_files(workdir: Path, ports: list[int], prefix: str) -> list[FloorTgtd]:
    (workdir / "conf").mkdir(parents=True, exist_ok=True)
    out = []
    for i, port in enumerate(ports):
        name = f"{prefix}{i:03d}"
        conf = workdir / "conf" / f"{name}.conf"
        conf.write_text(instance_text(name, port, [sparse(workdir / f"{name}.img")]))
        out.append(FloorTgtd(port, conf, workdir / f"tgtd-{port}.log"))
    return out


def _floor_start_all(tgtds: list[FloorTgtd]) -> None:
    with ThreadPoolExecutor(max_workers=LANES) as pool:
        list(pool.map(FloorTgtd.start, tgtds))


def _floor_teardown(tgtds: list[FloorTgtd]) -> None:
    stop_ports([t.port for t in tgtds])
    for t in tgtds:
        t.wait()


def tgtwatch_start(n: int, idle_s: float = 0.0) -> dict[str, Any]:
    with bench_world(f"scale{n}") as world:
        ports = POOL.take(n)
        world.add_ports(ports)
        _write_files(world, ports, "s", staged=False)
        daemon = world.start(wait_ready=False)
        ready = daemon.wait_for_notify("READY=1", timeout=900)
        result: dict[str, Any] = {
            "ready_s": ready.at - daemon.started_at,
            "hwm_kib": proc_status(daemon.pid, "VmHWM"),
            "rss_kib": proc_status(daemon.pid, "VmRSS"),
            "threads": proc_status(daemon.pid, "Threads"),
        }
        if ports:
            last = ports[-1]
            assert lists(last, iqn(f"s{n - 1:03d}")), "READY=1 but the last port does not list"
        if idle_s:
            time.sleep(2.0)  # let the lanes' threads finish and the loop settle
            cpu0, child0 = cpu_times(daemon.pid)
            vol0, inv0 = ctxt_switches(daemon.pid)
            t0 = time.monotonic()
            time.sleep(idle_s)
            elapsed = time.monotonic() - t0
            cpu1, child1 = cpu_times(daemon.pid)
            vol1, inv1 = ctxt_switches(daemon.pid)
            result["idle"] = {
                "seconds": elapsed,
                "cpu_s": cpu1 - cpu0,
                "children_cpu_s": child1 - child0,
                "core_fraction": (cpu1 - cpu0 + child1 - child0) / elapsed,
                "voluntary_ctxt": vol1 - vol0,
                "involuntary_ctxt": inv1 - inv0,
                "rss_kib": proc_status(daemon.pid, "VmRSS"),
            }
        daemon.terminate()
    return result


def floor_start(n: int) -> float:
    with bench_world(f"floor{n}") as world:
        ports = POOL.take(n)
        world.add_ports(ports)
        tgtds = _floor_files(world.root / "floor", ports, "f")
        t0 = time.monotonic()
        try:
            _floor_start_all(tgtds)
            took = time.monotonic() - t0
        finally:
            _floor_teardown(tgtds)
    return took


def drop_tgtwatch(n: int) -> float:
    with bench_world(f"drop{n}") as world:
        ports = POOL.take(n)
        world.add_ports(ports)
        world.start()
        items = _write_files(world, ports, "d", staged=True)
        t0 = time.monotonic()
        for name, _ in items:
            (world.staging_dir / f"{name}.conf").replace(world.conf(name))
        for name, port in items:
            wait_until(lambda: lists(port, iqn(name)), 600, f"{name} listed", interval=0.02)
        took = time.monotonic() - t0
        world.daemons[0].terminate()
    return took


def drop_floor(n: int) -> float:
    with bench_world(f"dropfloor{n}") as world:
        ports = POOL.take(n)
        world.add_ports(ports)
        tgtds = _floor_files(world.root / "floor", ports, "d")
        pool = ThreadPoolExecutor(max_workers=LANES)
        try:
            t0 = time.monotonic()
            futures = [pool.submit(FloorTgtd.start, t) for t in tgtds]
            for i, t in enumerate(tgtds):
                wait_until(
                    lambda: lists(t.port, iqn(f"d{i:03d}")), 600, "floor listed", interval=0.02
                )
            took = time.monotonic() - t0
            for f in futures:
                f.result()
        finally:
            pool.shutdown(wait=True)
            _floor_teardown(tgtds)
    return took


def run(
    sizes: list[int], reps: dict[int, int], drop_n: int, drop_reps: int, idle_s: float, idle_n: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": sizes, "lanes": LANES}
    base = [tgtwatch_start(0)["ready_s"] for _ in range(3)]
    out["empty_ready_s"] = summary(base)
    log(f"tgtwatch READY with 0 instances: {[round(b * 1000) for b in base]} ms")
    per: dict[str, Any] = {}
    idle: dict[str, Any] | None = None
    for n in sizes:
        tw: list[dict[str, Any]] = []
        fl: list[float] = []
        for rep in range(reps.get(n, 1)):
            order = ("tgtwatch", "floor") if rep % 2 == 0 else ("floor", "tgtwatch")
            for who in order:
                if who == "tgtwatch":
                    want_idle = idle_s if (n == idle_n and idle is None) else 0.0
                    got = tgtwatch_start(n, want_idle)
                    if "idle" in got:
                        idle = {"instances": n, **got.pop("idle")}
                        log(f"idle {n}: {idle}")
                    tw.append(got)
                else:
                    fl.append(floor_start(n))
            log(
                f"scale {n} rep {rep + 1}: tgtwatch READY {tw[-1]['ready_s']:.2f} s "
                f"(HWM {tw[-1]['hwm_kib'] / 1024:.1f} MiB), floor {fl[-1]:.2f} s"
            )
        per[str(n)] = {
            "tgtwatch_ready_s": summary([t["ready_s"] for t in tw]),
            "floor_s": summary(fl),
            "hwm_kib": summary([t["hwm_kib"] for t in tw]),
            "rss_kib": summary([t["rss_kib"] for t in tw]),
            "threads": summary([t["threads"] for t in tw]),
        }
    out["start"] = per
    out["idle"] = idle
    dtw: list[float] = []
    dfl: list[float] = []
    for rep in range(drop_reps):
        order = ("tgtwatch", "floor") if rep % 2 == 0 else ("floor", "tgtwatch")
        for who in order:
            (dtw if who == "tgtwatch" else dfl).append(
                drop_tgtwatch(drop_n) if who == "tgtwatch" else drop_floor(drop_n)
            )
        log(f"drop {drop_n} rep {rep + 1}: tgtwatch {dtw[-1]:.2f} s, floor {dfl[-1]:.2f} s")
    out["drop"] = {"n": drop_n, "tgtwatch_s": summary(dtw), "floor_s": summary(dfl)}
    return out
