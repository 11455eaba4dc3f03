"""Shared pieces of the benchmarks: ports 14000-14999, the by-hand floor, initiator probes,
a tgtwatch daemon (reusing tests/integration/daemon_harness.py), statistics and cleanup.

Nothing here sleeps a fixed time to wait for an outcome: every wait polls with a deadline.
Every tgtd a benchmark causes runs with a control port from the bench's reserved block and
is stopped by control port (tgt-admin -f --update ALL -c /dev/null, tgtadm --op delete
--mode system, SIGKILL of that pid only as last resort) — never by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests"))

import daemon_harness as dh  # noqa: E402  (tests/integration: the `tgtwatch run` harness)

from tgtwatch.backends.direct import scan_tgtd  # noqa: E402
from tgtwatch.daemon.lanes import DEFAULT_LANES  # noqa: E402
from tgtwatch.tgt import gateway as g  # noqa: E402

BENCH_PORTS = range(14000, 15000)
PORT_LOCK_DIR = Path("/tmp/tgtwatch-test-ports")  # the tests' cooperative locks, same scheme
TGTD_RUN_DIR = Path("/var/run/tgtd")
PROGS = g.TgtPrograms()
IQN = "iqn.2026-11.bench.tgtwatch"
POLL_S = 0.005
DEBOUNCE_MS = 250
LANES = DEFAULT_LANES


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- statistics


def summary(values: Sequence[float]) -> dict[str, Any]:
    vals = [float(v) for v in values]
    if not vals:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {
        "n": len(vals),
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "values": vals,
    }


def fmt_ms(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "-"
    return f"{s['median'] * 1000:.0f} ms [{s['min'] * 1000:.0f}-{s['max'] * 1000:.0f}]"


# --------------------------------------------------------------------------- ports


class PortPool:
    """Ports of 14000-14999 locked for this run (same lock files as the tests use)."""

    def __init__(self) -> None:
        self._locks: dict[int, IO[str]] = {}
        self._free: list[int] = []

    def reserve(self, count: int) -> None:
        PORT_LOCK_DIR.mkdir(mode=0o755, exist_ok=True)
        for port in BENCH_PORTS:
            if len(self._free) >= count:
                return
            if port in self._locks:
                continue
            lock = (PORT_LOCK_DIR / f"{port}.lock").open("w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            if dh.port_is_free(port):
                self._locks[port] = lock
                self._free.append(port)
            else:
                lock.close()
        if len(self._free) < count:
            raise RuntimeError(f"only {len(self._free)} free ports in 14000-14999, need {count}")

    @property
    def all(self) -> list[int]:
        return sorted(self._locks)

    def take(self, count: int) -> list[int]:
        if count > len(self._free):
            raise RuntimeError("port pool exhausted")
        got, self._free = self._free[:count], self._free[count:]
        return got

    def give_back(self, ports: Iterable[int]) -> None:
        self._free = sorted(set(self._free) | set(ports))

    def release(self) -> None:
        for lock in self._locks.values():
            lock.close()
        self._locks.clear()
        self._free.clear()


POOL = PortPool()


def stop_port(port: int, executables: Collection[str] | None = None) -> None:
    """Stop the tgtd whose control port is `port` (if any), the polite way first;
    `executables`: the binaries it may run from (None: tgtd's own)."""
    for proc in scan_tgtd(executables=executables):
        if proc.cmdline.control_port == port:
            dh.stop_tgtd(port, proc.pid)
    for name in (f"socket.{port}", f"socket.{port}.lock"):
        with contextlib.suppress(FileNotFoundError):
            (TGTD_RUN_DIR / name).unlink()


def stop_ports(
    ports: Iterable[int], workers: int = 8, executables: Collection[str] | None = None
) -> None:
    wanted = set(ports)
    found = scan_tgtd(executables=executables)
    running = {p.cmdline.control_port for p in found if p.cmdline.control_port in wanted}
    if running:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda port: stop_port(port, executables), sorted(running)))
    dh.reap_orphans()


def cleanup_all() -> None:
    """Every tgtd on any reserved bench port, stopped; orphans reaped."""
    stop_ports(POOL.all)
    dh.reap_orphans()


# --------------------------------------------------------------------------- polling, probes


def wait_until(
    probe: Callable[[], Any], timeout: float, what: str, interval: float = POLL_S
) -> float:
    """Poll until probe() is truthy; the monotonic time it first was."""
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def lists(port: int, iqn: str) -> bool:
    """iscsi-ls on 127.0.0.1:port discovers `iqn` (the provisioning 'done' condition)."""
    done = dh.run_tool(["iscsi-ls", f"iscsi://127.0.0.1:{port}/"], timeout=10)
    return done.returncode == 0 and f"Target:{iqn} " in done.stdout


def inquiry(port: int, iqn: str, lun: int) -> bool:
    done = dh.run_tool(["iscsi-inq", f"iscsi://127.0.0.1:{port}/{iqn}/{lun}"], timeout=10)
    return done.returncode == 0 and "Peripheral Device Type" in done.stdout


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def tgtd_pid(port: int) -> int | None:
    for proc in scan_tgtd():
        if proc.cmdline.control_port == port:
            return proc.pid
    return None


def gone(pid: int) -> bool:
    return dh.process_gone(pid)


