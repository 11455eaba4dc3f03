"""Which processes are tgtds tgtwatch may manage: root's, from the configured executable.

Any local user can start a process called `tgtd` with `-C 0` on its command line; one that
tgtwatch took for a tgtd would be adopted, sent a drain, or hold back a start on its port.
A process counts only when /proc says it runs as uid 0 (real, effective, saved and
filesystem uids: /proc/PID/status, readable for every process) and /proc/PID/exe is the
configured tgtd binary (or that binary replaced by a package upgrade: "... (deleted)").

/proc/PID/exe needs ptrace read access: a root process holding capabilities tgtwatch's
own unit lacks (the distribution's tgt.service, with every capability, seen from the
sandboxed tgtwatch.service) cannot be read. Such a process runs as root with more
privileges than tgtwatch: no local user can start it, so it is accepted on its uid alone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from tgtwatch.tgt.cmdline import TgtdCmdline, parse_tgtd_cmdline
from tgtwatch.tgt.gateway import TgtPrograms
from tgtwatch.tgt.ipc_client import socket_path

# Where a wrapper script in front of tgtd (tests install some) finds the real binary.
SYSTEM_SBIN = ("/usr/sbin", "/sbin")
DELETED = " (deleted)"


@dataclass(frozen=True)
class TgtdProcess:
    pid: int
    cmdline: TgtdCmdline


def trusted_executables(programs: TgtPrograms) -> frozenset[str]:
    """The binaries a managed tgtd may run: the configured tgtd, resolved; when that is a
    script (a wrapper that execs tgtd), the distribution's tgtd binary too."""
    configured = os.path.realpath(programs.tgtd)
    found = {configured}
    try:
        with open(configured, "rb") as head:
            script = head.read(2) == b"#!"
    except OSError:
        script = False
    if script:
        system = shutil.which("tgtd", path=":".join(SYSTEM_SBIN))
        if system is not None:
            found.add(os.path.realpath(system))
    return frozenset(found)


def root_uids(status: str) -> bool:
    """/proc/PID/status says every uid of the process is 0."""
    start = ("\n" + status).find("\nUid:")
    if start < 0:
        return False
    uids = status[start:].partition("\n")[0].split()[1:]
    return len(uids) == 4 and all(u == "0" for u in uids)


def trusted_exe(link: str | None, executables: Collection[str]) -> bool:
    """/proc/PID/exe names a trusted binary; None: unreadable (see the module's docstring)."""
    if link is None:
        return True
    return link.removesuffix(DELETED) in executables


def _exe(entry: str) -> str | None:
    try:
        return os.readlink(f"{entry}/exe")
    except PermissionError:
        return None


def _read(path: str) -> bytes:
    with open(path, "rb") as source:
        return source.read()


def _tgtd_in(where: str, trusted: Collection[str]) -> TgtdProcess | None:
    """The managed tgtd /proc/PID describes, or None (another program, user or binary,
    a zombie, or gone). Plain strings, not pathlib: a scan does this for every process
    (hundreds of tgtds on a busy host, pathlib was a fifth of the scan)."""
    try:
        if _read(f"{where}/comm").strip() != b"tgtd":
            return None
        if not root_uids(_read(f"{where}/status").decode("utf-8", "replace")):
            return None
        if not trusted_exe(_exe(where), trusted):
            return None
        parsed = parse_tgtd_cmdline(_read(f"{where}/cmdline"))
    except OSError:
        return None  # exited while we looked
    return TgtdProcess(int(os.path.basename(where)), parsed) if parsed is not None else None


def tgtd_at(
    pid: int, proc_root: Path = Path("/proc"), executables: Collection[str] | None = None
) -> TgtdProcess | None:
    """One pid, checked as scan_tgtd checks every one: cheap when the pid is known."""
    trusted = trusted_executables(TgtPrograms()) if executables is None else executables
    return _tgtd_in(f"{proc_root}/{pid}", trusted)


def alive(pid: int) -> bool:
    """A process with this pid exists (a zombie too: see the reconciler's use): signal 0,
    one system call, where reading its /proc entry costs ten times more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone we may not signal
    return True


def may_run(control_ports: Collection[int]) -> bool:
    """A tgtd may run on one of these control ports: its control socket exists (tgtd makes
    it as it starts; one that died may leave it behind: then it may, and /proc will say)."""
    return any(os.path.lexists(socket_path(port)) for port in control_ports)


def scan_tgtd(
    proc_root: Path = Path("/proc"),
    executables: Collection[str] | None = None,
    pids: Collection[int] | None = None,
) -> list[TgtdProcess]:
    """Every live tgtd tgtwatch may manage, from /proc (zombies, with an empty cmdline, and
    processes of other users or other binaries are skipped); only among `pids` if given."""
    trusted = trusted_executables(TgtPrograms()) if executables is None else executables
    found: list[TgtdProcess] = []
    try:
        entries = os.listdir(proc_root) if pids is None else [str(pid) for pid in pids]
    except OSError:
        return found
    for entry in entries:
        if entry.isdigit() and (process := _tgtd_in(f"{proc_root}/{entry}", trusted)) is not None:
            found.append(process)
    return sorted(found, key=lambda p: p.pid)
