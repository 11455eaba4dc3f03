#!/usr/bin/env python3
"""tgtd's threads and memory per target and per LUN: what TasksMax= and MemoryMax= of
tgtd@.service must hold. `.venv/bin/python bench/tgtd_footprint.py [--sizes 1,100,1000]`

For each size N and shape (one target with N LUNs; N targets with one LUN each), a real
tgtd is started inside a memory cgroup of its own (created under this process's memory
cgroup, v1 or v2), loaded over its control socket (sparse 1 MiB files, bstype rdwr, the
default), then measured: tasks (/proc/PID/status Threads), the cgroup's memory (user
memory, page tables, kernel stacks: what systemd's MemoryMax= counts too), VmRSS. Then
iscsi-perf reads LUN 1 (a 64 MiB sparse file) for 3 s: the page cache this fills is
charged to tgtd's cgroup as well. Ports 14000-14999.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
from common import POOL, log  # noqa: E402

from tgtwatch.tgt import ipc_ops as ops  # noqa: E402
from tgtwatch.tgt.ipc_client import IpcError, TgtdSocket  # noqa: E402

IQN = "iqn.2026-11.bench.tgtwatch:footprint"


# controller -> (cgroup v1 usage file, v1 limit file, v2 usage file, v2 limit file)
FILES = {
    "memory": ("memory.usage_in_bytes", "memory.limit_in_bytes", "memory.current", "memory.max"),
    "pids": ("pids.current", "pids.max", "pids.current", "pids.max"),
}


def cgroup_root(controller: str) -> tuple[Path, str, str] | None:
    """This process's cgroup directory for `controller`, its usage and its limit file."""
    usage_v1, limit_v1, usage_v2, limit_v2 = FILES[controller]
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup", controller, path.lstrip("/")), usage_v1, limit_v1
    unified = Path("/sys/fs/cgroup")
    if controller in (unified / "cgroup.controllers").read_text(errors="ignore").split():
        path = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
        return unified / path.lstrip("/"), usage_v2, limit_v2
    return None


@contextlib.contextmanager
def cgroup(
    controller: str = "memory", limit: str | None = None
) -> Iterator[tuple[Path, str] | None]:
    """A child cgroup of ours (with `limit` written to its limit file), removed after."""
    found = cgroup_root(controller)
    if found is None:
        yield None
        return
    base, usage, limit_file = found
    child = base / f"tgtwatch-footprint-{controller}-{os.getpid()}"
    child.mkdir()
    if limit is not None:
        (child / limit_file).write_text(limit)
    try:
        yield child, usage
    finally:
        for _ in range(50):
            try:
                child.rmdir()
                break
            except OSError:
                time.sleep(0.1)  # the tgtd that was in it is still being reaped


