"""The reliability suite's world: the daemon harness on ports 15000-15999, with every tgt
program wrapped so that each argv it was run with is logged and can be checked.

`RelWorld` is tests/integration/daemon_harness.DaemonWorld (a real `tgtwatch run` with
notify and journal sockets bound by the test, cleanup of every tgtd on the test's control
ports, child subreaper) with:

- ports reserved from 15000-15999 only (the same cooperative lock files);
- `bin/tgtd`, `bin/tgtadm`, `bin/tgt-admin`: shell wrappers first on the daemon's PATH
  (tgtwatch resolves programs on PATH; tgt-admin runs tgtadm by bare name through the
  shell, so its tgtadm calls go through the wrapper too) that append their argv to
  `argv.log` as one record (fields separated by \\x1f, the record ended by \\x1e\\n, in a
  single write) and then exec the real program, unless a fault file in `faults/` tells
  them to fail or hang first;
- `apply()`: `tgtwatch apply` as a subprocess with the same PATH;
- a reaper for orphans a SIGKILLed daemon leaves behind (tgtadm, tgt-admin, shells),
  collected by pid, never with waitpid(-1).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _dir in (_TESTS, _TESTS / "integration"):
    if str(_dir) not in sys.path:
        sys.path.insert(0, str(_dir))

import daemon_harness as dh  # noqa: E402
from daemon_harness import REAL, DaemonWorld, set_child_subreaper  # noqa: E402
from engines import engine_fixture, pytest_generate_tests  # noqa: E402

RELIABILITY_PORTS = range(15000, 16000)
TOOLS = ("tgtd", "tgtadm", "tgt-admin")
# Zombies a killed daemon's children may become once they are handed to the subreaper.
ORPHAN_NAMES = ("tgtd", "tgtadm", "tgt-admin", "tgtd-killer", "sh", "sleep", "perl")
RECORD_END = "\x1e\n"
FIELD_SEP = "\x1f"

# $0 is the wrapper's name; the real program is exec'd with the very same arguments.
# A fault file faults/NAME.fail makes it exit 1; faults/NAME.hang makes it hang (exec sleep,
# so the gateway's timeout kills the process group); faults/NAME.slow-remove delays removing
# targets (tgt-admin's `-c /dev/null` or tgtadm's target delete, a drain's last step) by
# 2 s; an executable faults/NAME.before runs first with the same arguments. The record is
# built in a variable and written by one printf: one write(2) with O_APPEND, so concurrent
# calls never interleave.
_WRAPPER = """#!/bin/sh
rec=$(printf '%s\\037' "$(basename "$0")" "$@")
printf '%s\\036\\n' "$rec" >> {log}
if [ -x {faults}/{name}.before ]; then {faults}/{name}.before "$@"; fi
if [ -e {faults}/{name}.fail ]; then echo "{name}: injected failure" >&2; exit 1; fi
if [ -e {faults}/{name}.hang ]; then exec sleep 3600; fi
case "$*" in *" -c /dev/null"*|*"--op delete --mode target"*)
  [ -e {faults}/{name}.slow-remove ] && sleep 2;; esac
