"""Real tgtd processes and iSCSI sessions for integration tests (ports 13000-13099 only)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from tgtwatch.tgt import gateway as g

# The tests directory holds the shared helpers; pytest puts only each test file's own
# directory on sys.path (rootdir-less "prepend" import mode). `pythonpath = ["tests"]`
# in pyproject.toml would make this unnecessary.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import wait_for

TEST_PORTS = range(13000, 13100)
TGTD_RUN_DIR = Path("/var/run/tgtd")
# Cooperative reservations between concurrent pytest runs on this host.
PORT_LOCK_DIR = Path("/tmp/tgtwatch-test-ports")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 30.0


@dataclass
class RunningTgtd:
    """One tgtd this test run started; stop() is idempotent and never touches other tgtds."""

    port: int
    proc: subprocess.Popen[bytes]
    control: g.TgtControl
    log_path: Path
    answered_after_s: float | None = None
    stopped: bool = field(default=False, init=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, iqn: str = "", lun: int | None = None) -> str:
        """An iscsi:// URL for libiscsi: the portal, a target, or one LUN of it."""
        url = f"iscsi://{self.portal}/{iqn}"
        return f"{url}/{lun}" if lun is not None else url

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Remove every target (dropping sessions), ask tgtd to exit, SIGKILL as last resort."""
        if self.stopped:
            return
        self.stopped = True
        if self.alive():
            with contextlib.suppress(g.TgtCommandError):
                self.control.remove_all(force=True)
            with contextlib.suppress(g.TgtCommandError):
                self.control.delete_system()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # our own child only: never by name
                self.proc.wait(STOP_TIMEOUT_S)
        if self.answered_after_s is not None:
            # tgtd leaves its socket and lock file behind; it held them, so they are ours
            for name in (f"socket.{self.port}", f"socket.{self.port}.lock"):
                with contextlib.suppress(FileNotFoundError):
                    (TGTD_RUN_DIR / name).unlink()


@pytest.fixture(scope="session", name="tgt_programs")
def tgt_programs_fixture() -> g.TgtPrograms:
    """The real tgt programs; skips every test that needs them when they cannot be used."""
    if os.geteuid() != 0:
        pytest.skip("tests with real tgtds need root")
    programs = g.TgtPrograms()
    for path in (programs.tgtd, programs.tgtadm, programs.tgt_admin):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            pytest.skip(f"{Path(path).name} is not installed")
    return programs


@pytest.fixture(scope="session", name="iscsi_tools")
def iscsi_tools_fixture() -> None:
    """libiscsi's command-line initiator (iscsi-ls, iscsi-inq, iscsi-perf)."""
    for name in ("iscsi-ls", "iscsi-inq", "iscsi-perf"):
        if shutil.which(name) is None:
            pytest.skip(f"{name} (libiscsi-bin) is not installed")


def port_is_free(port: int) -> bool:
    """No tgtd answers on the control socket and 127.0.0.1:port can be listened on.

    The probe binds with SO_REUSEADDR, as tgtd does: connections of an earlier test
    (iscsi-ls, a killed tgtd) linger in TIME_WAIT for a minute and would make a plain bind
    fail although tgtd can listen there.
    """
    sock_path = TGTD_RUN_DIR / f"socket.{port}"
    if sock_path.exists():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(sock_path))
                return False
            except OSError:
                pass  # stale socket left by an exited tgtd
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen(1)
        except OSError:
            return False
    return True


