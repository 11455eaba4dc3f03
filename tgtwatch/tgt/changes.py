"""The change list from what was applied to what the file asks for, and when each may run. Pure.

CHAP accounts are not here: tgt/chap.py binds them against what tgtd shows (tgtd 1.0.85
crashes on an account unbound from the middle of a target's list).

What tgtd allows with logged-in initiators (research/tgt-semantics.md Q1) decides the
timing of each change:
- live: a new LUN, ACL binds and unbinds, LUN params that do not change which
  data a LUN number reaches (vendor_id, readonly, ...);
- next login: iSCSI parameters (tgtd copies them into a connection at login);
- idle: a LUN's store replaced, a LUN or a target removed, a param taken away (tgtd has no
  "unset": the LUN is made again) — these wait until the target has no session.
ACL binds come before unbinds, so a target never passes through "no ACL".
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace

from tgtwatch.tgt.records import LunRecord, TargetRecord

# tgtd's own values for a new target (`--op show --mode target --tid N`, tgt 1.0.85): what a
# parameter goes back to when the file stops naming it.
DEFAULT_TARGET_PARAMS = {
    "MaxRecvDataSegmentLength": "8192",
    "MaxXmitDataSegmentLength": "8192",
    "HeaderDigest": "None",
    "DataDigest": "None",
    "InitialR2T": "Yes",
    "MaxOutstandingR2T": "1",
    "ImmediateData": "Yes",
    "FirstBurstLength": "65536",
    "MaxBurstLength": "262144",
    "DataPDUInOrder": "Yes",
    "DataSequenceInOrder": "Yes",
    "ErrorRecoveryLevel": "0",
    "IFMarker": "No",
    "OFMarker": "No",
    "DefaultTime2Wait": "2",
    "DefaultTime2Retain": "20",
    "OFMarkInt": "Reject",
    "IFMarkInt": "Reject",
    "MaxConnections": "1",
}

# LUN params that change what an initiator reaches or whether it reaches it: never live.
_REPLACING_LUN_PARAMS = frozenset({"path", "online"})


class ChangeKind(enum.Enum):
    NEW_TARGET = "new target"
    DELETE_TARGET = "delete target"
    SET_PARAM = "set parameter"
    NEW_LUN = "new LUN"
    DELETE_LUN = "delete LUN"
    SET_LUN_PARAMS = "set LUN params"
    BIND_ADDRESS = "bind address"
    UNBIND_ADDRESS = "unbind address"
    BIND_INITIATOR = "bind initiator"
    UNBIND_INITIATOR = "unbind initiator"


class Timing(enum.Enum):
    LIVE = "live"  # harmless to a logged-in initiator
    NEXT_LOGIN = "next login"  # applied now, negotiated by the next login
    IDLE = "idle"  # only while the target has no session


@dataclass(frozen=True)
class Change:
    """One tgtd request's worth of change; `target` is "" for the tgtd-wide accounts."""

    kind: ChangeKind
    timing: Timing = Timing.LIVE
    target: str = ""
    tid: int = 0
    lun: LunRecord | None = None  # NEW_LUN: the whole LUN; DELETE_LUN, SET_LUN_PARAMS: its number
    name: str = ""  # the parameter, address, initiator or user
    value: str = ""  # the parameter's value
    params: tuple[tuple[str, str], ...] = ()  # SET_LUN_PARAMS
    reset: bool = False  # SET_PARAM: back to tgtd's default, the file no longer names it

    def describe(self) -> str:
        """One line for status and the audit record."""
        where = f"{self.target} " if self.target else ""
        lun = self.lun
        if self.kind is ChangeKind.NEW_LUN and lun is not None:
            what = f"new LUN {lun.number} ({lun.path})"
        elif self.kind is ChangeKind.DELETE_LUN and lun is not None:
            what = f"delete LUN {lun.number}"
        elif self.kind is ChangeKind.SET_LUN_PARAMS and lun is not None:
            what = f"set LUN {lun.number} " + ",".join(f"{k}={v}" for k, v in self.params)
        elif self.kind is ChangeKind.SET_PARAM:
            what = f"set {self.name}={self.value}"
        elif self.kind in (ChangeKind.NEW_TARGET, ChangeKind.DELETE_TARGET):
            what = f"{self.kind.value} (tid {self.tid})"
        else:
            what = f"{self.kind.value} {self.name}"
        return where + what


def _lun_changes(
    target: str, tid: int, old: LunRecord | None, new: LunRecord | None
) -> list[Change]:
    if old is None and new is None:
        return []
    if new is None:
        assert old is not None
        return [Change(ChangeKind.DELETE_LUN, Timing.IDLE, target, tid, lun=old)]
    made = [Change(ChangeKind.NEW_LUN, Timing.LIVE, target, tid, lun=new)]
    if new.params:
        made.append(
            Change(ChangeKind.SET_LUN_PARAMS, Timing.LIVE, target, tid, new, params=new.params)
        )
    if old is None:
        return made
    old_params, new_params = dict(old.params), dict(new.params)
    remade = (
        old.store != new.store
        or not set(old_params) <= set(new_params)
        or any(old_params.get(k) != v for k, v in new.params if k in _REPLACING_LUN_PARAMS)
        or [v for k, v in old.params if k == "mode_page"]
        != [v for k, v in new.params if k == "mode_page"]
    )
    if remade:
        delete = Change(ChangeKind.DELETE_LUN, Timing.IDLE, target, tid, lun=old)
        return [
            delete,
            *(Change(c.kind, Timing.IDLE, c.target, c.tid, c.lun, params=c.params) for c in made),
        ]
    changed = tuple((k, v) for k, v in new.params if k != "mode_page" and old_params.get(k) != v)
    if not changed:
        return []
    return [Change(ChangeKind.SET_LUN_PARAMS, Timing.LIVE, target, tid, new, params=changed)]


