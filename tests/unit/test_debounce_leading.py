"""Leading per path, with a fake clock: a new file's complete event is due at once."""

from __future__ import annotations

from dataclasses import dataclass
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


def test_a_new_path_leads_while_a_rewrite_waits_its_own_quiet() -> None:
    d = Debouncer(0.25, leading=True)
    d.add(file(A), 10.0)
    assert d.take_batch(10.0) is not None  # the cycle runs 10.0 .. 10.05
    d.add(file(A), 10.05)  # A again within the window: waits, due 10.30
    d.add(file(B), 10.05)  # a new file: leads
    assert d.next_deadline() == 10.05
    batch = d.take_batch(10.05)
    assert batch is not None and batch.paths == {B} and batch.count == 1
    # A was not cut short by B, and B never waited for A's quiet.
    assert d.pending == 1
    assert d.next_deadline() == pytest.approx(10.30)
    assert d.take_batch(10.29) is None
    batch = d.take_batch(10.30)
    assert batch is not None and batch.paths == {A} and batch.count == 1


def test_a_file_saved_twice_within_the_window_coalesces() -> None:
    d = Debouncer(0.25, leading=True)
    d.add(file(A), 10.0)
    assert d.take_batch(10.0) is not None
    d.add(file(A), 10.1)
    d.add(file(A), 10.2)
    assert d.take_batch(10.3) is None
    batch = d.take_batch(10.45)
    assert batch is not None and batch.paths == {A} and batch.count == 2


def test_a_leading_path_is_taken_with_the_waiting_group_when_that_is_due() -> None:
    d = Debouncer(0.25, leading=True)
    d.add(file(A), 10.0)
    d.take_batch(10.0)
    d.add(file(A), 10.1)  # waits until 10.35
    d.add(file(C), 10.35)  # leads, and the waiting group is due too: one batch
    batch = d.take_batch(10.35)
    assert batch is not None and batch.paths == {A, C} and batch.count == 2
    assert d.pending == 0 and d.next_deadline() is None


def test_a_path_waiting_in_the_batch_does_not_lead() -> None:
    d = Debouncer(0.25, leading=True)
    d.add(Trigger(TriggerKind.GONE, A, "deleted"), 10.0)
    d.add(file(A), 10.01)  # re-created: joins the waiting delete
    d.add(file(B), 10.01)
    batch = d.take_batch(10.01)
    assert batch is not None and batch.paths == {B}
    batch = d.take_batch(10.26)
    assert (
        batch is not None
        and batch.paths == {A}
        and batch.kinds == {TriggerKind.GONE, TriggerKind.FILE}
    )


def test_events_for_a_leading_path_join_it() -> None:
    d = Debouncer(0.25, leading=True)
    d.add(file(A), 10.0)
    d.add(file(A), 10.0)  # before the take: the take reads the file after both
    d.add(Trigger(TriggerKind.GONE, A, "deleted"), 10.0)
    batch = d.take_batch(10.0)
    assert batch is not None and batch.count == 3 and d.pending == 0


def test_two_hundred_new_files_run_as_cycles_back_to_back() -> None:
    """The loop's way: a take, a cycle of 50 ms, a take of what arrived meanwhile, ...
    while 200 renames land over 200 ms: no batch waits for a quiet period."""
    d = Debouncer(0.25, leading=True)
    arrivals = [i * 0.001 for i in range(200)]
    now, sizes, i = 0.0, [], 0
    while i < len(arrivals) or d.pending:
        while i < len(arrivals) and arrivals[i] <= now:
            d.add(file(Path(f"/e/{i}.conf")), arrivals[i])
            i += 1
        deadline = d.next_deadline()
        if deadline is None or deadline > now:  # nothing due: sleep until something is
            now = arrivals[i] if deadline is None else min(deadline, arrivals[i])
            continue
        batch = d.take_batch(now)
        assert batch is not None and batch.last_at <= now
        sizes.append(batch.count)
        now += 0.05  # the cycle
    assert sum(sizes) == 200
    assert now <= arrivals[-1] + 0.1  # the last one's cycle followed it at once
    assert len(sizes) == 5


def test_a_storm_of_rewrites_of_the_same_files_coalesces_within_the_bound() -> None:
    d = Debouncer(0.25, leading=True)
    paths = [Path(f"/e/{n}.conf") for n in range(10)]
    taken = []
    t = 0.0
    while t < 10.0:  # every file rewritten every 100 ms, for 10 s
        for p in paths:
            d.add(file(p), t)
        batch = d.take_batch(t)
        if batch is not None:
            taken.append(t)
        t = round(t + 0.1, 6)
    # One leading batch, then one per bound (2.5 s after the first write that waits).
    assert taken == pytest.approx([0.0, 2.6, 5.2, 7.8])


def test_recently_taken_paths_are_forgotten_after_the_window() -> None:
    d = Debouncer(0.25, leading=True)
    for i in range(100):
        d.add(file(Path(f"/e/{i}")), 1.0)
    assert d.take_batch(1.0) is not None
    assert d.remembered == 100
    d.add(file(Path("/e/new")), 1.3)  # the window of the 100 has passed
    assert d.remembered == 0
    assert d.take_batch(1.3) is not None
    assert d.remembered == 1
    assert d.take_batch(5.0) is None
    d.add(file(Path("/e/new")), 5.0)
    assert d.next_deadline() == 5.0  # forgotten: leads again


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


