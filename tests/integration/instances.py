"""tgtwatch driving real tgtds: a settings tree in tmp_path, instances on ports 13100-13199.

`InstanceTree` is one test's world: a settings file (backend direct, the default instance
unmanaged, state, audit log and tgtd logs in tmp_path), an instances directory and sparse
backing files. Tests write instance files with it and run tgtwatch through
`tgtwatch.cli.main` in-process or the real `tgtwatch` executable as a subprocess.

Cleanup (`InstanceTree.cleanup`, run by the `tree` fixture's finalizer even when the test
fails) stops every tgtd whose *control port* is one of the test's reserved ports — the
only tgtds this test can have caused, wherever they listen (a tgtd that could not bind
its portal falls back to 3260 but keeps its control port) — and never any other: it
removes the targets (`tgt-admin --update ALL -c /dev/null -f`), asks tgtd to exit
(`tgtadm --op delete --mode system`) and SIGKILLs it as a last resort.

Zombies: PID 1 in the sandbox does not reap orphans, so the tgtd a `tgtwatch apply`
*subprocess* started would stay a zombie forever once it exits. The `child_subreaper`
fixture makes the pytest process a child subreaper (prctl PR_SET_CHILD_SUBREAPER) for
the duration of a test: such orphans become pytest's children, and the helpers here reap
them — only zombie *tgtd* children, by pid, never `waitpid(-1)`, which would steal the exit
status of the initiators' Popen objects. "Gone" for a process means: no /proc entry, or a
zombie (it has exited; only its exit status is left to collect).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

# wait_for (tests/helpers.py) through tgtd_harness, which puts tests/ on sys.path first
from tgtd_harness import TGTD_RUN_DIR, reserve_port, wait_for

from tgtwatch import cli
from tgtwatch import gateway as g
from tgtwatch.direct import scan_tgtd, wait_exit
from tgtwatch.tgtoutput import TargetInfo, parse_show_targets

INSTANCE_PORTS = range(13100, 13200)
# The console script next to the interpreter running the tests: .venv/bin/tgtwatch.
TGTWATCH = Path(sys.executable).parent / "tgtwatch"
PR_SET_CHILD_SUBREAPER = 36
COMMAND_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
IQN_PREFIX = "iqn.2026-11.test.tgtwatch"


def iqn(name: str, disk: int = 1) -> str:
    return f"{IQN_PREFIX}:{name}-disk{disk}"


# ---------------------------------------------------------------------------
# processes


def set_child_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), "prctl(PR_SET_CHILD_SUBREAPER)")


def _stat_fields(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, ppid) from /proc/PID/stat, None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    rest = text[text.rindex(")") + 2 :].split()
    return comm, rest[0], int(rest[1])


def process_gone(pid: int) -> bool:
    """The process has exited: no /proc entry, or a zombie waiting to be reaped."""
    fields = _stat_fields(pid)
    return fields is None or fields[1] in ("Z", "X")


def reap_tgtd_zombies() -> list[int]:
    """Collect the exit status of every zombie tgtd that is pytest's child; their pids."""
    me = os.getpid()
    reaped = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None or fields != ("tgtd", "Z", me):
            continue
        with contextlib.suppress(ChildProcessError):
            os.waitpid(int(entry), os.WNOHANG)
            reaped.append(int(entry))
    return reaped


def tgtd_pids(control_ports: Sequence[int] | range) -> dict[int, int]:
    """Live tgtds by control port, for these control ports only."""
    return {
        p.cmdline.control_port: p.pid
        for p in scan_tgtd()
        if p.cmdline.control_port in control_ports
    }


def stop_tgtd(control_port: int, pid: int) -> None:
    """Remove every target (dropping sessions), delete the system, SIGKILL as last resort."""
    control = g.TgtControl(control_port, timeout_s=STOP_TIMEOUT_S)
    with contextlib.suppress(g.TgtCommandError):
        control.remove_all(force=True)
    with contextlib.suppress(g.TgtCommandError):
        control.delete_system()
    if not wait_exit(pid, STOP_TIMEOUT_S):
        # Only this pid: it runs with one of our reserved control ports.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_exit(pid, STOP_TIMEOUT_S)


