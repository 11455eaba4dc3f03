"""One tgtd's whole change list: accounts, discovery, targets (with their tids), in order. Pure.

tgtd's accounts belong to the process and are bound per target, and tgtd cannot change a
secret: the account is deleted (which silently unbinds it everywhere) and made again. A
target whose only incoming account is unbound admits logins without CHAP, so a secret
changes behind a stand-in: a fresh account is bound wherever the user is bound incoming,
the user is made again and bound again, then the stand-in goes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

from tgtwatch.tgt.changes import (
    DISCOVERY_TID,
    Change,
    ChangeKind,
    Timing,
    apply_change,
    target_changes,
)
from tgtwatch.tgt.records import Account, InstanceRecord, TargetRecord

STAND_IN_PREFIX = "tgtwatch-rekey-"


def _account_change(kind: ChangeKind, user: str, *, tid: int = 0, outgoing: bool = False) -> Change:
    return Change(kind, Timing.LIVE, tid=tid, name=user, outgoing=outgoing)


def _bound_incoming(record: InstanceRecord, user: str) -> list[int]:
    tids = [tid for tid, t in record.targets.values() if user in t.incoming]
    if user in record.discovery_incoming:
        tids.append(DISCOVERY_TID)
    return sorted(tids)


def _binds_of(record: InstanceRecord, user: str) -> list[Change]:
    binds = [
        _account_change(ChangeKind.BIND_ACCOUNT, user, tid=tid)
        for tid in _bound_incoming(record, user)
    ]
    for tid, target in sorted(record.targets.values(), key=lambda e: e[0]):
        if user in target.outgoing:
            binds.append(_account_change(ChangeKind.BIND_ACCOUNT, user, tid=tid, outgoing=True))
    if user in record.discovery_outgoing:
        binds.append(
            _account_change(ChangeKind.BIND_ACCOUNT, user, tid=DISCOVERY_TID, outgoing=True)
        )
    return binds


def _rekey(applied: InstanceRecord, user: str, secret: Account, stand_in: Account) -> list[Change]:
    """A secret changed: stand-in bound wherever the user guards a login, user made again."""
    made = [Change(ChangeKind.NEW_ACCOUNT, Timing.LIVE, name=stand_in.user, value=stand_in.digest)]
    made += [
        _account_change(ChangeKind.BIND_ACCOUNT, stand_in.user, tid=tid)
        for tid in _bound_incoming(applied, user)
    ]
    return [
        *made,
        _account_change(ChangeKind.DELETE_ACCOUNT, user),
        Change(ChangeKind.NEW_ACCOUNT, Timing.LIVE, name=user, value=secret.digest),
        *_binds_of(applied, user),
    ]


def _discovery(
    applied: InstanceRecord, desired: InstanceRecord
) -> tuple[list[Change], list[Change]]:
    binds: list[Change] = []
    unbinds: list[Change] = []
    for outgoing, old, new in (
        (False, applied.discovery_incoming, desired.discovery_incoming),
        (True, applied.discovery_outgoing, desired.discovery_outgoing),
    ):
        for user in sorted(set(new) - set(old)):
            binds.append(
                _account_change(ChangeKind.BIND_ACCOUNT, user, tid=DISCOVERY_TID, outgoing=outgoing)
            )
        for user in sorted(set(old) - set(new)):
            unbinds.append(
                _account_change(
                    ChangeKind.UNBIND_ACCOUNT, user, tid=DISCOVERY_TID, outgoing=outgoing
                )
            )
    return binds, unbinds


def new_tids(
    applied: InstanceRecord, desired: InstanceRecord, in_use: Collection[int]
) -> dict[str, int]:
    """tids for the targets tgtd does not hold yet: tgt-admin's max + 1, in sorted name order."""
    taken = set(in_use) | {tid for tid, _ in applied.targets.values()}
    next_tid = max(taken, default=0) + 1
    tids: dict[str, int] = {}
    for name in sorted(set(desired.targets) - set(applied.targets)):
        tids[name] = next_tid
        next_tid += 1
    return tids