# --------------------------------------------------------------------------- files


def iqn(name: str, disk: int = 1) -> str:
    return f"{IQN}:{name}-disk{disk}"


def instance_text(name: str, port: int, backing: Sequence[Path]) -> str:
    lines = [f'SOCKET_OPTS="{port}"', f'PORTAL_OPTS="127.0.0.1:{port}"', ""]
    lines += [f"<target {iqn(name)}>"]
    lines += [f"    backing-store {b}" for b in backing]
    lines += ["    initiator-address ALL", "</target>", ""]
    return "\n".join(lines)


def sparse(path: Path, size: int = 1 << 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        if f.tell() == 0:
            f.truncate(size)
    return path


def atomic_write(path: Path, text: str, staging: Path) -> None:
    """Write beside, then rename in: one atomic event (what an operator or platform does)."""
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / (path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


# --------------------------------------------------------------------------- the floor


def _check(argv: Sequence[str], cwd: Path | None = None) -> str:
    done = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=cwd,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stdout}{done.stderr}")
    return done.stdout


def tgtadm_state(port: int, state: str) -> None:
    _check(
        [
            PROGS.tgtadm,
            "-C",
            str(port),
            "--op",
            "update",
            "--mode",
            "sys",
            "--name",
            "State",
            "-v",
            state,
        ]
    )


def socket_answers(port: int) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(TGTD_RUN_DIR / f"socket.{port}"))
            return True
        except OSError:
            return False


@dataclass
class FloorTgtd:
    """The minimal by-hand script: what the original unit does, without its sleep 5."""

    port: int
    conf: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        with self.log_path.open("ab") as logf:
            self.proc = subprocess.Popen(
                [
                    PROGS.tgtd,
                    "-f",
                    "--iscsi",
                    f"portal=127.0.0.1:{self.port}",
                    "-C",
                    str(self.port),
                ],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,
            )
        # A stale socket of an earlier tgtd refuses connections until the new one listens.
        proc = self.proc
        wait_until(
            lambda: socket_answers(self.port) or proc.poll() is not None,
            10,
            f"tgtd socket {self.port}",
            interval=0.002,
        )
        if proc.poll() is not None:
            raise RuntimeError(f"floor tgtd on {self.port} exited: {self.log_path.read_text()}")
        tgtadm_state(self.port, "offline")
        _check([PROGS.tgt_admin, "-C", str(self.port), "-e", "-c", str(self.conf)])
        tgtadm_state(self.port, "ready")

    def reload(self) -> None:
        _check([PROGS.tgt_admin, "-C", str(self.port), "--update", "ALL", "-c", str(self.conf)])

    def stop(self) -> None:
        tgtadm_state(self.port, "offline")
        _check([PROGS.tgt_admin, "-C", str(self.port), "--update", "ALL", "-c", "/dev/null"])
        _check([PROGS.tgtadm, "-C", str(self.port), "--op", "delete", "--mode", "system"])
        self.wait()

    def wait(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # our own child, by pid
                self.proc.wait(15)


# --------------------------------------------------------------------------- tgtwatch


class BenchWorld(dh.DaemonWorld):
    """daemon_harness.DaemonWorld with tgtwatch's defaults (debounce 250 ms, no audit log, no
    metrics file, drain policy wait) and ports handed out from the bench's pool."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.write_settings(
            debounce_ms=DEBOUNCE_MS,
            audit_log=None,
            metrics_file=None,
            drain_timeout_s=300,
            on_drain_timeout="wait",
        )

    def reserve_port(self) -> int:
        (port,) = POOL.take(1)
        self.ports.append(port)
        return port

    def add_ports(self, ports: Sequence[int]) -> None:
        self.ports.extend(ports)

    def cleanup(self) -> None:
        for daemon in self.daemons:
            with contextlib.suppress(Exception):
                daemon.close()
        stop_ports(self.ports)
        POOL.give_back(self.ports)
        self.ports = []
        self.daemons = []


@contextlib.contextmanager
def bench_world(tag: str) -> Any:
    root = Path(tempfile.mkdtemp(prefix=f"twbench-{tag}.", dir="/var/tmp"))
    sock_dir = Path(tempfile.mkdtemp(prefix="twb", dir="/tmp"))
    world = BenchWorld(root / "tw", sock_dir=sock_dir)
    try:
        yield world
    finally:
        try:
            world.cleanup()
        finally:
            shutil.rmtree(sock_dir, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def ctxt_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches summed over every thread of pid."""
    vol = invol = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    invol += int(line.split()[1])
    return vol, invol


def cpu_times(pid: int) -> tuple[float, float]:
    """(own utime+stime, reaped children's cutime+cstime) in seconds."""
    fields = dh.proc_stat(pid)
    assert fields is not None
    tck = os.sysconf("SC_CLK_TCK")
    return (int(fields[12]) + int(fields[13])) / tck, (int(fields[14]) + int(fields[15])) / tck


def install_signal_cleanup() -> None:
    """SIGINT/SIGTERM: stop our tgtds before exiting."""

    def handler(signum: int, _frame: object) -> None:
        log(f"signal {signum}: cleaning up")
        cleanup_all()
        raise SystemExit(130)

    signal.signal(signal.SIGTERM, handler)


_lock = threading.Lock()
