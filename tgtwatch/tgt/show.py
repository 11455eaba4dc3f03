"""Parse what `tgtadm --op show` prints (targets, system, portals): text in, frozen data out."""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field

from tgtwatch.model.structs import ObservedTarget


class SystemState(enum.Enum):
    """tgtd's own system state (`tgtadm --mode sys --name State`)."""

    READY = "ready"
    OFFLINE = "offline"


# ---------------------------------------------------------------------------
# tgtadm --op show --mode target


@dataclass(frozen=True)
class Nexus:
    """One I_T nexus: an initiator's session on a target."""

    nexus_id: int
    initiator: str
    alias: str | None = None
    addresses: tuple[str, ...] = ()  # one per connection
    connections: tuple[int, ...] = ()  # their ids (cid), for `--op delete --mode conn`


@dataclass(frozen=True)
class Lun:
    number: int
    kind: str  # tgtadm's "Type:": controller, disk, cd/dvd, ...
    backing_store: str | None = None  # None for the controller LUN ("None")
    # Every `Key: value` line of the LUN as tgtd printed it (SCSI ID, Online, Readonly, ...).
    attributes: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def attribute(self, key: str) -> str | None:
        return dict(self.attributes).get(key)


@dataclass(frozen=True)
class TargetInfo:
    """One `Target N: NAME` block of `tgtadm --op show --mode target`."""

    tid: int
    name: str
    state: str = ""  # the target's own state: ready | offline
    nexuses: tuple[Nexus, ...] = ()
    luns: tuple[Lun, ...] = ()
    acl: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()

    @property
    def data_luns(self) -> tuple[Lun, ...]:
        """LUNs an initiator stores data on: all but tgtd's implicit controller LUN 0."""
        return tuple(lun for lun in self.luns if not (lun.number == 0 and lun.kind == "controller"))

    @property
    def initiator_addresses(self) -> tuple[str, ...]:
        return tuple(sorted({a for n in self.nexuses for a in n.addresses}))

    def observed(self) -> ObservedTarget:
        return ObservedTarget(
            tid=self.tid, name=self.name, luns=len(self.data_luns), sessions=len(self.nexuses)
        )


_TARGET_RE = re.compile(r"^Target (\d+): (\S+)\s*$")
_SECTION_RE = re.compile(r"^ {4}(\S[^:]*):\s*$")
_NEXUS_RE = re.compile(r"^\s+I_T nexus: (\d+)\s*$")
_INITIATOR_RE = re.compile(r"^\s+Initiator: (\S+)(?: alias: (.*?))?\s*$")
_ADDRESS_RE = re.compile(r"^\s+IP Address: (\S+)\s*$")
_CONNECTION_RE = re.compile(r"^\s+Connection: (\d+)\s*$")
_LUN_RE = re.compile(r"^\s+LUN: (\d+)\s*$")
_KEY_RE = re.compile(r"^\s+([A-Za-z][A-Za-z /-]*?):\s?(.*?)\s*$")


@dataclass
class _NexusBuilder:
    nexus_id: int
    initiator: str = ""
    alias: str | None = None
    addresses: list[str] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)

    def build(self) -> Nexus:
        return Nexus(
            self.nexus_id,
            self.initiator,
            self.alias,
            tuple(self.addresses),
            tuple(self.connections),
        )


@dataclass
class _LunBuilder:
    number: int
    kind: str = ""
    backing_store: str | None = None
    attributes: list[tuple[str, str]] = field(default_factory=list)

    def build(self) -> Lun:
        return Lun(self.number, self.kind, self.backing_store, tuple(self.attributes))


@dataclass
class _TargetBuilder:
    # Mutable only while one parse runs (no frozen copy per line: a show of 200 targets
    # has 7,000 lines); frozen into TargetInfo at the end.
    tid: int
    name: str
    state: str = ""
    section: str = ""
    nexuses: list[_NexusBuilder] = field(default_factory=list)
    luns: list[_LunBuilder] = field(default_factory=list)
    acl: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)

    def build(self) -> TargetInfo:
        return TargetInfo(
            tid=self.tid,
            name=self.name,
            state=self.state,
            nexuses=tuple(n.build() for n in self.nexuses),
            luns=tuple(lun.build() for lun in self.luns),
            acl=tuple(self.acl),
            accounts=tuple(self.accounts),
        )


