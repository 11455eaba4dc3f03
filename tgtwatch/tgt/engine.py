"""The native engine: one tgtd loaded from a checked config tree over its control socket.

Level-triggered against tgtd itself: before each load the record of what tgtwatch applied
is corrected by what tgtd shows (targets, tids, LUN numbers and paths, ACLs), so a record
lost in a crash, or a change made by hand, is found and repaired rather than trusted.
The record keeps what show cannot see (LUN params, mode pages, iSCSI parameters).
"""

from __future__ import annotations

import functools
import json
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tgtwatch.model.tree import ConfigTree
from tgtwatch.tgt import ipc_ops as ops
from tgtwatch.tgt.applier import Client, apply_changes
from tgtwatch.tgt.changes import Timing
from tgtwatch.tgt.from_tree import instance_record, isns_params
from tgtwatch.tgt.instance_changes import instance_changes
from tgtwatch.tgt.ipc import Mode, Op, Payload, Request
from tgtwatch.tgt.ipc_client import IpcError
from tgtwatch.tgt.records import (
    InstanceRecord,
    LunRecord,
    TargetRecord,
    instance_from_json,
    instance_to_json,
    target_to_json,
)
from tgtwatch.tgt.show import TargetBlock, TargetInfo, parse_show_targets, split_show_targets

# RFC 3720 names; anything else in an ACL list is an address (tgtd prints both alike).
_NAME_PREFIXES = ("iqn.", "eui.", "naa.")