def reserve_port(ports: range, held: Container[int]) -> tuple[int, IO[str]]:
    """Lock a port of `ports` that is not in `held` and nothing listens on.

    The lock file under PORT_LOCK_DIR stays locked while the returned file is open:
    close it to release the port.
    """
    PORT_LOCK_DIR.mkdir(mode=0o755, exist_ok=True)
    for port in ports:
        if port in held:
            continue
        lock = (PORT_LOCK_DIR / f"{port}.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        if port_is_free(port):
            return port, lock
        lock.close()
    raise RuntimeError(f"no free test port in {ports.start}-{ports.stop - 1}")


class TgtdFactory:
    """Starts real tgtds (control port == portal port, portal 127.0.0.1:PORT) for one test."""

    def __init__(self, programs: g.TgtPrograms, workdir: Path) -> None:
        self.programs = programs
        self.workdir = workdir
        self.started: list[RunningTgtd] = []
        self._locks: dict[int, IO[str]] = {}

    def reserve_port(self) -> int:
        """A test port no other fixture user holds and nothing listens on."""
        port, lock = reserve_port(TEST_PORTS, self._locks)
        self._locks[port] = lock
        return port

    def spawn(self, port: int, *, env: dict[str, str] | None = None) -> RunningTgtd:
        """Start tgtd on port without waiting for it (the port must be reserved or chosen)."""
        if port not in TEST_PORTS:
            raise ValueError(f"test tgtds use ports 13000-13099 only, not {port}")
        log_path = self.workdir / f"tgtd-{port}-{len(self.started)}.log"
        argv = g.tgtd_argv(self.programs, f"127.0.0.1:{port}", port)
        proc = g.spawn_tgtd(argv, log_path=log_path, env=env)
        control = g.TgtControl(port, self.programs, timeout_s=COMMAND_TIMEOUT_S)
        tgtd = RunningTgtd(port=port, proc=proc, control=control, log_path=log_path)
        self.started.append(tgtd)
        return tgtd

    def start(self, port: int | None = None, *, env: dict[str, str] | None = None) -> RunningTgtd:
        """Start tgtd and wait (polling, with a deadline) until its control socket answers."""
        tgtd = self.spawn(self.reserve_port() if port is None else port, env=env)
        try:
            tgtd.answered_after_s = tgtd.control.wait_answering(START_TIMEOUT_S, alive=tgtd.alive)
        except g.TgtCommandError as exc:
            tgtd.stop()
            raise AssertionError(f"tgtd on {tgtd.port} did not start: {exc}\n{tgtd.log()}") from exc
        return tgtd

    def cleanup(self) -> None:
        errors: list[str] = []
        for tgtd in reversed(self.started):
            try:
                tgtd.stop()
            except Exception as exc:
                errors.append(f"port {tgtd.port}: {exc}")
        for lock in self._locks.values():
            lock.close()
        self._locks.clear()
        if errors:
            raise AssertionError("tgtd cleanup failed: " + "; ".join(errors))


@dataclass
class Initiator:
    """iscsi-perf holding one iSCSI session (doing small reads) until stopped."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    name: str

    def progress(self) -> int:
        """How many progress reports iscsi-perf has printed (one a second while I/O flows)."""
        return self.log_path.read_bytes().count(b"iops current")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class SessionHolder:
    """Logs initiators (iscsi-perf doing small reads) in to targets; stop_all() logs them out."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.held: list[Initiator] = []

    def hold(self, tgtd: RunningTgtd, iqn: str, lun: int = 1, seconds: int = 600) -> Initiator:
        """Start an initiator on iqn's LUN and wait until tgtd lists its session."""
        n = len(self.held)
        name = f"iqn.2026-11.test.tgtwatch:init{n}"
        log_path = self.workdir / f"iscsi-perf-{n}.log"
        # stdbuf: iscsi-perf reports progress with \r and no newline, block-buffered otherwise
        argv = ["stdbuf", "-o0", "iscsi-perf", "-i", name, "-m", "1", "-b", "1"]
        argv += ["-t", str(seconds), tgtd.url(iqn, lun)]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        initiator = Initiator(proc, log_path, name)
        self.held.append(initiator)

        def logged_in() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"iscsi-perf exited: {log_path.read_text(errors='replace')}")
            return f"Initiator: {name} " in tgtd.control.show_targets_text()

        wait_for(logged_in, 20, f"{name} to log in to {iqn}")
        return initiator

    def stop_all(self) -> None:
        for initiator in self.held:
            initiator.stop()
