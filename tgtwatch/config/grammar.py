"""Check a read config against the closed key list and build its typed tree, as tgt-admin would.

Pure: it gets the untyped blocks (raw.py) and returns the tree (model/tree.py) or the
problems. Merging, LUN numbering and the precedence of per-LUN over target-level settings
follow tgt-admin (research/tgt-semantics.md, Q3); what tgt-admin leaves to Perl's hash
order (the same setting reached two ways) is refused instead.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tgtwatch.config import keys as k
from tgtwatch.config.raw import Block, Option, merged
from tgtwatch.config.values import iscsi_name
from tgtwatch.model.structs import Problem, Rule
from tgtwatch.model.tree import (
    BsType,
    ConfigTree,
    Driver,
    IscsiParam,
    IsnsSettings,
    Lun,
    LunParams,
    ModePage,
    StoreKind,
    Target,
)

Found = dict[str, list[tuple[Any, Option]]]
MAX_LUN = 16383  # SAM's flat addressing; `lun N` has the same bound
MAX_PROBLEMS = 20
_LOWER = {key.lower(): key for key in (*k.GLOBAL_KEYS, *k.TARGET_KEYS, *k.LUN_KEYS)}
MAX_MESSAGE_VALUE = 160


class Dialect(enum.Enum):
    """Which file it is: an instance file, or the default instance's targets.conf."""

    INSTANCE = "instance"
    DEFAULT = "default"


@dataclass(frozen=True)
class Limits:
    """Bounds on one config (with its includes); each breach is a `limit` problem."""

    targets_per_file: int = 1000
    luns_per_file: int = 4096
    files_per_config: int = 256  # the file and what it includes
    files_per_directory: int = 10000  # instance files in instances_dir


DEFAULT_LIMITS = Limits()


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.more = 0
        self.secrets: dict[str, str] = {}

    def add(self, at: Option | Block, message: str, rule: Rule = Rule.GRAMMAR) -> None:
        if len(self.problems) <= MAX_PROBLEMS:  # past that only the count matters (_few)
            self.problems.append(Problem(at.path, rule, message, at.line or None))
        else:
            self.more += 1

    def accounts(self, found: Found, keys: Iterable[str]) -> None:
        """tgt-admin creates a CHAP user once and keeps its first secret: a second one
        would be silently ignored. (A secret never appears in a message.)"""
        for key in keys:
            for account, option in found.get(key, []):
                known = self.secrets.setdefault(account.user, account.secret)
                if known != account.secret:
                    self.add(option, f"CHAP user {account.user} is given two different secrets")

    def collect(self, options: Iterable[Option], table: dict[str, k.Key], where: str) -> Found:
        """Each option typed by its key's grammar; unknown keys, bad values and repeats of
        single keys become problems. Values echoed in messages are cut short."""
        found: Found = {}
        for option in options:
            spec = table.get(option.key)
            if spec is None:
                self.add(option, f"{where}{_unknown(option.key, table)}")
                continue
            if not option.value:
                self.add(option, f"{where}{option.key}: missing value")
                continue
            try:
                value = spec.parse(option.value)
            except ValueError as exc:
                why = str(exc)
                if len(why) > MAX_MESSAGE_VALUE:
                    why = why[:MAX_MESSAGE_VALUE] + "..."
                self.add(option, f"{where}{option.key}: {why}")
                continue
            found.setdefault(option.key, []).append((value, option))
        for key, items in found.items():
            if not table[key].repeat and len(items) > 1:
                lines = ", ".join(str(o.line) for _, o in items[:5])
                lines += ", ..." if len(items) > 5 else ""
                self.add(items[1][1], f"{where}{key} is set {len(items)} times (lines {lines})")
        return found


def _unknown(key: str, table: dict[str, k.Key]) -> str:
    if key in k.REFUSED:
        return f"{key} is not accepted: {k.REFUSED[key]}"
    if key in k.LUN_KEYS or key in k.TARGET_KEYS or key in k.GLOBAL_KEYS:
        return f"{key} is not accepted at this level"
    near = _LOWER.get(key.lower())
    hint = f" (did you mean {near}?)" if near and near in table else ""
    return f"unknown key {key[:MAX_MESSAGE_VALUE]!r}{hint}"


def _first(found: Found, key: str) -> Any:
    items = found.get(key)
    return items[0][0] if items else None


def _globals(chk: _Checker, root: Block, dialect: Dialect) -> tuple[Found, int | None]:
    options = []
    control_port = None
    for option in root.options:
        if option.key in k.INSTANCE_KEYS:
            if dialect is Dialect.DEFAULT:
                chk.add(option, f"{option.key} belongs in an instance file, not here")
        elif option.key == "control-port":
            if dialect is Dialect.INSTANCE:
                chk.add(
                    option,
                    "control-port is not allowed in an instance file: SOCKET_OPTS sets it",
                    Rule.PORT,
                )
            else:
                found = chk.collect([option], {"control-port": k.CONTROL_PORT}, "")
                if control_port is not None and found:
                    chk.add(option, "control-port is set more than once")
                control_port = _first(found, "control-port")
        else:
            options.append(option)
    return chk.collect(options, k.GLOBAL_KEYS, ""), control_port


