"""plan_accounts against a model of tgtd 1.0.85's account tables, holes included.

The model does what usr/target.c does: per target an array of account ids walked up to its
count, unbinding leaves a zero where the id was, binding fills the first zero, and `show`
with a zero inside the count dereferences NULL (tgtd dies). Every plan is replayed request
by request: no moment may leave a hole, and the end state must be the desired one.
test_chap_real.py replays the same kind of plans on a real tgtd.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from tgtwatch.config.accounts import Account, AccountSet, Direction
from tgtwatch.tgt.chap import (
    DISCOVERY,
    AccountRecord,
    AccountsView,
    Slot,
    plan_accounts,
    slot_of,
)
from tgtwatch.tgt.ipc import AccountDir, Mode, Op, Request, Status

NAMES = {1: "iqn.x:a", 2: "iqn.x:b", 3: "iqn.x:c"}
SLOTS = 16  # tgtd's DEFAULT_NR_ACCOUNT


class Refused(Exception):
    def __init__(self, status: Status) -> None:
        super().__init__(status.name)
        self.status = status


@dataclass
class ModelTgtd:
    secrets: dict[str, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    arrays: dict[int, list[int]] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    out: dict[int, str | None] = field(default_factory=dict)
    next_id: int = 1

    def __post_init__(self) -> None:
        for tid in (DISCOVERY, *NAMES):
            self.arrays[tid] = [0] * SLOTS
            self.counts[tid] = 0
            self.out[tid] = None

    def holes(self) -> list[int]:
        return [t for t, a in self.arrays.items() if 0 in a[: self.counts[t]]]

    def view(self) -> AccountsView:
        assert not self.holes(), f"show would crash tgtd: holes in {self.holes()}"
        users = {i: u for u, i in self.ids.items()}
        slots = {
            tid: Slot(tuple(users[i] for i in a[: self.counts[tid]]), self.out[tid])
            for tid, a in self.arrays.items()
        }
        # system_show lists discovery's accounts only while it has an incoming one
        if not slots[DISCOVERY].incoming:
            slots[DISCOVERY] = Slot()
        return AccountsView(tuple(self.secrets), slots, {n: t for t, n in NAMES.items()})

    def bind(self, tid: int, user: str, outgoing: bool = False) -> None:
        if user not in self.ids:
            raise Refused(Status.NO_USER)
        aid = self.ids[user]
        if outgoing:
            if self.out[tid] is not None:
                raise Refused(Status.OUTACCOUNT_EXIST)
            self.out[tid] = user
            return
        array = self.arrays[tid]
        if aid in array:
            raise Refused(Status.USER_EXIST)
        array[array.index(0)] = aid
        self.counts[tid] += 1

    def unbind(self, tid: int, user: str, outgoing: bool = False) -> None:
        if user not in self.ids:
            raise Refused(Status.NO_USER)
        if outgoing:
            if self.out[tid] != user:
                raise Refused(Status.NO_USER)
            self.out[tid] = None
            return
        array = self.arrays[tid]
        if self.ids[user] not in array:
            raise Refused(Status.NO_USER)
        array[array.index(self.ids[user])] = 0
        self.counts[tid] -= 1

    def call(self, request: Request) -> None:
        assert request.mode is Mode.ACCOUNT, request
        user = request.payload.user or ""
        outgoing = request.ac_dir is AccountDir.OUTGOING
        if request.op is Op.NEW:
            if user in self.secrets:
                raise Refused(Status.USER_EXIST)
            self.secrets[user] = request.payload.password or ""
            self.ids[user] = self.next_id
            self.next_id += 1
        elif request.op is Op.DELETE:
            if user not in self.secrets:
                raise Refused(Status.NO_USER)
            for tid in self.arrays:  # account_del: unbind everywhere, holes and all
                for direction in (False, True):
                    with contextlib.suppress(Refused):
                        self.unbind(tid, user, direction)
            del self.secrets[user], self.ids[user]
        elif request.op is Op.BIND:
            self.bind(request.tid, user, outgoing)
        elif request.op is Op.UNBIND:
            self.unbind(request.tid, user, outgoing)

    def apply(self, desired: AccountSet, record: AccountRecord) -> list[str]:
        plan = plan_accounts(desired, self.view(), record)
        for probe in plan.probes:
            try:
                self.call(probe)
            except Refused as exc:
                assert exc.status is Status.NO_USER
        for request in plan.requests:
            self.call(request)
            assert not self.holes(), f"hole after {request.describe()}"
        return list(plan.changes)


def account(user: str, target: int | None, outgoing: bool = False, secret: str = "") -> Account:
    direction = Direction.OUTGOING if outgoing else Direction.INCOMING
    return Account(
        user, secret or f"{user}-secret", direction, None if target is None else NAMES[target]
    )


def wanted(*accounts: Account, targets: tuple[int, ...] = (1, 2, 3)) -> AccountSet:
    return AccountSet(tuple(accounts), tuple(NAMES[t] for t in targets))


def end_state(tgtd: ModelTgtd) -> dict[int, tuple[frozenset[str], str | None]]:
    """What tgtd holds (discovery's outgoing account included, which show may hide)."""
    assert not tgtd.holes()
    users = {i: u for u, i in tgtd.ids.items()}
    return {
        t: (frozenset(users[i] for i in a[: tgtd.counts[t]]), tgtd.out[t])
        for t, a in tgtd.arrays.items()
    }


def expected(desired: AccountSet) -> dict[int, tuple[frozenset[str], str | None]]:
    tids = {n: t for t, n in NAMES.items()}
    out: dict[int, tuple[set[str], str | None]] = {t: (set(), None) for t in (DISCOVERY, *NAMES)}
    for a in desired.accounts:
        tid = DISCOVERY if a.target is None else tids[a.target]
        inc, og = out[tid]
        out[tid] = (inc, a.user) if a.outgoing else ({*inc, a.user}, og)
    return {t: (frozenset(i), o) for t, (i, o) in out.items()}


def test_from_nothing_everything_is_created_then_bound() -> None:
    tgtd = ModelTgtd()
    desired = wanted(account("d", None), account("a", 1), account("b", 1), account("m", 1, True))
    changes = tgtd.apply(desired, AccountRecord())
    assert end_state(tgtd) == expected(desired)
    assert tgtd.secrets == {"d": "d-secret", "a": "a-secret", "b": "b-secret", "m": "m-secret"}
    assert "create account a" in changes and "bind outgoing m to iqn.x:a" in changes


def test_dropping_the_first_of_three_never_leaves_a_hole() -> None:
    tgtd = ModelTgtd()
    first = wanted(account("a", 1), account("b", 1), account("c", 1))
    record = AccountRecord.of(first.secrets())
    tgtd.apply(first, AccountRecord())
    second = wanted(account("b", 1), account("c", 1))
    changes = tgtd.apply(second, record)
    assert end_state(tgtd)[1] == (frozenset({"b", "c"}), None)
    assert changes == ["unbind a from iqn.x:a", "delete account a"]


def test_a_changed_secret_is_recreated_and_rebound_everywhere() -> None:
    tgtd = ModelTgtd()
    first = wanted(account("a", 1), account("s", 1), account("s", 2), account("s", 3, True))
    tgtd.apply(first, AccountRecord())
    record = AccountRecord.of(first.secrets())
    second = wanted(
        account("a", 1),
        account("s", 1, secret="new"),
        account("s", 2, secret="new"),
        account("s", 3, True, "new"),
    )
    changes = tgtd.apply(second, record)
    assert tgtd.secrets["s"] == "new" and tgtd.secrets["a"] == "a-secret"
    assert end_state(tgtd) == expected(second)
    assert changes == ["new secret for s"]


def test_an_unknown_record_renews_every_wanted_account() -> None:
    tgtd = ModelTgtd()
    desired = wanted(account("a", 1))
    tgtd.apply(desired, AccountRecord())
    tgtd.secrets["a"] = "set by someone else"
    tgtd.apply(desired, AccountRecord())
    assert tgtd.secrets["a"] == "a-secret"


def test_an_unchanged_config_sends_nothing() -> None:
    tgtd = ModelTgtd()
    desired = wanted(account("d", None), account("a", 1), account("m", 2, True))
    tgtd.apply(desired, AccountRecord())
    plan = plan_accounts(desired, tgtd.view(), AccountRecord.of(desired.secrets()))
    assert plan.requests == () and plan.changes == () and plan.probes == ()


def test_a_target_the_config_does_not_name_keeps_its_bindings() -> None:
    tgtd = ModelTgtd()
    tgtd.apply(wanted(account("a", 3), account("b", 3), account("m", 3, True)), AccountRecord())
    # target 3 left the config (tgt-admin keeps it while busy): a's secret changes elsewhere
    desired = wanted(account("a", 1, secret="new"), targets=(1, 2))
    tgtd.apply(desired, AccountRecord())
    assert end_state(tgtd)[3] == (frozenset({"a", "b"}), "m")
    assert tgtd.secrets["a"] == "new"


def test_a_hidden_discovery_outgoing_account_is_found_by_probing() -> None:
    tgtd = ModelTgtd()
    tgtd.apply(wanted(account("o", None, True)), AccountRecord())
    assert tgtd.view().slots[DISCOVERY] == Slot()
    assert end_state(tgtd)[DISCOVERY] == (frozenset(), "o")
    plan = plan_accounts(wanted(account("p", None, True)), tgtd.view(), AccountRecord())
    assert [p.describe() for p in plan.probes] == ["--mode account --op unbind --outgoing [user=o]"]
    tgtd.apply(wanted(account("p", None, True)), AccountRecord())
    assert end_state(tgtd)[DISCOVERY] == (frozenset(), "p")
    assert "o" not in tgtd.secrets


def test_show_lines_become_slots() -> None:
    assert slot_of(["a", "b", "m (outgoing)"]) == Slot(("a", "b"), "m")
    assert slot_of([]) == Slot()


def test_records_round_trip_and_never_hold_a_secret() -> None:
    record = AccountRecord.of({"a": "topsecret"})
    assert "topsecret" not in record.to_json()
    again = AccountRecord.from_json(record.to_json())
    assert again.holds("a", "topsecret") and not again.holds("a", "other")
    assert AccountRecord.from_json("{nonsense") == AccountRecord()
    assert not AccountRecord().holds("a", "topsecret")


USERS = st.sampled_from(["u1", "u2", "u3", "u4", "u5"])
TARGET = st.sampled_from([None, 1, 2, 3])


@st.composite
def account_sets(draw: st.DrawFn) -> AccountSet:
    chosen: list[Account] = []
    for user, target, outgoing in draw(
        st.lists(st.tuples(USERS, TARGET, st.booleans()), max_size=10)
    ):
        if outgoing and any(a.outgoing and a.target == (target and NAMES[target]) for a in chosen):
            continue
        if not outgoing and any(
            a.user == user and not a.outgoing and a.target == (target and NAMES[target])
            for a in chosen
        ):
            continue
        chosen.append(
            account(user, target, outgoing, secret=draw(st.sampled_from(["s1", "s2"])) + user)
        )
    secrets: dict[str, str] = {}
    consistent = [a for a in chosen if secrets.setdefault(a.user, a.secret) == a.secret]
    targets = tuple(draw(st.lists(st.sampled_from([1, 2, 3]), unique=True)))
    named = {a.target for a in consistent if a.target}
    tids = tuple(sorted({*targets, *(t for t, n in NAMES.items() if n in named)}))
    return wanted(*consistent, targets=tids)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(account_sets(), st.booleans()), min_size=1, max_size=4))
def test_any_chain_of_configs_ends_in_the_last_one_without_a_hole(
    chain: list[tuple[AccountSet, bool]],
) -> None:
    tgtd = ModelTgtd()
    record = AccountRecord()
    before = end_state(tgtd)
    for desired, keep_record in chain:
        tgtd.apply(desired, record if keep_record else AccountRecord())
        record = AccountRecord.of(desired.secrets())
        state = end_state(tgtd)
        named = {t for t, n in NAMES.items() if n in desired.targets} | {DISCOVERY}
        for tid in named:
            assert state[tid] == expected(desired)[tid]
        for tid in set(NAMES) - named:
            # untouched targets keep their users (an account's secret may have changed)
            assert state[tid] == before[tid]
        for user, secret in desired.secrets().items():
            assert tgtd.secrets[user] == secret
        before = state