exec {real} "$@"
"""


@dataclass(frozen=True)
class Call:
    """One run of a tgt program, as its wrapper saw it."""

    program: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        return shlex.join([self.program, *self.args])


class RelWorld(DaemonWorld):
    """DaemonWorld on 15000-15999 with logging wrappers for every tgt program."""

    PORTS = RELIABILITY_PORTS

    def __post_init__(self) -> None:
        super().__post_init__()
        self.faults_dir.mkdir(exist_ok=True)
        self.argv_log.touch()
        real = {"tgtd": REAL.tgtd, "tgtadm": REAL.tgtadm, "tgt-admin": REAL.tgt_admin}
        for name in TOOLS:
            self.install_wrapper(
                name,
                _WRAPPER.format(
                    log=shlex.quote(str(self.argv_log)),
                    faults=shlex.quote(str(self.faults_dir)),
                    name=name,
                    real=shlex.quote(real[name]),
                ),
            )

    @property
    def argv_log(self) -> Path:
        return self.root / "argv.log"

    @property
    def faults_dir(self) -> Path:
        return self.root / "faults"

    # -- faults --

    def fault(self, program: str, kind: str) -> Path:
        """Make `program` fail (kind 'fail') or hang ('hang') from now on."""
        path = self.faults_dir / f"{program}.{kind}"
        path.touch()
        return path

    def slow_remove(self) -> Path:
        """A drain's removal of its targets takes 2 s: tgt-admin's with engine tgt-admin,
        tgtadm's per-target deletes with the native engine."""
        return self.fault("tgtadm" if self.engine == "native" else "tgt-admin", "slow-remove")

    def heal(self) -> None:
        for path in self.faults_dir.iterdir():
            path.unlink()

    # -- the argv log --

    def calls(self) -> list[Call]:
        text = self.argv_log.read_text(encoding="utf-8", errors="replace")
        calls = []
        for record in text.split(RECORD_END):
            if not record:
                continue
            fields = record.split(FIELD_SEP)
            assert fields[-1] == "", f"malformed argv record {record!r}"
            calls.append(Call(fields[0], tuple(fields[1:-1])))
        return calls

    def call_count(self) -> int:
        return self.argv_log.read_bytes().count(RECORD_END.encode())

    # -- running tgtwatch --

    def tool_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        }
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
        env["TGTWATCH_JOURNAL_SOCKET"] = str(self.root / "no-journal.socket")
        return env

    def tgtwatch(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(dh.TGTWATCH), "-c", str(self.settings_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=self.tool_env(),
            check=False,
        )

    def apply(self) -> subprocess.CompletedProcess[str]:
        return self.tgtwatch("apply")

    # -- what runs --

    def tgtds_on(self, port: int) -> list[int]:
        """Every live tgtd whose control port or portal port is `port`."""
        return [p.pid for p in dh.scan_tgtd() if port in (p.cmdline.control_port, p.cmdline.port)]

    def targets_on(self, port: int) -> tuple[list[str], str]:
        """(`TARGET/LUNS` for each target, system state) of the tgtd on control port `port`."""
        control = dh.g.TgtControl(port, REAL, timeout_s=30)
        names = sorted(f"{t.name}/{t.luns}" for t in control.targets())
        state = control.system().state
        return names, state.value if state else ""


def my_orphans(names: Sequence[str] = ORPHAN_NAMES) -> list[tuple[int, str, str]]:
    """(pid, comm, state) of processes handed to pytest (the subreaper) with these names."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = dh.proc_stat(int(entry))
        if fields is None or fields[0] not in names or int(fields[2]) != me:
            continue
        found.append((int(entry), fields[0], fields[1]))
    return found


def reap_my_orphans(protect: Sequence[int] = ()) -> None:
    """Reap zombie orphans (tools of a killed daemon) by pid; never a pid in `protect`."""
    for pid, _, state in my_orphans():
        if state == "Z" and pid not in protect:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def wait_orphans_done(timeout: float, protect: Sequence[int] = ()) -> None:
    """Wait until the tools a killed daemon left running (now pytest's children) have
    exited, reaping them; tgtds are meant to outlive the daemon and are not waited for."""
    tools = tuple(n for n in ORPHAN_NAMES if n not in ("tgtd",))

    def done() -> bool:
        reap_my_orphans(protect)
        return not [o for o in my_orphans(tools) if o[2] != "Z" and o[0] not in protect]

    dh.wait_for(done, timeout, "the killed daemon's tool processes to finish", max_interval=0.05)


@contextlib.contextmanager
def mounted(argv: list[str], target: Path) -> Iterator[None]:
    """`argv` mounts something on `target`; lazily unmounted whatever happens."""
    subprocess.run(argv, check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@contextlib.contextmanager
def rel_world(
    tmp_path: Path, kind: type[RelWorld] = RelWorld, *, engine: str = "native"
) -> Iterator[RelWorld]:
    sock_dir = Path(tempfile.mkdtemp(prefix="twr", dir="/tmp"))
    set_child_subreaper(True)
    world = kind(tmp_path / "tw", sock_dir=sock_dir, engine=engine)
    try:
        yield world
    finally:
        try:
            world.cleanup()
        finally:
            reap_my_orphans()
            dh.reap_orphans()
            set_child_subreaper(False)
            shutil.rmtree(sock_dir, ignore_errors=True)


__all__ = [
    "REAL",
    "Call",
    "RelWorld",
    "dh",
    "engine_fixture",
    "mounted",
    "my_orphans",
    "pytest_generate_tests",
    "reap_my_orphans",
    "rel_world",
    "wait_orphans_done",
]