def _set_diff(
    target: str,
    tid: int,
    old: Iterable[str],
    new: Iterable[str],
    bind: ChangeKind,
    unbind: ChangeKind,
) -> tuple[list[Change], list[Change]]:
    before, after = set(old), set(new)
    binds = [Change(bind, Timing.LIVE, target, tid, name=n) for n in sorted(after - before)]
    unbinds = [Change(unbind, Timing.LIVE, target, tid, name=n) for n in sorted(before - after)]
    return binds, unbinds


def target_changes(
    tid: int, old: TargetRecord | None, new: TargetRecord | None
) -> tuple[Change, ...]:
    """What turns target `old` (None: absent) into `new` (None: removed) on tgtd as `tid`."""
    if new is None:
        if old is None:
            return ()
        return (Change(ChangeKind.DELETE_TARGET, Timing.IDLE, old.name, tid),)
    name = new.name
    changes: list[Change] = []
    base = old or TargetRecord(name=name, addresses=(), driver=new.driver)
    if old is None:
        changes.append(Change(ChangeKind.NEW_TARGET, Timing.LIVE, name, tid, value=new.driver))
    timing = Timing.LIVE if old is None else Timing.NEXT_LOGIN
    old_params = dict(base.params)
    for key, value in new.params:
        if old_params.get(key) != value:
            changes.append(Change(ChangeKind.SET_PARAM, timing, name, tid, name=key, value=value))
    wanted = dict(new.params)
    for key in sorted(set(old_params) - set(wanted)):
        default = DEFAULT_TARGET_PARAMS.get(key, "")
        changes.append(
            Change(ChangeKind.SET_PARAM, timing, name, tid, name=key, value=default, reset=True)
        )
    numbers = sorted({lun.number for lun in (*base.luns, *new.luns)})
    for number in numbers:
        changes += _lun_changes(name, tid, base.lun(number), new.lun(number))
    address_binds, address_unbinds = _set_diff(
        name, tid, base.addresses, new.addresses, ChangeKind.BIND_ADDRESS, ChangeKind.UNBIND_ADDRESS
    )
    name_binds, name_unbinds = _set_diff(
        name,
        tid,
        base.initiators,
        new.initiators,
        ChangeKind.BIND_INITIATOR,
        ChangeKind.UNBIND_INITIATOR,
    )
    return (*changes, *address_binds, *name_binds, *address_unbinds, *name_unbinds)


def apply_change(record: TargetRecord | None, change: Change) -> TargetRecord | None:
    """The target's record once `change` ran: how a partly applied change list is recorded."""
    kind = change.kind
    if kind is ChangeKind.NEW_TARGET:
        return TargetRecord(name=change.target, addresses=(), driver=change.value or "iscsi")
    if kind is ChangeKind.DELETE_TARGET or record is None:
        return None
    if kind is ChangeKind.SET_PARAM:
        params = dict(record.params)
        if change.reset:
            params.pop(change.name, None)
        else:
            params[change.name] = change.value
        return replace(record, params=tuple(sorted(params.items())))
    if kind in (ChangeKind.NEW_LUN, ChangeKind.DELETE_LUN, ChangeKind.SET_LUN_PARAMS):
        return _apply_lun(record, change)
    addresses, initiators = set(record.addresses), set(record.initiators)
    if kind is ChangeKind.BIND_ADDRESS:
        addresses.add(change.name)
    elif kind is ChangeKind.UNBIND_ADDRESS:
        addresses.discard(change.name)
    elif kind is ChangeKind.BIND_INITIATOR:
        initiators.add(change.name)
    else:
        initiators.discard(change.name)
    return replace(record, addresses=tuple(sorted(addresses)), initiators=tuple(sorted(initiators)))


def _apply_lun(record: TargetRecord, change: Change) -> TargetRecord:
    assert change.lun is not None
    number = change.lun.number
    others = tuple(lun for lun in record.luns if lun.number != number)
    if change.kind is ChangeKind.DELETE_LUN:
        return replace(record, luns=others)
    if change.kind is ChangeKind.NEW_LUN:
        fresh = replace(change.lun, params=())
        return replace(record, luns=tuple(sorted((*others, fresh), key=lambda lun: lun.number)))
    current = record.lun(number)
    if current is None:
        return record
    params = {k: v for k, v in current.params if k != "mode_page"}
    params.update((k, v) for k, v in change.params if k != "mode_page")
    pages = [(k, v) for k, v in (*current.params, *change.params) if k == "mode_page"]
    merged = [*pages, *sorted(params.items())]
    updated = replace(current, params=tuple(merged))
    return replace(record, luns=tuple(sorted((*others, updated), key=lambda lun: lun.number)))
