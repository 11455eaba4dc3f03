"""CHAP accounts in a config, as tgt-admin reads them, and the config without them. Pure.

tgtwatch creates and binds the accounts itself over tgtd's control socket (the secret never
appears in an argv); tgt-admin is given the config without any account line. Both functions
read the include-free text the parser renders (ParsedConfig.flat / InstanceSpec.text): this
module is the one place to point at a typed grammar later.

tgt-admin's reading, mirrored here: `incomingdiscoveryuser` / `outgoingdiscoveryuser` at the
top level (one each: a repeated one makes tgt-admin exit 1); `incominguser` (repeatable) and
`outgoinguser` (the first one only) inside a `<target>`; the value is split at single spaces
into user and secret (`split(/ /, ...)`; a missing secret makes it exit 1). Keys are
case-sensitive, as Config::General leaves them.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

INCOMING_KEY = "incominguser"
OUTGOING_KEY = "outgoinguser"
DISCOVERY_KEYS = {"incomingdiscoveryuser": False, "outgoingdiscoveryuser": True}
# Any spelling of these is dropped from what tgt-admin is given, wherever it stands.
ACCOUNT_KEYS = frozenset({INCOMING_KEY, OUTGOING_KEY, *DISCOVERY_KEYS})

_OPEN = re.compile(r"^<\s*([^/\s>][^\s>]*)(?:\s+(.*?))?\s*/?>$")
_CLOSE = re.compile(r"^<\s*/\s*([^\s>]+)\s*>$")
_KEY_EQ_VALUE = re.compile(r"^([^=\s]+?)\s*=\s*(.*)$")
_KEY_SP_VALUE = re.compile(r"^(\S+)(?:\s+(.*))?$")


class Direction(enum.Enum):
    INCOMING = "incoming"  # the initiator proves who it is: gates logins
    OUTGOING = "outgoing"  # the target proves who it is to the initiator (mutual CHAP)


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
    """Every binding in tgt-admin's order (discovery, then targets by name), and why the
    set cannot be applied as tgt-admin would, if it cannot."""

    accounts: tuple[Account, ...] = ()
    problems: tuple[str, ...] = ()
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


def _option(line: str) -> tuple[str, str] | None:
    """`key value` or `key = value` as the parser splits it (one quoted value unquoted)."""
    match = _KEY_EQ_VALUE.match(line) or _KEY_SP_VALUE.match(line)
    if match is None:
        return None
    return match.group(1), _unquote((match.group(2) or "").strip()).replace("\\#", "#")


def _unquote(value: str) -> str:
    """Config::General: a value starting and ending with `"` loses both (`"` alone is empty)."""
    if value.startswith('"') and value.endswith('"'):
        return value[1:-1] if len(value) >= 2 else ""
    return value


def _lines(flat: str) -> list[tuple[int, str, str | None, tuple[str, str] | None]]:
    """(depth, block kind or "", block name, option) for every line of the flat text."""
    out: list[tuple[int, str, str | None, tuple[str, str] | None]] = []
    stack: list[str] = []
    for raw in flat.splitlines():
        line = raw.strip()
        if not line:
            continue
        if _CLOSE.match(line):
            if stack:
                stack.pop()
            continue
        opening = _OPEN.match(line)
        if opening:
            name = _unquote(opening.group(2) or "").replace("\\#", "#")
            out.append((len(stack), opening.group(1), name, None))
            if not line.endswith("/>"):
                stack.append(opening.group(1))
            continue
        out.append((len(stack), stack[-1] if stack else "", None, _option(line)))
    return out


def _split(key: str, value: str, where: str, problems: list[str]) -> tuple[str, str] | None:
    user, _, rest = value.partition(" ")
    secret = rest.split(" ", 1)[0]
    if not user or not secret:
        problems.append(f"{where}: {key} needs a user and a secret")
        return None
    if "," in user:
        problems.append(f"{where}: {key} user {user!r} holds a ',' (tgtd would split it)")
        return None
    return user, secret


def accounts_of(flat: str) -> AccountSet:
    """The accounts tgt-admin would create and bind for this config."""
    problems: list[str] = []
    discovery: dict[str, list[str]] = {key: [] for key in DISCOVERY_KEYS}
    incoming: dict[str, list[str]] = {}
    outgoing: dict[str, list[str]] = {}
    target = ""
    for depth, kind, name, option in _lines(flat):
        if option is None:
            if depth == 0:
                target = (name or "") if kind == "target" else ""
                if target:
                    incoming.setdefault(target, [])
            continue
        key, value = option
        if depth == 0 and key in DISCOVERY_KEYS:
            discovery[key].append(value)
        elif depth == 1 and kind == "target" and target:
            if key == INCOMING_KEY:
                incoming[target].append(value)
            elif key == OUTGOING_KEY:
                outgoing.setdefault(target, []).append(value)
    found: list[Account] = []
    for key, values in discovery.items():
        if len(values) > 1:
            problems.append(f"{key} is given {len(values)} times; tgt-admin takes one")
        elif values and (pair := _split(key, values[0], "discovery", problems)):
            direction = Direction.OUTGOING if DISCOVERY_KEYS[key] else Direction.INCOMING
            found.append(Account(pair[0], pair[1], direction))
    for name in sorted(incoming):
        seen: set[str] = set()
        for value in incoming.get(name, []):
            pair = _split(INCOMING_KEY, value, f"target {name}", problems)
            if pair and pair[0] not in seen:
                seen.add(pair[0])
                found.append(Account(pair[0], pair[1], Direction.INCOMING, name))
        # tgt-admin binds the first outgoinguser only ("only one ... is allowed").
        if outgoing.get(name) and (
            pair := _split(OUTGOING_KEY, outgoing[name][0], f"target {name}", problems)
        ):
            found.append(Account(pair[0], pair[1], Direction.OUTGOING, name))
    secrets: dict[str, str] = {}
    for account in found:
        if secrets.setdefault(account.user, account.secret) != account.secret:
            where = f"target {account.target}" if account.target else "discovery"
            problems.append(
                f"{where}: user {account.user!r} is given another secret elsewhere; "
                "tgtd holds one secret per user"
            )
    names = tuple(sorted(incoming))
    return AccountSet(tuple(found), tuple(dict.fromkeys(problems)), names)


def without_accounts(flat: str) -> str:
    """The config text with every account line removed: what tgt-admin may be given."""
    kept = []
    for raw in flat.splitlines(keepends=True):
        line = raw.strip()
        option = None if line.startswith("<") else _option(line)
        if option is not None and option[0].lower() in ACCOUNT_KEYS:
            continue
        kept.append(raw)
    return "".join(kept)
