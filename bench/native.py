"""The native engine against its floors, side by side in one run (as root, after setup):

    .venv/bin/python bench/native.py [--quick]

1. start one instance with one target, until iscsi-ls lists it: the direct backend's
   start with engine native, with engine tgt-admin, and the bare-tgtadm floor (spawn
   tgtd, poll its socket, offline, new target, new LUN, bind ALL, ready), interleaved;
2. reload adding one LUN to one target of a 200-target instance whose other target has a
   logged-in initiator: from the reload's start until iscsi-inq answers on the new LUN,
   native vs tgt-admin --update ALL; the other targets' tids and the session are checked;
3. 500 instance files present when `tgtwatch run` starts: seconds to READY=1 and peak RSS,
   engine native and engine tgt-admin (one run each; --quick: 100 files).
Prints one table; writes bench/native.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import (
    POOL,
    PROGS,
    REPO,
    bench_world,
    cleanup_all,
    inquiry,
    install_signal_cleanup,
    lists,
    log,
    proc_status,
    socket_answers,
    sparse,
    stop_port,
    summary,
    tgtadm_state,
    wait_until,
)
from instances import Initiators

from tgtwatch.backends.direct import DirectBackend
from tgtwatch.config.inventory import instance_from
from tgtwatch.config.settings import EngineKind
from tgtwatch.config.tgtconf import parse
from tgtwatch.config.trust import TrustedFiles, TrustPolicy
from tgtwatch.model.structs import InstanceSpec

IQN = "iqn.2026-12.bench.tgtwatch.native"


def spec_of(conf: Path) -> InstanceSpec:
    spec, problems = instance_from(conf, parse(conf, TrustedFiles(conf.parent, TrustPolicy())))
    assert spec is not None, problems
    return spec


def instance_file(workdir: Path, name: str, port: int, targets: dict[str, list[Path]]) -> Path:
    lines = [f'SOCKET_OPTS="{port}"', f'PORTAL_OPTS="127.0.0.1:{port}"']
    for target, stores in targets.items():
        lines.append(f"<target {target}>")
        lines += [f"    backing-store {s}" for s in stores]
        lines.append("</target>")
    conf = workdir / f"{name}.conf"
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o644)
    return conf


def tgtadm(port: int, *args: str) -> None:
    subprocess.run([PROGS.tgtadm, "-C", str(port), *args], check=True, capture_output=True)


# --- 1. provisioning ------------------------------------------------------------------------


def bare_floor(port: int, store: Path, target: str, log_path: Path) -> float:
    started = time.monotonic()
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [PROGS.tgtd, "-f", "--iscsi", f"portal=127.0.0.1:{port}", "-C", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    wait_until(lambda: socket_answers(port), 10, "tgtd socket", interval=0.002)
    tgtadm_state(port, "offline")
    tgtadm(port, "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "1", "-T", target)
    tgtadm(
        port,
        "--lld",
        "iscsi",
        "--op",
        "new",
        "--mode",
        "logicalunit",
        "--tid",
        "1",
        "--lun",
        "1",
        "-b",
        str(store),
    )
    tgtadm(port, "--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
    tgtadm_state(port, "ready")
    wait_until(lambda: lists(port, target), 10, "the target listed", interval=0.002)
    took = time.monotonic() - started
    stop_port(port)
    proc.wait(10)
    return took


def backend_start(engine: EngineKind, workdir: Path, port: int, store: Path, target: str) -> float:
    conf = instance_file(workdir, f"p{port}", port, {target: [store]})
    spec = spec_of(conf)
    backend = DirectBackend(workdir / "state" / "log", engine=engine)
    started = time.monotonic()
    outcome = backend.start(spec, threading.Event())
    assert outcome.result.value == "ok", outcome
    wait_until(lambda: lists(port, target), 10, "the target listed", interval=0.002)
    took = time.monotonic() - started
    stop_port(port)
    backend.reap()
    return took


def provisioning(runs: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="twnative.", dir="/var/tmp"))
    store = sparse(workdir / "disk.img")
    times: dict[str, list[float]] = {"bare tgtadm": [], "native": [], "tgt-admin": []}
    (port,) = POOL.take(1)
    try:
        for run in range(runs + 1):
            order = list(times) if run % 2 else list(reversed(times))
            for way in order:
                target = f"{IQN}:p{run}"
                if way == "bare tgtadm":
                    took = bare_floor(port, store, target, workdir / "floor.log")
                else:
                    engine = EngineKind.NATIVE if way == "native" else EngineKind.TGT_ADMIN
                    took = backend_start(engine, workdir, port, store, target)
                if run:  # the first round warms up
                    times[way].append(took)
    finally:
        stop_port(port)
        POOL.give_back([port])
    return {way: summary(t) for way, t in times.items()}


# --- 2. one LUN added to a 200-target instance -------------------------------------------------


def big_reload(engine: EngineKind, targets: int, runs: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="twnative-big.", dir="/var/tmp"))
    (port,) = POOL.take(1)
    names = [f"{IQN}:big{i:03d}" for i in range(targets)]
    stores = {n: [sparse(workdir / f"{i:03d}.img")] for i, n in enumerate(names)}
    # tgt-admin re-creates every idle target: 200 take longer than the default 30 s bound
    # on a loaded host.
    backend = DirectBackend(workdir / "state" / "log", engine=engine, tool_timeout_s=600)
    initiators = Initiators(workdir)
    took: list[float] = []
    kept = True
    try:
        conf = instance_file(workdir, "big", port, stores)
        assert backend.start(spec_of(conf), threading.Event()).result.value == "ok"
        busy = names[1]
        perf = initiators.hold(port, busy)
        for run in range(runs):
            before = {t.name: t.tid for t in backend.control(port).targets()}
            grown = dict(stores)
            grown[names[0]] = [*stores[names[0]], sparse(workdir / f"extra{run}.img")]
            conf = instance_file(workdir, "big", port, grown)
            spec = spec_of(conf)
            started = time.monotonic()
            outcome = backend.reload(spec)
            wait_until(lambda: inquiry(port, names[0], 2), 60, "LUN 2", interval=0.002)
            took.append(time.monotonic() - started)
            assert outcome.result.value in ("ok", "partial"), outcome.message
            after = backend.control(port).target_details()
            kept &= all(before[t.name] == t.tid for t in after)
            kept &= any(t.name == busy and t.nexuses for t in after)
            # back to one LUN for the next run (the session is on another target)
            conf = instance_file(workdir, "big", port, stores)
            backend.reload(spec_of(conf))
        perf.wait_progress()
        errors = perf.errors()
    finally:
        initiators.stop_all()
        stop_port(port)
        backend.reap()
        POOL.give_back([port])
    return {**summary(took), "tids_and_session_kept": kept, "io_errors": len(errors)}


# --- 3. many instance files at start -------------------------------------------------------------


def scale(engine: str, n: int) -> dict[str, Any]:
    with bench_world(f"native{n}") as world:
        world.write_settings(engine=engine)
        ports = POOL.take(n)
        world.add_ports(ports)
        for i, port in enumerate(ports):
            name = f"s{i:03d}"
            text = (
                f'SOCKET_OPTS="{port}"\nPORTAL_OPTS="127.0.0.1:{port}"\n'
                f"<target {IQN}:{name}>\n    backing-store {world.backing(f'{name}.img')}\n"
                "</target>\n"
            )
            path = world.instances_dir / f"{name}.conf"
            path.write_text(text)
            path.chmod(0o644)
        daemon = world.start(wait_ready=False)
        ready = daemon.wait_for_notify("READY=1", timeout=900)
        result = {
            "ready_s": ready.at - daemon.started_at,
            "hwm_mib": proc_status(daemon.pid, "VmHWM") / 1024,
        }
        assert lists(ports[-1], f"{IQN}:s{n - 1:03d}")
        daemon.terminate()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    install_signal_cleanup()
    results: dict[str, Any] = {}
    runs = 6 if args.quick else 15
    n = 100 if args.quick else 500
    POOL.reserve(n + 4)
    try:
        log("1. provisioning one instance with one target")
        results["provisioning"] = provisioning(runs)
        log("2. one LUN added to a 200-target instance with a session on another target")
        targets = 50 if args.quick else 200
        results["big_reload"] = {
            "targets": targets,
            "native": big_reload(EngineKind.NATIVE, targets, 5),
            "tgt-admin": big_reload(EngineKind.TGT_ADMIN, targets, 2),
        }
        log(f"3. {n} instance files when tgtwatch starts")
        results["scale"] = {
            "n": n,
            "native": scale("native", n),
            "tgt-admin": scale("tgt-admin", n),
        }
    finally:
        cleanup_all()
    (REPO / "bench" / "native.json").write_text(json.dumps(results, indent=1) + "\n")
    p = results["provisioning"]
    print(
        f"start, 1 target: native {p['native']['median'] * 1000:.1f} ms, "
        f"tgt-admin {p['tgt-admin']['median'] * 1000:.1f} ms, "
        f"bare tgtadm {p['bare tgtadm']['median'] * 1000:.1f} ms "
        f"(native/bare {p['native']['median'] / p['bare tgtadm']['median']:.2f}x)"
    )
    b = results["big_reload"]
    print(
        f"add one LUN, {b['targets']} targets: native {b['native']['median'] * 1000:.1f} ms, "
        f"tgt-admin {b['tgt-admin']['median'] * 1000:.0f} ms; kept tids and session: "
        f"{b['native']['tids_and_session_kept']}, I/O errors {b['native']['io_errors']}"
    )
    s = results["scale"]
    print(
        f"{s['n']} files to READY=1: native {s['native']['ready_s']:.2f} s "
        f"({s['native']['hwm_mib']:.1f} MiB), tgt-admin {s['tgt-admin']['ready_s']:.2f} s "
        f"({s['tgt-admin']['hwm_mib']:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