def instance_changes(
    applied: InstanceRecord,
    desired: InstanceRecord,
    *,
    tids_in_use: Collection[int] = (),
    stand_in_secret: str = "",
) -> tuple[Change, ...]:
    """Everything that turns the tgtd `applied` describes into the one `desired` describes.

    `desired` carries secrets (its accounts come from the file); `applied` only their
    fingerprints. `stand_in_secret` (random, from the caller) guards a secret's change.
    """
    wanted = {a.user: a for a in desired.accounts}
    had = {a.user: a for a in applied.accounts}
    before: list[Change] = [
        Change(ChangeKind.NEW_ACCOUNT, Timing.LIVE, name=user, value=wanted[user].digest)
        for user in sorted(set(wanted) - set(had))
    ]
    after: list[Change] = []
    for user in sorted(set(wanted) & set(had)):
        if wanted[user].digest != had[user].digest:
            if not stand_in_secret:
                raise ValueError(f"the secret of {user} changed: a stand-in secret is needed")
            stand_in = Account.of(STAND_IN_PREFIX + user, stand_in_secret)
            before += _rekey(applied, user, wanted[user], stand_in)
            # Deleting the stand-in unbinds it everywhere, once the user guards again.
            after.append(_account_change(ChangeKind.DELETE_ACCOUNT, stand_in.user))
    discovery_binds, discovery_unbinds = _discovery(applied, desired)
    tids = new_tids(applied, desired, tids_in_use)
    targets: list[Change] = []
    for name, (tid, old) in sorted(applied.targets.items(), key=lambda e: e[1][0]):
        new = desired.targets.get(name)
        targets += target_changes(tid, old, new[1] if new else None)
    for name, tid in sorted(tids.items(), key=lambda e: e[1]):
        targets += target_changes(tid, None, desired.targets[name][1])
    gone = [
        _account_change(ChangeKind.DELETE_ACCOUNT, user) for user in sorted(set(had) - set(wanted))
    ]
    return (*before, *discovery_binds, *targets, *discovery_unbinds, *after, *gone)


def secrets_of(desired: InstanceRecord) -> Mapping[str, str]:
    """user -> secret, for the NEW_ACCOUNT requests (never kept in a record)."""
    return {a.user: a.secret for a in desired.accounts}


def apply_instance_change(record: InstanceRecord, change: Change) -> InstanceRecord:
    """The instance record once `change` ran on tgtd (tgtd's own semantics for accounts)."""
    kind = change.kind
    if kind is ChangeKind.NEW_ACCOUNT:
        kept = tuple(a for a in record.accounts if a.user != change.name)
        made = Account(change.name, "", change.value)
        return replace(record, accounts=tuple(sorted((*kept, made), key=lambda a: a.user)))
    if kind is ChangeKind.DELETE_ACCOUNT:
        # tgtd unbinds a deleted account from every target and from discovery.
        user = change.name
        targets = {name: (tid, _without_user(t, user)) for name, (tid, t) in record.targets.items()}
        return replace(
            record,
            targets=targets,
            accounts=tuple(a for a in record.accounts if a.user != user),
            discovery_incoming=tuple(u for u in record.discovery_incoming if u != user),
            discovery_outgoing=tuple(u for u in record.discovery_outgoing if u != user),
        )
    if change.tid == DISCOVERY_TID:
        field = "discovery_outgoing" if change.outgoing else "discovery_incoming"
        users = set(getattr(record, field))
        users = users | {change.name} if kind is ChangeKind.BIND_ACCOUNT else users - {change.name}
        if change.outgoing:
            return replace(record, discovery_outgoing=tuple(sorted(users)))
        return replace(record, discovery_incoming=tuple(sorted(users)))
    by_tid = {tid: name for name, (tid, _) in record.targets.items()}
    name = change.target or by_tid.get(change.tid, "")
    current = record.targets.get(name)
    updated = apply_change(current[1] if current else None, replace(change, target=name))
    targets = dict(record.targets)
    if updated is None:
        targets.pop(name, None)
    else:
        targets[name] = (change.tid, updated)
    return replace(record, targets=targets)


def _without_user(target: TargetRecord, user: str) -> TargetRecord:
    return replace(
        target,
        incoming=tuple(u for u in target.incoming if u != user),
        outgoing=tuple(u for u in target.outgoing if u != user),
    )
