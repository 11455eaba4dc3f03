# ruff: noqa: B023
"""Isolation: iscsi-perf on instance A alone, then while 50 other instances are added,
reloaded and deleted in a loop — by tgtwatch (files renamed in/edited/deleted), and by
hand (the same tgtd/tgtadm/tgt-admin commands from a script, same 8 lanes) — interleaved.
Beside it, the single-process way: one tgtd holding A's target and the 50 others,
`tgt-admin --update ALL` per change, and one restart of that tgtd.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import (
    LANES,
    POOL,
    PROGS,
    FloorTgtd,
    _check,
    atomic_write,
    bench_world,
    instance_text,
    iqn,
    lists,
    log,
    scan_tgtd,
    sparse,
    stop_ports,
    summary,
    tgtadm_state,
    tgtd_pid,
    wait_until,
)

CHURN = 50
PERF_ARGS = ["-m", "4", "-b", "8"]
_PROGRESS = re.compile(r"iops current (\d+)")
_AVERAGE = re.compile(r"^iops average (\d+)", re.M)


class Perf:
    """iscsi-perf on one LUN for `seconds`, its output kept for parsing."""

    def __init__(self, url: str, seconds: int, log_path: Path, reconnects: int | None) -> None:
        self.log_path = log_path
        argv = [
            "stdbuf",
            "-o0",
            "iscsi-perf",
            "-i",
            "iqn.2026-11.bench.tgtwatch:perf",
            *PERF_ARGS,
            "-t",
            str(seconds),
        ]
        if reconnects is not None:
            argv += ["-x", str(reconnects)]
        self.started = time.monotonic()
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [*argv, url], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def wait(self, timeout: float) -> dict[str, Any]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        elapsed = time.monotonic() - self.started
        text = self.log_path.read_bytes().decode("utf-8", "replace").replace("\r", "\n")
        per_s = [int(x) for x in _PROGRESS.findall(text)]
        avg = _AVERAGE.search(text)
        lower = text.lower()
        errors = [
            ln.strip()
            for ln in text.splitlines()
            if ("error" in ln.lower() or "fail" in ln.lower()) and "iops" not in ln
        ]
        return {
            "exit": code,
            "elapsed_s": elapsed,
            "iops_avg": int(avg.group(1)) if avg else (sum(per_s) / len(per_s) if per_s else 0),
            "iops_per_s": per_s,
            "errors": len(errors),
            "error_lines": errors[:5],
            "reconnects": lower.count("reconnect"),
            # seconds without useful I/O: slow seconds, plus seconds with no report at all
            # (an initiator hung after a reconnect prints nothing until it is killed)
            "stall_s": sum(1 for x in per_s if x < 0.1 * max(per_s)) if per_s else 0,
            "missing_s": max(0, round(elapsed) - len(per_s) - 1),
            "hung": code not in (0,) and code is not None and code < 0,
        }


def _measure(
    url: str,
    seconds: int,
    workdir: Path,
    tag: str,
    churn: Callable[[threading.Event], int] | None,
    reconnects: int | None = 0,
) -> dict[str, Any]:
    stop = threading.Event()
    rounds: list[int] = []
    perf = Perf(url, seconds, workdir / f"perf-{tag}.log", reconnects)
    thread = None
    if churn is not None:
        thread = threading.Thread(target=lambda: rounds.append(churn(stop)), daemon=True)
        thread.start()
    got = perf.wait(seconds + 8)
    stop.set()
    if thread is not None:
        thread.join(300)
    got["churn_ops"] = rounds[0] if rounds else 0
    return got


# --------------------------------------------------------------------------- churners


class TgtwatchChurn:
    def __init__(self, world: Any, ports: list[int], round_s: float = 0.0) -> None:
        self.world = world
        self.ports = ports
        self.daemon = world.daemons[0]
        self.round_s = round_s  # a round (add, edit, delete all) takes at least this long
        self.starts = 0
        self.reloads = 0

    def __call__(self, stop: threading.Event) -> int:
        ops = 0
        w = self.world
        names = [f"c{i:02d}" for i in range(len(self.ports))]
        while not stop.is_set():
            began = time.monotonic()
            # two sparse files each: tgtwatch refuses a store another instance exports
            stores = {n: [w.backing(f"{n}-1.img"), w.backing(f"{n}-2.img")] for n in names}
            for name, port in zip(names, self.ports, strict=False):
                atomic_write(
                    w.conf(name), instance_text(name, port, stores[name][:1]), w.staging_dir
                )
            self.starts += len(names)
            self.daemon.wait_for_record(action="start", count=self.starts, timeout=300)
            for name, port in zip(names, self.ports, strict=False):
                atomic_write(
                    w.conf(name),
                    instance_text(name, port, stores[name]),
                    w.staging_dir,
                )
            self.reloads += len(names)
            self.daemon.wait_for_record(action="reload", count=self.reloads, timeout=300)
            for name in names:
                w.conf(name).unlink()
            wanted = set(self.ports)
            wait_until(
                lambda: not any(p.cmdline.control_port in wanted for p in scan_tgtd()),
                300,
                "churn instances stopped",
                interval=0.05,
            )
            ops += 3 * len(names)
            stop.wait(max(0.0, began + self.round_s - time.monotonic()))
        return ops


class HandChurn:
    def __init__(self, workdir: Path, ports: list[int]) -> None:
        self.workdir = workdir
        self.ports = ports
        (workdir / "conf").mkdir(parents=True, exist_ok=True)
        self.items = []
        self.stores: dict[str, list[Path]] = {}
        for i, port in enumerate(ports):
            name = f"h{i:02d}"
            conf = workdir / "conf" / f"{name}.conf"
            self.items.append((name, port, FloorTgtd(port, conf, workdir / f"t{port}.log")))
            self.stores[name] = [sparse(workdir / f"{name}-{n}.img") for n in (1, 2)]

    def __call__(self, stop: threading.Event) -> int:
        ops = 0
        stage = self.workdir / "staging"

        def add(item: tuple[str, int, FloorTgtd]) -> None:
            name, port, t = item
            atomic_write(t.conf, instance_text(name, port, self.stores[name][:1]), stage)
            t.start()

        def reload(item: tuple[str, int, FloorTgtd]) -> None:
            name, port, t = item
            atomic_write(t.conf, instance_text(name, port, self.stores[name]), stage)
            t.reload()

        def delete(item: tuple[str, int, FloorTgtd]) -> None:
            item[2].conf.unlink()
            item[2].stop()

        with ThreadPoolExecutor(max_workers=LANES) as pool:
            while not stop.is_set():
                for step in (add, reload, delete):
                    list(pool.map(step, self.items))
                ops += 3 * len(self.items)
        return ops


class SingleProcess:
    """One tgtd: A's target plus the 50 others in one config; a change = --update ALL."""

    def __init__(self, workdir: Path, port: int, a_backing: Path) -> None:
        self.workdir = workdir
        self.port = port
        self.conf = workdir / "all.conf"
        self.a_backing = a_backing
        self.b1, self.b2 = sparse(workdir / "s1.img"), sparse(workdir / "s2.img")
        self.present: dict[int, int] = {}  # other target index -> LUN count
        self.tgtd = FloorTgtd(port, self.conf, workdir / "single.log")
        self._write()

    def _write(self) -> None:
        parts = [
            f"<target {iqn('a')}>\n    backing-store {self.a_backing}\n"
            "    initiator-address ALL\n</target>\n"
        ]
        for i, luns in sorted(self.present.items()):
            stores = [self.b1, self.b2][:luns]
            parts.append(
                f"<target {iqn(f'o{i:02d}')}>\n"
                + "".join(f"    backing-store {s}\n" for s in stores)
                + "    initiator-address ALL\n</target>\n"
            )
        atomic_write(self.conf, "".join(parts), self.workdir / "staging")

    def change(self) -> None:
        self._write()
        _check([PROGS.tgt_admin, "-C", str(self.port), "--update", "ALL", "-c", str(self.conf)])

    def churn(self, stop: threading.Event) -> int:
        ops = 0
        while not stop.is_set():
            for luns in (1, 2, 0):
                for i in range(CHURN):
                    if stop.is_set():
                        return ops
                    if luns:
                        self.present[i] = luns
                    else:
                        self.present.pop(i, None)
                    self.change()
                    ops += 1
        return ops

    def restart(self, after_s: float) -> Callable[[threading.Event], int]:
        def go(stop: threading.Event) -> int:
            if stop.wait(after_s):
                return 0
            # a change that needs a restart: the sessions go with it (-f), then start again
            tgtadm_state(self.port, "offline")
            _check(
                [PROGS.tgt_admin, "-C", str(self.port), "-f", "--update", "ALL", "-c", "/dev/null"]
            )
            _check([PROGS.tgtadm, "-C", str(self.port), "--op", "delete", "--mode", "system"])
            self.tgtd.wait()
            self.tgtd.start()
            return 1

        return go


