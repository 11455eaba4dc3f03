"""Derive each instance's state for `status`, STATUS= and metrics from what is known. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tgtwatch.model.drift import drift_of
from tgtwatch.model.structs import (
    Applied,
    AppliedEntry,
    Desired,
    InstanceKind,
    InstanceSpec,
    InstanceState,
    Observed,
    ObservedInstance,
    Problem,
)


@dataclass(frozen=True)
class InstanceStatus:
    name: str
    port: int
    config: str
    state: InstanceState
    pid: int | None
    targets: tuple[str, ...]
    sessions: int
    managed: bool = True  # False: a tgtd no file asks for and tgtwatch never applied
    message: str = ""
    pending: tuple[str, ...] = ()  # targets left as they were because they are in use

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "config": self.config,
            "state": self.state.value,
            "pid": self.pid,
            "targets": list(self.targets),
            "sessions": self.sessions,
            "managed": self.managed,
            "message": self.message,
            "pending": list(self.pending),
        }


def _running_state(
    running: ObservedInstance, sha_applied: bool, pending: bool, wanted: bool
) -> InstanceState:
    if not wanted:
        return InstanceState.DRAINING
    if running.starting or (running.system_state == "offline" and not sha_applied):
        return InstanceState.STARTING
    if pending:
        return InstanceState.PENDING
    return InstanceState.RUNNING


def _wrong(
    spec: InstanceSpec | None,
    entry: AppliedEntry | None,
    running: ObservedInstance,
    wrong: str | None,
) -> str:
    """Why a tgtd that runs for a file does not run as applied ("" when it does)."""
    if wrong is not None:
        return wrong
    if spec is None or entry is None or spec.kind is InstanceKind.DEFAULT:
        return ""
    if not running.inspected or running.starting or entry.sha256 != spec.sha256:
        return ""
    drift = drift_of(spec, entry, running)
    return f"drifted from what was applied: {drift}" if drift else ""


def instance_states(
    desired: Desired,
    applied: Applied,
    observed: Observed,
    failures: Mapping[int, str],
    wrong: Mapping[int, str] | None = None,
) -> list[InstanceStatus]:
    """One status per port that a file wants, tgtwatch applied, or a tgtd serves.

    `wrong`: ports whose tgtd the daemon found not running as applied (a drift it could
    not repair, or a tgtd that does not answer); an inspected tgtd is compared here too.
    """
    ports = sorted(set(desired.instances) | set(applied.entries) | set(observed.instances))
    wrong = wrong or {}
    result: list[InstanceStatus] = []
    for port in ports:
        status = port_status(
            port,
            desired.instances.get(port),
            applied.entries.get(port),
            observed.instances.get(port),
            failures.get(port),
            wrong.get(port),
            desired.is_troubled,
        )
        if status is not None:
            result.append(status)
    return result


def port_status(
    port: int,
    spec: InstanceSpec | None,
    entry: AppliedEntry | None,
    running: ObservedInstance | None,
    failure: str | None,
    wrong: str | None,
    is_troubled: Callable[[Path], bool],
) -> InstanceStatus | None:
    """One port's status (None: nothing to say of it) from that port's inputs alone:
    `failure` and `wrong` its values in instance_states' mappings (None: not in them),
    `is_troubled` Desired.is_troubled, asked only of a port no file wants that was applied."""
    name = spec.name if spec else entry.name if entry else f"port-{port}"
    config = str(spec.config if spec else entry.config if entry else "")
    if running is None:
        message = failure or ""
        if spec is None:
            if entry is None or not is_troubled(entry.config):
                return None  # applied long ago, nothing runs, nothing wants it: gone
            # Held: its file is refused, so nothing starts it until the file is fixed.
            message = message or f"not started: {entry.config} is refused"
        state = InstanceState.STOPPED if failure is None else InstanceState.FAILED
        return InstanceStatus(name, port, config, state, None, (), 0, True, message)
    targets = tuple(t.name for t in running.targets)
    sessions, pid = running.sessions, running.pid
    if spec is None and entry is None:
        return InstanceStatus(
            name, port, config, InstanceState.RUNNING, pid, targets, sessions, managed=False
        )
    wanted = spec is not None or (entry is not None and is_troubled(entry.config))
    sha_applied = spec is not None and entry is not None and entry.sha256 == spec.sha256
    if spec is not None and spec.kind is InstanceKind.DEFAULT:
        wanted = True
    state = _running_state(running, sha_applied, bool(entry and entry.pending), wanted)
    message = failure or ""
    why = _wrong(spec, entry, running, wrong) if wanted else ""
    if why:
        state, message = InstanceState.FAILED, why
    pending = entry.pending if entry is not None else ()
    if pending and not why:
        message = "in use, waiting to apply: " + ", ".join(pending)
    return InstanceStatus(name, port, config, state, pid, targets, sessions, True, message, pending)


def status_line(
    statuses: list[InstanceStatus], problems: tuple[Problem, ...], state_error: str | None = None
) -> str:
    """One line for systemd's STATUS=, e.g. `3 running, 1 draining, 1 problem (x.conf: ...)`.

    `state_error`: why the applied state could not be saved (a restart would then not know
    what it applied), said last.
    """
    return counted_line(state_counts(statuses), problems, state_error)


def state_counts(statuses: Iterable[InstanceStatus]) -> Counter[InstanceState]:
    """How many managed instances are in each state (what STATUS= counts)."""
    return Counter(s.state for s in statuses if s.managed)


def counted_line(
    counts: Mapping[InstanceState, int],
    problems: tuple[Problem, ...],
    state_error: str | None = None,
) -> str:
    """status_line() from state_counts() (daemon.statuses keeps them per change)."""
    parts = [f"{counts[state]} {state.value}" for state in InstanceState if counts.get(state)]
    if not parts:
        parts = ["no instances"]
    if problems:
        first = problems[0]
        noun = "problem" if len(problems) == 1 else "problems"
        parts.append(f"{len(problems)} {noun} ({first.path.name}: {first.message})")
    if state_error:
        parts.append(f"state not saved ({state_error})")
    return ", ".join(parts)
