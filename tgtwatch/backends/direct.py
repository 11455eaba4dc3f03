"""The direct backend: tgtd processes started and stopped by tgtwatch itself (no systemd)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Collection
from pathlib import Path

from tgtwatch.backends import chap_files, children, tgtd_procs
from tgtwatch.backends.base import Outcome, Result, Unanswered
from tgtwatch.backends.loading import Loaded, load_targets, record_file
from tgtwatch.backends.probes import portal_listens, wait_exit
from tgtwatch.backends.snapshot import SNAPSHOT_SUBDIR, write_snapshot
from tgtwatch.backends.tgtd_procs import TgtdProcess, scan_tgtd, tgtd_at, trusted_executables
from tgtwatch.config.accounts import AccountSet, account_set
from tgtwatch.config.settings import EngineKind
from tgtwatch.model.structs import (
    DrainStop,
    InstanceKind,
    InstanceSpec,
    Observed,
    ObservedInstance,
    ObservedTarget,
)
from tgtwatch.tgt.admin_output import error_summary
from tgtwatch.tgt.chap import AccountError, AccountsApplied
from tgtwatch.tgt.engine import RecordFile
from tgtwatch.tgt.gateway import (
    DEFAULT_TIMEOUT_S,
    TgtCommandError,
    TgtControl,
    TgtPrograms,
    spawn_tgtd,
    tgtd_argv,
)
from tgtwatch.tgt.ipc_client import IpcError, TgtdSocket
from tgtwatch.tgt.show import SystemState

START_TIMEOUT_S = 10.0
EXIT_TIMEOUT_S = 5.0
# Sessions of a draining port are polled only while a drain is under way, with backoff:
# often at first (idle initiators log out within a second), then every DRAIN_POLL_MAX_S
# for as long as sessions last (hours, maybe), which is when the last one is noticed.
DRAIN_POLL_S = 0.1
DRAIN_POLL_MAX_S = 5.0
LOG_TAIL_BYTES = 2000

__all__ = [
    "DirectBackend",
    "TgtdProcess",
    "portal_listens",
    "scan_tgtd",
    "wait_exit",
    "write_snapshot",
]


def _outcome(what: str, loaded: Loaded, pid: int | None) -> Outcome:
    """OK (busy targets named: the reconciler tells which are pending), or PARTIAL when
    something the file asks for is missing (a store not there yet, or skipped by tgt-admin)."""
    return Outcome(
        loaded.result,
        what + loaded.message,
        loaded.output,
        pid,
        loaded.busy,
        incomplete=loaded.incomplete,
    )


class DirectBackend:
    """Runs each tgtd as a detached child of tgtwatch (own session: tgtwatch may exit)."""

    name = "direct"

    def __init__(
        self,
        log_dir: Path,
        *,
        programs: TgtPrograms | None = None,
        default_portal_port: int = 3260,
        proc_root: Path = Path("/proc"),
        start_timeout_s: float = START_TIMEOUT_S,
        tool_timeout_s: float = DEFAULT_TIMEOUT_S,
        engine: EngineKind = EngineKind.NATIVE,
    ) -> None:
        self.log_dir = log_dir
        self.engine = engine
        self.state_dir = log_dir.parent
        self.snapshot_dir = self.state_dir / SNAPSHOT_SUBDIR
        self.programs = programs or TgtPrograms()
        # Only root's tgtd from this binary is managed (tgtd_procs.py says why).
        self.tgtd_executables = trusted_executables(self.programs)
        self.default_portal_port = default_portal_port
        self.proc_root = proc_root
        self.start_timeout_s = start_timeout_s
        self.tool_timeout_s = tool_timeout_s
        self._lock = threading.Lock()
        self._children: dict[int, children.Child] = {}
        self._records: dict[int, RecordFile] = {}  # by control port

    def records(self, control_port: int) -> RecordFile:
        """The native engine's record of the tgtd on control_port, one object per port."""
        with self._lock:
            return self._records.setdefault(control_port, record_file(self.state_dir, control_port))

    def control(self, control_port: int) -> TgtControl:
        return TgtControl(control_port, self.programs, timeout_s=self.tool_timeout_s)

    # ---- observe ---------------------------------------------------------------------------

    def reap(self) -> None:
        """Collect exited children so they do not linger as zombies (children.reap)."""
        with self._lock:
            children.reap(self._children)

    def observe(
        self, detail: Collection[int] | None = None, pids: Collection[int] | None = None
    ) -> Observed:
        self.reap()
        instances: dict[int, ObservedInstance] = {}
        for process in scan_tgtd(self.proc_root, self.tgtd_executables, pids):
            cmd = process.cmdline
            port = cmd.port
            previous = instances.get(port)
            # Two tgtds claiming one portal port: the one whose control port matches owns it
            # (the other fell back to tgtd's default portal because it could not bind).
            if previous is not None and previous.control_port == port:
                continue
            state = ""
            targets: tuple[ObservedTarget, ...] = ()
            starting = False
            if detail is None or port in detail:
                control = self.control(cmd.control_port)
                try:
                    info = control.system()
                    targets = control.targets()
                    state = info.state.value if info.state else ""
                except TgtCommandError:
                    starting = True  # its control socket does not answer (yet)
            instances[port] = ObservedInstance(
                port, cmd.control_port, process.pid, state, targets, None, starting
            )
        return Observed(instances)

    may_run = staticmethod(tgtd_procs.may_run)  # Backend.may_run: its control socket exists

    def inspect(self, spec: InstanceSpec, pid: int | None = None) -> ObservedInstance | None:
        pid = self.pid_on(spec.control_port, pid)
        if pid is None:
            return None
        sock = TgtdSocket(spec.control_port, self.tool_timeout_s)
        try:
            info = sock.system()
            targets = sock.targets()
        except IpcError as exc:
            if self.pid_on(spec.control_port) is None:
                return None  # it exited while we asked
            raise Unanswered(f"tgtd pid {pid} on port {spec.port} does not answer: {exc}") from None
        state = info.state.value if info.state else ""
        return ObservedInstance(
            spec.port, spec.control_port, pid, state, targets, None, False, inspected=True
        )

    def set_ready(self, spec: InstanceSpec) -> Outcome:
        try:
            self.control(spec.control_port).set_state(SystemState.READY)
        except TgtCommandError as exc:
            return Outcome(Result.FAILED, f"could not set it ready: {exc}", exc.output)
        return Outcome(Result.OK, "set ready", pid=self.pid_on(spec.control_port))

    def pid_on(self, control_port: int, hint: int | None = None) -> int | None:
        """The managed tgtd on control_port. With the pid it last had (`hint`) one /proc
        entry is read instead of all of them: with 500 tgtds a full scan costs ~5 ms."""
        if hint:
            known = tgtd_at(hint, self.proc_root, self.tgtd_executables)
            if known is not None and known.cmdline.control_port == control_port:
                return hint
        for process in scan_tgtd(self.proc_root, self.tgtd_executables):
            if process.cmdline.control_port == control_port:
                return process.pid
        return None

    # ---- start -----------------------------------------------------------------------------

    def _log_tail(self, path: Path, since: int = 0) -> str:
        """The end of what tgtd wrote to its log since offset `since` (this start's part)."""
        try:
            with path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(since, log.tell() - LOG_TAIL_BYTES))
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _accounts(self, spec: InstanceSpec, desired: AccountSet) -> AccountsApplied | None:
        """Create and bind the spec's CHAP accounts over the control socket."""
        return chap_files.apply(self.state_dir, spec.control_port, desired, self.tool_timeout_s)

    def configure(
        self, spec: InstanceSpec, control: TgtControl
    ) -> tuple[Loaded, AccountsApplied | None]:
        """A started tgtd, offline: load its targets, bind its CHAP accounts, set it ready.

        Accounts come before ready: a target with incominguser but no account bound admits
        anyone. A failed load leaves it offline for the caller to undo. TgtCommandError
        and AccountError propagate, as from the other steps of a start.
        """
        loaded = self._load(spec, control, update=False)
        if loaded.result is Result.FAILED:
            return loaded, None
        chap = self._accounts(spec, account_set(spec.tree))
        TgtdSocket(spec.control_port, self.tool_timeout_s).set_state(SystemState.READY)
        return loaded, chap

    def _load(self, spec: InstanceSpec, control: TgtControl, *, update: bool) -> Loaded:
        # The default instance belongs to the distribution: reloaded as its own unit does.
        kind = EngineKind.TGT_ADMIN if spec.kind is InstanceKind.DEFAULT else self.engine
        return load_targets(
            spec,
            kind,
            control=control,
            state_dir=self.state_dir,
            snapshot=lambda: write_snapshot(self.snapshot_dir, spec),
            update=update,
            timeout_s=self.tool_timeout_s,
            records=self.records(spec.control_port),
        )

    def start(self, spec: InstanceSpec, cancel: threading.Event) -> Outcome:
        control = self.control(spec.control_port)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"tgtd-{spec.port}.log"
        argv = tgtd_argv(self.programs, spec.portal, spec.control_port)
        try:
            # The log is appended to across starts: an error names this start's lines only.
            since = log_path.stat().st_size if log_path.exists() else 0
            proc = spawn_tgtd(argv, log_path=log_path)
        except TgtCommandError as exc:
            return Outcome(Result.FAILED, f"cannot start tgtd: {exc}", exc.output)
        with self._lock:
            self._children[proc.pid] = proc

        def tail() -> str:
            return self._log_tail(log_path, since)

        # A start's own requests go over tgtd's control socket: a tgtadm process each
        # would cost about a millisecond (bench/README.md, "the control socket").
        sock = TgtdSocket(spec.control_port, self.tool_timeout_s)
        try:
            waited = sock.wait_answering(
                self.start_timeout_s, alive=lambda: proc.poll() is None and not cancel.is_set()
            )
        except IpcError as exc:
            code = proc.poll()
            if code is not None:
                self.reap()
                said = error_summary(tail())
                return Outcome(
                    Result.FAILED,
                    f"tgtd exited with code {code} during start"
                    + (f": {said}" if said else "")
                    + f" (log {log_path})",
                    tail(),
                )
            self._teardown(control, proc.pid, spec.port)
            why = "cancelled" if cancel.is_set() else str(exc)
            return Outcome(Result.FAILED, f"tgtd did not answer: {why}", tail())
        try:
            portals = sock.portals()
            if not any(p.port == spec.port for p in portals):
                self._teardown(control, proc.pid, spec.port)
                seen = ", ".join(p.address for p in portals) or "nothing"
                return Outcome(
                    Result.FAILED,
                    f"tgtd could not bind portal {spec.portal} (in use?); it listened on "
                    f"{seen} instead and was stopped",
                    tail(),
                )
            sock.set_state(SystemState.OFFLINE)
            loaded, chap = self.configure(spec, control)
            if loaded.result is Result.FAILED:
                self._teardown(control, proc.pid, spec.port)
                return Outcome(
                    Result.FAILED, f"start failed and was undone{loaded.message}", loaded.output
                )
        except TgtCommandError as exc:
            self._teardown(control, proc.pid, spec.port)
            return Outcome(Result.FAILED, f"start failed and was undone: {exc}", exc.output)
        except (AccountError, IpcError) as exc:
            self._teardown(control, proc.pid, spec.port)
            return Outcome(Result.FAILED, f"start failed and was undone: {exc}")
        if not portal_listens(spec.portal):
            self._teardown(control, proc.pid, spec.port)
            return Outcome(
                Result.FAILED, f"portal {spec.portal} does not accept connections", tail()
            )
        names = ", ".join(t.name for t in spec.targets) or "no targets"
        what = (
            f"tgtd pid {proc.pid} on {spec.portal} answered after {waited * 1000:.0f} ms; "
            f"ready with {names}{chap_files.summary(chap)}"
        )
        return _outcome(what, loaded, proc.pid)

    def _teardown(self, control: TgtControl, pid: int, port: int) -> None:
        """Undo a start that went wrong: no half-configured tgtd is left on the port."""
        with contextlib.suppress(TgtCommandError):
            self._remove_targets(control, force=True)
        with contextlib.suppress(TgtCommandError):
            control.delete_system()
        if not wait_exit(pid, EXIT_TIMEOUT_S):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_exit(pid, EXIT_TIMEOUT_S)
        self.reap()

    def _remove_targets(self, control: TgtControl, *, force: bool) -> None:
        """tgtd refuses `delete system` while it holds targets. With the native engine no
        path runs tgt-admin: one tgtadm delete per target instead."""
        if self.engine is EngineKind.NATIVE:
            control.delete_targets(force=force)
        else:
            control.remove_all(force=force)

    # ---- reload ----------------------------------------------------------------------------

    def reload(self, spec: InstanceSpec) -> Outcome:
        desired = account_set(spec.tree)
        control = self.control(spec.control_port)
        try:
            # tgt-admin re-creates idle targets without their accounts: new logins wait
            # (offline) until the accounts are bound again, rather than pass without CHAP.
            if desired.incoming:
                control.set_state(SystemState.OFFLINE)
            updated = self._load(spec, control, update=True)
            if updated.result is Result.FAILED:
                offline = (
                    "; new logins are refused until a reload succeeds" if desired.incoming else ""
                )
                return Outcome(
                    Result.FAILED, f"reload failed{updated.message}{offline}", updated.output
                )
            chap = self._accounts(spec, desired)
            # Over the socket, not tgtadm (a process: ~3 ms); its peer's pid spares pid_on a
            # scan of /proc (6-60 ms with many processes).
            sock = TgtdSocket(spec.control_port, self.tool_timeout_s)
            info, peer = sock.system_and_pid()
            # An adopted tgtd may have been left offline by an interrupted start.
            if info.state is SystemState.OFFLINE:
                sock.set_state(SystemState.READY)
        except (TgtCommandError, IpcError) as exc:
            offline = "; new logins are refused until a reload succeeds" if desired.incoming else ""
            output = exc.output if isinstance(exc, TgtCommandError) else ""
            return Outcome(Result.FAILED, f"reload failed: {exc}{offline}", output)
        except AccountError as exc:
            # Fail closed: the port stays offline (sessions go on) until accounts are bound.
            return Outcome(
                Result.FAILED,
                f"reload failed: {exc}; new logins are refused until the accounts are bound",
            )
        pid = self.pid_on(spec.control_port, peer)
        return _outcome(f"reloaded {spec.config}{chap_files.summary(chap)}", updated, pid)

    # ---- drain and stop --------------------------------------------------------------------

    def drain_stop(
        self, action: DrainStop, timeout_s: float | None, force: bool, cancel: threading.Event
    ) -> Outcome:
        control = self.control(action.control_port)
        pid = self.pid_on(action.control_port)
        if pid is None:
            return Outcome(Result.OK, f"no tgtd runs on control port {action.control_port}")
        started = time.monotonic()
        try:
            # Offline refuses new logins; sessions that exist keep doing I/O. Never set the
            # *targets* offline: that fails their I/O.
            control.set_state(SystemState.OFFLINE)
            sessions = sum(t.sessions for t in control.targets())
            deadline = None if timeout_s is None else started + timeout_s
            delay = DRAIN_POLL_S
            while sessions:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                pause = delay if deadline is None else min(delay, deadline - now)
                delay = min(delay * 2, DRAIN_POLL_MAX_S)
                if cancel.wait(pause):
                    return Outcome(
                        Result.PARTIAL,
                        f"drain interrupted with {sessions} sessions; port stays offline",
                        pid=pid,
                        draining=True,
                    )
                sessions = sum(t.sessions for t in control.targets())
            if sessions and not force:
                return Outcome(
                    Result.PARTIAL,
                    f"{sessions} sessions remain after {timeout_s:g} s; port {action.port} stays "
                    "offline and stops when the last one ends",
                    pid=pid,
                    draining=True,
                )
            self._remove_targets(control, force=bool(sessions))
            control.delete_system()
            self.records(action.control_port).remove()
        except TgtCommandError as exc:
            if self.pid_on(action.control_port) is None:
                return Outcome(Result.OK, f"tgtd pid {pid} is gone", pid=pid)
            return Outcome(Result.FAILED, f"drain failed: {exc}", exc.output, pid)
        waited = time.monotonic() - started
        # What this tgtd was given dies with it.
        chap_files.record_path(self.state_dir, action.control_port).unlink(missing_ok=True)
        if wait_exit(pid, EXIT_TIMEOUT_S):
            self.reap()
            forced = f"; {sessions} sessions cut off (force)" if sessions else ""
            return Outcome(
                Result.OK,
                f"tgtd pid {pid} drained and exited after {waited:.1f} s{forced}",
                pid=pid,
            )
        if not force:
            return Outcome(
                Result.FAILED,
                f"tgtd pid {pid} on port {action.port} did not exit after delete system",
                pid=pid,
            )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_exit(pid, EXIT_TIMEOUT_S)
        self.reap()
        return Outcome(
            Result.PARTIAL,
            f"tgtd pid {pid} on port {action.port} did not exit after delete system: killed",
            pid=pid,
        )
