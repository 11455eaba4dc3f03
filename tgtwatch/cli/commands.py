"""The commands that touch running tgtds: apply, status, drain and run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import TextIO

from tgtwatch.backends.base import Outcome, Result
from tgtwatch.backends.systemd import stop_marker, unit_of_pid
from tgtwatch.cli.exits import EXIT_BUSY, EXIT_OK, EXIT_PROBLEMS
from tgtwatch.cli.wiring import make_backend, make_reconciler
from tgtwatch.config import inventory
from tgtwatch.config.settings import DrainTimeoutPolicy, Settings
from tgtwatch.daemon.lock import Holder, LockBusy, StateLock
from tgtwatch.daemon.outcomes import ActionReport
from tgtwatch.daemon.state import StateFile
from tgtwatch.model.records import AuditAction, AuditRecord
from tgtwatch.model.report import problem_json
from tgtwatch.model.status import instance_states, status_line
from tgtwatch.model.structs import Applied, DrainStop


def busy_line(holder: Holder, what: str) -> str:
    """Why a command did nothing: another tgtwatch holds state_dir/lock."""
    if holder.command == "run":
        return (
            f"tgtwatch: {holder} manages this host and applies every change itself; "
            f"{what} (`tgtwatch status` shows where it stands)"
        )
    return f"tgtwatch: {holder} holds the lock; {what}, or try again when it has finished"


def apply(settings: Settings, out: TextIO, err: TextIO) -> int:
    """One reconcile cycle; 0 when the host now matches the files, 1 otherwise."""
    lock = StateLock(settings.state_dir)
    try:
        lock.acquire("apply")
    except LockBusy as busy:
        print(busy_line(busy.holder, "nothing applied"), file=err)
        return EXIT_BUSY
    with lock:
        return _apply(settings, out, err)


def _apply(settings: Settings, out: TextIO, err: TextIO) -> int:
    reconciler = make_reconciler(settings, stderr=err, keep_draining=False)
    if reconciler.state_warning:
        print(f"tgtwatch: {reconciler.state_warning}", file=err)
    report = reconciler.cycle()
    reconciler.executor.wait()
    reports = reconciler.take_reports()
    if _drained_then_incomplete(reports) or (report.plan.waiting and _drained(reports)):
        # A port move: the new port started while the old tgtd still held its backing
        # stores (other lanes, in parallel), or (one unit per name) its start waited for
        # the old port's drain. Both can land now: one more cycle.
        report = reconciler.cycle()
        reconciler.executor.wait()
        reports += reconciler.take_reports()
    reconciler.executor.shutdown(wait=True)
    reconciler.save_state()
    converged = not report.desired.problems and not report.deferred
    last: dict[int, Result] = {}
    for done in reports:
        print(
            f"{done.action.kind.value} {done.action.name} port {done.action.port}: "
            f"{done.outcome.result.value} in {done.duration_ms} ms: {done.outcome.message}",
            file=out,
        )
        last[done.action.port] = done.outcome.result
    converged &= all(result is Result.OK for result in last.values())
    acted = set(last)
    for port, why in sorted(report.deferred.items()):
        print(f"deferred port {port}: {why}", file=out)
    # Targets an earlier run left as they were (in use): the host does not match the files
    # until their sessions end and an apply lands them.
    waiting = {
        port: entry
        for port, entry in reconciler.applied.entries.items()
        if entry.pending and port not in acted
    }
    for port, entry in sorted(waiting.items()):
        print(
            f"pending {entry.name} port {port}: in use, waiting to apply: "
            + ", ".join(entry.pending),
            file=out,
        )
        converged = False
    for problem in report.desired.problems:
        print(f"problem {problem.report()}", file=out)
    # Checks that found every tgtd as applied did nothing: they are not reported.
    if not reports and not report.deferred:
        print("nothing to do" + (" until those sessions end" if waiting else ""), file=out)
    return EXIT_OK if converged else EXIT_PROBLEMS


def _drained(reports: list[ActionReport]) -> bool:
    return any(isinstance(r.action, DrainStop) and not r.outcome.draining for r in reports)


def _drained_then_incomplete(reports: list[ActionReport]) -> bool:
    return _drained(reports) and any(r.outcome.incomplete for r in reports)


def status(settings: Settings, as_json: bool, out: TextIO) -> int:
    state = StateFile(settings.state_dir)
    applied, warning = state.load()
    desired = inventory.scan(settings, applied)
    observed = make_backend(settings).observe(None)
    statuses = instance_states(desired, applied, observed, state.load_failed())
    if as_json:
        body = {
            "instances": [s.to_json() for s in statuses],
            "problems": [problem_json(p) for p in desired.problems],
            "notes": list(desired.notes) + ([warning] if warning else []),
        }
        json.dump(body, out, indent=2)
        out.write("\n")
    else:
        for s in statuses:
            pid = s.pid if s.pid is not None else "-"
            owner = "" if s.managed else " (not tgtwatch's)"
            note = f"  {s.message}" if s.message else ""
            print(
                f"{s.name:<20} {s.port:>5} {s.state.value:<9} pid {pid!s:<7} "
                f"{len(s.targets)} targets {s.sessions} sessions{owner}{note}",
                file=out,
            )
        for problem in desired.problems:
            print(f"problem {problem.report()}", file=out)
        print(status_line(statuses, desired.problems), file=out)
    return EXIT_PROBLEMS if desired.problems else EXIT_OK


def drain(
    settings: Settings, port: int, timeout_s: float | None, force: bool, out: TextIO, err: TextIO
) -> int:
    """Drain and stop the tgtd on one port now (the unit's ExecStop runs this)."""
    holder = StateLock(settings.state_dir).holder()
    in_unit = (unit_of_pid(os.getpid()) or "").startswith("tgtd@")
    if holder is not None and not in_unit:
        # The daemon would start the port again while its file exists (and a drain it
        # runs itself would race this one); the unit's own ExecStop is how it stops units.
        print(busy_line(holder, f"port {port} not drained: delete its file instead"), file=err)
        return EXIT_BUSY
    backend = make_backend(settings)
    running = backend.observe((port,)).instances.get(port)
    if running is None:
        print(f"no tgtd runs on port {port}", file=out)
        return EXIT_OK
    state = StateFile(settings.state_dir)
    applied, _ = state.load()
    entry = applied.entries.get(port)
    action = DrainStop(
        port,
        running.control_port,
        entry.name if entry else f"port-{port}",
        entry.config if entry else Path(""),
        "drain requested on the command line",
    )
    force = force or settings.on_drain_timeout is DrainTimeoutPolicy.FORCE
    timeout = settings.drain_timeout_s if timeout_s is None else timeout_s
    cancel = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: cancel.set())
    audit = make_reconciler(settings, stderr=err, backend=backend).audit
    started = time.monotonic()

    # tgtwatch stopping the unit itself audits the stop; a stop by hand is audited here.
    by_tgtwatch = stop_marker(settings.state_dir, port).exists()

    def record(outcome: Outcome) -> None:
        if by_tgtwatch:
            return
        audit.record(
            AuditRecord(
                ts=time.time(),
                action=AuditAction.DRAIN if outcome.draining else AuditAction.STOP,
                instance=action.name,
                port=port,
                config=str(action.config),
                sha256=entry.sha256 if entry else "",
                result=outcome.result,
                duration_ms=int((time.monotonic() - started) * 1000),
                message=outcome.message,
                output=outcome.output,
            )
        )

    outcome = backend.drain_stop(action, timeout, force, cancel)
    if outcome.draining and not cancel.is_set():
        # `wait`: say so (on stdout and in the audit trail), then wait for the last session.
        record(outcome)
        print(f"port {port}: {outcome.message}; waiting", file=out, flush=True)
        outcome = backend.drain_stop(action, None, False, cancel)
    record(outcome)
    if not outcome.draining and outcome.result is not Result.FAILED and entry is not None:
        # Re-read: an apply may have changed the state while this drain waited.
        applied, _ = state.load()
        kept = Applied({p: e for p, e in applied.entries.items() if p != port})
        failed = {p: m for p, m in state.load_failed().items() if p != port}
        state.save(kept, failed)
    print(f"port {port}: {outcome.result.value}: {outcome.message}", file=out)
    return EXIT_OK if outcome.result is Result.OK else EXIT_PROBLEMS
