"""The debouncer with a fake clock: quiet period, upper bound, coalescing, immediacy."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tgtwatch.daemon.debounce import (
    IMMEDIATE_KINDS,
    Debouncer,
    Trigger,
    TriggerKind,
    default_bound_s,
)

A, B = Path("/etc/mytgt/conf.d/a.conf"), Path("/etc/mytgt/conf.d/b.conf")


def file(path: Path = A) -> Trigger:
    return Trigger(TriggerKind.FILE, path, "closed_write")


def test_empty_has_no_deadline_and_no_batch() -> None:
    d = Debouncer(0.25)
    assert d.next_deadline() is None
    assert d.take_batch(1e9) is None
    assert d.pending == 0


def test_due_after_quiet_period() -> None:
    d = Debouncer(0.25)
    d.add(file(), 10.0)
    assert d.next_deadline() == pytest.approx(10.25)
    assert d.take_batch(10.249) is None
    batch = d.take_batch(10.25)
    assert batch is not None
    assert batch.paths == {A}
    assert not batch.resync
    assert batch.count == 1
    assert d.next_deadline() is None


def test_each_event_restarts_the_quiet_period() -> None:
    d = Debouncer(0.25)
    d.add(file(A), 10.0)
    d.add(file(B), 10.2)
    assert d.take_batch(10.3) is None
    assert d.next_deadline() == pytest.approx(10.45)
    batch = d.take_batch(10.45)
    assert batch is not None and batch.paths == {A, B} and batch.count == 2


def test_upper_bound_caps_a_writer_that_never_pauses() -> None:
    d = Debouncer(0.25)  # bound: max(2.5, 2) = 2.5 s after the first event
    assert d.bound_s == pytest.approx(2.5)
    t = 100.0
    d.add(file(), t)
    while t < 102.4:
        t += 0.1  # always inside the quiet period
        d.add(file(), t)
        assert d.take_batch(t) is None
    assert d.next_deadline() == pytest.approx(102.5)
    batch = d.take_batch(102.5)
    assert batch is not None
    assert batch.first_at == 100.0


def test_default_bound_is_ten_debounces_but_at_least_two_seconds() -> None:
    assert default_bound_s(0.05) == 2.0
    assert default_bound_s(0.25) == pytest.approx(2.5)
    assert default_bound_s(1.0) == 10.0
    assert Debouncer(0.05).bound_s == 2.0
    assert Debouncer(0.05, bound_s=0.5).bound_s == 0.5


def test_from_ms_uses_seconds() -> None:
    d = Debouncer.from_ms(250)
    assert d.debounce_s == 0.25
    assert Debouncer.from_ms(250, 1000).bound_s == 1.0


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        Debouncer(-1)
    with pytest.raises(ValueError):
        Debouncer(1.0, bound_s=0.5)


def test_zero_debounce_is_due_at_once() -> None:
    d = Debouncer(0.0)
    d.add(file(), 5.0)
    assert d.take_batch(5.0) is not None


def test_coalesces_same_path() -> None:
    d = Debouncer(0.1)
    for i in range(50):
        d.add(file(A), 1.0 + i * 0.001)
    batch = d.take_batch(2.0)
    assert batch is not None
    assert batch.paths == {A}
    assert batch.count == 50
    assert batch.kinds == {TriggerKind.FILE}


@pytest.mark.parametrize("kind", [TriggerKind.OVERFLOW, TriggerKind.ERROR, TriggerKind.RESYNC])
def test_non_file_kinds_are_due_immediately_and_force_resync(kind: TriggerKind) -> None:
    d = Debouncer(0.25)
    d.add(file(A), 10.0)
    d.add(Trigger(kind, None, "inotify queue overflowed"), 10.1)
    assert d.next_deadline() == pytest.approx(10.1)
    batch = d.take_batch(10.1)
    assert batch is not None
    assert batch.resync
    assert batch.paths == {A}  # the file events ride along
    assert batch.kinds == {TriggerKind.FILE, kind}
    assert batch.details == ("inotify queue overflowed",)


def test_file_events_after_an_overflow_join_the_due_batch() -> None:
    d = Debouncer(0.25)
    d.add(Trigger(TriggerKind.OVERFLOW), 10.0)
    d.add(file(B), 10.05)  # arrived before the loop took the batch
    assert d.next_deadline() == pytest.approx(10.0)
    batch = d.take_batch(10.05)
    assert batch is not None and batch.paths == {B} and batch.resync


def test_a_new_batch_starts_after_a_take() -> None:
    d = Debouncer(0.25)
    d.add(Trigger(TriggerKind.RESYNC), 1.0)
    assert d.take_batch(1.0) is not None
    d.add(file(), 1.1)
    assert d.next_deadline() == pytest.approx(1.35)
    batch = d.take_batch(1.35)
    assert batch is not None and not batch.resync and batch.first_at == 1.1


def test_late_take_still_returns_everything() -> None:
    d = Debouncer(0.25)
    d.add(file(A), 1.0)
    batch = d.take_batch(500.0)
    assert batch is not None and batch.paths == {A}


def test_clock_going_backwards_does_not_make_the_batch_due_early() -> None:
    d = Debouncer(0.25)
    d.add(file(A), 10.0)
    d.add(file(B), 9.0)
    assert d.next_deadline() == pytest.approx(10.25)


# --- properties -------------------------------------------------------------------------

KINDS = st.sampled_from(list(TriggerKind))
# An event: (gap since the previous step in ms, kind); an attempt to take in between.
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(0, 3000), KINDS),
        st.tuples(st.just("take"), st.integers(0, 3000), st.just(TriggerKind.FILE)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps=STEPS, debounce_ms=st.integers(0, 500))
def test_every_event_is_in_exactly_one_batch_and_none_is_early(
    steps: list[tuple[str, int, TriggerKind]], debounce_ms: int
) -> None:
    d = Debouncer.from_ms(debounce_ms)
    quiet, bound = d.debounce_s, d.bound_s
    now = 0.0
    pending: list[tuple[int, float, TriggerKind]] = []  # (event id, time, kind)
    covered: list[int] = []

    def take(at: float) -> None:
        batch = d.take_batch(at)
        if batch is None:
            if pending:  # not due: no immediate trigger, quiet not over, bound not hit
                assert not any(k in IMMEDIATE_KINDS for _, _, k in pending)
                assert at < max(t for _, t, _ in pending) + quiet
                assert at < pending[0][1] + bound
            return
        assert pending, "a batch out of nothing"
        # Never due before its quiet period, unless the bound hit or it must not wait.
        last = max(t for _, t, _ in pending)
        assert (
            at >= last + quiet
            or at >= pending[0][1] + bound
            or any(k in IMMEDIATE_KINDS for _, _, k in pending)
        )
        assert batch.count == len(pending)
        assert batch.paths == {Path(f"/e/{i}") for i, _, _ in pending}
        assert batch.resync == any(k in IMMEDIATE_KINDS for _, _, k in pending)
        covered.extend(i for i, _, _ in pending)
        pending.clear()

    for n, (what, gap_ms, kind) in enumerate(steps):
        now += gap_ms / 1000
        if what == "event":
            d.add(Trigger(kind, Path(f"/e/{n}")), now)
            pending.append((n, now, kind))
        else:
            take(now)
        deadline = d.next_deadline()
        assert (deadline is None) == (not pending)
        if deadline is not None:
            assert deadline <= pending[0][1] + bound + 1e-9

    # The loop's way: sleep until next_deadline(), take, repeat — it always drains.
    while (deadline := d.next_deadline()) is not None:
        take(max(now, deadline))
    events = [n for n, (what, _, _) in enumerate(steps) if what == "event"]
    assert sorted(covered) == events
    assert len(covered) == len(set(covered))
