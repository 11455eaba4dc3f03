"""The leading edge with a fake clock: the first complete event while idle is due at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tgtwatch.daemon.debounce import IMMEDIATE_KINDS, Debouncer, Trigger, TriggerKind

A, B, C = (Path(f"/etc/mytgt/conf.d/{n}.conf") for n in "abc")


def file(path: Path = A) -> Trigger:
    return Trigger(TriggerKind.FILE, path, "closed_write")


def test_first_event_while_idle_is_due_at_once() -> None:
    d = Debouncer(0.25, leading=True)
    d.add(file(A), 10.0)
    assert d.next_deadline() == 10.0
    batch = d.take_batch(10.0)
    assert batch is not None and batch.paths == {A} and batch.count == 1
    assert not batch.resync  # a leading-edge batch is not a rescan


def test_events_in_the_same_wake_join_the_leading_batch() -> None:
    d = Debouncer(0.25, leading=True)
    d.add(file(A), 10.0)
    d.add(file(B), 10.0)
    batch = d.take_batch(10.0)
    assert batch is not None and batch.paths == {A, B} and batch.count == 2


def test_events_during_the_cycle_coalesce_into_the_next_one() -> None:
    d = Debouncer(0.25, leading=True)
    d.add(file(A), 10.0)
    assert d.take_batch(10.0) is not None  # the cycle runs 10.0 .. 10.05
    d.add(file(B), 10.05)
    d.add(file(C), 10.1)
    assert d.next_deadline() == pytest.approx(10.35)
    assert d.take_batch(10.34) is None
    batch = d.take_batch(10.35)
    assert batch is not None and batch.paths == {B, C} and batch.count == 2


def test_a_burst_gets_one_leading_and_one_trailing_cycle() -> None:
    d = Debouncer(0.25, leading=True)
    times = [100.0 + i * 0.01 for i in range(50)]  # 50 events, 10 ms apart
    batches = []
    for t in times:
        d.add(file(Path(f"/e/{t}")), t)
        batch = d.take_batch(t)
        if batch is not None:
            batches.append(batch)
    deadline = d.next_deadline()
    assert deadline == pytest.approx(times[-1] + 0.25)
    last = d.take_batch(deadline)
    assert last is not None
    batches.append(last)
    assert [b.count for b in batches] == [1, 49]


def test_a_writer_that_never_pauses_is_still_bounded() -> None:
    d = Debouncer(0.25, leading=True)
    assert d.take_batch(0.0) is None
    d.add(file(), 0.0)
    assert d.take_batch(0.0) is not None
    t = 0.1
    d.add(file(), t)
    first = t
    while d.take_batch(t) is None:
        t += 0.1
        d.add(file(), t)
    assert t == pytest.approx(first + d.bound_s)


def test_idle_again_after_a_quiet_period() -> None:
    d = Debouncer(0.25, leading=True)
    d.add(file(A), 10.0)
    assert d.take_batch(10.0) is not None
    d.add(file(B), 10.25)  # exactly one quiet period after the take: idle
    assert d.next_deadline() == 10.25


def test_clock_going_backwards_coalesces_rather_than_fires() -> None:
    d = Debouncer(0.25, leading=True)
    d.add(file(A), 10.0)
    assert d.take_batch(10.0) is not None
    d.add(file(B), 9.0)
    assert d.next_deadline() == pytest.approx(9.25)
    assert d.take_batch(9.0) is None


def test_a_delete_never_leads_and_the_rewrite_joins_its_batch() -> None:
    d = Debouncer(0.1, leading=True)
    d.add(Trigger(TriggerKind.GONE, A, "deleted"), 10.0)  # install's unlink, vim's rename
    assert d.next_deadline() == pytest.approx(10.1)
    assert d.take_batch(10.0) is None
    d.add(file(A), 10.001)  # the new file, closed
    assert d.take_batch(10.05) is None
    batch = d.take_batch(10.101)
    assert batch is not None and batch.paths == {A} and batch.count == 2


def test_zero_debounce_is_always_leading() -> None:
    d = Debouncer(0.0, leading=True)
    for t in (1.0, 1.0, 1.001):
        d.add(file(), t)
        assert d.take_batch(t) is not None


def test_from_ms_passes_leading() -> None:
    assert Debouncer.from_ms(250, leading=True).leading
    assert not Debouncer.from_ms(250).leading


def test_trailing_mode_is_unchanged_when_idle() -> None:
    d = Debouncer(0.25)
    d.add(file(A), 10.0)
    assert d.next_deadline() == pytest.approx(10.25)


# --- properties -------------------------------------------------------------------------

KINDS = st.sampled_from(list(TriggerKind))
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(0, 3000), KINDS),
        st.tuples(st.just("take"), st.integers(0, 3000), st.just(TriggerKind.FILE)),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(steps=STEPS, debounce_ms=st.integers(0, 500))
def test_leading_edge_properties(
    steps: list[tuple[str, int, TriggerKind]], debounce_ms: int
) -> None:
    """Every event in exactly one batch; a batch is early only when it may be: its first
    event found the debouncer idle (nothing pending, no take within the quiet period), or
    an immediate kind is in it; otherwise quiet period or bound as in trailing mode; and
    an event that finds it idle is due at once."""
    d = Debouncer.from_ms(debounce_ms, leading=True)
    quiet, bound = d.debounce_s, d.bound_s
    now = 0.0
    taken_at: float | None = None
    pending: list[tuple[int, float, TriggerKind]] = []
    leading_batch = False
    covered: list[int] = []

    def take(at: float) -> None:
        nonlocal taken_at, leading_batch
        batch = d.take_batch(at)
        if batch is None:
            if pending:
                assert not leading_batch
                assert not any(k in IMMEDIATE_KINDS for _, _, k in pending)
                assert at < max(t for _, t, _ in pending) + quiet
                assert at < pending[0][1] + bound
            return
        assert pending, "a batch out of nothing"
        last = max(t for _, t, _ in pending)
        assert (
            leading_batch
            or at >= last + quiet
            or at >= pending[0][1] + bound
            or any(k in IMMEDIATE_KINDS for _, _, k in pending)
        )
        assert batch.count == len(pending)
        assert batch.paths == {Path(f"/e/{i}") for i, _, _ in pending}
        assert batch.resync == any(k in IMMEDIATE_KINDS for _, _, k in pending)
        covered.extend(i for i, _, _ in pending)
        pending.clear()
        taken_at = at
        leading_batch = False

    for n, (what, gap_ms, kind) in enumerate(steps):
        now += gap_ms / 1000
        if what == "event":
            idle = not pending and (taken_at is None or now >= taken_at + quiet)
            idle = idle and kind is not TriggerKind.GONE  # a delete never leads
            d.add(Trigger(kind, Path(f"/e/{n}")), now)
            if idle:
                leading_batch = True
                assert d.next_deadline() == now
            pending.append((n, now, kind))
        else:
            take(now)
        deadline = d.next_deadline()
        assert (deadline is None) == (not pending)
        if deadline is not None:
            assert deadline <= pending[0][1] + bound + 1e-9

    while (deadline := d.next_deadline()) is not None:
        take(max(now, deadline))
    events = [n for n, (what, _, _) in enumerate(steps) if what == "event"]
    assert sorted(covered) == events
    assert len(covered) == len(set(covered))
