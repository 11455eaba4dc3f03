"""A whole tgtd's change list: accounts, discovery and targets, with tgtd's account semantics."""

from __future__ import annotations

from functools import reduce

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tgtwatch.tgt.changes import DISCOVERY_TID, ChangeKind
from tgtwatch.tgt.instance_changes import (
    STAND_IN_PREFIX,
    apply_instance_change,
    instance_changes,
    new_tids,
)
from tgtwatch.tgt.records import Account, InstanceRecord, LunRecord, TargetRecord

A = "iqn.2026-12.org.tgtwatch.test:a"
B = "iqn.2026-12.org.tgtwatch.test:b"
C = "iqn.2026-12.org.tgtwatch.test:c"


def record(
    *targets: tuple[int, TargetRecord], accounts: tuple[Account, ...] = (), **kw: tuple[str, ...]
) -> InstanceRecord:
    return InstanceRecord(
        targets={t.name: (tid, t) for tid, t in targets},
        accounts=tuple(sorted(accounts, key=lambda a: a.user)),
        **kw,  # type: ignore[arg-type]
    )


def fold(applied: InstanceRecord, desired: InstanceRecord, **kw: object) -> InstanceRecord:
    return reduce(apply_instance_change, instance_changes(applied, desired, **kw), applied)  # type: ignore[arg-type]


def test_fresh_tids_in_sorted_name_order_after_the_highest() -> None:
    desired = record((0, TargetRecord(C)), (0, TargetRecord(A)), (0, TargetRecord(B)))
    assert new_tids(InstanceRecord(), desired, ()) == {A: 1, B: 2, C: 3}
    applied = record((4, TargetRecord(B)))
    assert new_tids(applied, desired, (7,)) == {A: 8, C: 9}


def test_new_accounts_before_binds_and_gone_ones_after() -> None:
    bob = Account.of("bob", "secretsecret1")
    desired = record((1, TargetRecord(A, incoming=("bob",))), accounts=(bob,))
    kinds = [c.kind for c in instance_changes(InstanceRecord(), desired)]
    assert kinds[0] is ChangeKind.NEW_ACCOUNT
    assert kinds.index(ChangeKind.BIND_ACCOUNT) > kinds.index(ChangeKind.NEW_TARGET)
    applied = fold(InstanceRecord(), desired)
    assert applied.recorded() == desired.recorded()
    kinds = [c.kind for c in instance_changes(applied, record((1, TargetRecord(A))))]
    assert kinds == [ChangeKind.UNBIND_ACCOUNT, ChangeKind.DELETE_ACCOUNT]


def test_a_changed_secret_never_leaves_a_target_without_chap() -> None:
    old = Account.of("bob", "secretsecret1").recorded()
    new = Account.of("bob", "secretsecret2")
    target = TargetRecord(A, incoming=("bob",))
    applied = record((1, target), accounts=(old,), discovery_incoming=("bob",))
    desired = record((1, target), accounts=(new,), discovery_incoming=("bob",))
    with pytest.raises(ValueError, match="stand-in"):
        instance_changes(applied, desired)
    changes = instance_changes(applied, desired, stand_in_secret="standinsecret")
    state = applied
    for change in changes:
        state = apply_instance_change(state, change)
        assert state.targets[A][1].incoming, change.describe()  # CHAP stays required
        assert state.discovery_incoming, change.describe()
    assert state.recorded() == desired.recorded()
    assert not any(a.user.startswith(STAND_IN_PREFIX) for a in state.accounts)


def test_discovery_binds_use_no_tid() -> None:
    alice = Account.of("alice", "secretsecret1")
    changes = instance_changes(
        InstanceRecord(), record(accounts=(alice,), discovery_outgoing=("alice",))
    )
    bind = changes[-1]
    assert (bind.kind, bind.tid, bind.outgoing) == (ChangeKind.BIND_ACCOUNT, DISCOVERY_TID, True)
    assert bind.describe() == "bind account alice (outgoing) (discovery)"


# --- properties ---------------------------------------------------------------------------

users = st.sampled_from(["u1", "u2", "u3"])
secrets_ = st.sampled_from(["secretsecret1", "secretsecret2"])


@st.composite
def instances(draw: st.DrawFn) -> InstanceRecord:
    accounts = {u: Account.of(u, draw(secrets_)) for u in draw(st.sets(users))}
    known = sorted(accounts)
    bound = st.sets(st.sampled_from(known)) if known else st.just(set[str]())
    names = draw(st.sets(st.sampled_from([A, B, C])))
    targets = []
    for tid, name in enumerate(sorted(names), start=1):
        luns = tuple(
            LunRecord(n, f"/srv/{name[-1]}{n}.img")
            for n in sorted(draw(st.sets(st.integers(1, 3))))
        )
        outgoing = draw(st.sets(st.sampled_from(known), max_size=1)) if known else set()
        targets.append(
            (
                tid,
                TargetRecord(
                    name,
                    luns=luns,
                    incoming=tuple(sorted(draw(bound))),
                    outgoing=tuple(sorted(outgoing)),
                ),
            )
        )
    return record(
        *targets,
        accounts=tuple(accounts.values()),
        discovery_incoming=tuple(sorted(draw(bound))),
        discovery_outgoing=tuple(
            sorted(draw(st.sets(st.sampled_from(known), max_size=1)) if known else ())
        ),
    )


def _without_tids(r: InstanceRecord) -> InstanceRecord:
    return InstanceRecord(
        targets={n: (0, t) for n, (_, t) in r.targets.items()},
        accounts=r.recorded().accounts,
        discovery_incoming=r.discovery_incoming,
        discovery_outgoing=r.discovery_outgoing,
    )


@given(instances(), instances())
def test_the_changes_lead_from_any_tgtd_to_any_other(
    applied: InstanceRecord, desired: InstanceRecord
) -> None:
    applied = applied.recorded()
    done = fold(applied, desired, stand_in_secret="standinsecret")
    assert _without_tids(done) == _without_tids(desired)
    for name, (tid, _) in done.targets.items():
        if name in applied.targets:
            assert tid == applied.targets[name][0]  # a kept target keeps its tid


@given(instances(), instances())
def test_no_secret_in_any_change(applied: InstanceRecord, desired: InstanceRecord) -> None:
    for change in instance_changes(applied.recorded(), desired, stand_in_secret="standinsecret"):
        text = repr(change) + change.describe()
        assert "secretsecret" not in text and "standinsecret" not in text
