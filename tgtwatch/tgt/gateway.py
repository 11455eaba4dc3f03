"""The only code that runs tgtd, tgtadm and tgt-admin: argv builders, one runner, one spawner."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tgtwatch.model.structs import ObservedTarget
from tgtwatch.tgt.admin_output import AdminReport, error_summary, parse_admin_output, redact_secrets
from tgtwatch.tgt.show import (
    Portal,
    SystemInfo,
    SystemState,
    TargetInfo,
    observed_targets,
    parse_show_portals,
    parse_show_system,
    parse_show_targets,
)

# systemd's per-service variables: a child that sees NOTIFY_SOCKET (tgtd does sd_notify)
# would tell systemd that *tgtwatch* is ready; LISTEN_* would hand it our sockets.
_SERVICE_ONLY_ENV = (
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
)
# tgt-admin runs tgtadm through the shell by bare name, so /usr/sbin must be on PATH even
# when tgtwatch was started with a user's PATH; appended so a test's wrappers still win.
_SBIN_DIRS = ("/usr/sbin", "/sbin")
NO_CONFIG = Path("/dev/null")
DEFAULT_TIMEOUT_S = 30.0


def child_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment for every tgt program: base without systemd's service-only variables."""
    env = {k: v for k, v in base.items() if k not in _SERVICE_ONLY_ENV}
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(":") if p]
    env["PATH"] = ":".join(path + [d for d in _SBIN_DIRS if d not in path])
    return env


def _which(name: str) -> str:
    path = child_env(os.environ)["PATH"]
    return shutil.which(name, path=path) or f"/usr/sbin/{name}"


@dataclass(frozen=True)
class TgtPrograms:
    """Where tgtd, tgtadm and tgt-admin are; by default looked up on PATH (then /usr/sbin)."""

    tgtd: str = field(default_factory=lambda: _which("tgtd"))
    tgtadm: str = field(default_factory=lambda: _which("tgtadm"))
    tgt_admin: str = field(default_factory=lambda: _which("tgt-admin"))


# ---------------------------------------------------------------------------
# argv builders (pure)


def tgtd_argv(programs: TgtPrograms, portal: str, control_port: int) -> list[str]:
    """tgtd in the foreground (-f), so it stays our child / the unit's main process."""
    return [programs.tgtd, "-f", "--iscsi", f"portal={portal}", "-C", str(control_port)]


def set_state_argv(programs: TgtPrograms, control_port: int, state: SystemState) -> list[str]:
    return [
        programs.tgtadm,
        "-C",
        str(control_port),
        "--op",
        "update",
        "--mode",
        "sys",
        "--name",
        "State",
        "-v",
        state.value,
    ]


def show_targets_argv(programs: TgtPrograms, control_port: int) -> list[str]:
    return [programs.tgtadm, "-C", str(control_port), "--op", "show", "--mode", "target"]


def show_system_argv(programs: TgtPrograms, control_port: int) -> list[str]:
    return [programs.tgtadm, "-C", str(control_port), "--op", "show", "--mode", "sys"]


def show_portals_argv(programs: TgtPrograms, control_port: int) -> list[str]:
    return [
        programs.tgtadm,
        "-C",
        str(control_port),
        "--lld",
        "iscsi",
        "--op",
        "show",
        "--mode",
        "portal",
    ]


def delete_system_argv(programs: TgtPrograms, control_port: int) -> list[str]:
    """Make tgtd exit (it ignores SIGTERM); refused with "invalid request" while targets exist."""
    return [programs.tgtadm, "-C", str(control_port), "--op", "delete", "--mode", "system"]


def delete_target_argv(
    programs: TgtPrograms, control_port: int, tid: int, *, force: bool = False
) -> list[str]:
    """Refused while the target has sessions, unless force (which closes them)."""
    argv = [programs.tgtadm, "-C", str(control_port), "--op", "delete", "--mode", "target"]
    argv += ["--tid", str(tid)]
    return [*argv, "--force"] if force else argv


def delete_conn_argv(
    programs: TgtPrograms, control_port: int, tid: int, sid: int, cid: int
) -> list[str]:
    """Close one connection of a session (what tgt-admin -f does before a delete)."""
    argv = [programs.tgtadm, "-C", str(control_port), "--op", "delete", "--mode", "conn"]
    return [*argv, "--tid", str(tid), "--sid", str(sid), "--cid", str(cid)]


