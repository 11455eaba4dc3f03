"""What a cycle and an action report: the reports, and backend calls that never raise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tgtwatch.backends.base import Outcome, Result
from tgtwatch.model.structs import Action, Desired, Observed, Plan


def crashed(exc: Exception) -> Outcome:
    return Outcome(Result.FAILED, f"{type(exc).__name__}: {exc}")


def guarded(call: Callable[[], Outcome]) -> Outcome:
    """A backend call whose exception (a bug, an unexpected OS error) is a failed outcome,
    so it is audited like any failure and fails this port only."""
    try:
        return call()
    except Exception as exc:
        return crashed(exc)


@dataclass(frozen=True)
class ActionReport:
    action: Action
    outcome: Outcome
    duration_ms: int


@dataclass(frozen=True)
class CycleReport:
    desired: Desired
    observed: Observed
    plan: Plan
    deferred: dict[int, str] = field(default_factory=dict)  # port -> why not now
    state_warning: str | None = None
    # Ports whose lane's end should bring a cycle: a deferred port's own, or the port an
    # instance drains from before it starts on its new one.
    wake_on: frozenset[int] = frozenset()
