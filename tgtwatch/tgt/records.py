"""What tgtwatch puts into one tgtd, per target and LUN: the record a reload is diffed against.

tgtd's show output cannot see vendor_id, mode pages or bsopts, so the record of what
tgtwatch itself applied is the truth a reload starts from. CHAP accounts are not in it:
tgt/chap.py applies them against what tgtd shows, with their own record of digests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LunRecord:
    """One LUN: what `--op new --mode logicalunit` fixed, and the `--params` applied after."""

    number: int
    path: str
    direct: bool = False
    device_type: str = ""  # --device-type; "" is tgtd's default (disk)
    bstype: str = ""  # --bstype; "" is tgtd's default (rdwr)
    bsopts: str = ""
    bsoflags: str = ""
    block_size: int | None = None
    # `--op update --mode logicalunit --params k=v`: mode pages first, in the file's order
    # (write-cache off is one), then the other keys sorted, as tgt-admin applies them.
    params: tuple[tuple[str, str], ...] = ()

    @property
    def store(self) -> tuple[object, ...]:
        """What only a new LUN can change: which data the number reaches, and how."""
        return (
            self.path,
            self.direct,
            self.device_type,
            self.bstype,
            self.bsopts,
            self.bsoflags,
            self.block_size,
        )


@dataclass(frozen=True)
class TargetRecord:
    """One target as tgtwatch configures it on its tgtd."""

    name: str
    luns: tuple[LunRecord, ...] = ()  # by number
    addresses: tuple[str, ...] = ("ALL",)  # -I binds; ALL when the config names none
    initiators: tuple[str, ...] = ()  # -Q binds
    params: tuple[tuple[str, str], ...] = ()  # iSCSI parameters, sorted by name
    driver: str = "iscsi"

    def lun(self, number: int) -> LunRecord | None:
        return next((lun for lun in self.luns if lun.number == number), None)


@dataclass(frozen=True)
class InstanceRecord:
    """Every target one tgtd holds from tgtwatch, with its tid, by name."""

    targets: Mapping[str, tuple[int, TargetRecord]] = field(default_factory=dict)
    isns: tuple[tuple[str, str], ...] = ()  # tgtd-wide iSNS keys, as last sent
    # Per target, the digest of what tgtd showed of it (LUNs, accounts, ACLs) when its
    # record last matched that show and nothing was sent to it after: while the digest
    # and the file's wish stay the same, a reload need not parse the target's show.
    show_digests: Mapping[str, str] = field(default_factory=dict)


# --- JSON, for the state file -------------------------------------------------------------


def _pairs(raw: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in raw)


def lun_to_json(lun: LunRecord) -> dict[str, Any]:
    return {
        "number": lun.number,
        "path": lun.path,
        "direct": lun.direct,
        "device_type": lun.device_type,
        "bstype": lun.bstype,
        "bsopts": lun.bsopts,
        "bsoflags": lun.bsoflags,
        "block_size": lun.block_size,
        "params": [list(p) for p in lun.params],
    }


def lun_from_json(raw: Mapping[str, Any]) -> LunRecord:
    block = raw.get("block_size")
    return LunRecord(
        number=int(raw["number"]),
        path=str(raw["path"]),
        direct=bool(raw.get("direct", False)),
        device_type=str(raw.get("device_type", "")),
        bstype=str(raw.get("bstype", "")),
        bsopts=str(raw.get("bsopts", "")),
        bsoflags=str(raw.get("bsoflags", "")),
        block_size=None if block is None else int(block),
        params=_pairs(raw.get("params", ())),
    )


def target_to_json(tid: int, target: TargetRecord) -> dict[str, Any]:
    return {
        "tid": tid,
        "name": target.name,
        "luns": [lun_to_json(lun) for lun in target.luns],
        "addresses": list(target.addresses),
        "initiators": list(target.initiators),
        "params": [list(p) for p in target.params],
        "driver": target.driver,
    }


def target_from_json(raw: Mapping[str, Any]) -> tuple[int, TargetRecord]:
    return int(raw["tid"]), TargetRecord(
        name=str(raw["name"]),
        luns=tuple(lun_from_json(lun) for lun in raw.get("luns", ())),
        addresses=tuple(str(a) for a in raw.get("addresses", ())),
        initiators=tuple(str(i) for i in raw.get("initiators", ())),
        params=_pairs(raw.get("params", ())),
        driver=str(raw.get("driver", "iscsi")),
    )


def instance_to_json(
    record: InstanceRecord,
    target_json: Callable[[int, TargetRecord], dict[str, Any]] = target_to_json,
) -> dict[str, Any]:
    """The record as JSON; `target_json` renders one target (a caller may memoize it)."""
    targets = sorted(record.targets.values(), key=lambda e: e[0])
    return {
        "targets": [target_json(tid, t) for tid, t in targets],
        "isns": [list(p) for p in record.isns],
        "show_digests": dict(sorted(record.show_digests.items())),
    }


def _digests(raw: Any) -> dict[str, str]:
    """The digests, or none (every target's show is then parsed) if they are not a map."""
    if not isinstance(raw, dict):
        return {}
    return {str(k): str(v) for k, v in raw.items()}


def instance_from_json(raw: Any) -> InstanceRecord:
    targets = [target_from_json(t) for t in raw["targets"]]
    return InstanceRecord(
        targets={t.name: (tid, t) for tid, t in targets},
        isns=_pairs(raw.get("isns", ())),
        show_digests=_digests(raw.get("show_digests")),
    )
