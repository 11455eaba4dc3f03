"""sd_notify that never blocks the loop: STATUS coalesced, every other message kept and retried.

When systemd does not read its notify socket (busy, stuck), a send fails with EAGAIN at
once (``SystemdNotifier`` never blocks). The outbox keeps the message and the loop retries
it on a timer, with backoff; whatever comes meanwhile queues behind it, so systemd still
sees RELOADING=1 before READY=1. Only the latest STATUS= matters, and one WATCHDOG=1 or
EXTEND_TIMEOUT_USEC= is as good as several: those replace their older copy. The outbox is
bounded; at shutdown ``close()`` gives STOPPING=1 and what waits a bounded last chance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from tgtwatch.telemetry.notify import MessageNotifier, NotifyError

FIRST_RETRY_S = 0.05
MAX_RETRY_S = 1.0
MAX_KEPT = 32  # RELOADING/READY pairs of SIGHUPs systemd never read, at worst
# At shutdown: the pauses between the last attempts (about 2 s in all).
CLOSE_PAUSES_S = (0.05, 0.1, 0.2, 0.4, 0.5, 0.5)
_COALESCED = ("STATUS", "WATCHDOG", "EXTEND_TIMEOUT_USEC")


class Sender(Protocol):
    """One raw notification out; NotifyError when it was not delivered."""

    def send(self, message: str) -> None: ...


def coalesce_key(message: str) -> str | None:
    """The kind of message whose newest copy replaces the older one; None: kept in order."""
    key = message.partition("=")[0]
    return key if key in _COALESCED else None


class Outbox(MessageNotifier):
    """A Notifier over `sender` whose sends never block: see the module docstring."""

    def __init__(
        self,
        sender: Sender,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sender = sender
        self._clock = clock
        self._sleep = sleep
        self._kept: list[str] = []
        self._retry_at: float | None = None
        self._delay = FIRST_RETRY_S
        self.dropped = 0  # messages given up because the outbox was full

    @property
    def kept(self) -> tuple[str, ...]:
        """What waits for systemd to read, oldest first."""
        return tuple(self._kept)

    def retry_at(self) -> float | None:
        """When the loop should call flush() again (monotonic); None when nothing waits."""
        return self._retry_at

    def send(self, message: str) -> None:
        """Keep `message` behind anything waiting, then try to send; raises NotifyError
        only for a message systemd will never take (no socket): that one is dropped."""
        key = coalesce_key(message)
        if key is not None:
            self._kept = [m for m in self._kept if coalesce_key(m) != key]
        self._kept.append(message)
        if len(self._kept) > MAX_KEPT:
            del self._kept[0]
            self.dropped += 1
        self.flush()

    def flush(self) -> None:
        """Send what waits, in order, until systemd's queue is full again."""
        while self._kept:
            try:
                self._sender.send(self._kept[0])
            except NotifyError as exc:
                if exc.transient:
                    self._retry_at = self._clock() + self._delay
                    self._delay = min(self._delay * 2, MAX_RETRY_S)
                    return
                del self._kept[0]
                raise
            del self._kept[0]
        self._retry_at = None
        self._delay = FIRST_RETRY_S

    def close(self) -> None:
        """At shutdown: a few last attempts for what waits (STOPPING=1), then give up."""
        for pause in CLOSE_PAUSES_S:
            self.flush()
            if not self._kept:
                return
            self._sleep(pause)
        self.flush()
