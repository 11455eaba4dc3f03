"""hold_drains, pure: which drains wait for a vanished file to come back, and until when."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tgtwatch.model.grace import hold_drains
from tgtwatch.model.structs import Desired, DrainStop

D = Path("/etc/mytgt/conf.d")


def drain(port: int, name: str = "a") -> DrainStop:
    return DrainStop(port, port + 1000, name, D / f"{name}.conf")


def test_a_first_seen_drain_is_held_for_the_grace() -> None:
    g = hold_drains([drain(3261)], Desired(), {}, 10.0, 1.0)
    assert g.actions == ()
    assert g.held == {3261: 11.0}
    assert g.gone_since == {3261: 10.0}


def test_it_runs_once_the_grace_is_over() -> None:
    g = hold_drains([drain(3261)], Desired(), {3261: 10.0}, 11.0, 1.0)
    assert g.actions == (drain(3261),)
    assert g.held == {}
    assert g.gone_since == {3261: 10.0}  # kept while the drain is still planned


def test_zero_grace_holds_nothing() -> None:
    g = hold_drains([drain(3261)], Desired(), {}, 10.0, 0.0)
    assert g.actions == (drain(3261),) and g.held == {} and g.gone_since == {}


def test_a_port_no_longer_draining_forgets_its_time() -> None:
    g = hold_drains([], Desired(), {3261: 10.0}, 10.5, 1.0)
    assert g.gone_since == {}


def test_a_clock_going_back_never_stretches_the_grace() -> None:
    g = hold_drains([drain(3261)], Desired(), {3261: 10.0}, 9.0, 1.0)
    assert g.held == {3261: 10.0}


@given(
    ports=st.sets(st.integers(3261, 3270), max_size=6),
    seen=st.dictionaries(st.integers(3261, 3270), st.floats(0, 20)),
    now=st.floats(0, 20),
    grace=st.floats(0, 5),
)
def test_every_drain_is_run_or_held_never_both_and_never_past_its_grace(
    ports: set[int], seen: dict[int, float], now: float, grace: float
) -> None:
    actions = [drain(p, f"n{p}") for p in sorted(ports)]
    g = hold_drains(actions, Desired(), seen, now, grace)
    run = {a.port for a in g.actions}
    assert run | set(g.held) == ports and not run & set(g.held)
    for due in g.held.values():
        assert now < due <= now + grace
    if grace > 0:
        assert set(g.gone_since) == ports
