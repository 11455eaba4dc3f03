"""One serial lane per port, lanes in parallel up to a bound: a long drain delays no other port."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from tgtwatch.backends.base import Outcome, Result
from tgtwatch.model.structs import Action, ActionKind

DEFAULT_LANES = 8
# Checks (inspect a tgtd, repair drift) get threads of their own: a hung tgtd's check waits
# out its tool timeout without holding a start or a reload elsewhere.
CHECK_LANES = 4
# A lane that drains mostly waits for sessions: it gets a thread of its own (up to this
# many), so ports stuck draining never delay a start or a reload elsewhere, while starts
# and reloads share DEFAULT_LANES threads (a burst of 500 starts makes 8 threads, not 500).
MAX_DRAINS = 512


class Cancel(threading.Event):
    """An Event whose children are set with it: one per drain, which can also be set alone
    (its file is back), while setting the parent (shutdown) stops them all."""

    def __init__(self) -> None:
        super().__init__()
        self._children: set[threading.Event] = set()
        self._guard = threading.Lock()

    def child(self) -> threading.Event:
        event = threading.Event()
        with self._guard:
            self._children.add(event)
            if self.is_set():
                event.set()
        return event

    def forget(self, child: threading.Event) -> None:
        with self._guard:
            self._children.discard(child)

    def set(self) -> None:
        super().set()
        with self._guard:
            for child in self._children:
                child.set()


class Executor:
    """Runs each port's actions in order; a port with a lane under way takes no new one."""

    def __init__(self, max_lanes: int = DEFAULT_LANES, max_drains: int = MAX_DRAINS) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_lanes, thread_name_prefix="lane")
        self._drains = ThreadPoolExecutor(max_workers=max_drains, thread_name_prefix="drain")
        self._checks = ThreadPoolExecutor(max_workers=CHECK_LANES, thread_name_prefix="check")
        self._lock = threading.Lock()
        self._lanes: dict[int, Future[None]] = {}
        # Every lane not yet returned: a lane leaves _lanes (its port free) before its
        # `done` runs, and wait() must not return while that callback still runs.
        self._unfinished: set[Future[None]] = set()

    def busy(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._lanes)

    def submit(
        self,
        port: int,
        actions: Sequence[Action],
        run: Callable[[Action], Outcome],
        done: Callable[[int], None] | None = None,
    ) -> bool:
        """Queue a lane for `port`; False when one is already under way for it."""
        with self._lock:
            if port in self._lanes:
                return False
            if any(a.kind is ActionKind.DRAIN_STOP for a in actions):
                pool = self._drains
            elif all(a.kind is ActionKind.CHECK for a in actions):
                pool = self._checks
            else:
                pool = self._pool
            future = pool.submit(self._lane, port, tuple(actions), run, done)
            self._lanes[port] = future
            self._unfinished.add(future)
        # Outside the lock: a future already done runs the callback here and now.
        future.add_done_callback(self._finished)
        return True

    def _finished(self, future: Future[None]) -> None:
        with self._lock:
            self._unfinished.discard(future)

    def _lane(
        self,
        port: int,
        actions: tuple[Action, ...],
        run: Callable[[Action], Outcome],
        done: Callable[[int], None] | None,
    ) -> None:
        try:
            for action in actions:
                # A failed step ends the lane: a Start must not follow a DrainStop that failed,
                # nor one still draining (its tgtd holds the port until its sessions end).
                outcome = run(action)
                if outcome.result is Result.FAILED or outcome.draining:
                    break
        finally:
            with self._lock:
                self._lanes.pop(port, None)
            if done is not None:
                done(port)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every lane under way now has ended; False on timeout (of the whole
        wait, not of each lane). A lane that raised has ended too: its error is its own."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            futures = list(self._unfinished)
        for future in futures:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                future.exception(timeout=left)
            except TimeoutError:
                return False
        return True

    def shutdown(self, wait: bool) -> None:
        for pool in (self._pool, self._drains, self._checks):
            pool.shutdown(wait=wait, cancel_futures=True)
