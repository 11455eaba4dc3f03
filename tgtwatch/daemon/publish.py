"""state_dir/status.json: what the daemon knows after every cycle and action, for `wait`.

Written atomically (a temp file renamed over it) by the one daemon that holds the lock.
It is also the publisher's only memory: the digest of the last start or reload begun on a
port is carried from the previous publication, so `wait` can tell a failure of the file's
current content from one of an older content still under a retry's backoff.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, TextIO

from tgtwatch.daemon.outcomes import CycleReport
from tgtwatch.model.published import Published, PublishedInstance
from tgtwatch.model.status import InstanceStatus
from tgtwatch.model.structs import Applied, Reload, Start

STATUS_FILE = "status.json"


class _Busy(Protocol):
    def busy(self) -> frozenset[int]: ...


class ReconcilerView(Protocol):
    """What the publication reads from the reconciler (daemon.reconcile.Reconciler fits)."""

    @property
    def applied(self) -> Applied: ...

    @property
    def executor(self) -> _Busy: ...

    def failures(self) -> dict[int, str]: ...


def status_path(state_dir: Path) -> Path:
    return state_dir / STATUS_FILE


def read(state_dir: Path) -> Published | None:
    """The last publication, or None when there is none (or it cannot be read)."""
    try:
        return Published.from_json(json.loads(status_path(state_dir).read_bytes()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def snapshot(
    report: CycleReport,
    statuses: list[InstanceStatus],
    applied: Applied,
    busy: frozenset[int],
    failures: Mapping[int, str],
    attempts: Mapping[int, str],
    *,
    pid: int,
    now: float,
) -> Published:
    """The publication for one moment; `attempts` are the digests begun before this cycle."""
    begun = dict(attempts)
    for action in report.plan.actions:
        if isinstance(action, Start | Reload) and action.port not in report.deferred:
            begun[action.port] = action.spec.sha256
    instances = []
    for s in statuses:
        spec = report.desired.instances.get(s.port)
        entry = applied.entries.get(s.port)
        instances.append(
            PublishedInstance(
                name=s.name,
                port=s.port,
                config=s.config,
                state=s.state.value,
                pid=s.pid,
                message=s.message,
                pending=s.pending,
                seen_sha256=spec.sha256 if spec is not None else "",
                applied_sha256=entry.sha256 if entry is not None else "",
                applied_targets=tuple(name for name, _ in entry.targets) if entry else (),
                attempt_sha256=begun.get(s.port, ""),
                busy=s.port in busy,
                deferred=report.deferred.get(s.port, ""),
                failure=failures.get(s.port, ""),
            )
        )
    return Published(pid, now, tuple(instances), report.desired.problems)


def write(
    state_dir: Path,
    report: CycleReport,
    statuses: list[InstanceStatus],
    reconciler: ReconcilerView,
    log: TextIO,
) -> None:
    """Publish now; a failure to write is one line on `log`, never an exception."""
    Publisher(state_dir, log).write(report, statuses, reconciler)


class Publisher:
    """One daemon's publications: each written only when something in it changed.

    With 500 instances building, encoding and renaming status.json costs ~5 ms of CPU;
    a cycle whose events changed nothing would publish the same content, a newer
    `written_at` aside (which nothing reads to decide). The attempts are carried in
    memory after the first publication (which reads them back from this pid's file)."""

    def __init__(self, state_dir: Path, log: TextIO) -> None:
        self.state_dir = state_dir
        self.log = log
        self._attempts: dict[int, str] | None = None
        self._last: tuple[object, ...] | None = None

    def write(
        self, report: CycleReport, statuses: list[InstanceStatus], reconciler: ReconcilerView
    ) -> None:
        applied, busy, failures = (
            reconciler.applied,
            reconciler.executor.busy(),
            reconciler.failures(),
        )
        key = (
            report.desired,
            statuses,
            applied,
            report.plan.actions,
            report.deferred,
            busy,
            failures,
        )
        last = self._last
        if last is not None and all(
            a is b if i < 3 else a == b for i, (a, b) in enumerate(zip(last, key, strict=True))
        ):
            return
        pid = os.getpid()
        if self._attempts is None:
            self._attempts = _attempts(self.state_dir, pid)
        published = snapshot(
            report, statuses, applied, busy, failures, self._attempts, pid=pid, now=time.time()
        )
        self._attempts = {i.port: i.attempt_sha256 for i in published.instances}
        if _publish(self.state_dir, published, self.log):
            self._last = key


def _publish(state_dir: Path, published: Published, log: TextIO) -> bool:
    # Compact: json's C encoder (indent= takes the pure-Python one, 10x slower).
    body = json.dumps(published.to_json(), separators=(",", ":")).encode()
    try:
        _replace(status_path(state_dir), body)
    except OSError as exc:
        print(
            f"tgtwatch: {status_path(state_dir)}: cannot publish the status: {exc.strerror}",
            file=log,
            flush=True,
        )
        return False
    return True


def _attempts(state_dir: Path, pid: int) -> dict[int, str]:
    """The digests begun per port, from this process' own last publication."""
    try:
        data = json.loads(status_path(state_dir).read_bytes())
        if data.get("pid") != pid:
            return {}
        return {int(i["port"]): str(i["attempt_sha256"]) for i in data["instances"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _replace(path: Path, body: bytes) -> None:
    """Temp file beside it, then rename: a reader sees the old file or the new, never half.
    No fsync: state_dir is a tmpfs (/run), and a publication is rewritten every cycle."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".status.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
