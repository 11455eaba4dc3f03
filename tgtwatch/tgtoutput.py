"""Pure parsers for what tgtadm, tgt-admin and /proc/PID/cmdline say: text in, frozen data out."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

from tgtwatch.structs import ObservedTarget

DEFAULT_ISCSI_PORT = 3260


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


@dataclass(frozen=True)
class Lun:
    number: int
    kind: str  # tgtadm's "Type:": controller, disk, cd/dvd, ...
    backing_store: str | None = None  # None for the controller LUN ("None")


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
_LUN_RE = re.compile(r"^\s+LUN: (\d+)\s*$")
_KEY_RE = re.compile(r"^\s+([A-Za-z][A-Za-z /-]*?):\s?(.*?)\s*$")


@dataclass
class _TargetBuilder:
    # Mutable only while one parse runs; frozen into TargetInfo at the end.
    tid: int
    name: str
    state: str = ""
    section: str = ""
    nexuses: list[Nexus] = field(default_factory=list)
    luns: list[Lun] = field(default_factory=list)
    acl: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)

    def build(self) -> TargetInfo:
        return TargetInfo(
            tid=self.tid,
            name=self.name,
            state=self.state,
            nexuses=tuple(self.nexuses),
            luns=tuple(self.luns),
            acl=tuple(self.acl),
            accounts=tuple(self.accounts),
        )


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
            b.nexuses.append(Nexus(nexus_id=int(m.group(1)), initiator=""))
        elif (m := _INITIATOR_RE.match(line)) and b.nexuses:
            alias = m.group(2)
            b.nexuses[-1] = replace(
                b.nexuses[-1],
                initiator=m.group(1),
                alias=None if alias in (None, "none") else alias,
            )
        elif (m := _ADDRESS_RE.match(line)) and b.nexuses:
            last = b.nexuses[-1]
            b.nexuses[-1] = replace(last, addresses=(*last.addresses, m.group(1)))
    elif b.section == "LUN information":
        if m := _LUN_RE.match(line):
            b.luns.append(Lun(number=int(m.group(1)), kind=""))
        elif (kv := _KEY_RE.match(line)) and b.luns:
            key, value = kv.group(1), kv.group(2)
            if key == "Type":
                b.luns[-1] = replace(b.luns[-1], kind=value)
            elif key == "Backing store path":
                b.luns[-1] = replace(b.luns[-1], backing_store=None if value == "None" else value)
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
    section = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            section = line.strip().rstrip(":")
            continue
        item = line.strip()
        if section == "System":
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
    )


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


# ---------------------------------------------------------------------------
# tgt-admin output (run with -v: without it tgt-admin prints none of its comments)


class AdminProblemKind(enum.Enum):
    """Why a tgt-admin run did not do everything it was asked, whatever its exit code."""

    TGTADM_FAILED = "tgtadm_failed"  # "Command: ... exited with code: N." (tgt-admin stops there)
    TGTADM_ERROR = "tgtadm_error"  # "tgtadm: invalid request", "tgtadm: failed to send ..."
    DEVICE_SKIPPED = "device_skipped"  # a backing store missing or in use: target lacks a LUN
    CONFIG = "config"  # tgt-admin refused the config file ("... not allowed!", missing value)


@dataclass(frozen=True)
class AdminProblem:
    kind: AdminProblemKind
    message: str


@dataclass(frozen=True)
class BusyTarget:
    """A target tgt-admin left untouched because an initiator is connected."""

    tid: int
    name: str
    verb: str  # "updated" (--update) or "deleted" (-e removing a target absent from the file)


@dataclass(frozen=True)
class AdminReport:
    """What a tgt-admin run did, as far as its -v output tells."""

    busy: tuple[BusyTarget, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    problems: tuple[AdminProblem, ...] = ()

    @property
    def busy_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.busy)

    @property
    def ok(self) -> bool:
        """True when nothing signals a failure (busy targets are not failures: they are pending)."""
        return not self.problems


_BUSY_RE = re.compile(r"^# Target with tid (\d+) \((.*)\) is in use, it won't be (\w+)\.\s*$")
_ADDED_RE = re.compile(r"^# Adding target: (\S+)\s*$")
_REMOVED_RE = re.compile(r"^# Removing target: (\S+)\s*$")
_SKIPPED_MISSING_RE = re.compile(r"^# Skipping device: (.+?)\s*$")
_EXITED_RE = re.compile(r"^exited with code: (\d+)\.?\s*$")
_TOOL_ERROR_RE = re.compile(r"^(tgtadm|tgtd): (.+)$")
_CONFIG_ERROR_MARKERS = (
    "not allowed",
    "Check your config file",
    "has a missing value",
    "not found. Exiting",
    "can't continue",
    "Unknown option",
    "Unknown target",
)


def parse_admin_output(text: str) -> AdminReport:
    """Parse what `tgt-admin -v` printed: busy (pending) targets and hidden failures."""
    busy: list[BusyTarget] = []
    added: list[str] = []
    removed: list[str] = []
    problems: list[AdminProblem] = []
    lines = [line.rstrip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        stripped = line.strip()
        if m := _BUSY_RE.match(stripped):
            busy.append(BusyTarget(tid=int(m.group(1)), name=m.group(2), verb=m.group(3)))
        elif m := _ADDED_RE.match(stripped):
            added.append(m.group(1))
        elif m := _REMOVED_RE.match(stripped):
            removed.append(m.group(1))
        elif m := _SKIPPED_MISSING_RE.match(stripped):
            # tgt-admin says only this when the backing store does not exist
            message = f"skipped device {m.group(1)}: it does not exist"
            problems.append(AdminProblem(AdminProblemKind.DEVICE_SKIPPED, message))
        elif stripped.startswith("# Skipping device"):
            problems.append(AdminProblem(AdminProblemKind.DEVICE_SKIPPED, stripped.lstrip("# ")))
        elif m := _EXITED_RE.match(stripped):
            # tgt-admin prints "Command:", the command on the next line, then this one
            command = lines[i - 1].strip() if i >= 1 else ""
            message = f"{command} exited with code {m.group(1)}".strip()
            problems.append(AdminProblem(AdminProblemKind.TGTADM_FAILED, message))
        elif _TOOL_ERROR_RE.match(stripped):
            problems.append(AdminProblem(AdminProblemKind.TGTADM_ERROR, stripped))
        elif not stripped.startswith("#") and any(m in stripped for m in _CONFIG_ERROR_MARKERS):
            problems.append(AdminProblem(AdminProblemKind.CONFIG, stripped))
    return AdminReport(
        busy=tuple(busy), added=tuple(added), removed=tuple(removed), problems=tuple(problems)
    )


# ---------------------------------------------------------------------------
# one-line summaries of failed commands

# tgt-admin -v echoes `--mode account --op new --user=U --password=P`: outputs get logged.
_SECRET_RE = re.compile(r"(--password[= ]|\bpassword=)(\S+)")


def redact_secrets(text: str) -> str:
    """The text with CHAP passwords replaced by ***."""
    return _SECRET_RE.sub(lambda m: m.group(1) + "***", text)


def error_summary(output: str, limit: int = 300) -> str:
    """The lines of a command's output an operator needs, on one line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    report = parse_admin_output(output)
    picked = [p.message for p in report.problems]
    if not picked:
        picked = [line for line in lines if not line.startswith("#")][-2:] or lines[-1:]
    summary = "; ".join(dict.fromkeys(picked))
    if len(summary) > limit:
        summary = summary[: limit - 3] + "..."
    return summary