# ---------------------------------------------------------------------------
# the initiator


def run_tool(argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def portal_url(port: int, target: str = "", lun: int | None = None) -> str:
    url = f"iscsi://127.0.0.1:{port}/{target}"
    return f"{url}/{lun}" if lun is not None else url


def iscsi_ls(port: int) -> subprocess.CompletedProcess[str]:
    return run_tool(["iscsi-ls", "-s", portal_url(port)])


def listed_targets(port: int) -> list[str]:
    """The targets an initiator discovers on the portal (iscsi-ls must succeed)."""
    done = iscsi_ls(port)
    assert done.returncode == 0, f"iscsi-ls on {port}: {done.stdout}{done.stderr}"
    return sorted(
        line.split()[0].removeprefix("Target:")
        for line in done.stdout.splitlines()
        if line.startswith("Target:")
    )


def iscsi_inq(port: int, target: str, lun: int) -> subprocess.CompletedProcess[str]:
    return run_tool(["iscsi-inq", portal_url(port, target, lun)])


def assert_lun_answers(port: int, target: str, lun: int) -> None:
    done = iscsi_inq(port, target, lun)
    assert done.returncode == 0, f"iscsi-inq {target}/{lun}: {done.stdout}{done.stderr}"
    assert "Peripheral Device Type" in done.stdout or "Vendor" in done.stdout, done.stdout


@dataclass
class Perf:
    """iscsi-perf doing small reads on one LUN, with reconnects disabled (-x 0)."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    name: str
    port: int

    def log(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def progress(self) -> int:
        """Progress reports printed so far: one a second while I/O flows."""
        return self.log().count("iops current")

    def errors(self) -> list[str]:
        """What iscsi-perf says went wrong: failed I/O, a lost connection, a reconnect."""
        text = self.log().replace("\r", "\n")
        markers = ("failed", "error", "reconnect", "Failed")
        return [line for line in text.splitlines() if any(m in line for m in markers)]

    def wait_progress(self, more: int = 1, timeout: float = 10) -> None:
        """Wait until iscsi-perf reports `more` new progress lines (I/O still flows)."""
        start = self.progress()

        def flowed() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"iscsi-perf exited {self.proc.returncode}: {self.log()}")
            return self.progress() >= start + more

        wait_for(flowed, timeout, f"iscsi-perf on {self.port} to make progress")

    def stop(self) -> int:
        """SIGINT (iscsi-perf logs out and exits); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


class Initiators:
    """Starts iscsi-perf sessions and stops every one of them at the end of the test."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[Perf] = []

    def hold(self, port: int, target: str, lun: int = 1, seconds: int = 600) -> Perf:
        """Log in to target's LUN and wait until the tgtd on `port` lists the session."""
        n = len(self.running)
        name = f"{IQN_PREFIX}:perf{n}"
        log_path = self.workdir / f"iscsi-perf-{port}-{n}.log"
        # stdbuf: iscsi-perf reports progress with \r and no newline, block-buffered otherwise
        argv = ["stdbuf", "-o0", "iscsi-perf", "-i", name, "-m", "1", "-b", "1", "-x", "0"]
        argv += ["-t", str(seconds), portal_url(port, target, lun)]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        perf = Perf(proc, log_path, name, port)
        self.running.append(perf)
        control = g.TgtControl(port)

        def logged_in() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"iscsi-perf exited: {perf.log()}")
            return f"Initiator: {name} " in control.show_targets_text()

        wait_for(logged_in, 20, f"{name} to log in to {target}")
        return perf

    def stop_all(self) -> None:
        for perf in self.running:
            perf.stop()


# ---------------------------------------------------------------------------
# the tree


