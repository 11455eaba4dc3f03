"""CHAP accounts applied over tgtd's control socket: the secret never reaches an argv.

plan_accounts() is pure: from the accounts a config wants, what tgtd shows (account names,
which are bound where; never a secret) and the record of what tgtwatch last gave this tgtd,
the requests that make tgtd match. apply_accounts() reads tgtd, plans and sends.

tgtd 1.0.85 keeps a target's incoming accounts in an array walked up to their count:
unbinding any but the last leaves a hole, after which `show` dereferences NULL and tgtd
dies (SIGSEGV, reproduced here; tests/integration/test_chap_real.py) and CHAP logins of the
accounts after the hole fail. `account delete` unbinds everywhere, with the same holes. So
accounts are only ever unbound from the end of each list, and rebound after; an account
whose secret changes is unbound everywhere first, then deleted and created again.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tgtwatch.config.accounts import AccountSet
from tgtwatch.tgt import ipc_ops as ops
from tgtwatch.tgt.ipc import NO_TID, Request, Status
from tgtwatch.tgt.ipc_client import IpcError, TgtdSocket

OUTGOING_SUFFIX = " (outgoing)"
DISCOVERY = NO_TID  # tgtd's global target: the discovery session's accounts


@dataclass(frozen=True)
class Slot:
    """Who is bound to one target (or to discovery), in tgtd's own order."""

    incoming: tuple[str, ...] = ()
    outgoing: str | None = None


def slot_of(entries: Sequence[str]) -> Slot:
    """A slot from show's account lines: "user" and "user (outgoing)"."""
    incoming = tuple(e for e in entries if not e.endswith(OUTGOING_SUFFIX))
    outgoing = [e.removesuffix(OUTGOING_SUFFIX) for e in entries if e.endswith(OUTGOING_SUFFIX)]
    return Slot(incoming, outgoing[0] if outgoing else None)


@dataclass(frozen=True)
class AccountsView:
    """What tgtd shows about accounts: names, bindings per tid, target names."""

    existing: tuple[str, ...] = ()
    slots: Mapping[int, Slot] = field(default_factory=dict)  # tid (DISCOVERY too) -> bindings
    tids: Mapping[str, int] = field(default_factory=dict)  # target name -> tid


