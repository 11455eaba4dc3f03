"""The audit record of one action: its kind, its result, and what it says. Pure data."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from tgtwatch.model.redact import redact


class AuditAction(enum.Enum):
    START = "start"
    RELOAD = "reload"
    DRAIN = "drain"
    STOP = "stop"
    REJECT = "reject"
    ADOPT = "adopt"
    PENDING = "pending"
    REPAIR = "repair"  # what ran had drifted from what was applied (an extension)


class AuditResult(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    PARTIAL = "partial"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class AuditRecord:
    """One action, as it is audited. ``output`` is the failing command's output, if any."""

    ts: float
    action: AuditAction
    instance: str
    port: int | None
    config: str
    sha256: str
    result: AuditResult
    duration_ms: int
    message: str
    output: str = ""

    def redacted(self) -> AuditRecord:
        return replace(self, message=redact(self.message), output=redact(self.output))
