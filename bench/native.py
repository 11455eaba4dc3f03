"""The native engine against its floors, side by side in one run (as root, after setup):

    .venv/bin/python bench/native.py [--quick]

1. start one instance with one target, until iscsi-ls lists it: the direct backend's
   start with engine native, with engine tgt-admin, and the bare-tgtadm floor (spawn
   tgtd, poll its socket, offline, new target, new LUN, bind ALL, ready), interleaved;
2. reload adding one LUN to one target of a 200-target instance whose other target has a
   logged-in initiator: from the reload's start until iscsi-inq answers on the new LUN,
   native vs tgt-admin --update ALL; the other targets' tids and the session are checked;
   Beside each run, iscsi-inq on a LUN that is already there: the probe's own floor;
3. 500 instance files present when `tgtwatch run` starts: seconds to READY=1 and peak RSS,
   engine native and engine tgt-admin (one run each; --quick: 100 files);
4. live LUN add through `tgtwatch run` (debounce 250 ms, engine native) while
   `iscsi-perf -x 0` reads LUN 1 of the same target: from the rename of the file with one
   more LUN until iscsi-inq answers on it, the daemon's own reload time (its audit
   record), the probe's floor, and iscsi-perf's errors.
Prints one table; writes bench/native.json (--only SECTION,...: those sections are run
and replaced, the others kept as they were).
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
    DEBOUNCE_MS,
    POOL,
    PROGS,
    REPO,
    atomic_write,
    bench_world,
    cleanup_all,
    inquiry,
    install_signal_cleanup,
    instance_text,
    iqn,
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
from tgtwatch.config.instance_file import instance_from
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
    reloaded: list[float] = []  # the backend's reload call alone
    reload_cpu: list[float] = []  # its CPU time: what a shared host's load does not add
    floor: list[float] = []
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
            started, cpu = time.monotonic(), time.process_time()
            outcome = backend.reload(spec)
            reloaded.append(time.monotonic() - started)
            reload_cpu.append(time.process_time() - cpu)
            wait_until(lambda: inquiry(port, names[0], 2), 60, "LUN 2", interval=0.002)
            took.append(time.monotonic() - started)
            floor.append(probe_floor(port, names[2]))
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
    return {
        **summary(took),
        "reload_call": summary(reloaded),
        "reload_cpu": summary(reload_cpu),
        "probe_floor": summary(floor),
        "tids_and_session_kept": kept,
        "io_errors": len(errors),
    }


def probe_floor(port: int, target: str) -> float:
    """One iscsi-inq on LUN 1, there all along: what the probe alone costs (process start,
    login, INQUIRY, logout), measured beside each timed run."""
    started = time.monotonic()
    assert inquiry(port, target, 1)
    return time.monotonic() - started


# --- 4. live LUN add through the daemon, with I/O on LUN 1 ----------------------------------


def live_add(runs: int) -> dict[str, Any]:
    with bench_world("native-live") as world:
        port = world.reserve_port()
        name = "live"
        target = iqn(name)
        conf = world.conf(name)
        stores = [world.backing(f"{name}-1.img")]
        atomic_write(conf, instance_text(name, port, stores), world.staging_dir)
        daemon = world.start()
        wait_until(lambda: lists(port, target), 30, "the target listed")
        perf = Initiators(world.root).hold(port, target, lun=1)
        took: list[float] = []
        floor: list[float] = []
        audited: list[float] = []  # rename until the reload's audit record reached the journal
        try:
            perf.wait_progress()
            for run in range(runs):
                # Each run adds one more LUN: a LUN cannot be taken away under the session.
                stores.append(world.backing(f"{name}-{run + 2}.img"))
                lun = len(stores)
                staged = world.staging_dir / f"{name}.conf.tmp"
                staged.write_text(instance_text(name, port, stores))
                staged.chmod(0o644)
                started = time.monotonic()
                staged.replace(conf)
                wait_until(
                    lambda lun=lun: inquiry(port, target, lun), 30, f"LUN {lun}", interval=0.002
                )
                took.append(time.monotonic() - started)
                floor.append(probe_floor(port, target))
                record = daemon.wait_for_record(action="reload", count=run + 1, timeout=30)
                assert record.matches(result="ok"), record.fields
                audited.append(record.at - started)
                perf.wait_progress()
            cycle_ms = [
                float(r.get("TGTWATCH_DURATION_MS") or "nan")
                for r in daemon.records(action="reload")
            ]
            errors = perf.errors()
            shown = subprocess.run(
                [PROGS.tgtadm, "-C", str(port), "--op", "show", "--mode", "target"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            session_kept = f"Initiator: {perf.name} " in shown
        finally:
            # iscsi-perf hangs in its SIGINT shutdown after a live LUN add (a libiscsi quirk):
            # its output is the verdict, its exit code is not awaited.
            perf.proc.kill()
            perf.proc.wait(10)
        daemon.terminate()
    return {
        **summary(took),
        "daemon_reload_ms": summary(cycle_ms),
        "rename_to_audit_record": summary(audited),
        "probe_floor": summary(floor),
        "debounce_ms": DEBOUNCE_MS,
        "io_errors": len(errors),
        "error_lines": errors[:5],
        "session_kept": session_kept,
    }


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


SECTIONS = ("provisioning", "big_reload", "scale", "live_add")


def run_sections(only: set[str], quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    runs = 6 if quick else 15
    n = 100 if quick else 500
    if "provisioning" in only:
        log("1. provisioning one instance with one target")
        results["provisioning"] = provisioning(runs)
    if "big_reload" in only:
        log("2. one LUN added to a 200-target instance with a session on another target")
        targets = 50 if quick else 200
        results["big_reload"] = {
            "targets": targets,
            "native": big_reload(EngineKind.NATIVE, targets, 5 if quick else 9),
            "tgt-admin": big_reload(EngineKind.TGT_ADMIN, targets, 2),
        }
    if "scale" in only:
        log(f"3. {n} instance files when tgtwatch starts")
        results["scale"] = {
            "n": n,
            "native": scale("native", n),
            "tgt-admin": scale("tgt-admin", n),
        }
    if "live_add" in only:
        log("4. live LUN add through the daemon while iscsi-perf reads LUN 1")
        results["live_add"] = live_add(4 if quick else 8)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(SECTIONS):
        parser.error(f"sections are {', '.join(SECTIONS)}")
    install_signal_cleanup()
    POOL.reserve((100 if args.quick else 500) + 4 if "scale" in only else 4)
    try:
        fresh = run_sections(only, args.quick)
    finally:
        cleanup_all()
    path = REPO / "bench" / "native.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update(fresh)
    path.write_text(json.dumps(results, indent=1) + "\n")
    report(fresh)


def ms(s: dict[str, Any]) -> str:
    return f"{s['median'] * 1000:.1f} ms [{s['min'] * 1000:.1f}-{s['max'] * 1000:.1f}]"


def report(results: dict[str, Any]) -> None:
    if p := results.get("provisioning"):
        print(
            f"start, 1 target: native {p['native']['median'] * 1000:.1f} ms, "
            f"tgt-admin {p['tgt-admin']['median'] * 1000:.1f} ms, "
            f"bare tgtadm {p['bare tgtadm']['median'] * 1000:.1f} ms "
            f"(native/bare {p['native']['median'] / p['bare tgtadm']['median']:.2f}x)"
        )
    if b := results.get("big_reload"):
        native = b["native"]
        print(
            f"add one LUN, {b['targets']} targets: native {ms(native)} "
            f"(reload call {ms(native['reload_call'])}, its CPU {ms(native['reload_cpu'])}, "
            "probe floor "
            f"{ms(native['probe_floor'])}), tgt-admin {b['tgt-admin']['median'] * 1000:.0f} ms; "
            f"kept tids and session: {native['tids_and_session_kept']}, "
            f"I/O errors {native['io_errors']}"
        )
    if s := results.get("scale"):
        print(
            f"{s['n']} files to READY=1: native {s['native']['ready_s']:.2f} s "
            f"({s['native']['hwm_mib']:.1f} MiB), tgt-admin {s['tgt-admin']['ready_s']:.2f} s "
            f"({s['tgt-admin']['hwm_mib']:.1f} MiB)"
        )
    if live := results.get("live_add"):
        d = live["daemon_reload_ms"]
        print(
            f"live LUN add under iscsi-perf, rename to iscsi-inq: {ms(live)} "
            f"(rename to the reload's audit record {ms(live['rename_to_audit_record'])}, "
            f"daemon's reload {d['median']:.1f} ms [{d['min']:.1f}-{d['max']:.1f}], probe floor "
            f"{ms(live['probe_floor'])}); target debounce {live['debounce_ms']} + 50 ms; "
            f"I/O errors {live['io_errors']}, session kept {live['session_kept']}"
        )


if __name__ == "__main__":
    main()
