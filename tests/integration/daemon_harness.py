"""`tgtwatch run` as a real process, with systemd's and journald's sockets played by the test.

`DaemonWorld` (fixture `world`) is one test's world: a settings file in tmp_path (backend
direct, the default instance unmanaged, small debounce, state, audit_log and metrics in
tmp_path), an instances directory, sparse backing files, and instance ports reserved from
13200-13399 with the harness' cooperative port locks (tgtd_harness.reserve_port).

`world.start()` runs `.venv/bin/tgtwatch -c SETTINGS run` with
- NOTIFY_SOCKET: an AF_UNIX SOCK_DGRAM socket the test binds; a thread keeps every
  datagram (`Datagram`: arrival time + KEY=VALUE fields) in a thread-safe list;
- TGTWATCH_JOURNAL_SOCKET: another datagram socket; a thread decodes each entry with the
  native protocol (tests/journal_proto.py, memfd entries included) into `Record`s.
`wait_for_notify("READY=1")` and `wait_for_record(action=..., instance=...)` block on a
condition variable with a deadline: nothing here sleeps a fixed time.

Cleanup (the fixture's finalizer, also when the test failed): SIGTERM to every daemon still
running, wait with a deadline (SIGKILL after it), then `TgtTree.stop_tgtds` (tgt_tree.py):
only the tgtds on the test's own control ports, never any other.

Zombies: the daemon's tgtds are its children (the direct backend spawns them); when the
daemon exits they are orphaned. The `world` fixture makes the pytest process a child
subreaper for the duration of the test and reaps zombies named `tgtd` or `tgtd-killer`
(the fault-injection helper below) by pid (tgt_tree.py says why).
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import io
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from journal_proto import decode_entry
from tgt_tree import (
    REAL,
    TGTWATCH,
    TgtTree,
    listed_targets,
    portal_url,
    proc_stat,
    process_gone,
    reap_orphans,
    run_tool,
    set_child_subreaper,
    stop_tgtd,
    tgtd_pids,
)

# tgtd_harness puts tests/ on sys.path: helpers and journal_proto import from there.
from tgtd_harness import port_is_free, reserve_port, wait_for

from tgtwatch.backends.direct import scan_tgtd
from tgtwatch.cli import main as cli
from tgtwatch.tgt import gateway as g

DAEMON_PORTS = range(13200, 13400)
DAEMON_EXIT_TIMEOUT_S = 30.0
IQN_PREFIX = "iqn.2026-11.test.tgtwatch-daemon"
# The fields DESIGN.md's contract promises in every audit record sent to the journal.
JOURNAL_FIELDS = (
    "SYSLOG_IDENTIFIER",
    "TGTWATCH_ACTION",
    "TGTWATCH_INSTANCE",
    "TGTWATCH_PORT",
    "TGTWATCH_CONFIG",
    "TGTWATCH_SHA256",
    "TGTWATCH_RESULT",
    "TGTWATCH_DURATION_MS",
    "MESSAGE_ID",
    "PRIORITY",
    "MESSAGE",
)
AUDIT_LOG_KEYS = (
    "ts",
    "action",
    "instance",
    "port",
    "config",
    "sha256",
    "result",
    "duration_ms",
    "message",
)


def iqn(name: str, disk: int = 1) -> str:
    return f"{IQN_PREFIX}:{name}-disk{disk}"


def config_digest(path: Path) -> str:
    """TGTWATCH_SHA256 of a file without includes: tgtconf hashes path, length, then bytes."""
    data = path.read_bytes()
    return hashlib.sha256(f"{path}\0{len(data)}\0".encode() + data).hexdigest()


# ---------------------------------------------------------------------------
# processes


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), in seconds."""
    fields = proc_stat(pid)
    assert fields is not None, f"pid {pid} is gone"
    # After the comm: state(3) ppid(4) ... utime(14) stime(15) -> indexes 12, 13 here.
    ticks = int(fields[12]) + int(fields[13])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------
# the initiator


