"""What every tgtwatch test tree shares: its directories, reserved ports, backing files and
instance files, the process helpers, and a cleanup that stops only the tgtds it caused.

A tree's tgtds are the ones whose *control port* is one of its reserved ports: the only
tgtds the test can have caused, wherever they listen (a tgtd that could not bind its
portal falls back to 3260 but keeps its control port). Cleanup stops those and never any
other: `tgt-admin -f --update ALL -c /dev/null` (drops targets and sessions), `tgtadm --op
delete --mode system`, SIGKILL of that pid as a last resort; in parallel, since a test
may leave 200 of them.

Zombies: PID 1 in this sandbox does not reap orphans. The fixtures make the pytest process
a child subreaper (prctl PR_SET_CHILD_SUBREAPER) while a test runs, so orphaned tgtds
become pytest's children; `reap_orphans` collects only zombies with the given names, by
pid, never `waitpid(-1)`, which would steal the exit status of the tests' own Popen
objects. "Gone" for a process means: no /proc entry, or a zombie.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

# tgtd_harness puts tests/ on sys.path: helpers and journal_proto import from there.
from tgtd_harness import TGTD_RUN_DIR, reserve_port

from tgtwatch.backends.direct import scan_tgtd
from tgtwatch.backends.probes import wait_exit
from tgtwatch.tgt import gateway as g

# The console script next to the interpreter running the tests: .venv/bin/tgtwatch.
TGTWATCH = Path(sys.executable).parent / "tgtwatch"
# The real programs (pytest's PATH has no wrappers): what wrappers exec and cleanup uses.
REAL = g.TgtPrograms()
PR_SET_CHILD_SUBREAPER = 36
STOP_TIMEOUT_S = 15.0


# ---------------------------------------------------------------------------
# processes


def set_child_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "prctl(PR_SET_CHILD_SUBREAPER)")


def proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat as [comm, state, ppid, ...]; None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return [text[text.index("(") + 1 : text.rindex(")")], *text[text.rindex(")") + 2 :].split()]


def process_gone(pid: int) -> bool:
    """The process has exited: no /proc entry, or a zombie waiting to be reaped."""
    fields = proc_stat(pid)
    return fields is None or fields[1] in ("Z", "X")


def reap_orphans(names: Sequence[str] = ("tgtd", "tgtd-killer")) -> list[int]:
    """Collect zombies with these names that are pytest's children; their pids."""
    me = os.getpid()
    reaped = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = proc_stat(int(entry))
        if fields is None or fields[0] not in names or fields[1] != "Z" or int(fields[2]) != me:
            continue
        with contextlib.suppress(ChildProcessError):
            os.waitpid(int(entry), os.WNOHANG)
            reaped.append(int(entry))
    return reaped


def tgtd_pids(control_ports: Sequence[int] | range) -> dict[int, int]:
    """Live tgtds by control port, for these control ports only."""
    wanted = set(control_ports)
    return {p.cmdline.control_port: p.pid for p in scan_tgtd() if p.cmdline.control_port in wanted}


def stop_tgtd(control_port: int, pid: int) -> None:
    """Remove every target (dropping sessions), delete the system, SIGKILL as last resort."""
    control = g.TgtControl(control_port, REAL, timeout_s=30)
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


# ---------------------------------------------------------------------------
# the tree


@dataclass
class TgtTree:
    """One test's tgtwatch tree in `root`: settings, instances, backing files, ports."""

    PORTS: ClassVar[range]
    IQN_PREFIX: ClassVar[str]
    BACKING_SIZE: ClassVar[int] = 1 << 20

    root: Path
    engine: str = "native"  # what loads the targets: "native" or "tgt-admin" (engines.py)
    settings: dict[str, Any] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    _locks: dict[int, IO[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for d in (self.instances_dir, self.tgt_dir, self.backing_dir, self.staging_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.write_settings()

    # -- paths and settings --

    @property
    def instances_dir(self) -> Path:
        return self.root / "conf.d"

    @property
    def staging_dir(self) -> Path:
        """Same file system as instances_dir: files are written here, then moved in."""
        return self.root / "staging"

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

    def default_settings(self) -> dict[str, Any]:
        """Direct backend, the tree's engine, the default instance left alone, everything in
        the tree."""
        return {
            "tgt_dir": str(self.tgt_dir),
            "instances_dir": str(self.instances_dir),
            "backend": "direct",
            "engine": self.engine,
            "default_instance": {"manage": False},
            "state_dir": str(self.state_dir),
            "audit_log": str(self.audit_log),
            # the tree's own backing files: the only stores its instance files may name
            "backing_store_roots": [str(self.backing_dir)],
        }

    def write_settings(self, **overrides: Any) -> None:
        self.settings.update(overrides)
        body = {**self.default_settings(), **self.settings}
        self.settings_path.write_text(json.dumps(body, indent=1) + "\n")  # JSON is YAML

    # -- ports, backing files, instance files --

    def reserve_port(self) -> int:
        port, lock = reserve_port(self.PORTS, self._locks)
        self._locks[port] = lock
        self.ports.append(port)
        return port

    def backing(self, name: str, size: int | None = None) -> Path:
        """A sparse backing file, created once (never truncated: it may be a LUN in use)."""
        path = self.backing_dir / name
        with path.open("ab") as f:
            if f.tell() == 0:
                f.truncate(self.BACKING_SIZE if size is None else size)
        return path

    def instance_text(
        self, name: str, port: int, targets: Mapping[str, Sequence[Path]] | None = None
    ) -> str:
        """NAME.conf on 127.0.0.1:PORT; by default one target with one LUN."""
        if targets is None:
            targets = {f"{self.IQN_PREFIX}:{name}-disk1": [self.backing(f"{name}-1.img")]}
        lines = [f'SOCKET_OPTS="{port}"', f'PORTAL_OPTS="127.0.0.1:{port}"', ""]
        for target, stores in targets.items():
            lines.append(f"<target {target}>")
            lines += [f"    backing-store {store}" for store in stores]
            lines += ["    initiator-address ALL", "</target>", ""]
        return "\n".join(lines)

    def conf(self, name: str) -> Path:
        return self.instances_dir / f"{name}.conf"

    def move_in(self, name: str, text: str) -> Path:
        """Write NAME.conf beside the directory, then rename it in (one atomic event)."""
        staged = self.staging_dir / f"{name}.conf"
        staged.write_text(text)
        staged.chmod(0o644)
        staged.replace(self.conf(name))
        return self.conf(name)

    def write_instance(
        self, name: str, port: int, targets: Mapping[str, Sequence[Path]] | None = None
    ) -> Path:
        return self.move_in(name, self.instance_text(name, port, targets))

    def remove_instance(self, name: str) -> None:
        self.conf(name).unlink()

    # -- what tgtwatch and tgtd say --

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]

    def pids(self) -> dict[int, int]:
        """The live tgtd on each of this test's ports, by port (control port == port)."""
        return tgtd_pids(self.ports)

    # -- cleanup --

    def stop_tgtds(self) -> list[str]:
        """Stop every tgtd on this tree's control ports; reap; release the ports. Errors."""
        errors: list[str] = []
        running = tgtd_pids(self.ports)
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = {port: pool.submit(stop_tgtd, port, pid) for port, pid in running.items()}
        for port, future in futures.items():
            try:
                future.result()
            except Exception as exc:
                errors.append(f"port {port}: {exc}")
        reap_orphans()
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
        return errors
