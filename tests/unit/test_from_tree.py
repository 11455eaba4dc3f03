"""A checked config tree as the native applier's record."""

from __future__ import annotations

import pytest

from tgtwatch.model.tree import (
    WRITE_CACHE_OFF,
    BsOFlag,
    BsType,
    ConfigTree,
    IscsiParam,
    IsnsSettings,
    Lun,
    LunParams,
    StoreKind,
    Target,
    TargetState,
)
from tgtwatch.tgt.from_tree import NotNative, instance_record, isns_params, target_record
from tgtwatch.tgt.records import LunRecord

IQN = "iqn.2026-12.org.tgtwatch.test:t"


def test_every_lun_setting_reaches_the_record() -> None:
    lun = Lun(
        2,
        "/srv/a.img",
        bs_type=BsType.AIO,
        bsoflags=(BsOFlag.SYNC, BsOFlag.DIRECT),
        block_size=4096,
        params=LunParams(vendor_id="ACME", readonly=1),
        write_cache=False,
    )
    record = target_record(Target(IQN, luns=(lun,)), lambda _: True)
    assert record.luns == (
        LunRecord(
            2,
            "/srv/a.img",
            bstype="aio",
            bsoflags="sync:direct",
            block_size=4096,
            params=(("mode_page", str(WRITE_CACHE_OFF)), ("readonly", "1"), ("vendor_id", "ACME")),
        ),
    )
    assert record.addresses == ("ALL",)


def test_parameters_acls_and_state() -> None:
    target = Target(
        IQN,
        initiator_addresses=("10.0.0.2", "10.0.0.1"),
        initiator_names=("iqn.x:b", "iqn.x:a"),
        params=(IscsiParam("MaxConnections", "1"), IscsiParam("HeaderDigest", "None")),
        state=TargetState.OFFLINE,
    )
    record = target_record(target, lambda _: True)
    assert record.addresses == ("10.0.0.1", "10.0.0.2")
    assert record.initiators == ("iqn.x:a", "iqn.x:b")
    assert record.params == (
        ("HeaderDigest", "None"),
        ("MaxConnections", "1"),
        ("state", "offline"),
    )


def test_a_missing_store_keeps_the_numbers_of_the_others() -> None:
    target = Target(IQN, luns=(Lun(1, "/srv/gone.img"), Lun(2, "/srv/here.img")))
    record = instance_record(ConfigTree(targets=(target,)), lambda p: p == "/srv/here.img")
    assert [(lun.number, lun.path) for lun in record.targets[IQN][1].luns] == [(2, "/srv/here.img")]


def test_direct_store_is_not_native() -> None:
    target = Target(IQN, luns=(Lun(1, "/dev/sdb", kind=StoreKind.DIRECT),))
    with pytest.raises(NotNative, match="direct-store /dev/sdb"):
        target_record(target, lambda _: True)


def test_isns_as_tgt_admin_sends_it() -> None:
    assert isns_params(IsnsSettings("10.0.0.9", 3205, True, False)) == (
        ("iSNSServerIP", "10.0.0.9"),
        ("iSNSServerPort", "3205"),
        ("iSNSAccessControl", "On"),
        ("iSNS", "Off"),
    )
    assert isns_params(IsnsSettings()) == ()
