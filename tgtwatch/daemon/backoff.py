"""When a failing port is tried again, and when it counts as failed or crash-looping."""

from __future__ import annotations

from collections.abc import Collection, Mapping
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


KEEPS_DYING = "tgtd keeps dying after start"


def stale_troubles(
    troubles: Mapping[int, Trouble],
    wanted: Collection[int],
    running: Collection[int],
    started_at: Mapping[int, float],
    now: float,
) -> list[int]:
    """Ports whose trouble is over: no file wants them any more, or their tgtd, which kept
    dying, has now stayed up past the crash window."""
    return [
        port
        for port, trouble in troubles.items()
        if port not in wanted
        or (
            trouble.message == KEEPS_DYING
            and port in running
            and now - started_at.get(port, now) > CRASH_WINDOW_S
        )
    ]