def admin_execute_argv(
    programs: TgtPrograms, control_port: int, config: Path, *, pretend: bool = False
) -> list[str]:
    """`tgt-admin -e`: add the file's targets (and delete idle ones it lacks).

    -v because without it tgt-admin prints none of its comments (busy, skipped devices).
    """
    flags = ["-p"] if pretend else ["-v"]
    return [programs.tgt_admin, "-C", str(control_port), *flags, "-e", "-c", str(config)]


def admin_update_argv(
    programs: TgtPrograms, control_port: int, config: Path, *, force: bool = False
) -> list[str]:
    """`tgt-admin --update ALL`: re-create every idle target, skip busy ones unless force."""
    argv = [programs.tgt_admin, "-C", str(control_port), "-v", "--update", "ALL"]
    argv += ["-c", str(config)]
    return [*argv, "-f"] if force else argv


def admin_remove_all_argv(
    programs: TgtPrograms, control_port: int, *, force: bool = False
) -> list[str]:
    """Delete every target (busy ones too with force, which drops their sessions)."""
    return admin_update_argv(programs, control_port, NO_CONFIG, force=force)


def admin_cwd(config: Path) -> Path:
    """tgt-admin resolves relative `include` lines against its working directory."""
    return config.parent if config != NO_CONFIG else Path("/")


# ---------------------------------------------------------------------------
# running


@dataclass(frozen=True)
class CompletedCommand:
    argv: tuple[str, ...]
    returncode: int
    output: str  # stdout and stderr, interleaved as written, CHAP passwords redacted
    duration_s: float


class TgtCommandError(Exception):
    """A tgt program failed: non-zero exit, timeout, or could not be run at all."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        output: str,
        *,
        timed_out: bool = False,
        timeout_s: float | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode  # None: timed out or never ran
        self.output = output
        self.timed_out = timed_out
        self.timeout_s = timeout_s
        super().__init__(self.argv, returncode, output)

    @property
    def command(self) -> str:
        """The argv with the program's directory dropped, for humans."""
        return " ".join([Path(self.argv[0]).name, *self.argv[1:]]) if self.argv else ""

    def __str__(self) -> str:
        if self.timed_out:
            how = f"timed out after {self.timeout_s:g}s"
        elif self.returncode is None:
            how = "could not run"
        else:
            how = f"exit {self.returncode}"
        detail = error_summary(self.output)
        return f"{self.command}: {how}" + (f": {detail}" if detail else "")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # tgt-admin runs tgtadm through a shell: kill the whole group, not just perl.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> CompletedCommand:
    """Run one tgt program to completion; TgtCommandError on non-zero exit or timeout."""
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=child_env(os.environ) if env is None else dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        raise TgtCommandError(argv, None, str(exc)) from exc
    try:
        raw, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raw, _ = proc.communicate()
        output = redact_secrets(raw.decode("utf-8", "replace"))
        raise TgtCommandError(argv, None, output, timed_out=True, timeout_s=timeout) from None
    output = redact_secrets(raw.decode("utf-8", "replace"))
    if proc.returncode != 0:
        raise TgtCommandError(argv, proc.returncode, output)
    return CompletedCommand(tuple(argv), proc.returncode, output, time.monotonic() - started)


