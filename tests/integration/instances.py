"""tgtwatch driving real tgtds: a settings tree in tmp_path, instances on ports 13100-13199.

`InstanceTree` is one test's world: a settings file (backend direct, the default instance
unmanaged, state, audit log and tgtd logs in tmp_path), an instances directory and sparse
backing files. Tests write instance files with it and run tgtwatch through
`tgtwatch.cli.main.main` in-process or the real `tgtwatch` executable as a subprocess.

Cleanup (`InstanceTree.cleanup`, run by the `tree` fixture's finalizer even when the test
fails): `TgtTree.stop_tgtds` (tgt_tree.py) stops only the tgtds on the test's own control
ports. PID 1 in the sandbox does not reap orphans, so the tgtd a `tgtwatch apply`
*subprocess* started would stay a zombie once it exits: the `child_subreaper` fixture makes
pytest their reaper (tgt_tree.py says how).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tgt_tree import (
    STOP_TIMEOUT_S,
    TGTWATCH,
    TgtTree,
    iscsi_ls,
    listed_targets,
    portal_url,
    process_gone,
    reap_orphans,
    run_tool,
    set_child_subreaper,
    tgtd_pids,
)

# wait_for (tests/helpers.py) through tgtd_harness, which puts tests/ on sys.path first
from tgtd_harness import wait_for

from tgtwatch.cli import main as cli
from tgtwatch.tgt import gateway as g
from tgtwatch.tgt.show import TargetInfo, parse_show_targets

INSTANCE_PORTS = range(13100, 13200)
COMMAND_TIMEOUT_S = 60.0
IQN_PREFIX = "iqn.2026-11.test.tgtwatch"


def iqn(name: str, disk: int = 1) -> str:
    return f"{IQN_PREFIX}:{name}-disk{disk}"


# ---------------------------------------------------------------------------
# the initiator


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
class InstanceTree(TgtTree):
    """One test's tgtwatch world; see the module docstring."""

    PORTS = INSTANCE_PORTS
    IQN_PREFIX = IQN_PREFIX
    BACKING_SIZE = 8 << 20

    _spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def journal_socket(self) -> Path:
        """Never created: audit records go to stderr (and to audit_log)."""
        return self.root / "no-journal.socket"

    def default_settings(self) -> dict[str, Any]:
        return {**super().default_settings(), "drain_timeout_s": 1, "on_drain_timeout": "wait"}

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
        for proc in self._spawned:
            # a `tgtwatch drain` still waiting: SIGTERM cancels it (the port stays offline)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_TIMEOUT_S)
        errors = self.stop_tgtds()
        if errors:
            raise AssertionError("cleanup: " + "; ".join(errors))


@pytest.fixture
def child_subreaper() -> Iterator[None]:
    """Orphaned tgtds (their `tgtwatch apply` exited) become pytest's children, reapable."""
    set_child_subreaper(True)
    try:
        yield
    finally:
        reap_orphans()
        set_child_subreaper(False)


@pytest.fixture
def tree(
    tgt_programs: g.TgtPrograms, tmp_path: Path, child_subreaper: None, engine: str
) -> Iterator[InstanceTree]:
    """A tgtwatch tree in tmp_path loading with `engine` (engines.py: each test runs under
    both); every tgtd it caused is stopped when the test ends."""
    instance_tree = InstanceTree(tmp_path / "tw", engine=engine)
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


__all__ = [
    "Initiators",
    "InstanceTree",
    "Ran",
    "assert_lun_answers",
    "iqn",
    "iscsi_inq",
    "iscsi_ls",
    "listed_targets",
    "process_gone",
    "reap_orphans",
    "tgtd_pids",
    "wait_for",
]
