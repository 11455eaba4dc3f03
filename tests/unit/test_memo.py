"""Memo: one remembered call, reused for the same objects (or equal small values)."""

from __future__ import annotations

from tgtwatch.daemon.memo import Memo
from tgtwatch.model.structs import Desired


def test_the_same_objects_give_the_remembered_answer_and_others_a_new_one() -> None:
    calls: list[object] = []

    def count(desired: Desired, failures: dict[int, str]) -> int:
        calls.append(desired)
        return len(calls)

    memo = Memo(count)
    desired = Desired()
    assert memo(desired, {1: "x"}) == 1
    assert memo(desired, {1: "x"}) == 1  # a new dict, equal: small values compare by value
    assert memo(desired, {1: "y"}) == 2
    assert memo(Desired(), {1: "y"}) == 3  # equal, but another object: made again
    assert len(calls) == 3