def lun_answers(port: int, target: str, lun: int) -> bool:
    done = run_tool(["iscsi-inq", portal_url(port, target, lun)])
    return done.returncode == 0 and "Peripheral Device Type" in done.stdout


# ---------------------------------------------------------------------------
# the two datagram sockets


@dataclass(frozen=True)
class Datagram:
    """One sd_notify message: when it arrived (monotonic) and its KEY=VALUE lines."""

    at: float
    fields: Mapping[str, str]
    raw: str


@dataclass(frozen=True)
class Record:
    """One journal entry: when it arrived (monotonic) and its fields (last one wins)."""

    at: float
    fields: Mapping[str, str]

    def get(self, key: str) -> str | None:
        return self.fields.get(key)

    @property
    def action(self) -> str:
        return self.fields.get("TGTWATCH_ACTION", "")

    @property
    def instance(self) -> str:
        return self.fields.get("TGTWATCH_INSTANCE", "")

    def matches(self, **want: object) -> bool:
        return all(self.fields.get(f"TGTWATCH_{k.upper()}") == str(v) for k, v in want.items())


class DatagramCollector:
    """Binds a SOCK_DGRAM socket and keeps what arrives, from a thread, until close()."""

    def __init__(self, path: Path, parse: Callable[[float, bytes], Any]) -> None:
        self.path = path
        self._parse = parse
        self.items: list[Any] = []
        self.errors: list[str] = []
        self.cond = threading.Condition()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._stop_r, self._stop_w = os.pipe()
        self._reading = threading.Event()  # cleared by hold(): systemd busy, not reading
        self._reading.set()
        self._thread = threading.Thread(target=self._run, name=f"collect {path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        sel.register(self._stop_r, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                if key.fileobj == self._stop_r:
                    sel.close()
                    return
                self._reading.wait()
                data, fds = self._receive()
                at = time.monotonic()
                try:
                    for fd in fds:  # a big entry comes as a sealed memfd (journal protocol)
                        with os.fdopen(fd, "rb") as memfd:
                            data = memfd.read()
                    item = self._parse(at, data)
                except Exception as exc:  # a malformed datagram fails the test, later
                    with self.cond:
                        self.errors.append(f"{exc!r}: {data!r}")
                    continue
                with self.cond:
                    self.items.append(item)
                    self.cond.notify_all()

    def _receive(self) -> tuple[bytes, list[int]]:
        fds = array.array("i")
        data, ancdata, _, _ = self._sock.recvmsg(1 << 20, socket.CMSG_SPACE(4 * fds.itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        return data, list(fds)

    def hold(self) -> None:
        """Stop reading (as a busy systemd does): the socket's queue fills up."""
        self._reading.clear()

    def fill(self) -> int:
        """Held: send junk until the socket's queue is full; how many datagrams it took."""
        assert not self._reading.is_set(), "hold() first"
        sent = 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:
                    sock.sendto(b"X-TEST-FILLER=1", str(self.path))
                    sent += 1
        return sent

    def release(self) -> None:
        self._reading.set()

    def snapshot(self) -> list[Any]:
        with self.cond:
            return list(self.items)

    def wait(self, predicate: Callable[[list[Any]], Any], timeout: float, what: str) -> Any:
        """Block until predicate(items) is truthy; return its value; fail after timeout."""
        with self.cond:
            value = self.cond.wait_for(lambda: predicate(self.items), timeout)
            if not value:
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {what}; got {len(self.items)}"
                )
            return value

    def close(self) -> None:
        self._reading.set()
        os.write(self._stop_w, b"x")
        self._thread.join(10)
        self._sock.close()
        os.close(self._stop_r)
        os.close(self._stop_w)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _parse_notify(at: float, data: bytes) -> Datagram:
    raw = data.decode("utf-8")
    fields = dict(line.partition("=")[::2] for line in raw.split("\n") if line)
    return Datagram(at, fields, raw)


def _parse_journal(at: float, data: bytes) -> Record:
    return Record(at, {k: v.decode("utf-8") for k, v in decode_entry(data)})


# ---------------------------------------------------------------------------
# one daemon


@dataclass
class Daemon:
    """One `tgtwatch run` process and what it told systemd and the journal."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    notify: DatagramCollector
    journal: DatagramCollector | None
    started_at: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    # -- sd_notify --

    def notes(self, key: str | None = None) -> list[Datagram]:
        items: list[Datagram] = self.notify.snapshot()
        return [d for d in items if key is None or key in d.fields]

    def wait_for_notify(self, message: str, *, after: float = 0.0, timeout: float = 60) -> Datagram:
        """The first datagram holding the line KEY=VALUE that arrived after `after`."""
        key, _, value = message.partition("=")

        def found(items: list[Datagram]) -> Datagram | None:
            self._check_alive()
            for d in items:
                if d.at > after and key in d.fields and (not value or d.fields[key] == value):
                    return d
            return None

        return self._wait(self.notify, found, timeout, f"{message} from the daemon")

    # -- journal --

    def records(self, **want: object) -> list[Record]:
        assert self.journal is not None, "this daemon has no journal socket"
        items: list[Record] = self.journal.snapshot()
        return [r for r in items if r.matches(**want)]

    def wait_for_record(self, *, timeout: float = 60, count: int = 1, **want: object) -> Record:
        """The `count`-th journal record whose TGTWATCH_* fields match `want`."""
        assert self.journal is not None, "this daemon has no journal socket"

        def found(items: list[Record]) -> Record | None:
            self._check_alive()
            hits = [r for r in items if r.matches(**want)]
            return hits[count - 1] if len(hits) >= count else None

        return self._wait(self.journal, found, timeout, f"record {want} (#{count})")

    def _wait(
        self,
        collector: DatagramCollector,
        found: Callable[[list[Any]], Any],
        timeout: float,
        what: str,
    ) -> Any:
        # The condition is re-checked at least every 0.5 s to notice a daemon that died.
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return collector.wait(found, min(0.5, max(left, 0.0)), what)
            except AssertionError:
                if left <= 0.5:
                    raise AssertionError(
                        f"timed out after {timeout:g}s waiting for {what}\n--- daemon log\n"
                        f"{self.log()}{self._last_records()}"
                    ) from None

    def _last_records(self, count: int = 30) -> str:
        """The journal's last records, as the operator reads them: what the daemon did."""
        if self.journal is None:
            return ""
        items: list[Record] = self.journal.snapshot()[-count:]
        lines = (f"{r.at - self.started_at:8.3f}s {r.get('MESSAGE')}" for r in items)
        return "\n--- last journal records\n" + "\n".join(lines)

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")

    # -- stopping --

    def terminate(self, timeout: float = DAEMON_EXIT_TIMEOUT_S) -> int:
        """SIGTERM and wait for the exit (SIGKILL after `timeout`); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
                raise AssertionError(
                    f"daemon ignored SIGTERM for {timeout}s:\n{self.log()}"
                ) from None
        return self.proc.returncode

    def close(self) -> None:
        with contextlib.suppress(AssertionError):
            self.terminate()
        self.notify.close()
        if self.journal is not None:
            self.journal.close()


# ---------------------------------------------------------------------------
# the world


@dataclass(kw_only=True)
class DaemonWorld(TgtTree):
    """One test's tgtwatch tree, daemons and ports; see the module docstring."""

    PORTS = DAEMON_PORTS
    IQN_PREFIX = IQN_PREFIX

    sock_dir: Path
    daemons: list[Daemon] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        super().__post_init__()

    @property
    def bin_dir(self) -> Path:
        """Put first on the daemon's PATH: wrappers of tgt programs a test installs."""
        return self.root / "bin"

    @property
    def metrics_file(self) -> Path:
        return self.root / "tgtwatch.prom"

    def default_settings(self) -> dict[str, Any]:
        return {
            **super().default_settings(),
            "debounce_ms": 100,
            "drain_timeout_s": 2,
            "on_drain_timeout": "force",
            "metrics_file": str(self.metrics_file),
        }

    def install_wrapper(self, name: str, body: str) -> Path:
        """A program named `name` first on the daemon's PATH (a shell script)."""
        path = self.bin_dir / name
        path.write_text(body)
        path.chmod(0o755)
        return path

    # -- daemons --

    def env(self, *, journal: bool, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        drop = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
        env["PYTHONUNBUFFERED"] = "1"
        n = len(self.daemons)
        env["NOTIFY_SOCKET"] = str(self.sock_dir / f"notify{n}")
        env["TGTWATCH_JOURNAL_SOCKET"] = str(
            self.sock_dir / (f"journal{n}" if journal else "no-such-journal")
        )
        return {**env, **(extra or {})}

    def start(
        self, *, journal: bool = True, env: Mapping[str, str] | None = None, wait_ready: bool = True
    ) -> Daemon:
        """`tgtwatch -c SETTINGS run` in the background; by default wait for READY=1."""
        full_env = self.env(journal=journal, extra=env)
        notify = DatagramCollector(Path(full_env["NOTIFY_SOCKET"]), _parse_notify)
        journal_collector = (
            DatagramCollector(Path(full_env["TGTWATCH_JOURNAL_SOCKET"]), _parse_journal)
            if journal
            else None
        )
        log_path = self.root / f"daemon{len(self.daemons)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(TGTWATCH), "-c", str(self.settings_path), "run"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=full_env,
            )
        daemon = Daemon(proc, log_path, notify, journal_collector, time.monotonic())
        self.daemons.append(daemon)
        if wait_ready:
            daemon.wait_for_notify("READY=1", timeout=120)
        return daemon

    # -- what tgtwatch says --

    def status(self) -> dict[str, dict[str, Any]]:
        """`tgtwatch status --json` instances on this test's ports, by name."""
        out, err = io.StringIO(), io.StringIO()
        cli.main(["-c", str(self.settings_path), "status", "--json"], out, err)
        body = json.loads(out.getvalue())
        return {i["name"]: i for i in body["instances"] if i["port"] in self.ports}

    # -- cleanup --

    def cleanup(self) -> None:
        """Daemons first (SIGTERM), then every tgtd on our control ports; reap; release."""
        errors: list[str] = []
        for daemon in self.daemons:
            try:
                daemon.close()
            except Exception as exc:
                errors.append(f"daemon {daemon.pid}: {exc}")
        errors += self.stop_tgtds()
        if errors:
            raise AssertionError("cleanup: " + "; ".join(errors))


@pytest.fixture(name="world")
def world_fixture(
    tgt_programs: g.TgtPrograms, iscsi_tools: None, tmp_path: Path, engine: str
) -> Iterator[DaemonWorld]:
    """A tgtwatch tree in tmp_path loading with `engine` (engines.py: each test runs under
    both); every daemon and tgtd it caused is stopped at the end."""
    # sun_path holds 108 bytes: the sockets live in a short directory of their own.
    sock_dir = Path(tempfile.mkdtemp(prefix="twd", dir="/tmp"))
    set_child_subreaper(True)
    w = DaemonWorld(tmp_path / "tw", sock_dir=sock_dir, engine=engine)
    try:
        yield w
    finally:
        try:
            w.cleanup()
        finally:
            reap_orphans()
            set_child_subreaper(False)
            shutil.rmtree(sock_dir, ignore_errors=True)


__all__ = [
    "AUDIT_LOG_KEYS",
    "JOURNAL_FIELDS",
    "REAL",
    "TGTWATCH",
    "Daemon",
    "DaemonWorld",
    "Datagram",
    "Record",
    "config_digest",
    "cpu_seconds",
    "iqn",
    "listed_targets",
    "lun_answers",
    "port_is_free",
    "portal_url",
    "proc_stat",
    "process_gone",
    "reap_orphans",
    "reserve_port",
    "rss_kib",
    "run_tool",
    "scan_tgtd",
    "set_child_subreaper",
    "stop_tgtd",
    "tgtd_pids",
    "wait_for",
    "world_fixture",
]