# ---------------------------------------------------------------------------
# /proc/PID/cmdline of a tgtd


@dataclass(frozen=True)
class TgtdCmdline:
    """What a running tgtd was told on its command line."""

    control_port: int
    portal: str  # host:port as tgtd binds it; "0.0.0.0:3260"-like default when absent
    host: str  # "" means every address (tgtd's default)
    port: int
    foreground: bool = False


def _split_portal(value: str) -> tuple[str, int] | None:
    """ "HOST:PORT", "[V6]:PORT" or "HOST" (port 3260), as tgtd's --iscsi portal= takes it."""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep:
            return None
        if not rest:
            return host, DEFAULT_ISCSI_PORT
        if not rest.startswith(":") or not _decimal(rest[1:]):
            return None
        return host, int(rest[1:])
    if value.count(":") > 1:  # a bare IPv6 address: tgtd takes it without a port
        return value, DEFAULT_ISCSI_PORT
    host, sep, port = value.partition(":")
    if not sep:
        return value, DEFAULT_ISCSI_PORT
    if not _decimal(port) or not host:
        return None
    return host, int(port)


def _decimal(value: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts "²", which int() refuses."""
    return value.isascii() and value.isdigit()


def _port_number(value: str) -> int | None:
    if _decimal(value) and len(value) <= 5 and int(value) <= 65535:
        return int(value)
    return None


def parse_tgtd_cmdline(raw: bytes) -> TgtdCmdline | None:
    """Recognise a tgtd from /proc/PID/cmdline; None when it is not one (or is unparseable)."""
    argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0")]
    if argv and argv[-1] == "":
        argv.pop()
    if not argv or PurePosixPath(argv[0]).name != "tgtd":
        return None
    control_port = 0
    host, port = "", DEFAULT_ISCSI_PORT
    foreground = False
    i = 1
    while i < len(argv):
        arg = argv[i]
        value: str | None = None
        if arg in ("-C", "--control-port"):
            value = argv[i + 1] if i + 1 < len(argv) else None
            i += 1
            cp = _port_number(value or "")
            if cp is None:
                return None
            control_port = cp
        elif arg.startswith("--control-port="):
            cp = _port_number(arg.partition("=")[2])
            if cp is None:
                return None
            control_port = cp
        elif arg.startswith("-C") and not arg.startswith("--"):
            cp = _port_number(arg[2:])
            if cp is None:
                return None
            control_port = cp
        elif arg == "--iscsi":
            # tgtd takes the LLD options only as a separate word: "--iscsi portal=H:P,k=v"
            value = argv[i + 1] if i + 1 < len(argv) else ""
            i += 1
            for item in value.split(","):
                key, _, val = item.partition("=")
                if key == "portal":
                    split = _split_portal(val)
                    if split is not None and not host:
                        host, port = split
        elif arg in ("-f", "--foreground"):
            foreground = True
        i += 1
    shown_host = f"[{host}]" if ":" in host else host
    portal = f"{shown_host}:{port}" if host else f"0.0.0.0:{port}"
    return TgtdCmdline(
        control_port=control_port, portal=portal, host=host, port=port, foreground=foreground
    )
