"""The systemd backend: each instance is its own unit, tgtd@NAME.service, driven by systemctl."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

from tgtwatch.backends import envfile
from tgtwatch.backends.base import Outcome, Result
from tgtwatch.backends.direct import DirectBackend, portal_listens
from tgtwatch.config.settings import Settings
from tgtwatch.model.structs import DrainStop, InstanceKind, InstanceSpec, Observed
from tgtwatch.tgt.cmdline import parse_tgtd_cmdline
from tgtwatch.tgt.gateway import TgtCommandError, TgtControl, TgtPrograms, child_env

UNIT_TEMPLATE = "tgtd@{name}.service"
SYSTEMCTL_TIMEOUT_S = 120.0
# A unit that still runs an instance's old port is polled this often until it has stopped.
UNIT_POLL_S = 0.2
UNIT_UP_STATES = frozenset({"active", "reloading", "deactivating"})


def stop_marker(state_dir: Path, port: int) -> Path:
    """Present while tgtwatch itself stops a unit: its ExecStop then records no audit."""
    return state_dir / "stopping" / str(port)


def unit_for(name: str) -> str:
    return UNIT_TEMPLATE.format(name=name)


def unit_of_pid(pid: int, proc_root: Path = Path("/proc")) -> str | None:
    """The service unit a process belongs to, from its cgroup path (cheap, no D-Bus)."""
    try:
        text = (proc_root / str(pid) / "cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        for part in reversed(line.rpartition(":")[2].split("/")):
            if part.endswith(".service"):
                return part
    return None


@dataclass(frozen=True)
class SystemctlError(Exception):
    argv: tuple[str, ...]
    returncode: int | None
    output: str

    def __str__(self) -> str:
        last = self.output.strip().splitlines()[-1:] or [""]
        return f"{' '.join(self.argv)}: exit {self.returncode}: {last[0]}"


@dataclass(frozen=True)
class Systemctl:
    """The only code that runs systemctl and journalctl."""

    program: str = "systemctl"
    timeout_s: float = SYSTEMCTL_TIMEOUT_S

    def run(self, *args: str) -> str:
        argv = (self.program, *args)
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                env=child_env(os.environ),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SystemctlError(argv, None, str(exc)) from None
        if done.returncode != 0:
            raise SystemctlError(argv, done.returncode, done.stdout + done.stderr)
        return done.stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("show", *(f"--property={p}" for p in props), unit)
        return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)

    def activating(self) -> set[str]:
        out = self.run(
            "list-units",
            "--type=service",
            "--state=activating",
            "--plain",
            "--no-legend",
            "tgtd@*",
        )
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    def journal_tail(self, unit: str, lines: int = 20) -> str:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            return subprocess.run(
                ("journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"),
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout
        return ""


class SystemdBackend:
    """Start and stop through systemd; query and reload tgtd itself through the gateway.

    A reload runs the same `tgt-admin --update ALL` as the unit's ExecReload, but through
    the gateway: only its output says which targets were left alone because they are in
    use, and `systemctl reload` sends that output to the journal, not to us.
    """

    name = "systemd"

    def __init__(
        self,
        settings: Settings,
        *,
        programs: TgtPrograms | None = None,
        systemctl: Systemctl | None = None,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self.settings = settings
        self.programs = programs or TgtPrograms()
        self.systemctl = systemctl or Systemctl()
        self.proc_root = proc_root
        self.direct = DirectBackend(
            settings.state_dir / "log",
            programs=self.programs,
            default_portal_port=settings.default_instance.portal.port,
            proc_root=proc_root,
            tool_timeout_s=settings.tool_timeout_s,
        )
        # Each costs a systemctl process (~10 ms in the test container) on a start's path:
        # tgtd pids whose units were seen active (a unit activates once per MainPID), the
        # units the last observation saw a tgtd in, and the units this backend is stopping.
        self._lock = threading.Lock()
        self._settled: set[int] = set()
        self._units_seen: frozenset[str] = frozenset()
        self._stopping: set[str] = set()

    def observe(self, detail: Collection[int] | None = None) -> Observed:
        observed = self.direct.observe(detail)
        units = {
            port: unit_of_pid(running.pid, self.proc_root) if running.pid else None
            for port, running in observed.instances.items()
        }
        pids = {
            running.pid: units[port]
            for port, running in observed.instances.items()
            if running.pid and (units[port] or "").startswith("tgtd@")
        }
        with self._lock:
            self._settled &= pids.keys()  # a pid seen again after it died is a new tgtd
            unsettled = pids.keys() - self._settled
            self._units_seen = frozenset(u for u in units.values() if u is not None)
        activating: set[str] = set()
        if unsettled:
            try:
                activating = self.systemctl.activating()
            except SystemctlError:
                unsettled = set()  # unknown: ask again next time
            with self._lock:
                self._settled |= {pid for pid in unsettled if pids[pid] not in activating}
        instances = {
            port: replace(
                running, unit=units[port], starting=running.starting or units[port] in activating
            )
            for port, running in observed.instances.items()
        }
        return Observed(instances)

    def start(self, spec: InstanceSpec, cancel: threading.Event) -> Outcome:
        unit = unit_for(spec.name)
        started = time.monotonic()
        # Only a unit that ran a tgtd when last seen, or that this backend is stopping, can
        # hold the old port of a port change; asking systemd costs every start ~10 ms.
        with self._lock:
            maybe_up = unit in self._units_seen or unit in self._stopping
        waited = self._wait_old_port(unit, spec, cancel) if maybe_up else None
        if waited is not None:
            return waited
        # Only now: the old port's ExecStop reads the env file until its unit has stopped.
        try:
            self._write_env(spec)
        except envfile.EnvFileError as exc:  # accounts tgt-admin could not apply either
            return Outcome(Result.FAILED, str(exc))
        # Just rendered from this very check: the unit's ExecStartPre consumes the token
        # instead of validating again in a fresh Python process (about 200 ms per start).
        fresh = envfile.fresh_token(self.settings, spec.name)
        fresh.touch(mode=0o600)
        try:
            # Returns once ExecStartPost has set the system ready: the targets are loaded.
            self.systemctl.run("start", unit)
            pid = int(self.systemctl.run("show", "-p", "MainPID", "--value", unit).strip() or 0)
            with self._lock:
                self._settled.add(pid)  # `systemctl start` returned: no longer activating
        except SystemctlError as exc:
            return Outcome(
                Result.FAILED, f"{unit} did not start: {exc}", self.systemctl.journal_tail(unit)
            )
        finally:
            fresh.unlink(missing_ok=True)
        control = TgtControl(spec.control_port, self.programs, self.settings.tool_timeout_s)
        try:
            portals = control.portals()
            loaded = {t.name: t.luns for t in control.targets()}
        except TgtCommandError as exc:
            return Outcome(Result.FAILED, f"{unit} started but tgtd does not answer: {exc}")
        if not any(p.port == spec.port for p in portals) or not portal_listens(spec.portal):
            with contextlib.suppress(SystemctlError):
                self.systemctl.run("stop", unit)
            return Outcome(
                Result.FAILED,
                f"{unit}: tgtd could not bind portal {spec.portal} (in use?); stopped",
                self.systemctl.journal_tail(unit),
            )
        what = f"{unit} pid {pid} ready on {spec.portal} after {time.monotonic() - started:.2f} s"
        missing = [
            f"{t.name} has {loaded.get(t.name, 0)} of {t.luns} LUNs"
            for t in spec.targets
            if loaded.get(t.name, 0) < t.luns
        ]
        if missing:
            # tgt-admin exits 0 when it skips a backing store (missing, or open elsewhere).
            return Outcome(
                Result.PARTIAL,
                f"{what}, but: {'; '.join(missing)}",
                self.systemctl.journal_tail(unit),
                pid,
                incomplete=True,
            )
        return Outcome(Result.OK, what, "", pid)

    def _control_port_of(self, pid: int) -> int | None:
        try:
            parsed = parse_tgtd_cmdline((self.proc_root / str(pid) / "cmdline").read_bytes())
        except OSError:
            return None
        return parsed.control_port if parsed is not None else None

    def _wait_old_port(
        self, unit: str, spec: InstanceSpec, cancel: threading.Event
    ) -> Outcome | None:
        """A port change is DrainStop of the old port and Start of the new one, on two lanes
        but one unit: wait until the drain lane has stopped the unit that runs the old port.
        Starting it now would be a no-op on an active unit, and rewriting its env file would
        make its ExecStop drain the new port instead of the old one."""
        old: int | None = None
        while True:
            try:
                props = self.systemctl.show(unit, "ActiveState", "MainPID")
            except SystemctlError:
                return None  # let `systemctl start` report what is wrong
            state = props.get("ActiveState", "")
            if state not in UNIT_UP_STATES:
                return None
            # While it stops (ExecStop runs on after tgtd exited) a start job would cancel
            # the stop job: wait for that too.
            if state != "deactivating" and old is None:
                pid = int(props.get("MainPID") or 0)
                running = self._control_port_of(pid) if pid else None
                if running is None or running == spec.control_port:
                    return None
                old = running
            if cancel.wait(UNIT_POLL_S):
                return Outcome(
                    Result.FAILED,
                    f"{unit} still runs control port {old}; start on {spec.port} cancelled",
                )

    def _write_env(self, spec: InstanceSpec) -> None:
        envfile.write_spec(self.settings, spec)

    def reload(self, spec: InstanceSpec) -> Outcome:
        if spec.kind is InstanceKind.DROPIN:
            try:
                self._write_env(spec)
            except envfile.EnvFileError as exc:
                return Outcome(Result.FAILED, str(exc))
        return self.direct.reload(spec)

    def drain_stop(
        self, action: DrainStop, timeout_s: float | None, force: bool, cancel: threading.Event
    ) -> Outcome:
        running = self.direct.observe((action.port,)).instances.get(action.port)
        unit = unit_of_pid(running.pid, self.proc_root) if running and running.pid else None
        if (
            running is None
            or unit is None
            or not unit.startswith("tgtd@")
            # The unit's own ExecStop (`tgtwatch drain`): `systemctl stop` from there would
            # wait for the very stop job it runs in (a deadlock until TimeoutStopSec).
            or unit == unit_of_pid(os.getpid(), self.proc_root)
        ):
            return self.direct.drain_stop(action, timeout_s, force, cancel)
        with self._lock:
            self._stopping.add(unit)
        try:
            return self._drain_unit(unit, running.pid or 0, action, timeout_s, force, cancel)
        finally:
            with self._lock:
                self._stopping.discard(unit)

    def _drain_unit(
        self,
        unit: str,
        pid: int,
        action: DrainStop,
        timeout_s: float | None,
        force: bool,
        cancel: threading.Event,
    ) -> Outcome:
        # Drained here, as the direct backend drains: the port closes the moment tgtd
        # exits, not after ExecStop's fresh Python process (~150 ms) has done the same.
        # tgtd exits with code 0, so Restart=on-failure leaves it be.
        drained = self.direct.drain_stop(action, timeout_s, force, cancel)
        if drained.draining or drained.result is Result.FAILED:
            return drained  # the unit keeps running, offline; the next cycle tries again
        marker = stop_marker(self.settings.state_dir, action.port)
        try:
            # ExecStop (`tgtwatch drain`) finds nothing left to drain. `systemctl stop`
            # marks the unit stopped (and cancels the auto-restart of a tgtd the drain had
            # to kill). The marker keeps ExecStop from auditing a stop this daemon audits.
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            self.systemctl.run("stop", unit)
            # `systemctl stop` succeeds even when ExecStop failed and tgtd had to be killed.
            result = self.systemctl.show(unit, "Result").get("Result", "")
        except SystemctlError as exc:
            return Outcome(
                Result.FAILED,
                f"{unit} did not stop: {exc}",
                self.systemctl.journal_tail(unit),
                pid,
            )
        finally:
            marker.unlink(missing_ok=True)
        if result not in ("success", ""):
            return Outcome(
                Result.PARTIAL,
                f"{unit} (pid {pid}) stopped, but with result '{result}'",
                self.systemctl.journal_tail(unit),
                pid,
            )
        if drained.result is not Result.OK:
            return replace(drained, message=f"{unit}: {drained.message}; unit stopped")
        forced = drained.message.partition("; ")[2]  # "N sessions cut off (force)"
        return Outcome(
            Result.OK,
            f"{unit} (pid {pid}) drained and stopped{'; ' + forced if forced else ''}",
            pid=pid,
        )
