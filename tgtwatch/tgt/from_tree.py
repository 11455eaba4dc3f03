"""What a checked config tree asks of tgtd, as the native applier's record. Pure.

The tree's LUN numbers are tgt-admin's with every store present. tgt-admin renumbers when
a store is missing (later LUNs move down, so a LUN number can reach other data on the next
re-creation); the native applier keeps every number and leaves a missing store's LUN out
until the store appears, when a reload adds it live.
"""

from __future__ import annotations

from collections.abc import Callable

from tgtwatch.model.tree import (
    WRITE_CACHE_OFF,
    ConfigTree,
    IsnsSettings,
    Lun,
    StoreKind,
    Target,
)
from tgtwatch.tgt.records import InstanceRecord, LunRecord, TargetRecord


class NotNative(ValueError):
    """A key the native applier does not implement: a problem, never a silent gap."""


def _lun(lun: Lun) -> LunRecord:
    if lun.kind is StoreKind.DIRECT:
        # tgt-admin fills a direct-store's identity from the device (sg_inq, sg_readcap).
        raise NotNative(f"direct-store {lun.path}: needs engine tgt-admin")
    pages = [("mode_page", str(page)) for page in lun.mode_pages]
    if not lun.write_cache:
        pages.append(("mode_page", str(WRITE_CACHE_OFF)))
    return LunRecord(
        number=lun.number,
        path=lun.path,
        device_type="" if lun.device_type is None else lun.device_type.value,
        bstype="" if lun.bs_type is None else lun.bs_type.value,
        bsoflags=":".join(flag.value for flag in lun.bsoflags),
        block_size=lun.block_size,
        params=(*pages, *sorted(lun.params.items())),
    )


def target_record(target: Target, present: Callable[[str], bool]) -> TargetRecord:
    params = sorted((p.name, p.value) for p in target.params)
    if target.state is not None:
        params.append(("state", target.state.value))
    return TargetRecord(
        name=target.name,
        luns=tuple(_lun(lun) for lun in target.luns if present(lun.path)),
        addresses=tuple(sorted(target.address_acls)),
        initiators=tuple(sorted(target.initiator_names)),
        params=tuple(params),
        driver=target.driver.value,
    )


def isns_params(isns: IsnsSettings) -> tuple[tuple[str, str], ...]:
    """tgtd's system-wide iSNS keys (`--op update --mode sys --name K -v V`), as tgt-admin."""
    on_off = {True: "On", False: "Off"}
    found = [
        ("iSNSServerIP", isns.server_ip),
        ("iSNSServerPort", None if isns.server_port is None else str(isns.server_port)),
        ("iSNSAccessControl", None if isns.access_control is None else on_off[isns.access_control]),
        ("iSNS", None if isns.enabled is None else on_off[isns.enabled]),
    ]
    return tuple((key, value) for key, value in found if value is not None)


def instance_record(tree: ConfigTree, present: Callable[[str], bool]) -> InstanceRecord:
    """The targets tgtd must hold for `tree`; `present` says which stores exist now."""
    return InstanceRecord(
        targets={t.name: (t.tid or 0, target_record(t, present)) for t in tree.targets}
    )
