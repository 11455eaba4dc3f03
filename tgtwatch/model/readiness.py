"""`tgtwatch wait`'s judgement: does an instance run its file's current content, and if not,
why not? Pure: the files as scanned now, the daemon's publication, who holds the lock."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from tgtwatch.model.published import Published
from tgtwatch.model.structs import Desired, InstanceState


class Readiness(enum.Enum):
    READY = "ready"  # runs the file's current content: exit 0
    FAILED = "failed"  # decided, and not ready (refused file, failed start, pending): exit 1
    WAITING = "waiting"  # not decided yet: the daemon has not read or applied it yet


@dataclass(frozen=True)
class Verdict:
    name: str
    readiness: Readiness
    reason: str

    def line(self) -> str:
        return f"{self.name}: {self.readiness.value}: {self.reason}"


@dataclass(frozen=True)
class Daemon:
    """Who holds state_dir/lock: a `run` (pid) publishes; an `apply` does not; None: nobody."""

    pid: int | None
    command: str


def judge(
    name: str,
    config: Path,
    desired: Desired,
    published: Published | None,
    daemon: Daemon | None,
) -> Verdict:
    """One instance: `desired` is the files scanned now, by the same rules as the daemon."""

    def verdict(readiness: Readiness, reason: str) -> Verdict:
        return Verdict(name, readiness, reason)

    if daemon is None:
        return verdict(Readiness.FAILED, "no tgtwatch daemon runs (start tgtwatch.service)")
    if daemon.command != "run":
        return verdict(Readiness.WAITING, f"tgtwatch {daemon.command} holds the lock")
    if published is None or (daemon.pid is not None and published.pid != daemon.pid):
        return verdict(Readiness.WAITING, f"tgtwatch (pid {daemon.pid}) has not published yet")
    mine = [p for p in desired.problems if p.path == config or p.path in config.parents]
    if mine:
        said = {(p.path, p.rule, p.message) for p in published.problems}
        reasons = "; ".join(p.report() for p in mine)
        if all((p.path, p.rule, p.message) in said for p in mine):
            return verdict(Readiness.FAILED, f"refused: {reasons}")
        return verdict(Readiness.WAITING, f"tgtwatch has not read it yet: {reasons}")
    spec = next((s for s in desired.instances.values() if s.config == config), None)
    if spec is None:
        return verdict(Readiness.FAILED, f"{config}: no such instance file")
    seen = published.instance(spec.port, spec.config)
    if seen is None or seen.seen_sha256 != spec.sha256:
        return verdict(Readiness.WAITING, f"tgtwatch has not read {config} as it is now")
    where = f"port {spec.port}"
    if seen.busy:
        return verdict(Readiness.WAITING, f"{where}: {seen.state}: an action is under way")
    if seen.failure and seen.attempt_sha256 == spec.sha256:
        return verdict(Readiness.FAILED, f"{where}: {seen.failure}")
    if seen.applied_sha256 == spec.sha256:
        if seen.pending:
            return verdict(
                Readiness.FAILED,
                f"{where}: pending: in use, applied once their sessions end: "
                + ", ".join(seen.pending),
            )
        missing = [t.name for t in spec.targets if t.name not in seen.applied_targets]
        if seen.state == InstanceState.RUNNING.value and seen.pid is not None and not missing:
            count = len(spec.targets)
            return verdict(
                Readiness.READY,
                f"{where}, pid {seen.pid}, {count} target{'' if count == 1 else 's'}",
            )
    why = seen.deferred or seen.failure or seen.message or "not applied yet"
    return verdict(Readiness.WAITING, f"{where}: {seen.state}: {why}")