def spawn(port: int, group: tuple[Path, str] | None, log_path: Path) -> subprocess.Popen[bytes]:
    def enter() -> None:
        if group is not None:
            (group[0] / "cgroup.procs").write_text(str(os.getpid()))

    with log_path.open("ab") as out:
        return subprocess.Popen(
            [common.PROGS.tgtd, "-f", "--iscsi", f"portal=127.0.0.1:{port}", "-C", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=enter,  # noqa: PLW1509  (the bench's own child, before exec)
        )


def status(pid: int, key: str) -> int:
    return common.proc_status(pid, key)


def measure(n: int, shape: str, files: list[Path], workdir: Path) -> dict[str, Any]:
    (port,) = POOL.take(1)
    try:
        with cgroup() as group:
            proc = spawn(port, group, workdir / f"tgtd-{port}.log")
            client = TgtdSocket(port, 30)
            client.wait_answering(10, alive=lambda: proc.poll() is None)

            def usage() -> int:
                return int((group[0] / group[1]).read_text()) if group else 0

            base = {
                "tasks": status(proc.pid, "Threads"),
                "cgroup": usage(),
                "rss": status(proc.pid, "VmRSS"),
            }
            started = time.monotonic()
            if shape == "luns":
                client.call(ops.new_target(1, f"{IQN}-0"))
                for lun, path in enumerate(files[:n], start=1):
                    client.call(ops.new_lun(1, lun, str(path)))
                client.call(ops.bind_address(1, "ALL"))
            else:
                for tid, path in enumerate(files[:n], start=1):
                    client.call(ops.new_target(tid, f"{IQN}-{tid}"))
                    client.call(ops.new_lun(tid, 1, str(path)))
                    client.call(ops.bind_address(tid, "ALL"))
            load_s = time.monotonic() - started
            loaded = {
                "tasks": status(proc.pid, "Threads"),
                "cgroup": usage(),
                "rss": status(proc.pid, "VmRSS"),
            }
            # Page cache of a LUN read through tgtd counts in the unit's memory too.
            perf = subprocess.run(
                [
                    "iscsi-perf",
                    "-m",
                    "8",
                    "-b",
                    "64",
                    "-t",
                    "3",
                    f"iscsi://127.0.0.1:{port}/{IQN}-{'0' if shape == 'luns' else '1'}/1",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            after_io = usage()
            result = {
                "n": n,
                "shape": shape,
                "load_s": load_s,
                "base": base,
                "loaded": loaded,
                "after_read_cgroup": after_io,
                "read_ok": perf.returncode == 0,
                "cgroup": str(group[0]) if group else None,
            }
            common.stop_port(port)
            proc.wait(30)
            return result
    finally:
        common.stop_ports([port])
        POOL.give_back([port])


def at_the_limit(controller: str, limit: str, files: list[Path], workdir: Path) -> dict[str, Any]:
    """Add LUNs to a tgtd in a cgroup with `limit` until one is refused: does tgtd survive?"""
    (port,) = POOL.take(1)
    try:
        with cgroup(controller, limit) as group:
            if group is None:
                return {"controller": controller, "skipped": "no such cgroup controller"}
            proc = spawn(port, group, workdir / f"tgtd-limit-{port}.log")
            client = TgtdSocket(port, 30)
            client.wait_answering(10, alive=lambda: proc.poll() is None)
            client.call(ops.new_target(1, f"{IQN}-0"))
            refused_at, why = None, ""
            for lun, path in enumerate(files, start=1):
                try:
                    client.call(ops.new_lun(1, lun, str(path)))
                except IpcError as exc:
                    refused_at, why = lun, str(exc).rpartition(": ")[2]
                    break
            alive = proc.poll() is None
            answers = alive and client.answers()
            result = {
                "controller": controller,
                "limit": limit,
                "refused_lun": refused_at,
                "error": why,
                "tgtd_alive": alive,
                "tgtd_answers": answers,
                "exit": proc.poll(),
            }
            common.stop_port(port)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            return result
    finally:
        common.stop_ports([port])
        POOL.give_back([port])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,100,1000")
    parser.add_argument("--out", type=Path, default=HERE / "footprint.json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    POOL.reserve(2)
    workdir = Path(tempfile.mkdtemp(prefix="twbench-footprint.", dir="/var/tmp"))
    results: list[dict[str, Any]] = []
    try:
        files = [
            common.sparse(workdir / "img" / f"{i}.img", (64 if i == 0 else 1) << 20)
            for i in range(max(sizes))
        ]
        for n in sizes:
            for shape in ("luns", "targets"):
                what = "LUNs in one target" if shape == "luns" else "targets of one LUN"
                log(f"tgtd with {n} {what}")
                results.append(measure(n, shape, files, workdir))
        log("at the limits: pids.max 40 (room for 2 LUNs), memory 8 MiB")
        limits = [
            at_the_limit("pids", "40", files[1:20], workdir),
            at_the_limit("memory", str(8 << 20), files[1:40], workdir),
        ]
    finally:
        common.cleanup_all()
        shutil.rmtree(workdir, ignore_errors=True)
        POOL.release()
    head = ("shape", "N", "tasks", "cgroup MiB", "VmRSS MiB", "+read MiB", "load")
    print("{:<22} {:>5} {:>7} {:>11} {:>10} {:>10} {:>8}".format(*head))
    for r in results:
        label = "N LUNs, 1 target" if r["shape"] == "luns" else "N targets, 1 LUN each"
        print(
            f"{label:<22} {r['n']:>5} {r['loaded']['tasks']:>7} "
            f"{r['loaded']['cgroup'] / 2**20:>11.1f} {r['loaded']['rss'] / 1024:>10.1f} "
            f"{(r['after_read_cgroup'] - r['loaded']['cgroup']) / 2**20:>10.1f} "
            f"{r['load_s'] * 1000:>6.0f}ms"
        )
    base = results[0]["base"]
    print(
        f"idle tgtd: {base['tasks']} tasks, {base['cgroup'] / 2**20:.1f} MiB cgroup, "
        f"{base['rss'] / 1024:.1f} MiB VmRSS"
    )
    for r in limits:
        print(
            f"{r['controller']} limit {r.get('limit')}: LUN {r.get('refused_lun')} refused "
            f"({r.get('error')}); tgtd alive {r.get('tgtd_alive')}, answers {r.get('tgtd_answers')}"
            f", exit {r.get('exit')}" + (f" [{r['skipped']}]" if "skipped" in r else "")
        )
    body = {"machine": {"nproc": os.cpu_count()}, "results": results, "limits": limits}
    args.out.write_text(json.dumps(body, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