@dataclass(frozen=True)
class AccountRecord:
    """What tgtwatch last gave one tgtd: a keyed digest per user, never the secret."""

    salt: str = ""
    digests: Mapping[str, str] = field(default_factory=dict)

    def digest(self, user: str, secret: str) -> str:
        return hmac.new(
            bytes.fromhex(self.salt), f"{user}\0{secret}".encode(), "sha256"
        ).hexdigest()

    def holds(self, user: str, secret: str) -> bool:
        return bool(self.salt) and self.digests.get(user) == self.digest(user, secret)

    @classmethod
    def of(cls, secrets: Mapping[str, str]) -> AccountRecord:
        blank = cls(os.urandom(16).hex())
        return cls(blank.salt, {u: blank.digest(u, s) for u, s in sorted(secrets.items())})

    def to_json(self) -> str:
        return json.dumps({"salt": self.salt, "digests": dict(self.digests)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AccountRecord:
        """The record, or an empty one (every account then counts as unknown) if unreadable."""
        try:
            body = json.loads(text)
            salt, digests = body["salt"], body["digests"]
            bytes.fromhex(salt)
            if isinstance(digests, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in digests.items()
            ):
                return cls(salt, digests)
        except (ValueError, KeyError, TypeError):
            pass
        return cls()


@dataclass(frozen=True)
class AccountPlan:
    # Sent first, "can't find the account" expected: tgtd shows the discovery session's
    # outgoing account only while it has an incoming one, so when it shows none the
    # outgoing binding is unknown and every account is unbound from it, to be sure.
    probes: tuple[Request, ...] = ()
    requests: tuple[Request, ...] = ()
    changes: tuple[str, ...] = ()  # one line per change, for the audit record: no secret


def _kept_prefix(current: Sequence[str], wanted: Sequence[str], renew: set[str]) -> int:
    """How many of the first bound accounts stay bound: up to the first one that goes."""
    n = 0
    while n < len(current) and current[n] in wanted and current[n] not in renew:
        n += 1
    return n


def plan_accounts(desired: AccountSet, view: AccountsView, record: AccountRecord) -> AccountPlan:
    """The requests that give tgtd exactly the desired accounts; targets tgtd does not have
    are skipped, targets the config does not name keep their bindings."""
    secrets = desired.secrets()
    renew = {u for u in view.existing if u in secrets and not record.holds(u, secrets[u])}
    names = {tid: name for name, tid in view.tids.items()}
    wanted: dict[int, Slot] = {DISCOVERY: Slot()}
    for name, tid in view.tids.items():
        if name in desired.targets:
            wanted[tid] = Slot()
    for account in desired.accounts:
        at = DISCOVERY if account.target is None else view.tids.get(account.target)
        if at is None:
            continue
        slot = wanted[at]
        wanted[at] = (
            Slot(slot.incoming, account.user)
            if account.outgoing
            else Slot((*slot.incoming, account.user), slot.outgoing)
        )
    managed = set(wanted)
    unbind: list[Request] = []
    bind: list[Request] = []
    changes: list[str] = []
    final_users: set[str] = set()
    # tgtd shows discovery's outgoing account only next to an incoming one: when it shows
    # none, every account is probed off that binding first (see AccountPlan.probes).
    hidden = not view.slots.get(DISCOVERY, Slot()).incoming
    for tid in sorted(set(view.slots) | set(wanted)):
        now = Slot() if hidden and tid == DISCOVERY else view.slots.get(tid, Slot())
        # A target the config does not name (a busy one tgt-admin left) keeps what it has.
        want = wanted.get(tid, Slot()) if tid in managed else now
        where = "discovery" if tid == DISCOVERY else names.get(tid, f"tid {tid}")
        keep = _kept_prefix(now.incoming, want.incoming, renew)
        for user in reversed(now.incoming[keep:]):
            unbind.append(ops.unbind_account(user, tid))
        for user in want.incoming:
            if user not in now.incoming[:keep]:
                bind.append(ops.bind_account(user, tid))
        added = [u for u in want.incoming if u not in now.incoming]
        dropped = [u for u in now.incoming if u not in want.incoming]
        changes += [f"bind {u} to {where}" for u in added]
        changes += [f"unbind {u} from {where}" for u in dropped]
        if now.outgoing is not None and (now.outgoing != want.outgoing or now.outgoing in renew):
            unbind.append(ops.unbind_account(now.outgoing, tid, outgoing=True))
            if now.outgoing != want.outgoing:
                changes.append(f"unbind outgoing {now.outgoing} from {where}")
        if want.outgoing is not None and (now.outgoing != want.outgoing or want.outgoing in renew):
            bind.append(ops.bind_account(want.outgoing, tid, outgoing=True))
            if now.outgoing != want.outgoing:
                changes.append(f"bind outgoing {want.outgoing} to {where}")
        final_users |= set(want.incoming) | ({want.outgoing} if want.outgoing else set())
    create = [u for u in secrets if u not in view.existing or u in renew]
    unused = [u for u in view.existing if u not in secrets and u not in final_users]
    requests = [
        *unbind,
        *(ops.delete_account(u) for u in sorted(renew)),
        *(ops.delete_account(u) for u in unused),
        *(ops.new_account(u, secrets[u]) for u in create),
        *bind,
    ]
    changes += [f"new secret for {u}" for u in sorted(renew)]
    changes += [f"delete account {u}" for u in unused]
    changes += [f"create account {u}" for u in create if u not in renew]
    probes: list[Request] = []
    if hidden:
        probes = [ops.unbind_account(u, DISCOVERY, outgoing=True) for u in view.existing]
    return AccountPlan(tuple(probes), tuple(requests), tuple(changes))


def read_view(client: TgtdSocket) -> AccountsView:
    """Account names and bindings as tgtd shows them (three requests)."""
    targets = client.target_details()
    slots = {t.tid: slot_of(t.accounts) for t in targets}
    slots[DISCOVERY] = slot_of(client.system().accounts)
    return AccountsView(client.accounts(), slots, {t.name: t.tid for t in targets})


@dataclass(frozen=True)
class AccountsApplied:
    record: AccountRecord
    changes: tuple[str, ...]
    requests: int


class AccountError(Exception):
    """An account request failed; `done` says how many went through before it."""

    def __init__(self, error: IpcError, done: int) -> None:
        self.done = done
        super().__init__(f"CHAP accounts: {error} (after {done} requests)")


def apply_accounts(
    client: TgtdSocket, desired: AccountSet, record: AccountRecord
) -> AccountsApplied:
    """Make tgtd hold exactly the desired accounts; the record to keep for next time."""
    try:
        view = read_view(client)
    except IpcError as exc:
        raise AccountError(exc, 0) from None
    plan = plan_accounts(desired, view, record)
    for probe in plan.probes:
        try:
            client.call(probe)
        except IpcError as exc:
            if exc.status != Status.NO_USER:
                raise AccountError(exc, 0) from None
    for done, request in enumerate(plan.requests):
        try:
            client.call(request)
        except IpcError as exc:
            raise AccountError(exc, done) from None
    sent = len(plan.probes) + len(plan.requests)
    return AccountsApplied(AccountRecord.of(desired.secrets()), plan.changes, sent)
