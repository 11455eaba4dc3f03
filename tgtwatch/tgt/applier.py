"""Run a change list on one tgtd over its control socket: what ran, what waits, what failed.

Requests are sent one at a time (tgtd serves them one at a time anyway). A change that
may only run on an idle target waits while the target has a session; the first failure
stops the list, and the record says exactly what tgtd holds: what was applied before
plus every change that went through.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from tgtwatch.tgt import ipc_ops as ops
from tgtwatch.tgt.changes import Change, ChangeKind, Timing
from tgtwatch.tgt.instance_changes import apply_instance_change
from tgtwatch.tgt.ipc import DeviceType, Request, RequestError
from tgtwatch.tgt.ipc_client import IpcError
from tgtwatch.tgt.records import InstanceRecord

_DEVICE_TYPES = {
    "": DeviceType.DISK,
    "disk": DeviceType.DISK,
    "tape": DeviceType.TAPE,
    "cd": DeviceType.CD,
    "changer": DeviceType.CHANGER,
    "osd": DeviceType.OSD,
    "pt": DeviceType.PT,
}


class Client(Protocol):
    """One tgtd's control socket (tgt/ipc_client.TgtdSocket)."""

    def call(self, request: Request) -> str: ...


def request_for(change: Change) -> Request:
    """The control-socket request that performs `change`. Pure."""
    kind, tid = change.kind, change.tid
    if kind is ChangeKind.NEW_TARGET:
        return ops.new_target(tid, change.target, lld=change.value or "iscsi")
    if kind is ChangeKind.DELETE_TARGET:
        return ops.delete_target(tid)
    if kind is ChangeKind.SET_PARAM:
        return ops.update_target(tid, change.name, change.value, lld="iscsi")
    if kind is ChangeKind.BIND_ADDRESS:
        return ops.bind_address(tid, change.name)
    if kind is ChangeKind.UNBIND_ADDRESS:
        return ops.unbind_address(tid, change.name)
    if kind is ChangeKind.BIND_INITIATOR:
        return ops.bind_initiator(tid, change.name)
    if kind is ChangeKind.UNBIND_INITIATOR:
        return ops.unbind_initiator(tid, change.name)
    lun = change.lun
    assert lun is not None, change
    if kind is ChangeKind.NEW_LUN:
        return ops.new_lun(
            tid,
            lun.number,
            lun.path,
            bstype=lun.bstype or None,
            bsopts=lun.bsopts or None,
            bsoflags=lun.bsoflags or None,
            blocksize=None if lun.block_size is None else str(lun.block_size),
            device_type=_DEVICE_TYPES[lun.device_type],
        )
    if kind is ChangeKind.DELETE_LUN:
        return ops.delete_lun(tid, lun.number)
    return ops.update_lun(tid, lun.number, change.params)


@dataclass(frozen=True)
class ApplyReport:
    record: InstanceRecord  # what tgtd holds now
    applied: tuple[Change, ...] = ()
    waiting: tuple[Change, ...] = ()  # idle-only changes of targets with sessions
    failed: Change | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.failed is None


def _requests(change: Change) -> list[Request]:
    if change.kind is ChangeKind.SET_LUN_PARAMS:
        # One key per request: tgtd applies keys one by one and stops at the first it
        # refuses, so one request per key keeps the record exact when one fails.
        assert change.lun is not None
        return [ops.update_lun(change.tid, change.lun.number, [p]) for p in change.params]
    return [request_for(change)]


def apply_changes(
    client: Client,
    applied: InstanceRecord,
    changes: Sequence[Change],
    *,
    busy: Collection[str] = (),
) -> ApplyReport:
    """Send every change that may run now; `busy` names the targets with a session."""
    record = applied
    done: list[Change] = []
    waiting: list[Change] = []
    for change in changes:
        if change.timing is Timing.IDLE and change.target in busy:
            waiting.append(change)
            continue
        for request in _requests(change):
            try:
                client.call(request)
            except (IpcError, RequestError) as exc:
                return ApplyReport(record, tuple(done), tuple(waiting), change, str(exc))
        record = apply_instance_change(record, change)
        done.append(change)
    return ApplyReport(record, tuple(done), tuple(waiting))
