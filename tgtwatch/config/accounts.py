"""The CHAP accounts of a checked config tree, as tgtwatch binds them over tgtd's socket. Pure.

tgtwatch creates and binds the accounts itself over tgtd's control socket (the secret never
appears in an argv); tgt-admin is given the rendering without any account line
(`render(tree, accounts=False)`). The grammar already refused what tgt-admin could not
apply (a missing secret, a repeated discovery key, one user with two secrets); tgt-admin's
order is kept: discovery, then each target by name, its incoming users in file order, then
its one outgoing user.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tgtwatch.model.tree import ChapAccount, ConfigTree, Direction


@dataclass(frozen=True)
class Account:
    """One account binding: `target` None is the discovery session (tgtd's global target)."""

    user: str
    secret: str = field(repr=False)
    direction: Direction
    target: str | None = None

    @property
    def outgoing(self) -> bool:
        return self.direction is Direction.OUTGOING


@dataclass(frozen=True)
class AccountSet:
    """Every binding in tgt-admin's order (discovery, then targets by name)."""

    accounts: tuple[Account, ...] = ()
    targets: tuple[str, ...] = ()  # every target the config names, with accounts or not

    def secrets(self) -> dict[str, str]:
        """user -> secret, first definition first (tgtd holds one password per user)."""
        found: dict[str, str] = {}
        for account in self.accounts:
            found.setdefault(account.user, account.secret)
        return found

    def bindings(self, target: str | None) -> tuple[Account, ...]:
        return tuple(a for a in self.accounts if a.target == target)

    @property
    def incoming(self) -> bool:
        """Whether any login (or discovery) needs CHAP: then a target without its accounts
        bound would let anyone in."""
        return any(not a.outgoing for a in self.accounts)


def _bound(account: ChapAccount, target: str | None) -> Account:
    return Account(account.user, account.secret, account.direction, target)


def account_set(tree: ConfigTree | None) -> AccountSet:
    """The accounts tgt-admin would create and bind for `tree` (none without a tree)."""
    if tree is None:
        return AccountSet()
    found = [
        _bound(account, None)
        for account in (tree.discovery_incoming, tree.discovery_outgoing)
        if account is not None
    ]
    for target in tree.targets:
        found += [_bound(account, target.name) for account in target.incoming]
        if target.outgoing is not None:
            found.append(_bound(target.outgoing, target.name))
    return AccountSet(tuple(found), tuple(t.name for t in tree.targets))
