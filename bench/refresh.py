#!/usr/bin/env python3
"""CPU of the daemon loop's refresh after a new start's lane ends, at N running instances:
this tree against another (by default the commit this work started from), side by side.

`.venv/bin/python bench/refresh.py [--sizes 1 100 500] [--reps 30] [--before REV]`
(no root, no tgtd; ~1 min; writes bench/refresh.json).

Each tree runs the same harness in a process of its own (PYTHONPATH = that tree): the
real `Daemon.refresh` (state file through the real StateWriter with its fsync, statuses,
STATUS= line, the pids watched, status.json) over synthetic state: N specs, N applied
entries and N inspected tgtds, one target each. Its Reconciler is a stand-in holding the
real StateWriter; the pids are N real child processes (`sleep`), held as the direct
backend holds its tgtds, reaped as `tgtwatch run` wires each tree. Each rep
is one drop: untimed, the new file's cycle (its spec in `desired`, a Start planned); then
timed, its lane's end: one more applied entry, one more tgtd seen, `refresh()` once.
CPU is time.process_time() of the process around that call. Median [min-max], in ms.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trees

from tgtwatch.backends.direct import DirectBackend
from tgtwatch.config.settings import Settings
from tgtwatch.daemon.looks import managed_pids
from tgtwatch.daemon.loop import Daemon
from tgtwatch.daemon.outcomes import CycleReport
from tgtwatch.daemon.state import StateFile, StateWriter
from tgtwatch.model.structs import (
    Applied,
    AppliedEntry,
    Desired,
    InstanceKind,
    InstanceSpec,
    Observed,
    ObservedInstance,
    ObservedTarget,
    Plan,
    Start,
    TargetSpec,
)

HERE = Path(__file__).resolve().parent
BASE_PORT = 20000


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def spec(port: int) -> InstanceSpec:
    target = TargetSpec(f"iqn.2026-01.com.example:t{port}", 1, digest=f"{port:064x}")
    return InstanceSpec(
        name=f"i{port}",
        kind=InstanceKind.DROPIN,
        port=port,
        portal=f"0.0.0.0:{port}",
        control_port=port,
        config=Path(f"/etc/mytgt/conf.d/i{port}.conf"),
        sha256=f"{port:064x}",
        targets=(target,),
    )


def entry(s: InstanceSpec) -> AppliedEntry:
    targets = tuple((t.name, t.digest) for t in s.targets)
    return AppliedEntry(s.name, s.port, s.config, s.sha256, time.time(), targets=targets)


def running(s: InstanceSpec, pid: int) -> ObservedInstance:
    targets = tuple(ObservedTarget(1, t.name, t.luns, 0) for t in s.targets)
    return ObservedInstance(s.port, s.port, pid, "ready", targets, inspected=True)


class Idle:
    def busy(self) -> frozenset[int]:
        return frozenset()


class NoChecks:
    def wrong(self) -> dict[int, str]:
        return {}


class Rec:
    """What Daemon.refresh reads of the Reconciler, around the real StateWriter."""

    def __init__(self, state_dir: Path) -> None:
        self.applied = Applied()
        self.writer = StateWriter(StateFile(state_dir))
        self.state = self.writer.file
        self.executor, self.checker = Idle(), NoChecks()
        self.save_error: str | None = None

    def failures(self) -> dict[int, str]:
        return self.checker.wrong() | {}

    def save_state(self) -> None:
        if self.writer.take():
            self.save_error = self.writer.write(self.applied, self.failures())

    def take_reports(self) -> list[Any]:
        return []


class Waiter:
    def watch_pids(self, pids: Any) -> None:
        pass


class Quiet:
    def send(self, message: str) -> None:
        pass


def child(sizes: list[int], reps: int) -> dict[str, Any]:
    """The harness, run with one tree's tgtwatch first on sys.path (PYTHONPATH)."""
    return {str(n): measure(n, reps) for n in sizes}


def measure(n: int, reps: int) -> dict[str, float]:
    # state_dir on a tmpfs, as /run/tgtwatch is.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="tgtwatch-refresh-", dir=shm) as tmp:
        backend = DirectBackend(Path(tmp) / "log")
        procs = [subprocess.Popen(["sleep", "600"]) for _ in range(n + reps)]
        try:
            settings = Settings(state_dir=Path(tmp) / "state")
            rec = Rec(settings.state_dir)

            def pids_of(observed: Observed, desired: Desired) -> list[int]:
                backend.reap()
                return managed_pids(observed, desired, set(rec.applied.entries))

            # As `tgtwatch run` wires each tree: the pids found by its pids_of (which
            # reaps), or by the daemon itself, which calls its reap.
            params = inspect.signature(Daemon).parameters
            wiring = {"pids_of": pids_of} if "pids_of" in params else {"reap": backend.reap}
            daemon = Daemon(
                settings,
                rec,  # type: ignore[arg-type]
                None,  # type: ignore[arg-type]
                Waiter(),  # type: ignore[arg-type]
                Quiet(),
                reload_settings=lambda: settings,
                **wiring,  # type: ignore[arg-type]
                observe_light=Observed,
                watchdog_interval_s=None,
                log=io.StringIO(),
            )
            specs = {BASE_PORT + i: spec(BASE_PORT + i) for i in range(n)}
            children = dict(zip(specs, procs, strict=False))
            for proc in children.values():
                backend._children[proc.pid] = proc  # as its start holds a tgtd
            rec.applied = Applied({p: entry(s) for p, s in specs.items()})
            rec.writer.mark()
            seen = {p: running(s, children[p].pid) for p, s in specs.items()}
            observed = Observed(dict(seen))
            daemon.state.last = CycleReport(Desired(dict(specs)), observed, Plan())
            daemon.refresh(observed)  # the state as it is before the drops
            cpu: list[float] = []
            for rep in range(reps):
                port = BASE_PORT + n + rep
                new, proc = spec(port), procs[n + rep]
                backend._children[proc.pid] = proc
                specs[port] = new
                report = CycleReport(Desired(dict(specs)), observed, Plan((Start(new),)))
                daemon.state.last = report  # the new file's cycle (its refresh held)
                rec.applied = Applied({**rec.applied.entries, port: entry(new)})
                rec.writer.mark()
                seen[port] = running(new, proc.pid)
                observed = Observed(dict(seen))
                started = time.process_time()
                daemon.refresh(observed)  # the lane's end
                cpu.append((time.process_time() - started) * 1000)
            return summary(cpu)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


def run_tree(tree: Path, sizes: list[int], reps: int) -> dict[str, Any]:
    args = ["--sizes", *map(str, sizes), "--reps", str(reps)]
    result: dict[str, Any] = trees.run_child(__file__, args, [tree])
    return result


def main() -> int:
    parser = trees.parser(__doc__)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.sizes, args.reps)))
        return 0
    with trees.unpacked(args.before, ["tgtwatch"]) as before:
        runs = {
            f"before ({args.before})": run_tree(before, args.sizes, args.reps),
            f"after ({trees.head()})": run_tree(trees.REPO, args.sizes, args.reps),
        }
    print(f"refresh after a lane's end, ms of CPU, median [min-max] of {args.reps} reps")
    print("| running instances | " + " | ".join(runs) + " |")
    for n in args.sizes:
        cells = [
            "{median:.2f} [{min:.2f}-{max:.2f}]".format(**run[str(n)]) for run in runs.values()
        ]
        print(f"| {n} | " + " | ".join(cells) + " |")
    trees.write_results("refresh.json", args.reps, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