def build(
    root: Block, dialect: Dialect = Dialect.INSTANCE, limits: Limits = DEFAULT_LIMITS
) -> tuple[ConfigTree | None, tuple[Problem, ...]]:
    """The typed tree of a config read into `root`, or None and every problem found."""
    chk = _Checker()
    found, control_port = _globals(chk, root, dialect)
    chk.accounts(found, ("incomingdiscoveryuser", "outgoingdiscoveryuser"))
    for block in root.blocks:
        if block.kind != "target":
            chk.add(block, f"unknown block <{block.kind}> (only <target NAME> at the top)")
        elif block.name is None:
            chk.add(block, "<target> without a name")
    blocks = merged([b for b in root.blocks if b.kind == "target" and b.name is not None])
    if len(blocks) > limits.targets_per_file:
        chk.add(
            root,
            f"{len(blocks)} targets, more than the {limits.targets_per_file} allowed in one file",
            Rule.LIMIT,
        )
        return None, _few(chk.problems, chk.more)
    stores = sum(_store_count(b) for b in blocks.values())
    if stores > limits.luns_per_file:  # counted before any is numbered or resolved
        chk.add(
            root,
            f"{stores} LUNs, more than the {limits.luns_per_file} allowed in one file",
            Rule.LIMIT,
        )
        return None, _few(chk.problems, chk.more)
    driver = _first(found, "default-driver") or Driver.ISCSI
    targets = [t for t in (_target(chk, b, driver) for b in blocks.values()) if t is not None]
    tree = ConfigTree(
        targets=tuple(sorted(targets, key=lambda t: t.name)),
        isns=IsnsSettings(
            server_ip=_first(found, "iSNSServerIP"),
            server_port=_first(found, "iSNSServerPort"),
            access_control=_first(found, "iSNSAccessControl"),
            enabled=_first(found, "iSNS"),
        ),
        discovery_incoming=_first(found, "incomingdiscoveryuser"),
        discovery_outgoing=_first(found, "outgoingdiscoveryuser"),
        control_port=control_port,
        socket_opts=_raw_value(root, "SOCKET_OPTS"),
        portal_opts=_raw_value(root, "PORTAL_OPTS"),
    )
    _check_tids(chk, tree, blocks)
    if chk.problems:
        return None, _few(chk.problems, chk.more)
    return tree, ()


def _few(problems: list[Problem], more: int) -> tuple[Problem, ...]:
    """The first problems of a file, and how many more: a hostile file must not flood the
    output, the journal or the audit log."""
    if len(problems) <= MAX_PROBLEMS:
        return tuple(problems)
    more += len(problems) - MAX_PROBLEMS + 1
    last = problems[MAX_PROBLEMS - 1]
    summary = Problem(last.path, last.rule, f"... and {more} more problems in this file")
    return (*problems[: MAX_PROBLEMS - 1], summary)


def _store_count(block: Block) -> int:
    kinds = ("backing-store", "direct-store")
    flat = {(o.key, o.value) for o in block.options if o.key in kinds}
    return len(flat) + len({(b.kind, b.name) for b in block.blocks if b.kind in kinds})


def _raw_value(root: Block, key: str) -> str | None:
    return next((o.value for o in root.options if o.key == key), None)


def _target(chk: _Checker, block: Block, default_driver: Driver) -> Target | None:
    name = block.name or ""
    before = len(chk.problems)
    try:
        iscsi_name(name)
    except ValueError as exc:
        chk.add(block, f"target name: {exc}")
        return None
    where = f"target {name}: "
    found = chk.collect(block.options, k.TARGET_KEYS, where)
    chk.accounts(found, ("incominguser", "outgoinguser"))
    luns = _luns(chk, block, found, where)
    for key in ("initiator-address", "initiator-name"):
        _no_repeats(chk, found.get(key, []), where, key)
    _no_repeats(chk, [(a.user, o) for a, o in found.get("incominguser", [])], where, "user")
    if len(chk.problems) > before:
        return None
    params = sorted(
        (IscsiParam(key, str(_first(found, key))) for key in k.ISCSI_PARAMS if key in found),
        key=lambda p: p.name,
    )
    return Target(
        name=name,
        luns=tuple(sorted(luns, key=lambda lun: lun.number)),
        driver=_first(found, "driver") or default_driver,
        tid=_first(found, "controller_tid"),
        initiator_addresses=tuple(a for a, _ in found.get("initiator-address", [])),
        initiator_names=tuple(n for n, _ in found.get("initiator-name", [])),
        incoming=tuple(a for a, _ in found.get("incominguser", [])),
        outgoing=_first(found, "outgoinguser"),
        params=tuple(params),
        state=_first(found, "state"),
        line=block.line,
    )


def _no_repeats(chk: _Checker, items: list[tuple[Any, Option]], where: str, what: str) -> None:
    seen: set[Any] = set()
    for value, option in items:
        if value in seen:
            chk.add(option, f"{where}{option.key}: {what} {value} is given twice")
        seen.add(value)


