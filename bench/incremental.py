#!/usr/bin/env python3
"""CPU of a cycle's inventory for one file rewritten with the same content, at N instances.

`sudo .venv/bin/python bench/incremental.py [--sizes 1 100 500] [--reps 50]`

In-process, no tgtd: the inventory is the part of a cycle whose cost grew with the number
of instances (every file re-read, re-hashed, re-parsed and its stores checked). Side by
side, interleaved in one run, each rep: one file is rewritten with the same content (open,
write, close: what its close-after-write event names), then
- incremental: scan(..., cache, changed={that file})  (what a cycle for that event does now)
- full:        scan(..., changed=None)                 (what every cycle did before, and a
                                                         resync or overflow does now)
CPU is time.process_time() around the one call; median [min-max] of the reps, in ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tgtwatch.config.incremental import InstanceCache
from tgtwatch.config.inventory import scan
from tgtwatch.config.settings import DefaultInstanceSettings, Settings
from tgtwatch.config.trust import TrustPolicy
from tgtwatch.model.structs import Applied

BASE_PORT = 20000  # never listened on: nothing runs here


def text(name: str, port: int, store: Path) -> str:
    return (
        f'SOCKET_OPTS="{port}"\nPORTAL_OPTS="127.0.0.1:{port}"\n\n'
        f"<target iqn.2026-12.bench.tgtwatch:{name}-disk1>\n"
        f"    backing-store {store}\n    initiator-address ALL\n</target>\n"
    )


def tree(root: Path, n: int) -> Settings:
    instances, backing, tgt = root / "conf.d", root / "backing", root / "tgt"
    for d in (instances, backing, tgt):
        d.mkdir(parents=True)
    for d in (root, instances, backing, tgt):
        d.chmod(0o755)
    for i in range(n):
        store = backing / f"i{i}.img"
        with store.open("wb") as f:
            f.truncate(1 << 20)
        (instances / f"i{i}.conf").write_text(text(f"i{i}", BASE_PORT + i, store))
        (instances / f"i{i}.conf").chmod(0o644)
    return Settings(
        tgt_dir=tgt,
        instances_dir=instances,
        state_dir=root / "state",
        default_instance=DefaultInstanceSettings(manage=False),
        backing_store_roots=(backing,),
    )


def cpu_ms(call: object) -> float:
    assert callable(call)
    t0 = time.process_time()
    call()
    return (time.process_time() - t0) * 1000


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(n: int, reps: int) -> dict[str, dict[str, float]]:
    policy = TrustPolicy()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        settings = tree(root / "t", n)
        cache = InstanceCache()
        first = scan(settings, Applied(), policy, cache=cache)
        assert len(first.instances) == n and not first.problems, first.problems
        incremental: list[float] = []
        full: list[float] = []
        for rep in range(reps):
            path = settings.instances_dir / f"i{rep % n}.conf"
            path.write_text(path.read_text())  # same content, a close-after-write
            runs = [
                ("inc", lambda p=path: scan(settings, Applied(), policy, cache=cache, changed={p})),
                ("full", lambda: scan(settings, Applied(), policy)),
            ]
            if rep % 2:
                runs.reverse()  # interleaved A/B: the order alternates every rep
            for kind, call in runs:
                (incremental if kind == "inc" else full).append(cpu_ms(call))
        last = scan(settings, Applied(), policy, cache=cache, changed=set())
        assert last.instances == first.instances  # the cache gives what a full read gives
    return {"incremental": summary(incremental), "full": summary(full)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 500])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = {n: measure(n, args.reps) for n in args.sizes}
    print(f"{'instances':>9}  {'incremental ms CPU':>22}  {'full rescan ms CPU':>22}")
    for n, r in results.items():
        inc, full = r["incremental"], r["full"]
        print(
            f"{n:>9}  {inc['median']:7.2f} [{inc['min']:.2f}-{inc['max']:.2f}]"
            f"  {full['median']:9.2f} [{full['min']:.2f}-{full['max']:.2f}]"
        )
    if args.out is not None:
        args.out.write_text(json.dumps({str(n): r for n, r in results.items()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
