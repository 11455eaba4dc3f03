"""A whole tgtd's change list: targets with tgt-admin's tids, kept targets keep theirs."""

from __future__ import annotations

from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from tgtwatch.tgt.instance_changes import apply_instance_change, instance_changes, new_tids
from tgtwatch.tgt.records import (
    InstanceRecord,
    LunRecord,
    TargetRecord,
    instance_from_json,
    instance_to_json,
)

A = "iqn.2026-12.org.tgtwatch.test:a"
B = "iqn.2026-12.org.tgtwatch.test:b"
C = "iqn.2026-12.org.tgtwatch.test:c"


def record(*targets: tuple[int, TargetRecord]) -> InstanceRecord:
    return InstanceRecord(targets={t.name: (tid, t) for tid, t in targets})


def fold(applied: InstanceRecord, desired: InstanceRecord) -> InstanceRecord:
    return reduce(apply_instance_change, instance_changes(applied, desired), applied)


def test_fresh_tids_in_sorted_name_order_after_the_highest() -> None:
    desired = record((0, TargetRecord(C)), (0, TargetRecord(A)), (0, TargetRecord(B)))
    assert new_tids(InstanceRecord(), desired, ()) == {A: 1, B: 2, C: 3}
    applied = record((4, TargetRecord(B)))
    assert new_tids(applied, desired, (7,)) == {A: 8, C: 9}


@st.composite
def instances(draw: st.DrawFn) -> InstanceRecord:
    names = draw(st.sets(st.sampled_from([A, B, C])))
    targets = []
    for tid, name in enumerate(sorted(names), start=1):
        numbers = sorted(draw(st.sets(st.integers(1, 3))))
        luns = tuple(
            LunRecord(
                n,
                f"/srv/{name[-1]}{n}.img",
                params=tuple(
                    sorted(
                        draw(
                            st.dictionaries(
                                st.sampled_from(["vendor_id", "readonly"]),
                                st.sampled_from(["0", "1"]),
                            )
                        ).items()
                    )
                ),
            )
            for n in numbers
        )
        addresses = tuple(sorted(draw(st.sets(st.sampled_from(["ALL", "10.0.0.1"])))))
        targets.append((tid, TargetRecord(name, luns=luns, addresses=addresses)))
    return record(*targets)


def _without_tids(r: InstanceRecord) -> dict[str, TargetRecord]:
    return {n: t for n, (_, t) in r.targets.items()}


@given(instances(), instances())
def test_the_changes_lead_from_any_tgtd_to_any_other(
    applied: InstanceRecord, desired: InstanceRecord
) -> None:
    done = fold(applied, desired)
    assert _without_tids(done) == _without_tids(desired)
    for name, (tid, _) in done.targets.items():
        if name in applied.targets:
            assert tid == applied.targets[name][0]  # a kept target keeps its tid


@given(instances())
def test_the_record_survives_json(record_: InstanceRecord) -> None:
    assert instance_from_json(instance_to_json(record_)) == record_