def spawn_tgtd(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start tgtd detached (own session, stdin /dev/null, output appended to log_path).

    tgtd -f logs to stderr. The caller must poll() or wait() the Popen it gets back, or an
    exited tgtd stays a zombie (still in /proc, with an empty cmdline).
    """
    with log_path.open("ab") as log:
        try:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd="/",
                env=child_env(os.environ) if env is None else dict(env),
                start_new_session=True,
            )
        except OSError as exc:
            raise TgtCommandError(argv, None, str(exc)) from exc


# ---------------------------------------------------------------------------
# one tgtd, by control port


@dataclass(frozen=True)
class AdminResult:
    """A tgt-admin run that exited 0, with what its output says it did."""

    command: CompletedCommand
    report: AdminReport


@dataclass(frozen=True)
class TgtControl:
    """The operations tgtwatch performs on the tgtd listening on one control port."""

    control_port: int
    programs: TgtPrograms = field(default_factory=TgtPrograms)
    timeout_s: float = DEFAULT_TIMEOUT_S
    env: Mapping[str, str] | None = None  # None: child_env(os.environ) at each call

    def _run(self, argv: Sequence[str], cwd: Path | None = None) -> CompletedCommand:
        return run(argv, timeout=self.timeout_s, cwd=cwd, env=self.env)

    def answers(self) -> bool:
        """Whether a tgtd answers on the control socket right now."""
        try:
            self._run(show_system_argv(self.programs, self.control_port))
        except TgtCommandError:
            return False
        return True

    def wait_answering(
        self,
        timeout_s: float,
        *,
        alive: Callable[[], bool] | None = None,
        first_delay_s: float = 0.005,
        max_delay_s: float = 0.25,
    ) -> float:
        """Poll with backoff until the control socket answers; seconds it took.

        `alive` lets a caller stop early when the tgtd it spawned has already exited
        (e.g. another tgtd holds the control port's lock).
        """
        started = time.monotonic()
        deadline = started + timeout_s
        delay = first_delay_s
        last: TgtCommandError | None = None
        argv = show_system_argv(self.programs, self.control_port)
        while True:
            try:
                left = deadline - time.monotonic()
                run(argv, timeout=max(0.1, min(self.timeout_s, left)), env=self.env)
                return time.monotonic() - started
            except TgtCommandError as exc:
                last = exc
            if alive is not None and not alive():
                raise TgtCommandError(argv, None, f"tgtd exited before answering ({last})")
            now = time.monotonic()
            if now >= deadline:
                raise TgtCommandError(
                    argv, None, last.output if last else "", timed_out=True, timeout_s=timeout_s
                )
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, max_delay_s)

    def system(self) -> SystemInfo:
        return parse_show_system(
            self._run(show_system_argv(self.programs, self.control_port)).output
        )

    def portals(self) -> tuple[Portal, ...]:
        """Where tgtd listens. Check it after a start: when the wanted portal cannot be bound
        tgtd keeps running and listens on its defaults, 0.0.0.0:3260 and [::]:3260, instead."""
        return parse_show_portals(
            self._run(show_portals_argv(self.programs, self.control_port)).output
        )

    def targets(self) -> tuple[ObservedTarget, ...]:
        out = self._run(show_targets_argv(self.programs, self.control_port)).output
        return observed_targets(out)

    def target_details(self) -> tuple[TargetInfo, ...]:
        """Targets with their sessions' initiators, LUNs and ACLs."""
        return parse_show_targets(self.show_targets_text())

    def show_targets_text(self) -> str:
        return self._run(show_targets_argv(self.programs, self.control_port)).output

    def set_state(self, state: SystemState) -> None:
        self._run(set_state_argv(self.programs, self.control_port, state))

    def _admin(self, argv: Sequence[str], config: Path) -> AdminResult:
        done = self._run(argv, cwd=admin_cwd(config))
        return AdminResult(done, parse_admin_output(done.output))

    def execute(self, config: Path) -> AdminResult:
        return self._admin(admin_execute_argv(self.programs, self.control_port, config), config)

    def pretend(self, config: Path) -> str:
        """What tgt-admin -e would run (it still queries tgtd for the current targets)."""
        argv = admin_execute_argv(self.programs, self.control_port, config, pretend=True)
        return self._run(argv, cwd=admin_cwd(config)).output

    def update(self, config: Path, *, force: bool = False) -> AdminResult:
        argv = admin_update_argv(self.programs, self.control_port, config, force=force)
        return self._admin(argv, config)

    def remove_all(self, *, force: bool = False) -> AdminResult:
        argv = admin_remove_all_argv(self.programs, self.control_port, force=force)
        return self._admin(argv, NO_CONFIG)

    def delete_targets(self, *, force: bool = False, settle_s: float = 10.0) -> tuple[str, ...]:
        """Delete every target with tgtadm, no tgt-admin (the native engine's stop): the
        names deleted. A busy target without force stops it with a TgtCommandError.

        With force, a target's connections are closed first: tgtd refuses to delete a LUN
        with commands in flight ("this logical unit is still active", even with --force),
        and an initiator doing I/O always has some. Their end is polled for `settle_s`.
        """
        found = self.target_details()
        for target in found:
            if not force:
                self._run(delete_target_argv(self.programs, self.control_port, target.tid))
                continue
            for nexus in target.nexuses:
                for cid in nexus.connections:
                    with contextlib.suppress(TgtCommandError):  # it may have ended already
                        argv = delete_conn_argv(
                            self.programs, self.control_port, target.tid, nexus.nexus_id, cid
                        )
                        self._run(argv)
            self._delete_busy(target.tid, settle_s)
        return tuple(t.name for t in found)

    def _delete_busy(self, tid: int, settle_s: float) -> None:
        argv = delete_target_argv(self.programs, self.control_port, tid, force=True)
        deadline = time.monotonic() + settle_s
        delay = 0.01
        while True:
            try:
                self._run(argv)
                return
            except TgtCommandError as exc:
                if "still active" not in exc.output or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def delete_system(self) -> None:
        self._run(delete_system_argv(self.programs, self.control_port))