@dataclass(frozen=True)
class Ran:
    """One tgtwatch command: exit code, stdout, stderr, seconds it took."""

    code: int
    out: str
    err: str
    seconds: float

    def __str__(self) -> str:
        return (
            f"exit {self.code} after {self.seconds:.2f} s\n--- out\n{self.out}--- err\n{self.err}"
        )


@dataclass
class InstanceTree:
    """One test's tgtwatch world; see the module docstring."""

    root: Path
    settings: dict[str, Any] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    _locks: dict[int, IO[str]] = field(default_factory=dict)
    _spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.instances_dir.mkdir(parents=True, exist_ok=True)
        self.tgt_dir.mkdir(exist_ok=True)
        self.backing_dir.mkdir(exist_ok=True)
        self.write_settings()

    # -- paths and settings --

    @property
    def instances_dir(self) -> Path:
        return self.root / "conf.d"

    @property
    def tgt_dir(self) -> Path:
        return self.root / "tgt"

    @property
    def backing_dir(self) -> Path:
        return self.root / "backing"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def settings_path(self) -> Path:
        return self.root / "tgtwatch.yaml"

    @property
    def journal_socket(self) -> Path:
        """Never created: audit records go to stderr (and to audit_log)."""
        return self.root / "no-journal.socket"

    def write_settings(self, **overrides: Any) -> None:
        self.settings.update(overrides)
        body: dict[str, Any] = {
            "tgt_dir": str(self.tgt_dir),
            "instances_dir": str(self.instances_dir),
            "backend": "direct",
            "default_instance": {"manage": False},
            "state_dir": str(self.state_dir),
            "drain_timeout_s": 1,
            "on_drain_timeout": "wait",
            "audit_log": str(self.audit_log),
            **self.settings,
        }
        # JSON is YAML: no need to hand-format the file.
        self.settings_path.write_text(json.dumps(body, indent=1) + "\n")

    # -- ports, backing files and instance files --

    def reserve_port(self) -> int:
        port, lock = reserve_port(INSTANCE_PORTS, self._locks)
        self._locks[port] = lock
        self.ports.append(port)
        return port

    def backing(self, name: str, size: int = 8 << 20) -> Path:
        """A sparse backing file, created once (never truncated: it may be a LUN in use)."""
        path = self.backing_dir / name
        with path.open("ab") as f:
            if f.tell() == 0:
                f.truncate(size)
        return path

    def write_instance(
        self, name: str, port: int, targets: Mapping[str, Sequence[Path]] | None = None
    ) -> Path:
        """NAME.conf on 127.0.0.1:PORT; by default one target with one LUN."""
        if targets is None:
            targets = {iqn(name): [self.backing(f"{name}-1.img")]}
        lines = [f'SOCKET_OPTS="{port}"', f'PORTAL_OPTS="127.0.0.1:{port}"', ""]
        for target, stores in targets.items():
            lines.append(f"<target {target}>")
            lines += [f"    backing-store {store}" for store in stores]
            lines += ["    initiator-address ALL", "</target>", ""]
        path = self.instances_dir / f"{name}.conf"
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text("\n".join(lines))
        tmp.chmod(0o644)
        tmp.replace(path)  # atomic, as an operator's tool would
        return path

    def remove_instance(self, name: str) -> None:
        (self.instances_dir / f"{name}.conf").unlink()

    # -- running tgtwatch --

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        env["TGTWATCH_JOURNAL_SOCKET"] = str(self.journal_socket)
        return {**env, **extra}

    def tgtwatch(
        self, *args: str, subprocess_: bool = False, timeout: float = COMMAND_TIMEOUT_S
    ) -> Ran:
        """`tgtwatch -c SETTINGS ARGS...`, in-process by default."""
        argv = ["-c", str(self.settings_path), *args]
        started = time.monotonic()
        if subprocess_:
            done = subprocess.run(
                [str(TGTWATCH), *argv],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                env=self.env(),
                check=False,
            )
            return Ran(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
        out, err = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TGTWATCH_JOURNAL_SOCKET", str(self.journal_socket))
            code = cli.main(argv, out, err)
        return Ran(code, out.getvalue(), err.getvalue(), time.monotonic() - started)

    def apply(self, *, subprocess_: bool = False) -> Ran:
        return self.tgtwatch("apply", subprocess_=subprocess_)

    def spawn(self, *args: str, log_name: str) -> tuple[subprocess.Popen[bytes], Path]:
        """The real executable in the background; output (both streams) to a log file."""
        log_path = self.root / log_name
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(TGTWATCH), "-c", str(self.settings_path), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
            )
        self._spawned.append(proc)
        return proc, log_path

    def status(self) -> dict[int, dict[str, Any]]:
        """`status --json` instances on this test's ports, by port."""
        ran = self.tgtwatch("status", "--json")
        assert ran.code == 0, str(ran)
        body = json.loads(ran.out)
        return {i["port"]: i for i in body["instances"] if i["port"] in self.ports}

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]

    def pids(self) -> dict[int, int]:
        """The live tgtd on each of this test's ports, by port (control port == port)."""
        return tgtd_pids(self.ports)

    # -- checks --

    def assert_status_matches_tgtd(self) -> dict[int, dict[str, Any]]:
        """status --json agrees with what each tgtd says (targets, sessions) and /proc."""
        status = self.status()
        running = self.pids()
        for port in self.ports:
            entry = status.get(port)
            pid = running.get(port)
            if pid is None:
                assert entry is None or entry["pid"] is None, (port, entry)
                continue
            assert entry is not None, f"status lists no instance on {port}: {status}"
            assert entry["pid"] == pid, (port, entry, pid)
            assert not process_gone(pid)
            shown = g.TgtControl(port).show_targets_text()
            targets: tuple[TargetInfo, ...] = parse_show_targets(shown)
            assert sorted(entry["targets"]) == sorted(t.name for t in targets), (entry, shown)
            assert entry["sessions"] == sum(len(t.nexuses) for t in targets), (entry, shown)
        return status

    # -- cleanup --

    def cleanup(self) -> None:
        """Stop every tgtd on this test's control ports; reap; release the ports."""
        errors: list[str] = []
        for proc in self._spawned:
            # a `tgtwatch drain` still waiting: SIGTERM cancels it (the port stays offline)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_TIMEOUT_S)
        for port, pid in tgtd_pids(self.ports).items():
            try:
                stop_tgtd(port, pid)
            except Exception as exc:
                errors.append(f"port {port}: {exc}")
        reap_tgtd_zombies()
        left = tgtd_pids(self.ports)
        if left:
            errors.append(f"tgtds left running: {left}")
        for port in self.ports:
            if port not in left:
                # tgtd leaves its socket and lock file behind; it held them, so they are ours
                for name in (f"socket.{port}", f"socket.{port}.lock"):
                    with contextlib.suppress(FileNotFoundError):
                        (TGTD_RUN_DIR / name).unlink()
        for lock in self._locks.values():
            lock.close()
        self._locks.clear()
        if errors:
            raise AssertionError("cleanup: " + "; ".join(errors))


@pytest.fixture
def child_subreaper() -> Iterator[None]:
    """Orphaned tgtds (their `tgtwatch apply` exited) become pytest's children, reapable."""
    set_child_subreaper(True)
    try:
        yield
    finally:
        reap_tgtd_zombies()
        set_child_subreaper(False)


@pytest.fixture
def tree(
    tgt_programs: g.TgtPrograms, tmp_path: Path, child_subreaper: None
) -> Iterator[InstanceTree]:
    """A tgtwatch tree in tmp_path; every tgtd it caused is stopped when the test ends."""
    instance_tree = InstanceTree(tmp_path / "tw")
    try:
        yield instance_tree
    finally:
        instance_tree.cleanup()


@pytest.fixture
def initiators(iscsi_tools: None, tmp_path: Path) -> Iterator[Initiators]:
    """iscsi-perf sessions, all stopped at the end (before the tree's tgtds are)."""
    held = Initiators(tmp_path)
    try:
        yield held
    finally:
        held.stop_all()