def _lun_attributes(key: str, value: str) -> list[tuple[str, str]]:
    # tgtd prints two keys on one line: "Size: 67 MB, Block size: 512".
    if key == "Size" and ", Block size: " in value:
        size, _, block = value.partition(", Block size: ")
        return [("Size", size), ("Block size", block)]
    return [(key, value)]


def _feed_target_line(b: _TargetBuilder, line: str) -> None:
    section = _SECTION_RE.match(line)
    if section:
        b.section = section.group(1)
        return
    if b.section == "System information":
        kv = _KEY_RE.match(line)
        if kv and kv.group(1) == "State":
            b.state = kv.group(2)
    elif b.section == "I_T nexus information":
        if m := _NEXUS_RE.match(line):
            b.nexuses.append(_NexusBuilder(int(m.group(1))))
        elif (m := _INITIATOR_RE.match(line)) and b.nexuses:
            alias = m.group(2)
            b.nexuses[-1].initiator = m.group(1)
            b.nexuses[-1].alias = None if alias in (None, "none") else alias
        elif (m := _ADDRESS_RE.match(line)) and b.nexuses:
            b.nexuses[-1].addresses.append(m.group(1))
        elif (m := _CONNECTION_RE.match(line)) and b.nexuses:
            b.nexuses[-1].connections.append(int(m.group(1)))
    elif b.section == "LUN information":
        if m := _LUN_RE.match(line):
            b.luns.append(_LunBuilder(int(m.group(1))))
        elif (kv := _KEY_RE.match(line)) and b.luns:
            key, value = kv.group(1), kv.group(2)
            lun = b.luns[-1]
            lun.attributes += _lun_attributes(key, value)
            if key == "Type":
                lun.kind = value
            elif key == "Backing store path":
                lun.backing_store = None if value == "None" else value
    elif b.section == "ACL information":
        if value := line.strip():
            b.acl.append(value)
    elif b.section == "Account information" and (value := line.strip()):
        b.accounts.append(value)


def parse_show_targets(text: str) -> tuple[TargetInfo, ...]:
    """Parse `tgtadm --op show --mode target`; unknown lines are ignored, never an error."""
    targets: list[TargetInfo] = []
    current: _TargetBuilder | None = None
    for line in text.splitlines():
        if m := _TARGET_RE.match(line):
            if current is not None:
                targets.append(current.build())
            current = _TargetBuilder(tid=int(m.group(1)), name=m.group(2))
        elif current is not None:
            _feed_target_line(current, line)
    if current is not None:
        targets.append(current.build())
    return tuple(targets)


@dataclass(frozen=True)
class TargetBlock:
    """One target's block of `--op show --mode target`, cut out without parsing it."""

    tid: int
    name: str
    text: str  # the block, its "Target N: NAME" line first

    @property
    def digest(self) -> str:
        """What the native engine's record is corrected from (LUNs, accounts, ACLs), hashed:
        the sessions before them are left out, so a login does not change it."""
        start = self.text.find(_LUN_SECTION)
        part = self.text if start < 0 else self.text[start:]
        return hashlib.blake2b(part.encode(), digest_size=16).hexdigest()


_LUN_SECTION = "\n    LUN information:"
_TARGET_LINE_RE = re.compile(r"^Target (\d+): (\S+)[ \t]*$", re.MULTILINE)


def split_show_targets(text: str) -> tuple[TargetBlock, ...]:
    """`--op show --mode target` cut into its targets' blocks, in tgtd's order: ~1 ms for
    200 targets where parsing them all takes ~20 ms."""
    heads = list(_TARGET_LINE_RE.finditer(text))
    ends = [m.start() for m in heads[1:]] + [len(text)] * bool(heads)
    return tuple(
        TargetBlock(int(m.group(1)), m.group(2), text[m.start() : end])
        for m, end in zip(heads, ends, strict=True)
    )


