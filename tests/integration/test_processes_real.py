"""Process plumbing against real processes: waiting for an exit past 1024 descriptors."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
from collections.abc import Iterator

import pytest

from tgtwatch.backends.probes import wait_exit

pytestmark = pytest.mark.integration

FD_SETSIZE = 1024


@contextlib.contextmanager
def descriptors_past(limit: int) -> Iterator[None]:
    """Hold open descriptors until the next one opened is numbered above `limit`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < limit + 64:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {limit + 64}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit + 64), hard))
    held: list[int] = []
    try:
        while not held or held[-1] < limit:
            held.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_wait_exit_works_past_fd_setsize() -> None:
    """A daemon with hundreds of tgtds holds more than 1024 descriptors (a pidfd per tgtd,
    sockets, pipes): waiting for a tgtd's exit must still work."""
    with descriptors_past(FD_SETSIZE):
        child = subprocess.Popen(["sleep", "60"])
        try:
            assert not wait_exit(child.pid, 0.05)  # still running: the wait times out
            child.kill()
            assert wait_exit(child.pid, 5.0)
        finally:
            child.kill()
            child.wait()
