"""Generic test helpers: poll a condition with a deadline instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    first_interval: float = 0.01,
    max_interval: float = 0.2,
) -> T:
    """Call predicate until it returns something truthy and return that; fail after timeout.

    Exceptions from the predicate propagate: a condition that cannot be checked is a bug,
    not a reason to keep waiting.
    """
    deadline = time.monotonic() + timeout
    interval = first_interval
    while True:
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(interval, deadline - now))
        interval = min(interval * 2, max_interval)