def _split_acl(acl: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = tuple(sorted(a for a in acl if a.lower().startswith(_NAME_PREFIXES)))
    addresses = tuple(sorted(a for a in acl if not a.lower().startswith(_NAME_PREFIXES)))
    return addresses, names


def observed_record(record: InstanceRecord, shown: Sequence[TargetInfo]) -> InstanceRecord:
    """`record` corrected by what tgtd shows: tgtd is the truth for what it can show. Pure."""
    targets: dict[str, tuple[int, TargetRecord]] = {}
    for info in shown:
        known = record.targets.get(info.name)
        base = known[1] if known else TargetRecord(info.name)
        luns: list[LunRecord] = []
        for lun in info.data_luns:
            kept = base.lun(lun.number)
            if kept is not None and kept.path == lun.backing_store:
                luns.append(kept)
            else:
                luns.append(LunRecord(lun.number, lun.backing_store or ""))
        addresses, names = _split_acl(info.acl)
        targets[info.name] = (
            info.tid,
            replace(base, luns=tuple(luns), addresses=addresses, initiators=names),
        )
    return InstanceRecord(targets=targets)


def store_present(path: str) -> bool:
    """What tgt-admin checks before it adds a store: it exists and is not a directory."""
    try:
        return not stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class EngineReport:
    """One load: what went live, what waits for idle targets, what failed."""

    record: InstanceRecord
    live: tuple[str, ...] = ()
    next_login: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()
    busy: tuple[str, ...] = ()  # targets with changes that wait for their sessions to end
    missing: tuple[str, ...] = ()  # stores the file names that do not exist (yet)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def summary(self) -> str:
        parts = []
        if self.live:
            parts.append(f"{len(self.live)} live")
        if self.next_login:
            parts.append(f"{len(self.next_login)} at next login")
        if self.waiting:
            parts.append(f"{len(self.waiting)} waiting for idle ({', '.join(self.busy)})")
        if self.missing:
            parts.append(f"missing stores: {', '.join(self.missing)}")
        return "; ".join(parts) or "no change"


class RecordFile:
    """The record of one tgtd, kept beside the state file (it holds no secret).

    The record last read or written is kept in memory with the file's identity (inode,
    mtime, size): while the file is the one this object wrote or read, a load returns it
    without reading 200 targets' JSON again (~5-10 ms); any other file is read. (An
    edit in place that keeps the size within one tick of the kernel's file clock goes
    unseen: the record is tgtwatch's own file, and tgtd's drift is found by show anyway.)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._kept: tuple[tuple[int, int, int], InstanceRecord] | None = None
        # The JSON of each target as last written, by the very (immutable) record it came
        # from: a reload that changes one target of 200 renders one.
        self._rendered: dict[int, tuple[TargetRecord, dict[str, Any]]] = {}

    def _target_json(self, tid: int, target: TargetRecord) -> dict[str, Any]:
        known = self._rendered.get(tid)
        if known is not None and known[0] is target:
            return known[1]
        rendered = target_to_json(tid, target)
        self._rendered[tid] = (target, rendered)
        return rendered

    def _to_json(self, record: InstanceRecord) -> dict[str, Any]:
        rendered = instance_to_json(record, self._target_json)
        held = {tid for tid, _ in record.targets.values()}
        self._rendered = {tid: v for tid, v in self._rendered.items() if tid in held}
        return rendered

    def load(self) -> InstanceRecord:
        try:
            with self.path.open("rb") as source:
                stamp = _stamp(os.fstat(source.fileno()))
                kept = self._kept
                if kept is not None and kept[0] == stamp:
                    return kept[1]
                record = instance_from_json(json.loads(source.read()))
        except (OSError, ValueError, KeyError, TypeError):
            # Unreadable or absent: tgtd's own show rebuilds what it can.
            return InstanceRecord()
        self._kept = (stamp, record)
        return record

    def save(self, record: InstanceRecord) -> None:
        self._kept = None
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                # Compact: json's C encoder (indent falls back to the pure-Python one, 5x
                # slower: 7 ms for 200 targets).
                out.write(json.dumps(self._to_json(record), separators=(",", ":")))
                out.flush()
                stamp = _stamp(os.fstat(out.fileno()))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._kept = (stamp, record)

    def remove(self) -> None:
        self._kept = None
        self.path.unlink(missing_ok=True)


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_mtime_ns, st.st_size


def _isns(
    client: Client, sent: tuple[tuple[str, str], ...], wanted: tuple[tuple[str, str], ...]
) -> tuple[tuple[tuple[str, str], ...], str]:
    """tgtd's iSNS keys that differ from what was last sent, in tgt-admin's sorted order."""
    done = dict(sent)
    for key, value in sorted(wanted):
        if done.get(key) == value:
            continue
        request = Request(Mode.SYSTEM, Op.UPDATE, payload=Payload(name=key, value=value))
        try:
            client.call(request)
        except IpcError as exc:
            return tuple(sorted(done.items())), f"iSNS {key}: {exc}"
        done[key] = value
    return tuple(sorted(done.items())), ""


def _unchanged(
    blocks: Sequence[TargetBlock], previous: InstanceRecord, desired: InstanceRecord
) -> set[str]:
    """Targets whose show need not be parsed: tgtd shows them as when their record last
    matched (same tid, same digest) and the file asks for exactly that record."""
    same: set[str] = set()
    for block in blocks:
        known, wanted = previous.targets.get(block.name), desired.targets.get(block.name)
        if (
            known is not None
            and wanted is not None
            and known[0] == block.tid
            and wanted[1] == known[1]
            and previous.show_digests.get(block.name) == block.digest
        ):
            same.add(block.name)
    return same


def load(
    client: Client,
    tree: ConfigTree,
    records: RecordFile,
    *,
    present: Callable[[str], bool] = store_present,
) -> EngineReport:
    """Make tgtd hold the targets of `tree`, as far as its sessions allow, and record it.

    Every target's record is corrected by tgtd's show, but a target whose show has not
    changed since its record matched it, and which the file leaves as it is, keeps its
    record without its show being parsed (RecordFile's digests): one LUN added to one of
    200 targets parses one target, not 200.
    """
    try:
        blocks = split_show_targets(client.call(ops.show_targets()))
    except IpcError as exc:  # nothing was changed
        return EngineReport(records.load(), error=f"cannot read tgtd: {exc}")
    previous = records.load()
    present = functools.cache(present)  # one stat per store per load, not two
    desired = instance_record(tree, present)
    same = _unchanged(blocks, previous, desired)
    shown = parse_show_targets("".join(b.text for b in blocks if b.name not in same))
    corrected = observed_record(previous, shown)
    record = InstanceRecord(
        targets={**corrected.targets, **{name: previous.targets[name] for name in same}}
    )
    busy = {t.name for t in shown if t.nexuses}
    changes = instance_changes(record, desired, tids_in_use={b.tid for b in blocks})
    applied = apply_changes(client, record, changes, busy=busy)
    isns, isns_error = _isns(client, previous.isns, isns_params(tree.isns))
    # A target sent anything (or owed something) shows otherwise now: parsed next time.
    touched = {c.target for c in changes}
    digests = {b.name: b.digest for b in blocks if b.name not in touched}
    records.save(replace(applied.record, isns=isns, show_digests=digests))
    missing = tuple(lun.path for t in tree.targets for lun in t.luns if not present(lun.path))
    waiting_targets = tuple(sorted({c.target for c in applied.waiting}))
    return EngineReport(
        record=applied.record,
        live=tuple(c.describe() for c in applied.applied if c.timing is not Timing.NEXT_LOGIN),
        next_login=tuple(c.describe() for c in applied.applied if c.timing is Timing.NEXT_LOGIN),
        waiting=tuple(c.describe() for c in applied.waiting),
        busy=waiting_targets,
        missing=missing,
        error=f"{applied.failed.describe()}: {applied.error}" if applied.failed else isns_error,
    )
