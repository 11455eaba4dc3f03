"""The change list: it turns the applied record into the desired one, and times each change."""

from __future__ import annotations

from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from tgtwatch.model.tree import WRITE_CACHE_OFF
from tgtwatch.tgt.changes import (
    DEFAULT_TARGET_PARAMS,
    ChangeKind,
    Timing,
    apply_change,
    target_changes,
)
from tgtwatch.tgt.records import LunRecord, TargetRecord

IQN = "iqn.2026-12.org.tgtwatch.test:t"


def fold(
    old: TargetRecord | None, new: TargetRecord | None, *, idle: bool = True
) -> TargetRecord | None:
    changes = [c for c in target_changes(3, old, new) if idle or c.timing is not Timing.IDLE]
    return reduce(apply_change, changes, old)


def kinds(old: TargetRecord | None, new: TargetRecord | None) -> list[tuple[ChangeKind, Timing]]:
    return [(c.kind, c.timing) for c in target_changes(1, old, new)]


LUN1 = LunRecord(1, "/srv/a.img")
BASE = TargetRecord(IQN, luns=(LUN1,))


def test_a_new_target_is_made_whole_and_live() -> None:
    new = TargetRecord(IQN, luns=(LUN1,), params=(("MaxRecvDataSegmentLength", "65536"),))
    assert kinds(None, new) == [
        (ChangeKind.NEW_TARGET, Timing.LIVE),
        (ChangeKind.SET_PARAM, Timing.LIVE),
        (ChangeKind.NEW_LUN, Timing.LIVE),
        (ChangeKind.BIND_ADDRESS, Timing.LIVE),
    ]
    assert fold(None, new) == new


def test_an_added_lun_is_live() -> None:
    new = TargetRecord(IQN, luns=(LUN1, LunRecord(2, "/srv/b.img", params=(("vendor_id", "X"),))))
    assert kinds(BASE, new) == [
        (ChangeKind.NEW_LUN, Timing.LIVE),
        (ChangeKind.SET_LUN_PARAMS, Timing.LIVE),
    ]


def test_a_replaced_store_waits_for_idle() -> None:
    new = TargetRecord(IQN, luns=(LunRecord(1, "/srv/other.img"),))
    assert kinds(BASE, new) == [
        (ChangeKind.DELETE_LUN, Timing.IDLE),
        (ChangeKind.NEW_LUN, Timing.IDLE),
    ]
    assert fold(BASE, new, idle=False) == BASE


def test_removals_wait_for_idle() -> None:
    assert kinds(BASE, TargetRecord(IQN)) == [(ChangeKind.DELETE_LUN, Timing.IDLE)]
    assert kinds(BASE, None) == [(ChangeKind.DELETE_TARGET, Timing.IDLE)]


def test_lun_params_live_unless_they_move_the_data() -> None:
    vendor = TargetRecord(IQN, luns=(LunRecord(1, "/srv/a.img", params=(("vendor_id", "ACME"),)),))
    assert kinds(BASE, vendor) == [(ChangeKind.SET_LUN_PARAMS, Timing.LIVE)]
    offline = TargetRecord(IQN, luns=(LunRecord(1, "/srv/a.img", params=(("online", "0"),)),))
    assert {t for _, t in kinds(BASE, offline)} == {Timing.IDLE}
    # tgtd cannot unset a param: taking one away makes the LUN again.
    assert {t for _, t in kinds(vendor, BASE)} == {Timing.IDLE}
    cache_off = TargetRecord(
        IQN, luns=(LunRecord(1, "/srv/a.img", params=(("mode_page", str(WRITE_CACHE_OFF)),)),)
    )
    assert {t for _, t in kinds(BASE, cache_off)} == {Timing.IDLE}


def test_iscsi_parameters_apply_at_the_next_login_and_go_back_to_the_default() -> None:
    tuned = TargetRecord(IQN, luns=(LUN1,), params=(("MaxRecvDataSegmentLength", "65536"),))
    assert kinds(BASE, tuned) == [(ChangeKind.SET_PARAM, Timing.NEXT_LOGIN)]
    (back,) = target_changes(1, tuned, BASE)
    assert back.value == DEFAULT_TARGET_PARAMS["MaxRecvDataSegmentLength"] and back.reset
    assert fold(tuned, BASE) == BASE


def test_binds_come_before_unbinds() -> None:
    old = TargetRecord(IQN, addresses=("ALL",), initiators=("iqn.x:old",))
    new = TargetRecord(IQN, addresses=("10.0.0.0/24",), initiators=("iqn.x:new",))
    described = [c.describe() for c in target_changes(1, old, new)]
    assert described == [
        f"{IQN} bind address 10.0.0.0/24",
        f"{IQN} bind initiator iqn.x:new",
        f"{IQN} unbind address ALL",
        f"{IQN} unbind initiator iqn.x:old",
    ]


def test_unchanged_is_no_change() -> None:
    assert target_changes(1, BASE, BASE) == ()


# --- properties ---------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "c"])
params = st.dictionaries(st.sampled_from(["vendor_id", "product_id", "readonly", "scsi_sn"]), names)
pages = st.lists(st.sampled_from([str(WRITE_CACHE_OFF), "0x19:0:2:0"]), max_size=2, unique=True)


@st.composite
def luns(draw: st.DrawFn, number: int) -> LunRecord:
    return LunRecord(
        number,
        draw(st.sampled_from(["/srv/a.img", "/srv/b.img"])),
        bstype=draw(st.sampled_from(["", "aio"])),
        params=(*(("mode_page", p) for p in draw(pages)), *sorted(draw(params).items())),
    )


@st.composite
def targets(draw: st.DrawFn) -> TargetRecord:
    numbers = draw(st.lists(st.integers(1, 4), unique=True, max_size=3))
    return TargetRecord(
        IQN,
        luns=tuple(draw(luns(n)) for n in sorted(numbers)),
        addresses=tuple(sorted(draw(st.sets(st.sampled_from(["ALL", "10.0.0.1", "::1"]))))),
        initiators=tuple(sorted(draw(st.sets(st.sampled_from(["iqn.x:1", "iqn.x:2"]))))),
        params=tuple(
            sorted(
                draw(
                    st.dictionaries(st.sampled_from(["MaxConnections", "HeaderDigest"]), names)
                ).items()
            )
        ),
    )


@given(st.none() | targets(), st.none() | targets())
def test_the_changes_lead_from_old_to_new(
    old: TargetRecord | None, new: TargetRecord | None
) -> None:
    assert fold(old, new) == new


@given(targets(), targets())
def test_without_idle_changes_no_lun_changes_data(old: TargetRecord, new: TargetRecord) -> None:
    live = fold(old, new, idle=False)
    assert live is not None
    for lun in old.luns:
        kept = live.lun(lun.number)
        assert kept is not None and kept.store == lun.store  # nothing taken from under a session
    assert {lun.number for lun in live.luns} == {lun.number for lun in old.luns} | {
        lun.number for lun in new.luns if old.lun(lun.number) is None
    }
    assert (live.addresses, live.initiators, live.params) == (
        new.addresses,
        new.initiators,
        new.params,
    )


@given(targets(), targets())
def test_every_description_names_the_target(old: TargetRecord, new: TargetRecord) -> None:
    for change in target_changes(1, old, new):
        assert change.describe().startswith(IQN)