def test_a_path_leads_again_after_a_quiet_period() -> None:
    d = Debouncer(0.25, leading=True)
    d.add(file(A), 10.0)
    assert d.take_batch(10.0) is not None
    d.add(file(A), 10.25)  # exactly one quiet period after its take: leads
    assert d.next_deadline() == 10.25


def test_clock_going_backwards_coalesces_rather_than_fires() -> None:
    d = Debouncer(0.25, leading=True)
    d.add(file(A), 10.0)
    assert d.take_batch(10.0) is not None
    d.add(file(A), 9.0)
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


def test_a_trigger_naming_no_path_waits_and_reads_everything() -> None:
    d = Debouncer(0.25, leading=True)
    d.add(Trigger(TriggerKind.FILE), 10.0)
    assert d.next_deadline() == pytest.approx(10.25)
    d.add(file(A), 10.1)  # leads alone
    batch = d.take_batch(10.1)
    assert batch is not None and batch.paths == {A} and not batch.resync
    batch = d.take_batch(10.25)
    assert batch is not None and batch.resync and batch.count == 1


@pytest.mark.parametrize("kind", sorted(IMMEDIATE_KINDS, key=lambda k: k.value))
def test_lost_events_take_everything_at_once(kind: TriggerKind) -> None:
    d = Debouncer(0.25, leading=True)
    d.add(file(A), 10.0)
    d.take_batch(10.0)
    d.add(file(A), 10.1)  # waiting
    d.add(Trigger(kind, None, "lost"), 10.1)
    batch = d.take_batch(10.1)
    assert batch is not None and batch.resync and batch.paths == {A}
    assert batch.details == ("lost",)


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


# --- properties

KINDS = st.sampled_from(list(TriggerKind))
PATHS = st.sampled_from([A, B, C, None])  # a few paths: they recur, as a file saved again
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(0, 600), KINDS, PATHS),
        st.tuples(st.just("take"), st.integers(0, 600), KINDS, PATHS),
    ),
    max_size=60,
)


@dataclass(frozen=True)
class Event:
    n: int
    at: float
    kind: TriggerKind
    path: Path | None
    leads: bool


@settings(max_examples=500, deadline=None)
@given(steps=STEPS, debounce_ms=st.integers(0, 500))
def test_leading_per_path_properties(
    steps: list[tuple[str, int, TriggerKind, Path | None]], debounce_ms: int
) -> None:
    """The rule, stated on its own: an event leads iff it is a FILE naming a path that is
    neither waiting nor taken within `debounce_s` (or joins a path already leading). Then:
    no trigger is lost or taken twice; a leading one is taken by the next take after it
    arrives; a waiting one never before its group's quiet period or bound (unless lost
    events make everything due); and only paths taken within the window are remembered."""
    d = Debouncer.from_ms(debounce_ms, leading=True)
    quiet, bound = d.debounce_s, d.bound_s
    now = 0.0
    pending: list[Event] = []
    taken_at: dict[Path, float] = {}
    covered: list[int] = []

    def waiting_due_at() -> float | None:
        waits = [e for e in pending if not e.leads]
        if not waits:
            return None
        if any(e.kind in IMMEDIATE_KINDS for e in waits):
            return min(e.at for e in waits if e.kind in IMMEDIATE_KINDS)
        return min(max(e.at for e in waits) + quiet, waits[0].at + bound)

    def take(at: float) -> None:
        due = waiting_due_at()
        leading = [e for e in pending if e.leads]
        batch = d.take_batch(at)
        if batch is None:
            assert not leading, "a leading trigger was not taken by the next take"
            assert due is None or at < due
            return
        if due is not None and at >= due:
            out = list(pending)  # the waiting group is due: everything pending
        else:
            assert leading, "a batch while nothing was due"
            out = leading  # a waiting trigger is never cut short by another file's event
        assert batch.count == len(out)
        assert batch.paths == {e.path for e in out if e.path is not None}
        assert batch.resync == any(e.path is None or e.kind in IMMEDIATE_KINDS for e in out)
        covered.extend(e.n for e in out)
        for e in out:
            pending.remove(e)
        for path in batch.paths:
            taken_at[path] = at

    def remembered() -> int:
        return sum(1 for t in taken_at.values() if now < t + quiet)

    for n, (what, gap_ms, kind, path) in enumerate(steps):
        now += gap_ms / 1000
        if what == "event":
            leading = {e.path for e in pending if e.leads}
            waiting = {e.path for e in pending if not e.leads}
            recent = path in taken_at and now < taken_at[path] + quiet
            immediate = kind in IMMEDIATE_KINDS
            leads = (
                path is not None
                and not immediate
                and (
                    path in leading
                    or (kind is TriggerKind.FILE and path not in waiting and not recent)
                )
            )
            d.add(Trigger(kind, path), now)
            pending.append(Event(n, now, kind, path, leads))
        else:
            take(now)
        assert d.pending == len(pending)
        assert d.remembered == remembered()  # bounded: a path is forgotten after its window
        deadline = d.next_deadline()
        assert (deadline is None) == (not pending)
        if deadline is not None:
            waits = [e for e in pending if not e.leads]
            if waits:
                assert deadline <= waits[0].at + bound + 1e-9
            if any(e.leads for e in pending):
                assert deadline <= now

    # The loop's way: sleep until next_deadline(), take, repeat — it always drains.
    while (deadline := d.next_deadline()) is not None:
        now = max(now, deadline)
        take(now)
    events = [n for n, step in enumerate(steps) if step[0] == "event"]
    assert sorted(covered) == events
    assert len(covered) == len(set(covered))
