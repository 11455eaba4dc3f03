"""What the daemon's loop blocks on: signals, triggers, finished lanes, tgtd exits; one select."""

from __future__ import annotations

import contextlib
import os
import queue
import selectors
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from tgtwatch.daemon.debounce import Trigger

T = TypeVar("T")


class WakeupPipe:
    """A self-pipe: any thread (or a signal) pokes it, the loop's select wakes up."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def poke(self) -> None:
        # A full pipe already means "wake up"; losing this byte loses nothing.
        with contextlib.suppress(BlockingIOError):
            os.write(self.write_fd, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.read_fd, 4096):
                pass

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class WakingQueue(queue.Queue[Trigger]):
    """The watcher's trigger queue; every put wakes the loop."""

    def __init__(self, pipe: WakeupPipe) -> None:
        super().__init__()
        self._pipe = pipe

    def put(self, item: Trigger, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._pipe.poke()


def drained(items: queue.SimpleQueue[T] | queue.Queue[T]) -> list[T]:
    """Everything queued now, without blocking (other threads may keep putting)."""
    out: list[T] = []
    while True:
        try:
            out.append(items.get_nowait())
        except queue.Empty:
            return out


@dataclass
class Wake:
    """Everything that happened since the last wait."""

    signals: list[int] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    lanes_done: list[int] = field(default_factory=list)
    exited: list[int] = field(default_factory=list)  # pids of watched processes that ended


class Waiter(Protocol):
    def wait(self, timeout: float | None) -> Wake: ...

    def watch_pids(self, pids: Iterable[int]) -> None: ...

    def lane_done(self, port: int) -> None: ...

    @property
    def triggers(self) -> queue.Queue[Trigger]: ...

    def close(self) -> None: ...


class SelectWaiter:
    """The real waiter: a self-pipe for signals, triggers and lanes, a pidfd per watched tgtd.

    No polling: an idle daemon sleeps in one select() until something happens or a
    deadline (debounce, resync, watchdog ping, retry) is due.
    """

    def __init__(self, signals: Iterable[int]) -> None:
        self._pipe = WakeupPipe()
        self._queue = WakingQueue(self._pipe)
        self._lanes: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._signals: list[int] = []
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._pipe.read_fd, selectors.EVENT_READ, None)
        self._pidfds: dict[int, int] = {}  # pid -> fd
        self._gone: list[int] = []  # asked to watch, already exited: reported by the next wait
        self._previous: dict[int, Callable[..., object] | int | None] = {}
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._pipe.write_fd, warn_on_full_buffer=False)

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Runs in the main thread between bytecodes; only appends (no locks a waiter may hold).
        self._signals.append(signum)

    @property
    def triggers(self) -> queue.Queue[Trigger]:
        return self._queue

    def lane_done(self, port: int) -> None:
        self._lanes.put(port)
        self._pipe.poke()

    def watch_pids(self, pids: Iterable[int]) -> None:
        """Watch exactly these pids for exit (adds new pidfds, drops stale ones)."""
        wanted = set(pids)
        for pid in set(self._pidfds) - wanted:
            self._forget(pid)
        for pid in wanted - set(self._pidfds):
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                # It died (and was reaped) between the scan that saw it and now: that is an
                # exit like any other, or nothing would look again until the resync.
                self._gone.append(pid)
                self._pipe.poke()
                continue
            self._pidfds[pid] = fd
            self._selector.register(fd, selectors.EVENT_READ, pid)

    def _forget(self, pid: int) -> None:
        fd = self._pidfds.pop(pid)
        self._selector.unregister(fd)
        os.close(fd)

    def wait(self, timeout: float | None) -> Wake:
        wake = Wake()
        if timeout is not None:
            timeout = max(0.0, timeout)
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                self._pipe.drain()
            else:
                wake.exited.append(key.data)
        for pid in wake.exited:
            self._forget(pid)
        wake.exited += self._gone
        self._gone = []
        while self._signals:
            wake.signals.append(self._signals.pop(0))
        wake.triggers += drained(self._queue)
        wake.lanes_done += drained(self._lanes)
        return wake

    def close(self) -> None:
        signal.set_wakeup_fd(self._old_wakeup_fd)
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        for pid in list(self._pidfds):
            self._forget(pid)
        self._selector.close()
        self._pipe.close()