def _luns(chk: _Checker, block: Block, defaults: Found, where: str) -> list[Lun]:
    """Every LUN of a merged target, numbered as tgt-admin numbers them: explicit `lun N`
    first, then the smallest free number from 1, backing-store paths (sorted as strings)
    before direct-store paths."""
    stores: dict[tuple[StoreKind, str], tuple[Option | Block, Found]] = {}
    for kind in StoreKind:
        flat = defaults.get(kind.value, [])
        inner = [b for b in block.blocks if b.kind == kind.value]
        if flat and inner:
            chk.add(inner[0], f"{where}{kind.value} given both as a line and as a block")
        for path, option in flat:
            stores.setdefault((kind, path), (option, {}))
        for lun_block in merged(inner).values():
            _lun_block(chk, lun_block, kind, where, stores)
    for inner_block in block.blocks:
        if inner_block.kind not in ("backing-store", "direct-store"):
            chk.add(inner_block, f"{where}unknown block <{inner_block.kind}>")
    explicit: dict[int, Option] = {}
    for _, own in stores.values():
        for number, option in own.get("lun", [])[:1]:
            if number in explicit:
                chk.add(option, f"{where}lun {number} is given to two stores")
            explicit[number] = option
    luns = []
    free = 1  # automatic numbers only grow: the smallest free one is never behind
    order = sorted(stores, key=lambda s: (s[0] is StoreKind.DIRECT, s[1]))
    for kind, path in order:
        at, own = stores[(kind, path)]
        number = _first(own, "lun")
        if number is None:
            while free in explicit:
                free += 1
            number, free = free, free + 1
            if number > MAX_LUN:
                chk.add(at, f"{where}{path} would be LUN {number}, above {MAX_LUN}", Rule.LIMIT)
        luns.append(_resolve(chk, at, kind, path, number, own, defaults, where))
    return luns


def _lun_block(
    chk: _Checker,
    lun_block: Block,
    kind: StoreKind,
    where: str,
    stores: dict[tuple[StoreKind, str], tuple[Option | Block, Found]],
) -> None:
    path = lun_block.name
    if path is None:
        chk.add(lun_block, f"{where}<{kind.value}> without a path")
        return
    try:
        k.TARGET_KEYS[kind.value].parse(path)
    except ValueError as exc:
        chk.add(lun_block, f"{where}{kind.value}: {exc}")
        return
    for nested in lun_block.blocks:
        chk.add(nested, f"{where}<{nested.kind}> inside <{kind.value}>")
    stores[(kind, path)] = (lun_block, chk.collect(lun_block.options, k.LUN_KEYS, where))


def _resolve(
    chk: _Checker,
    at: Option | Block,
    kind: StoreKind,
    path: str,
    number: int,
    own: Found,
    defaults: Found,
    where: str,
) -> Lun:
    """One LUN's settings: its own, else the target's (tgt-admin's precedence)."""

    def setting(key: str) -> Any:
        value = _first(own, key)
        return value if value is not None else _first(defaults, key)

    where = f"{where}LUN {number} ({path}): "
    pages = [p for p, _ in own.get("mode_page", [])] + [p for p, _ in defaults.get("mode_page", [])]
    last: dict[tuple[int, int], ModePage] = {}
    for page in pages:  # tgtd replaces a page of the same code and appends it at the end
        last.pop((page.page, page.subpage), None)
        last[(page.page, page.subpage)] = page
    if setting("bsoflags") and setting("bs-type") in (BsType.AIO, BsType.SSC):
        chk.add(at, f"{where}bsoflags: the {setting('bs-type').value} store takes none")
    write_cache = setting("write-cache")
    if write_cache is False and (8, 0) in last:
        chk.add(at, f"{where}write-cache off and mode_page 8:0 both set the caching page")
    params = {key: setting(key) for key in k.LUN_PARAM_KEYS if setting(key) is not None}
    for pairs, option in [*own.get("params", []), *defaults.get("params", [])]:
        for key, value in pairs:
            if key in params:
                chk.add(option, f"{where}{key} is set twice (in params and elsewhere)")
            params[key] = value
    return Lun(
        number=number,
        path=path,
        kind=kind,
        device_type=setting("device-type"),
        bs_type=setting("bs-type"),
        bsoflags=setting("bsoflags") or (),
        block_size=_first(own, "block-size"),
        params=LunParams(**params),
        mode_pages=tuple(last.values()),
        write_cache=write_cache is not False,
        allow_in_use=bool(setting("allow-in-use")),
        file=at.path,
        line=at.line,
    )


def _check_tids(chk: _Checker, tree: ConfigTree, blocks: dict[str | None, Block]) -> None:
    seen: dict[int, str] = {}
    for target in tree.targets:
        if target.tid is None:
            continue
        if target.tid in seen:
            chk.add(
                blocks[target.name],
                f"target {target.name}: controller_tid {target.tid} is also {seen[target.tid]}'s",
            )
        seen[target.tid] = target.name
