#!/usr/bin/env python3
"""CPU of a new file's cycle at N running instances: this tree against another (by default
the commit this work started from), side by side, each tree `--rounds` times, alternating
(a shared host's CPU time moves by a third between runs: compare the rounds' medians).

`.venv/bin/python bench/new_file_cycle.py [--sizes 1 100 500] [--reps 30] [--rounds 6]
[--before REV]` (no root, no tgtd; ~1 min; writes bench/new_file_cycle.json).

Each tree runs the same harness in a process of its own (PYTHONPATH = that tree, its own
tests/unit fakes): the real Reconciler (inventory over real files in a temporary
instances_dir, the store checks, /proc looks and plan() as the daemon runs them) on the
unit tests' FakeBackend, N instance files applied and "running". Each rep writes one new
instance file and times `Reconciler.cycle(changed={that file}, watched=every pid)`, as the
daemon's loop runs it for the file's event: from reading the file to its Start handed to
a lane. CPU is time.thread_time() of the loop's thread (the lane that "starts" it is not
counted); the rep then waits, untimed, for the lane. Median [min-max], in ms.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trees

HERE = Path(__file__).resolve().parent


def child(sizes: list[int], reps: int) -> dict[str, Any]:
    """The harness, run with one tree first on sys.path (PYTHONPATH) and its fakes."""
    # Imported here, in the child: each tree's own code and fakes (its PYTHONPATH).
    from fakes import THREAD_TIMEOUT_S, Host  # noqa: PLC0415

    from tgtwatch.config.settings import DefaultInstanceSettings, Settings  # noqa: PLC0415

    results: dict[str, Any] = {}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            tgt_dir, instances = root / "etc/tgt", root / "etc/mytgt/conf.d"
            for d in (tgt_dir, instances):
                d.mkdir(parents=True)
            for d in (root, root / "etc", tgt_dir, instances, instances.parent):
                d.chmod(0o755)
            settings = Settings(
                tgt_dir=tgt_dir,
                instances_dir=instances,
                state_dir=root / "state",
                default_instance=DefaultInstanceSettings(manage=False),
                delete_grace_ms=0,
            )
            host = Host(settings)
            try:
                for i in range(n):
                    host.write(f"i{i:04d}", 20000 + i, {f"iqn.2026-01.x:i{i}": f"/srv/i{i}.img"})
                host.cycle()
                host.cycle()
                cpu: list[float] = []
                for rep in range(reps):
                    path = host.write(
                        f"n{rep:04d}", 30000 + rep, {f"iqn.2026-01.x:n{rep}": f"/srv/n{rep}.img"}
                    )
                    watched = {t.pid for t in host.backend.running.values()}
                    started = time.thread_time()
                    report = host.rec.cycle({path}, watched)
                    cpu.append((time.thread_time() - started) * 1000)
                    assert [a.kind.value for a in report.plan.actions] == ["start"], report
                    assert host.executor.wait(THREAD_TIMEOUT_S)
                    host.rec.save_state()
                results[str(n)] = {
                    "median": statistics.median(cpu),
                    "min": min(cpu),
                    "max": max(cpu),
                }
            finally:
                host.close()
    return results


def run_tree(tree: Path, sizes: list[int], reps: int) -> dict[str, Any]:
    args = ["--sizes", *map(str, sizes), "--reps", str(reps)]
    result: dict[str, Any] = trees.run_child(__file__, args, [tree, tree / "tests" / "unit"])
    return result


def main() -> int:
    parser = trees.parser(__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.sizes, args.reps)))
        return 0
    with trees.unpacked(args.before, ["tgtwatch", "tests/unit"]) as before:
        sides = {f"before ({args.before})": before, f"after ({trees.head()})": trees.REPO}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        for _ in range(args.rounds):  # alternating: the host's load moves between runs
            for name, tree in sides.items():
                runs[name].append(run_tree(tree, args.sizes, args.reps))
    print(
        f"a new file's cycle, ms of the loop thread's CPU: the median of {args.rounds} rounds' "
        f"medians of {args.reps} reps [the rounds' lowest and highest median]"
    )
    print("| running instances | " + " | ".join(runs) + " |")
    for n in args.sizes:
        cells = []
        for rounds in runs.values():
            medians = [one[str(n)]["median"] for one in rounds]
            cells.append(
                f"{statistics.median(medians):.2f} [{min(medians):.2f}-{max(medians):.2f}]"
            )
        print(f"| {n} | " + " | ".join(cells) + " |")
    trees.write_results("new_file_cycle.json", args.reps, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
