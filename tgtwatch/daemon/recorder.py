"""The audit records of a reconciler: one per action, one per file refused (when it appears)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tgtwatch.backends.base import Outcome, Result
from tgtwatch.model.records import AuditAction, AuditRecord
from tgtwatch.model.structs import Applied, Desired, DrainStop, InstanceSpec, Problem


class AuditSink(Protocol):
    """What the reconciler needs from the audit trail (tgtwatch.telemetry.audit.Auditor fits)."""

    def record(self, record: AuditRecord) -> None: ...


class Recorder:
    """Builds each audit record from an action and its outcome, stamped with the wall clock."""

    def __init__(self, audit: AuditSink, wall_clock: Callable[[], float]) -> None:
        self.audit = audit
        self.wall_clock = wall_clock
        self._rejected: set[str] = set()

    def action(
        self,
        kind: AuditAction,
        spec: InstanceSpec,
        outcome: Outcome,
        duration_ms: int,
        note: str = "",
    ) -> None:
        message = f"{note}: {outcome.message}" if note else outcome.message
        if spec.notes:  # e.g. a backing store shared on purpose (allow-in-use yes)
            message += "; " + "; ".join(spec.notes)
        self.audit.record(
            AuditRecord(
                action=kind,
                instance=spec.name,
                port=spec.port,
                config=str(spec.config),
                sha256=spec.sha256,
                result=outcome.result,
                duration_ms=duration_ms,
                message=message,
                output=outcome.output,
                ts=self.wall_clock(),
            )
        )

    def drop(
        self, kind: AuditAction, action: DrainStop, sha256: str, outcome: Outcome, duration_ms: int
    ) -> None:
        self.audit.record(
            AuditRecord(
                action=kind,
                instance=action.name,
                port=action.port,
                config=str(action.config),
                sha256=sha256,
                result=outcome.result,
                duration_ms=duration_ms,
                message=outcome.message,
                output=outcome.output,
                ts=self.wall_clock(),
            )
        )

    def rejects(self, desired: Desired, applied: Applied) -> None:
        """One `reject` record when a problem first appears, not on every cycle."""
        current = {str(p): p for p in desired.problems}
        for text in sorted(set(current) - self._rejected):
            self._problem(current[text], applied)
        self._rejected = set(current)

    def _problem(self, problem: Problem, applied: Applied) -> None:
        # The port a file ran on keeps its last good config: name it (None for a new file).
        port = next((p for p, e in applied.entries.items() if e.config == problem.path), None)
        self.audit.record(
            AuditRecord(
                action=AuditAction.REJECT,
                instance=problem.path.name.removesuffix(".conf"),
                port=port,
                config=str(problem.path),
                sha256="",
                result=Result.SKIPPED,
                duration_ms=0,
                message=problem.report(),
                output="",
                ts=self.wall_clock(),
            )
        )
