#!/usr/bin/env python3
"""CPU of a whole daemon cycle for one file rewritten with the same content, at N running
instances (real tgtds); and of its inventory step alone, incremental vs full rescan.

`sudo .venv/bin/python bench/incremental.py [--sizes 1 100 500] [--reps 30] [--profile]`

Whole cycle: the daemon's own parts, wired as `tgtwatch run` wires them (direct backend,
the inotify watcher, the select() waiter, the reconciler, status.json), in this process.
N files are written and their N tgtds started by the daemon's first cycle; once every
instance is applied and a cycle plans nothing, each rep rewrites one file with the same
content (open, write, close: one close-after-write event) and times one `Daemon.iterate()`:
the wait wakes on the watcher's trigger, then the handling of that wake (leading edge:
the cycle runs at once) — inventory, observe, plan, the lanes' hand-off, and the refresh
after it (status line, the pids watched, status.json). CPU is time.process_time() of the
whole process (the watcher's thread included) around that one call.

New file: then each rep renames a new instance file in and times the loop's thread
(`time.thread_time`) from the wake until its start is handed to a lane; the tgtd it
starts is not counted (another thread), and the rep waits for it, untimed.

Inventory alone (no tgtd), interleaved A/B: `scan(..., cache, changed={that file})` as a
cycle for that event does, vs `scan(..., changed=None)` as the start, a resync or an
overflow does. Median [min-max] of the reps, in ms.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import POOL, bench_world, cleanup_all, install_signal_cleanup, instance_text, log

from tgtwatch.cli.wiring import make_reconciler
from tgtwatch.config.incremental import InstanceCache
from tgtwatch.config.inventory import scan
from tgtwatch.config.settings import DefaultInstanceSettings, Settings, load
from tgtwatch.config.trust import TrustPolicy
from tgtwatch.daemon.loop import Daemon
from tgtwatch.daemon.wakeup import SelectWaiter
from tgtwatch.daemon.watch import make_watcher
from tgtwatch.model.structs import Applied
from tgtwatch.telemetry.notify import SystemdNotifier

BASE_PORT = 20000  # inventory alone: never listened on, nothing runs there
SETTLE_S = 600.0


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def cpu_ms(call: Any) -> float:
    t0 = time.process_time()
    call()
    return (time.process_time() - t0) * 1000


# ---- the inventory alone --------------------------------------------------------------------


def _tree(root: Path, n: int) -> Settings:
    instances, backing, tgt = root / "conf.d", root / "backing", root / "tgt"
    for d in (instances, backing, tgt):
        d.mkdir(parents=True)
    for d in (root, instances, backing, tgt):
        d.chmod(0o755)
    for i in range(n):
        store = backing / f"i{i}.img"
        with store.open("wb") as f:
            f.truncate(1 << 20)
        (instances / f"i{i}.conf").write_text(instance_text(f"i{i}", BASE_PORT + i, [store]))
        (instances / f"i{i}.conf").chmod(0o644)
    return Settings(
        tgt_dir=tgt,
        instances_dir=instances,
        state_dir=root / "state",
        default_instance=DefaultInstanceSettings(manage=False),
        backing_store_roots=(backing,),
    )


def inventory(n: int, reps: int) -> dict[str, dict[str, float]]:
    policy = TrustPolicy()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        settings = _tree(root / "t", n)
        cache = InstanceCache()
        applied = Applied()  # one object, as a daemon's cycles see it while nothing is applied
        first = scan(settings, applied, policy, cache=cache)
        assert len(first.instances) == n and not first.problems, first.problems
        incremental: list[float] = []
        full: list[float] = []
        for rep in range(reps):
            path = settings.instances_dir / f"i{rep % n}.conf"
            path.write_text(path.read_text())
            runs = [
                ("inc", lambda p=path: scan(settings, applied, policy, cache=cache, changed={p})),
                ("full", lambda: scan(settings, applied, policy)),
            ]
            if rep % 2:
                runs.reverse()  # interleaved A/B: the order alternates every rep
            for kind, call in runs:
                (incremental if kind == "inc" else full).append(cpu_ms(call))
    return {"incremental": summary(incremental), "full": summary(full)}


# ---- the whole cycle, N real tgtds -----------------------------------------------------------


def _settled(daemon: Daemon, n: int) -> bool:
    """Every instance applied, no lane busy, and a cycle now plans nothing."""
    rec = daemon.reconciler
    if rec.executor.busy() or len(rec.applied.entries) != n:
        return False
    daemon.cycle(None)
    last = daemon.state.last
    return last is not None and not last.plan.actions and not rec.executor.busy()


def whole_cycle(n: int, reps: int, profile: bool) -> dict[str, Any]:
    with bench_world(f"cycle{n}") as world:
        ports = POOL.take(n)
        world.add_ports(ports)
        for i, port in enumerate(ports):
            name = f"c{i:03d}"
            path = world.instances_dir / f"{name}.conf"
            path.write_text(instance_text(name, port, [world.backing(f"{name}.img")]))
            path.chmod(0o644)
        settings = load(world.settings_path, required=True)
        out = (world.root / "daemon.log").open("w")
        waiter = SelectWaiter((signal.SIGTERM, signal.SIGINT))
        reconciler = make_reconciler(settings, env={}, stderr=out)
        reconciler.on_lane_done = waiter.lane_done

        daemon = Daemon(
            settings,
            reconciler,
            make_watcher(settings.watcher.value, waiter.triggers),
            waiter,
            SystemdNotifier.from_env({}),
            reload_settings=lambda: load(world.settings_path, required=True),
            reap=reconciler.backend.reap,  # type: ignore[attr-defined]
            observe_light=lambda: reconciler.observe_now(daemon.state.watched.keys()),
            watchdog_interval_s=None,
            log=out,
        )
        try:
            daemon.watcher.start(daemon.watch_paths(None))
            t0 = time.monotonic()
            daemon.cycle()
            while not _settled(daemon, n):
                if time.monotonic() - t0 > SETTLE_S:
                    raise RuntimeError(f"{n} instances not applied in {SETTLE_S:.0f} s")
                daemon.waiter.wait(1.0)  # a lane's end (or a second) wakes this
            log(f"{n} instances running after {time.monotonic() - t0:.1f} s")
            files = sorted(world.instances_dir.glob("*.conf"))
            cpu: list[float] = []
            iterations = 0
            profiler = cProfile.Profile() if profile else None
            for rep in range(reps):
                path = files[rep % len(files)] if files else world.instances_dir / "none.conf"
                # Untimed: one event alone, as the target says, is not coalesced with the
                # last rep's cycle (an event within debounce_ms of a cycle waits for quiet).
                time.sleep(settings.debounce_ms / 1000)
                before = daemon.state.cycle_timestamp
                path.write_bytes(path.read_bytes())  # same content: one close-after-write
                if profiler is not None:
                    profiler.enable()
                spent = 0.0
                wakes = 0
                # The iterations until the cycle for this event ran (one, by the leading
                # edge; a second if a stray wake came first).
                while daemon.state.cycle_timestamp == before:
                    spent += cpu_ms(daemon.iterate)
                    wakes += 1
                if profiler is not None:
                    profiler.disable()
                cpu.append(spent)
                iterations += wakes
                last = daemon.state.last
                assert last is not None and not last.plan.actions, "a no-op cycle acted"
            result: dict[str, Any] = {"cpu_ms": summary(cpu), "wakes": iterations, "reps": reps}
            result["new_file_cpu_ms"] = summary(new_file_cycles(daemon, world, settings, reps))
            if profiler is not None:
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
                result["profile"] = text.getvalue()
            return result
        finally:
            daemon.shutdown()
            out.close()


def new_file_cycles(daemon: Daemon, world: Any, settings: Settings, reps: int) -> list[float]:
    """CPU of the loop's thread (`time.thread_time`: the lane that starts the tgtd is not
    counted) for the cycle of one new instance file renamed in: from the wake to the start
    handed to its lane. Each rep waits, untimed, until that start has ended."""
    ports = POOL.take(reps)
    world.add_ports(ports)
    spent: list[float] = []
    for rep, port in enumerate(ports):
        name = f"new{rep:03d}"
        staged = world.root / f"{name}.conf"
        staged.write_text(instance_text(name, port, [world.backing(f"{name}.img")]))
        staged.chmod(0o644)
        time.sleep(settings.debounce_ms / 1000)  # untimed: the event comes alone
        before = daemon.state.cycle_timestamp
        staged.replace(world.instances_dir / f"{name}.conf")
        cpu = 0.0
        while daemon.state.cycle_timestamp == before:
            t0 = time.thread_time()
            daemon.iterate()
            cpu += (time.thread_time() - t0) * 1000
        spent.append(cpu)
        deadline = time.monotonic() + SETTLE_S
        while port not in daemon.reconciler.applied.entries or daemon.reconciler.executor.busy():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not applied in {SETTLE_S:.0f} s")
            daemon.iterate()
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 500])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--profile", action="store_true", help="cProfile the largest size")
    parser.add_argument("--no-inventory", action="store_true", help="the whole cycle only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (it starts tgtds)", file=sys.stderr)
        return 2
    install_signal_cleanup()
    POOL.reserve(max(args.sizes) + args.reps)
    results: dict[str, Any] = {}
    try:
        for n in args.sizes:
            profile = args.profile and n == max(args.sizes)
            results[str(n)] = {"cycle": whole_cycle(n, args.reps, profile)}
            if not args.no_inventory:
                results[str(n)].update(inventory(max(n, 1), args.reps))
    finally:
        cleanup_all()
    print(
        f"{'instances':>9}  {'whole cycle ms CPU':>22}  {'inventory inc.':>20}  {'full rescan':>20}"
    )
    for n, r in results.items():
        c = r["cycle"]["cpu_ms"]
        line = f"{n:>9}  {c['median']:7.2f} [{c['min']:.2f}-{c['max']:.2f}]"
        if "incremental" in r:
            inc, full = r["incremental"], r["full"]
            line += f"  {inc['median']:8.2f} [{inc['min']:.2f}-{inc['max']:.2f}]"
            line += f"  {full['median']:8.2f} [{full['min']:.2f}-{full['max']:.2f}]"
        new = r["cycle"]["new_file_cpu_ms"]
        line += f"  new file: {new['median']:.2f} [{new['min']:.2f}-{new['max']:.2f}]"
        print(line + f"  ({r['cycle']['wakes']} wakes for {r['cycle']['reps']} cycles)")
        if "profile" in r["cycle"]:
            print(r["cycle"].pop("profile"))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
