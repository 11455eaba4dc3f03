"""The sd_notify outbox: never blocks, coalesces STATUS, keeps order, retries with backoff."""

from __future__ import annotations

import errno

import pytest
from fakes import FakeClock, RecordingNotifier

from tgtwatch.telemetry.notify import NotifyError
from tgtwatch.telemetry.outbox import FIRST_RETRY_S, MAX_KEPT, MAX_RETRY_S, Outbox

FULL = OSError(errno.EAGAIN, "Resource temporarily unavailable")


class Deaf(RecordingNotifier):
    """A socket whose reader stopped: every send fails with EAGAIN until `hear()`."""

    def __init__(self) -> None:
        super().__init__(fail=FULL)
        self.attempts = 0

    def send(self, message: str) -> None:
        self.attempts += 1
        super().send(message)

    def hear(self) -> None:
        self.fail = None


def test_delivered_at_once_when_systemd_reads() -> None:
    sink = RecordingNotifier()
    box = Outbox(sink, clock=FakeClock())
    box.status("1 running")
    box.ready()
    assert sink.messages == ["STATUS=1 running", "READY=1"]
    assert box.kept == () and box.retry_at() is None


def test_a_full_queue_keeps_the_message_and_asks_for_a_retry() -> None:
    clock, sink = FakeClock(), Deaf()
    box = Outbox(sink, clock=clock)
    box.ready()  # does not raise, does not block
    assert box.kept == ("READY=1",)
    assert box.retry_at() == clock() + FIRST_RETRY_S
    sink.hear()
    clock.advance(FIRST_RETRY_S)
    box.flush()
    assert sink.messages == ["READY=1"] and box.kept == () and box.retry_at() is None


def test_status_watchdog_and_extend_keep_only_their_latest_copy_others_keep_order() -> None:
    sink = Deaf()
    box = Outbox(sink, clock=FakeClock())
    box.status("1 starting")
    box.reloading(5)
    box.watchdog()
    box.status("2 running")
    box.watchdog()
    box.extend_timeout(10)
    box.ready()
    box.extend_timeout(20)
    expected = [
        "RELOADING=1\nMONOTONIC_USEC=5",
        "STATUS=2 running",
        "WATCHDOG=1",
        "READY=1",
        "EXTEND_TIMEOUT_USEC=20",
    ]
    assert list(box.kept) == expected
    sink.hear()
    box.flush()
    assert sink.messages == expected
    assert box.kept == ()


def test_retries_back_off_to_a_bound() -> None:
    clock, sink = FakeClock(), Deaf()
    box = Outbox(sink, clock=clock)
    box.stopping()
    delays = []
    for _ in range(10):
        due = box.retry_at()
        assert due is not None
        delays.append(round(due - clock(), 3))
        clock.set(due)
        box.flush()
    assert delays[:4] == [0.05, 0.1, 0.2, 0.4]
    assert max(delays) == MAX_RETRY_S
    assert sink.attempts == 11  # one per send or flush: no spinning


def test_a_message_systemd_will_never_take_is_dropped_and_raised() -> None:
    sink = RecordingNotifier(fail=OSError(errno.ECONNREFUSED, "Connection refused"))
    box = Outbox(sink, clock=FakeClock())
    with pytest.raises(NotifyError):
        box.ready()
    assert box.kept == () and box.retry_at() is None


def test_the_outbox_is_bounded() -> None:
    box = Outbox(Deaf(), clock=FakeClock())
    for i in range(MAX_KEPT + 5):
        box.reloading(i)
    assert len(box.kept) == MAX_KEPT
    assert box.dropped == 5
    assert box.kept[0] == "RELOADING=1\nMONOTONIC_USEC=5"  # the oldest went first


def test_close_tries_a_bounded_number_of_times() -> None:
    clock, sink = FakeClock(), Deaf()
    box = Outbox(sink, clock=clock, sleep=clock.advance)
    box.stopping()
    started = clock()
    box.close()
    assert box.kept == ("STOPPING=1",)  # given up, not waited for forever
    assert 1.0 <= clock() - started <= 3.0
    sink2 = Deaf()
    box2 = Outbox(sink2, clock=clock, sleep=lambda s: (clock.advance(s), sink2.hear()))
    box2.stopping()
    box2.close()
    assert sink2.messages == ["STOPPING=1"]