# --------------------------------------------------------------------------- the run


def run(seconds: int, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seconds": seconds,
        "reps": reps,
        "churn_instances": CHURN,
        "perf_args": PERF_ARGS,
    }
    phases: dict[str, list[dict[str, Any]]] = {"alone": [], "tgtwatch_churn": [], "hand_churn": []}
    with bench_world("iso") as world:
        a_port = world.reserve_port()
        tw_ports = POOL.take(CHURN)
        hand_ports = POOL.take(CHURN)
        world.add_ports(tw_ports + hand_ports)
        world.start()
        a_back = world.backing("A.img", size=64 << 20)
        atomic_write(world.conf("a"), instance_text("a", a_port, [a_back]), world.staging_dir)
        wait_until(lambda: lists(a_port, iqn("a")), 30, "A listed")
        a_pid = tgtd_pid(a_port)
        url = f"iscsi://127.0.0.1:{a_port}/{iqn('a')}/1"
        twc = TgtwatchChurn(world, tw_ports)
        hc = HandChurn(world.root / "hand", hand_ports)
        for rep in range(reps):
            order = ["alone", "tgtwatch_churn", "hand_churn"]
            if rep % 2:
                order = ["hand_churn", "tgtwatch_churn", "alone"]
            for phase in order:
                churn = {"alone": None, "tgtwatch_churn": twc, "hand_churn": hc}[phase]
                got = _measure(url, seconds, world.root, f"{phase}{rep}", churn)
                got["a_pid_unchanged"] = tgtd_pid(a_port) == a_pid
                phases[phase].append(got)
                log(
                    f"isolation rep {rep + 1} {phase}: {got['iops_avg']:.0f} IOPS, exit "
                    f"{got['exit']}, errors {got['errors']}, reconnects {got['reconnects']}, "
                    f"ops {got['churn_ops']}, A pid same {got['a_pid_unchanged']}"
                )
        # single-process way on its own port
        s_port = world.reserve_port()
        # its own backing file: tgt-admin skips a device another tgtd (A's) has open
        s_back = world.backing("S.img", size=64 << 20)
        sp = SingleProcess(world.root / "single", s_port, s_back)
        sp.tgtd.start()
        try:
            s_url = f"iscsi://127.0.0.1:{s_port}/{iqn('a')}/1"
            single = {
                "alone": _measure(s_url, seconds, world.root, "s-alone", None),
                "update_all_churn": _measure(s_url, seconds, world.root, "s-churn", sp.churn),
                "restart": _measure(
                    s_url,
                    seconds,
                    world.root,
                    "s-restart",
                    sp.restart(seconds / 3),
                    reconnects=None,
                ),
            }
            for k, v in single.items():
                log(
                    f"single-process {k}: {v['iops_avg']:.0f} IOPS, exit {v['exit']}, errors "
                    f"{v['errors']}, reconnects {v['reconnects']}, stall {v['stall_s']} s, "
                    f"ops {v['churn_ops']}"
                )
        finally:
            stop_ports([s_port])
            sp.tgtd.wait()
    for phase, runs in phases.items():
        out[phase] = {
            "iops": summary([r["iops_avg"] for r in runs]),
            "errors": sum(r["errors"] for r in runs),
            "reconnects": sum(r["reconnects"] for r in runs),
            "nonzero_exits": sum(1 for r in runs if r["exit"] != 0),
            "a_pid_unchanged": all(r["a_pid_unchanged"] for r in runs),
            "churn_ops_per_s": summary([r["churn_ops"] / r["elapsed_s"] for r in runs]),
            "runs": runs,
        }
    # per-rep ratio tgtwatch churn / hand churn (same rep: nearest in time)
    out["ratio_per_rep"] = [
        t["iops_avg"] / h["iops_avg"] if h["iops_avg"] else None
        for t, h in zip(phases["tgtwatch_churn"], phases["hand_churn"], strict=False)
    ]
    out["single"] = single
    return out
