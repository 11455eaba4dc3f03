"""`tgtwatch wait NAME... [--timeout S]`: until each instance runs its file's current content.

It reads what the daemon publishes (state_dir/status.json) and scans the files itself, by
the daemon's own rules, to know their current digests; it never runs a tgt program. It
wakes on inotify events in state_dir (tgtwatch's own reader), and at least every
LIVENESS_S to notice a daemon that died.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TextIO

from tgtwatch.cli.exits import EXIT_OK, EXIT_PROBLEMS, EXIT_TIMEOUT
from tgtwatch.config import inventory
from tgtwatch.config.settings import Settings
from tgtwatch.daemon import publish
from tgtwatch.daemon.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    Inotify,
)
from tgtwatch.daemon.lock import StateLock
from tgtwatch.daemon.state import StateFile
from tgtwatch.model.readiness import Daemon, Readiness, Verdict, judge
from tgtwatch.model.structs import DEFAULT_NAME

DEFAULT_TIMEOUT_S = 120.0
LIVENESS_S = 1.0


class Wakeups(Protocol):
    """Blocks until something may have changed in state_dir, or `timeout` seconds pass."""

    def wait(self, timeout: float) -> None: ...

    def close(self) -> None: ...


class InotifyWakeups:
    """inotify on state_dir (not recursive), through tgtwatch's own reader: any event there
    (status.json renamed into place, above all) is a wake-up."""

    MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM

    def __init__(self, directory: Path) -> None:
        self._inotify = Inotify()
        self._inotify.add_watch(directory, self.MASK)
        self._poll = select.poll()
        self._poll.register(self._inotify.fd, select.POLLIN)

    def wait(self, timeout: float) -> None:
        if self._poll.poll(max(timeout, 0.0) * 1000):
            self._inotify.read()  # one look serves every event that came meanwhile

    def close(self) -> None:
        self._inotify.close()


def config_of(settings: Settings, name: str) -> Path:
    return (
        settings.default_config if name == DEFAULT_NAME else settings.instances_dir / f"{name}.conf"
    )


def look(settings: Settings, names: Sequence[str]) -> list[Verdict]:
    """Every named instance judged now: the files as they are, the daemon's publication."""
    holder = StateLock(settings.state_dir).holder()
    daemon = None if holder is None else Daemon(holder.pid, holder.command)
    applied, _ = StateFile(settings.state_dir).load()
    desired = inventory.scan(settings, applied)
    published = publish.read(settings.state_dir)
    return [judge(n, config_of(settings, n), desired, published, daemon) for n in names]


def wait_until_decided(
    looker: Callable[[], list[Verdict]],
    wakeups: Callable[[], Wakeups],
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[int, list[Verdict]]:
    """Look on every wake-up until all are ready (0), one failed (1) or the time is up (124).

    `wakeups` is made only when the first look decides nothing, and closed at the end; the
    look after it is made sees whatever happened before it watched."""
    deadline = clock() + timeout_s
    woken: Wakeups | None = None
    try:
        while True:
            verdicts = looker()
            states = {v.readiness for v in verdicts}
            if Readiness.FAILED in states:
                return EXIT_PROBLEMS, verdicts  # decided: no need to wait for the others
            if states <= {Readiness.READY}:
                return EXIT_OK, verdicts
            left = deadline - clock()
            if left <= 0:
                return EXIT_TIMEOUT, verdicts
            if woken is None:
                woken = wakeups()
                continue
            woken.wait(min(left, LIVENESS_S))
    finally:
        if woken is not None:
            woken.close()


def wait(
    settings: Settings,
    names: Sequence[str],
    timeout_s: float,
    out: TextIO,
    *,
    wakeups: Callable[[], Wakeups] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """0 all ready, 1 one is not and will not be on its own, 124 timed out; a line each."""
    code, verdicts = wait_until_decided(
        lambda: look(settings, names),
        wakeups or (lambda: InotifyWakeups(settings.state_dir)),
        timeout_s,
        clock,
    )
    for v in verdicts:
        if code == EXIT_OK or v.readiness is not Readiness.READY:
            print(v.line(), file=out)
    if code == EXIT_TIMEOUT:
        print(f"tgtwatch: timed out after {timeout_s:g} s", file=out)
    return code
