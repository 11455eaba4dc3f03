"""The systemd backend: each instance is its own unit, tgtd@NAME.service, driven by systemctl."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from tgtwatch.backends import chap_files, envfile
from tgtwatch.backends.base import Outcome, Result, Unanswered
from tgtwatch.backends.direct import DirectBackend
from tgtwatch.backends.probes import portal_listens
from tgtwatch.backends.systemctl import SYSTEMCTL_TIMEOUT_S, Systemctl, SystemctlError
from tgtwatch.backends.unit_dropin import DROPIN_DIR, DropinError, ensure_dropin
from tgtwatch.config.settings import Settings
from tgtwatch.model.structs import (
    DrainStop,
    InstanceKind,
    InstanceSpec,
    Observed,
    ObservedInstance,
)
from tgtwatch.tgt.chap import AccountError
from tgtwatch.tgt.cmdline import parse_tgtd_cmdline
from tgtwatch.tgt.gateway import TgtCommandError, TgtControl, TgtPrograms
from tgtwatch.tgt.ipc_client import IpcError

UNIT_TEMPLATE = "tgtd@{name}.service"
__all__ = ["SYSTEMCTL_TIMEOUT_S", "Systemctl", "SystemctlError", "SystemdBackend"]
# A unit still stopping is polled from this often (doubling to 1 s), for at most this long.
UNIT_POLL_S = 0.05
DEACTIVATING_WAIT_S = 60.0
UNIT_UP_STATES = frozenset({"active", "reloading", "deactivating"})


def stop_marker(state_dir: Path, port: int) -> Path:
    """Present while tgtwatch itself stops a unit: its ExecStop then records no audit."""
    return state_dir / "stopping" / str(port)


def unit_for(name: str) -> str:
    return UNIT_TEMPLATE.format(name=name)


def instance_of(unit: str | None) -> str | None:
    """NAME of tgtd@NAME.service (None for any other unit)."""
    if unit is None or not unit.startswith("tgtd@") or not unit.endswith(".service"):
        return None
    return unit[len("tgtd@") : -len(".service")] or None


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
        dropin_dir: Path = DROPIN_DIR,
    ) -> None:
        self.settings = settings
        self.dropin_dir = dropin_dir
        self.programs = programs or TgtPrograms()
        self.systemctl = systemctl or Systemctl()
        self.proc_root = proc_root
        self.direct = DirectBackend(
            settings.state_dir / "log",
            programs=self.programs,
            default_portal_port=settings.default_instance.portal.port,
            proc_root=proc_root,
            tool_timeout_s=settings.tool_timeout_s,
            engine=settings.engine,
        )
        # Each costs a systemctl process (~10 ms in the test container) on a start's path:
        # tgtd pids whose units were seen active (a unit activates once per MainPID), the
        # units the last observation saw a tgtd in, and the units this backend is stopping.
        self._lock = threading.Lock()
        self._settled: set[int] = set()
        self._units_seen: frozenset[str] = frozenset()
        self._stopping: set[str] = set()
        self._follows_state_dir = False  # the units' drop-in checked by this backend

    def observe(
        self, detail: Collection[int] | None = None, pids: Collection[int] | None = None
    ) -> Observed:
        observed = self.direct.observe(detail, pids)
        units = {
            port: unit_of_pid(running.pid, self.proc_root) if running.pid else None
            for port, running in observed.instances.items()
        }
        in_units = {
            running.pid: units[port]
            for port, running in observed.instances.items()
            if running.pid and (units[port] or "").startswith("tgtd@")
        }
        with self._lock:
            if pids is None:  # a look at every tgtd (not at a few pids)
                self._settled &= in_units.keys()  # a pid seen again after it died is new
                self._units_seen = frozenset(u for u in units.values() if u is not None)
            unsettled = in_units.keys() - self._settled
        activating: set[str] = set()
        # Asked only with details (`status`): the daemon's loop observes with none, and a
        # systemctl call (up to its 120 s timeout) must never run on the loop's thread.
        if unsettled and (detail is None or detail):
            try:
                activating = self.systemctl.activating()
            except SystemctlError:
                unsettled = set()  # unknown: ask again next time
            with self._lock:
                self._settled |= {pid for pid in unsettled if in_units[pid] not in activating}
        instances = {
            port: replace(
                running,
                unit=units[port],
                starting=running.starting or units[port] in activating,
                instance=instance_of(units[port]),
            )
            for port, running in observed.instances.items()
        }
        return Observed(instances)

    def may_run(self, control_ports: Collection[int]) -> bool:
        return self.direct.may_run(control_ports)

    def inspect(self, spec: InstanceSpec, pid: int | None = None) -> ObservedInstance | None:
        """As the direct backend, but a unit still activating is `starting`: its
        ExecStartPost loads the targets offline, then sets ready. Only an offline or silent
        tgtd needs asking systemd (a systemctl process): a ready one is past that point."""
        try:
            running = self.direct.inspect(spec, pid)
        except Unanswered:
            if not self._activating(spec.control_port):
                raise
            pid = self.direct.pid_on(spec.control_port)
            return ObservedInstance(spec.port, spec.control_port, pid, starting=True)
        if running is None or running.system_state != "offline":
            return running
        return replace(running, starting=self._activating(spec.control_port, running.pid))

    def _activating(self, control_port: int, pid: int | None = None) -> bool:
        pid = pid if pid is not None else self.direct.pid_on(control_port)
        unit = unit_of_pid(pid, self.proc_root) if pid else None
        if unit is None or not unit.startswith("tgtd@"):
            return False
        try:
            state = self.systemctl.show(unit, "ActiveState").get("ActiveState", "")
        except SystemctlError:
            return False
        return state == "activating"

    def set_ready(self, spec: InstanceSpec) -> Outcome:
        return self.direct.set_ready(spec)

    def follow_state_dir(self) -> Outcome | None:
        """Once per backend: the units read from this state_dir (a drop-in when it is not
        the unit's default, none when it is); a failed start says why when they cannot.
        The daemon calls it as it starts (a stale drop-in goes), a start at the latest."""
        with self._lock:
            if self._follows_state_dir:
                return None
            try:
                ensure_dropin(self.settings.state_dir, self._daemon_reload, self.dropin_dir)
            except (DropinError, SystemctlError) as exc:
                return Outcome(
                    Result.FAILED,
                    f"tgtd@.service cannot read state_dir {self.settings.state_dir}: {exc}",
                )
            self._follows_state_dir = True
            return None

    def _daemon_reload(self) -> None:
        self.systemctl.run("daemon-reload")

    def start(self, spec: InstanceSpec, cancel: threading.Event) -> Outcome:
        unit = unit_for(spec.name)
        started = time.monotonic()
        failed = self.follow_state_dir()
        if failed is not None:
            return failed
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
        # And the unit leaves tgtd offline for this daemon to load: no Python in its start.
        external = envfile.external_token(self.settings, spec.name)
        external.touch(mode=0o600)
        try:
            # Returns once ExecStartPost has set the system offline (the token consumed).
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
            external.unlink(missing_ok=True)
        control = TgtControl(spec.control_port, self.programs, self.settings.tool_timeout_s)
        try:
            portals = control.portals()
            bound = any(p.port == spec.port for p in portals) and portal_listens(spec.portal)
            loaded, chap = self.direct.configure(spec, control) if bound else (None, None)
        except (TgtCommandError, AccountError, IpcError) as exc:
            self._stop_quietly(unit)
            return Outcome(Result.FAILED, f"{unit} started but could not be loaded: {exc}")
        if loaded is None:
            self._stop_quietly(unit)
            return Outcome(
                Result.FAILED,
                f"{unit}: tgtd could not bind portal {spec.portal} (in use?); stopped",
                self.systemctl.journal_tail(unit),
            )
        if loaded.result is Result.FAILED:
            self._stop_quietly(unit)
            return Outcome(Result.FAILED, f"{unit} started, loading failed{loaded.message}")
        what = (
            f"{unit} pid {pid} ready on {spec.portal} after {time.monotonic() - started:.2f} s"
            f"{chap_files.summary(chap)}"
        )
        return Outcome(
            loaded.result,
            what + loaded.message,
            loaded.output,
            pid,
            loaded.busy,
            incomplete=loaded.incomplete,
        )

    def _stop_quietly(self, unit: str) -> None:
        with contextlib.suppress(SystemctlError):
            self.systemctl.run("stop", unit)

    def _control_port_of(self, pid: int) -> int | None:
        try:
            parsed = parse_tgtd_cmdline((self.proc_root / str(pid) / "cmdline").read_bytes())
        except OSError:
            return None
        return parsed.control_port if parsed is not None else None

    def _wait_old_port(
        self, unit: str, spec: InstanceSpec, cancel: threading.Event
    ) -> Outcome | None:
        """A port change is DrainStop of the old port and Start of the new one, but one unit.
        The plan holds the start until the old port's tgtd is gone; should the unit still
        run another port here (a race), the start fails at once rather than hold a lane for
        as long as the drain lasts (hours, maybe). A unit still stopping (ExecStop runs on
        after tgtd exited: a start job would cancel the stop job) is waited for, bounded,
        polling with backoff."""
        deadline = time.monotonic() + DEACTIVATING_WAIT_S
        delay = UNIT_POLL_S
        while True:
            try:
                props = self.systemctl.show(unit, "ActiveState", "MainPID")
            except SystemctlError:
                return None  # let `systemctl start` report what is wrong
            state = props.get("ActiveState", "")
            if state not in UNIT_UP_STATES:
                return None
            if state != "deactivating":
                pid = int(props.get("MainPID") or 0)
                running = self._control_port_of(pid) if pid else None
                if running is None or running == spec.control_port:
                    return None
                return Outcome(
                    Result.FAILED,
                    f"{unit} still runs control port {running}; it starts on {spec.port} "
                    "once that port has drained",
                )
            left = deadline - time.monotonic()
            if left <= 0 or cancel.wait(min(delay, left)):
                why = "cancelled" if cancel.is_set() else f"after {DEACTIVATING_WAIT_S:g} s"
                return Outcome(Result.FAILED, f"{unit} is still stopping ({why})")
            delay = min(delay * 2, 1.0)

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
