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
from operator import attrgetter
from pathlib import Path
from typing import Protocol, TextIO

from tgtwatch.daemon.keyed import Changes
from tgtwatch.daemon.outcomes import CycleReport
from tgtwatch.model.published import PUBLISHED_FORMAT, Published, PublishedInstance, problems_json
from tgtwatch.model.status import InstanceStatus
from tgtwatch.model.structs import Applied, AppliedEntry, InstanceSpec, Problem, Reload, Start

STATUS_FILE = "status.json"
# Compact: json's C encoder (indent= takes the pure-Python one, 10x slower).
_COMPACT = (",", ":")
_PORT = attrgetter("port")


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
    begun = {**attempts, **begun_by(report)}
    instances = tuple(
        published_instance(
            s,
            report.desired.instances.get(s.port),
            applied.entries.get(s.port),
            begun.get(s.port, ""),
            s.port in busy,
            report.deferred.get(s.port, ""),
            failures.get(s.port, ""),
        )
        for s in statuses
    )
    return Published(pid, now, instances, report.desired.problems)


def begun_by(report: CycleReport) -> dict[int, str]:
    """The digests of the starts and reloads this cycle began (not deferred), by port."""
    return {
        action.port: action.spec.sha256
        for action in report.plan.actions
        if isinstance(action, Start | Reload) and action.port not in report.deferred
    }


def published_instance(
    s: InstanceStatus,
    spec: InstanceSpec | None,
    entry: AppliedEntry | None,
    attempt: str,
    busy: bool,
    deferred: str,
    failure: str,
) -> PublishedInstance:
    return PublishedInstance(
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
        attempt_sha256=attempt,
        busy=busy,
        deferred=deferred,
        failure=failure,
    )


def write(
    state_dir: Path,
    report: CycleReport,
    statuses: list[InstanceStatus],
    reconciler: ReconcilerView,
    log: TextIO,
) -> None:
    """Publish now; a failure to write is one line on `log`, never an exception."""
    Publisher(state_dir, log).write(report, statuses, reconciler)


class PublicationEncoder:
    """json.dumps(snapshot(...).to_json())'s very bytes, with each port's part encoded again
    only when one of its inputs changed: its status or spec or applied entry (another
    object), its attempt, busy flag, deferral or failure (another value); the file is
    joined from the parts in C. `statuses` hold one status per port (as instance_states
    and daemon.statuses make them). At 500 ports the whole publication cost 8-14 ms of CPU
    after each lane's end, while the new tgtd began serving."""

    def __init__(self) -> None:
        # Frozen objects, the same object while unchanged: by identity.
        self._statuses = Changes(by_identity=True)
        self._specs = Changes(by_identity=True)
        self._entries = Changes(by_identity=True)
        self._begun = Changes(by_identity=False)
        self._busy = Changes(by_identity=False)
        self._deferred = Changes(by_identity=False)
        self._failures = Changes(by_identity=False)
        self._parts: dict[int, bytes] = {}  # port -> its instance's JSON
        self._plan: tuple[object, object, dict[int, str]] | None = None  # actions, deferred
        self._problems: tuple[tuple[Problem, ...], bytes] | None = None

    def encode(
        self,
        report: CycleReport,
        statuses: list[InstanceStatus],
        applied: Applied,
        busy: frozenset[int],
        failures: Mapping[int, str],
        attempts: Mapping[int, str],
        *,
        pid: int,
        now: float,
    ) -> tuple[bytes, dict[int, str]]:
        """The body, and the attempts to carry to the next publication (by port)."""
        by_port = dict(zip(map(_PORT, statuses), statuses, strict=True))
        begun = {**attempts, **self._begun_by(report)}
        specs, entries, deferred = report.desired.instances, applied.entries, report.deferred
        changed = (
            self._statuses.changed(by_port)
            | self._specs.changed(specs)
            | self._entries.changed(entries)
            | self._begun.changed(begun)
            | self._busy.changed(dict.fromkeys(busy, True))
            | self._deferred.changed(deferred)
            | self._failures.changed(failures)
        )
        parts = self._parts
        for port in changed:
            s = by_port.get(port)
            if s is None:
                parts.pop(port, None)
                continue
            instance = published_instance(
                s,
                specs.get(port),
                entries.get(port),
                begun.get(port, ""),
                port in busy,
                deferred.get(port, ""),
                failures.get(port, ""),
            )
            parts[port] = json.dumps(instance.to_json(), separators=_COMPACT).encode()
        head = {"version": PUBLISHED_FORMAT, "pid": pid, "written_at": now}
        body = b"".join(
            (
                json.dumps(head, separators=_COMPACT)[:-1].encode(),
                b',"instances":[',
                b",".join(map(parts.__getitem__, map(_PORT, statuses))),
                b'],"problems":',
                self._problems_json(report.desired.problems),
                b"}",
            )
        )
        carried = dict.fromkeys(by_port, "")
        carried.update(begun)
        for port in carried.keys() - by_port.keys():
            del carried[port]
        return body, carried

    def _begun_by(self, report: CycleReport) -> dict[int, str]:
        """begun_by(report), made once per plan (every lane's end publishes the same one)."""
        last = self._plan
        if last is None or last[0] is not report.plan.actions or last[1] is not report.deferred:
            last = self._plan = (report.plan.actions, report.deferred, begun_by(report))
        return last[2]

    def _problems_json(self, problems: tuple[Problem, ...]) -> bytes:
        last = self._problems
        if last is None or last[0] is not problems:
            last = self._problems = (
                problems,
                json.dumps(problems_json(problems), separators=_COMPACT).encode(),
            )
        return last[1]


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
        self._encoder = PublicationEncoder()

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
        body, self._attempts = self._encoder.encode(
            report, statuses, applied, busy, failures, self._attempts, pid=pid, now=time.time()
        )
        if _publish(self.state_dir, body, self.log):
            self._last = key


def _publish(state_dir: Path, body: bytes, log: TextIO) -> bool:
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
