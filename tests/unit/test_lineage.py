"""Lineage: the ports a state changed since each of the few states it was made from."""

from __future__ import annotations

import gc

from tgtwatch.model.lineage import DEPTH, NO_LINEAGE
from tgtwatch.model.structs import Applied


def test_each_state_knows_the_ports_changed_since_each_earlier_one() -> None:
    a = Applied()
    b = a.made_of({}, [1])
    c = b.made_of({}, [2, 3])
    assert c.lineage.since(b) == {2, 3}
    assert c.lineage.since(a) == {1, 2, 3}
    assert c.lineage.since(c) is None  # not made from itself: the caller compares `is`
    assert b.lineage.since(c) is None
    assert NO_LINEAGE.since(a) is None


def test_an_earlier_state_is_held_weakly_and_forgotten_with_it() -> None:
    a = Applied()
    b = a.made_of({}, [1])
    del a
    gc.collect()
    c = b.made_of({}, [2])
    assert [since for _, since in c.lineage.steps] == [{2}]  # only b is left to name


def test_a_state_remembers_at_most_depth_earlier_ones() -> None:
    states = [Applied()]
    for port in range(DEPTH + 2):
        states.append(states[-1].made_of({}, [port]))
    last = states[-1]
    assert len(last.lineage.steps) == DEPTH
    assert last.lineage.since(states[-1 - DEPTH]) == set(range(2, DEPTH + 2))
    assert last.lineage.since(states[0]) is None
