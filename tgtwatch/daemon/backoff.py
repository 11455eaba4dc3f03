"""When a failing port is tried again, and when it counts as failed or crash-looping."""

from __future__ import annotations

from dataclasses import dataclass

# A tgtd that dies within this long of its start counts as crash-looping.
CRASH_WINDOW_S = 60.0
MAX_BACKOFF_S = 300.0
FAILED_AFTER = 3  # consecutive failures before status says `failed`


def backoff_s(failures: int) -> float:
    """Delay before the next attempt: the first retry is immediate, then 1 s, 2 s, 4 s ..."""
    if failures <= 1:
        return 0.0
    return float(min(MAX_BACKOFF_S, 0.5 * 2 ** (failures - 1)))


@dataclass(frozen=True)
class Trouble:
    """A port whose start keeps failing or whose tgtd keeps dying."""

    failures: int
    not_before: float
    message: str