def observed_targets(text: str) -> tuple[ObservedTarget, ...]:
    """`tgtadm --op show --mode target` as the backend reports it."""
    return tuple(t.observed() for t in parse_show_targets(text))


# ---------------------------------------------------------------------------
# tgtadm --op show --mode sys


@dataclass(frozen=True)
class SystemInfo:
    """`tgtadm --op show --mode sys`: the daemon's state, drivers and backing-store types."""

    state: SystemState | None = None  # None: the output did not say (or said something new)
    debug: bool | None = None
    llds: tuple[tuple[str, str], ...] = ()  # (driver, state), e.g. ("iscsi", "ready")
    backing_stores: tuple[str, ...] = ()
    device_types: tuple[str, ...] = ()
    # Discovery accounts: "user" (incoming) and "user (outgoing)", as tgtd lists them.
    accounts: tuple[str, ...] = ()

    @property
    def raw_state(self) -> str:
        return self.state.value if self.state else ""

    def lld_state(self, lld: str) -> str | None:
        return dict(self.llds).get(lld)


def parse_show_system(text: str) -> SystemInfo:
    """Parse `tgtadm --op show --mode sys`; missing parts stay at their defaults."""
    state: SystemState | None = None
    debug: bool | None = None
    llds: list[tuple[str, str]] = []
    stores: list[str] = []
    types: list[str] = []
    accounts: list[str] = []
    section = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            section = line.strip().rstrip(":")
            continue
        item = line.strip()
        if item == "Account information:":
            # tgtd prints the discovery accounts indented under "Device types:".
            section = "Account information"
        elif section == "Account information":
            accounts.append(item)
        elif section == "System":
            key, _, value = item.partition(":")
            value = value.strip()
            if key == "State":
                state = next((s for s in SystemState if s.value == value), None)
            elif key == "debug":
                debug = {"on": True, "off": False}.get(value)
        elif section == "LLDs":
            key, sep, value = item.partition(":")
            if sep:
                llds.append((key.strip(), value.strip()))
        elif section == "Backing stores":
            # "rdwr (bsoflags sync:direct)": the name is the first word
            stores.append(item.split()[0])
        elif section == "Device types":
            types.append(item)
    return SystemInfo(
        state=state,
        debug=debug,
        llds=tuple(llds),
        backing_stores=tuple(stores),
        device_types=tuple(types),
        accounts=tuple(accounts),
    )


# ---------------------------------------------------------------------------
# tgtadm --op show --mode target --tid N


def parse_show_params(text: str) -> dict[str, str]:
    """Parse one target's parameters (`nop_interval=0`, `MaxRecvDataSegmentLength=8192`, ...,
    one `Key=value` a line), as `tgtadm --op show --mode target --tid N` prints them."""
    params: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key:
            params[key] = value
    return params


# ---------------------------------------------------------------------------
# tgtadm --op show --mode account


def parse_show_accounts(text: str) -> tuple[str, ...]:
    """Parse `tgtadm --op show --mode account` ("Account list:" then one user a line)."""
    return tuple(line.strip() for line in text.splitlines() if line[:1].isspace() and line.strip())


# ---------------------------------------------------------------------------
# tgtadm --op show --mode portal


@dataclass(frozen=True)
class Portal:
    host: str  # without the brackets of an IPv6 address
    port: int
    tpgt: int | None = None

    @property
    def address(self) -> str:
        """host:port as tgtd's --iscsi portal= takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_PORTAL_RE = re.compile(r"^Portal: (.+):(\d+)(?:,(\d+))?\s*$")


def parse_show_portals(text: str) -> tuple[Portal, ...]:
    """Parse `tgtadm --lld iscsi --op show --mode portal` ("Portal: 127.0.0.1:13000,1")."""
    portals: list[Portal] = []
    for line in text.splitlines():
        if m := _PORTAL_RE.match(line.strip()):
            tpgt = int(m.group(3)) if m.group(3) else None
            host = m.group(1).removeprefix("[").removesuffix("]")
            portals.append(Portal(host=host, port=int(m.group(2)), tpgt=tpgt))
    return tuple(portals)
