"""Plain frozen data shared by every layer: specs, observations, applied state, actions."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from tgtwatch.model.lineage import NO_LINEAGE, Lineage
from tgtwatch.model.tree import ConfigTree

DEFAULT_NAME = "default"


class InstanceKind(enum.Enum):
    """Who owns an instance's lifecycle."""

    DEFAULT = "default"  # the distribution's tgtd: only ever reloaded
    DROPIN = "dropin"  # one file in instances_dir: started, reloaded, drained by tgtwatch


class InstanceState(enum.Enum):
    """What `status` reports for an instance (DESIGN.md contract)."""

    RUNNING = "running"
    STARTING = "starting"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"
    PENDING = "pending"


class ActionKind(enum.Enum):
    START = "start"
    RELOAD = "reload"
    DRAIN_STOP = "drain_stop"
    CHECK = "check"


class Rule(enum.Enum):
    """The rule a rejected file broke; named in every problem and `reject` record."""

    NAME = "name"
    PORT = "port"
    CONFLICT = "conflict"
    TRUST = "trust"
    SYNTAX = "syntax"  # not readable the way Config::General reads it
    GRAMMAR = "grammar"  # a key tgtwatch does not accept, or a value outside its grammar
    STORE = "store"  # a backing store outside the allowed roots, unsafe, or in use
    LIMIT = "limit"  # too many targets, LUNs, included files or instance files
    INCLUDE = "include"
    DIRECTORY = "directory"


@dataclass(frozen=True)
class Problem:
    """A file (or directory) that is not acted on, and why."""

    path: Path
    rule: Rule
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.message}"

    def report(self) -> str:
        """`PATH[:LINE]: message [rule: RULE]`: how check, plan, status and records say it."""
        return f"{self} [rule: {self.rule.value}]"


@dataclass(frozen=True)
class TargetSpec:
    """A `<target NAME>` block as tgt-admin will configure it."""

    name: str
    luns: int
    # Of what tgt-admin reads for this target: tells a busy target whose config really
    # changed (pending) from one tgt-admin merely reports as in use.
    digest: str = field(default="", compare=False)
    stores: tuple[str, ...] = field(default=(), compare=False)  # backing/direct-store paths


@dataclass(frozen=True)
class InstanceSpec:
    """One tgtd that a config file asks for."""

    name: str
    kind: InstanceKind
    port: int
    portal: str  # host:port exactly as tgtd's --iscsi portal= takes it
    control_port: int
    config: Path
    sha256: str  # of the config file and its include closure, in order
    targets: tuple[TargetSpec, ...] = ()
    includes: tuple[Path, ...] = ()
    # Where its includes look for files (tgtconf.looked_in): watched, a new file there counts.
    include_dirs: tuple[Path, ...] = ()
    # The canonical rendering of the checked config (config/render.py): all tgt-admin is
    # ever given, so a file swapped after the check is never what runs.
    text: str = field(default="", compare=False, repr=False)
    tree: ConfigTree | None = field(default=None, compare=False, repr=False)
    # Worth saying in its start/reload record (a store shared with allow-in-use yes).
    notes: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Desired:
    """What the files on disk ask for, keyed by portal port, plus what was refused."""

    instances: Mapping[int, InstanceSpec] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()  # worth saying, not wrong: "instances_dir does not exist"
    # The earlier answers this one was made from, and the ports changed since each.
    lineage: Lineage = field(default=NO_LINEAGE, compare=False, repr=False)

    def is_troubled(self, config: Path) -> bool:
        """A refused file, or one in a refused directory: its instance keeps its last config."""
        return any(p.path == config or p.path in config.parents for p in self.problems)


@dataclass(frozen=True)
class ObservedTarget:
    tid: int
    name: str
    luns: int  # LUNs other than the controller LUN 0
    sessions: int  # I_T nexuses


@dataclass(frozen=True)
class ObservedInstance:
    """A tgtd that runs now, as the backend sees it."""

    port: int
    control_port: int
    pid: int | None
    system_state: str = ""  # tgtd's own: ready | offline
    targets: tuple[ObservedTarget, ...] = ()
    unit: str | None = None  # systemd backend: the unit that owns the process
    starting: bool = False  # control socket not answering yet, or (systemd) unit activating
    # tgtd itself was asked (system state, targets, LUNs, sessions): without it only the
    # process is known (a /proc scan), and nothing above but pid and ports is meaningful.
    inspected: bool = False
    # The instance it runs for, when that binds a name to one tgtd at a time (systemd: its
    # unit tgtd@NAME): a file moved to another port starts once the old port is drained.
    instance: str | None = None

    @property
    def sessions(self) -> int:
        return sum(t.sessions for t in self.targets)


@dataclass(frozen=True)
class Observed:
    instances: Mapping[int, ObservedInstance] = field(default_factory=dict)
    lineage: Lineage = field(default=NO_LINEAGE, compare=False, repr=False)

    def ports_of(self, pids: Iterable[int]) -> dict[int, int]:
        """pid -> portal port, for those of `pids` seen running."""
        ports = {r.pid: port for port, r in self.instances.items() if r.pid is not None}
        return {pid: ports[pid] for pid in pids if pid in ports}


@dataclass(frozen=True)
class AppliedEntry:
    """What tgtwatch last applied on a port (the state file's record)."""

    name: str
    port: int
    config: Path
    sha256: str
    applied_at: float
    pending: tuple[str, ...] = ()  # targets tgt-admin skipped because they were in use
    kind: InstanceKind = InstanceKind.DROPIN
    # target name -> digest of the config it runs with (a pending target keeps its old one)
    targets: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Applied:
    entries: Mapping[int, AppliedEntry] = field(default_factory=dict)
    lineage: Lineage = field(default=NO_LINEAGE, compare=False, repr=False)

    def made_of(self, entries: Mapping[int, AppliedEntry], ports: Iterable[int]) -> Applied:
        """`entries`, made from these by changing `ports` only (the new lineage says so)."""
        return Applied(entries, self.lineage.after(self, ports))


@dataclass(frozen=True)
class Start:
    kind: ClassVar[ActionKind] = ActionKind.START
    spec: InstanceSpec

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Reload:
    kind: ClassVar[ActionKind] = ActionKind.RELOAD
    spec: InstanceSpec
    adopt: bool = False  # a running tgtd tgtwatch has no record of applying

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class DrainStop:
    kind: ClassVar[ActionKind] = ActionKind.DRAIN_STOP
    port: int
    control_port: int
    name: str
    config: Path
    reason: str = "no file wants this port any more"


@dataclass(frozen=True)
class Check:
    """Compare what runs on a port with what was applied; repair it if it drifted, and land
    pending targets whose sessions ended. `why`: the drift already seen, if any."""

    kind: ClassVar[ActionKind] = ActionKind.CHECK
    spec: InstanceSpec
    why: str = ""

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def name(self) -> str:
        return self.spec.name


Action = Start | Reload | DrainStop | Check


@dataclass(frozen=True)
class Plan:
    """plan()'s answer: actions in order, and what it deliberately left alone."""

    actions: tuple[Action, ...] = ()
    foreign: tuple[ObservedInstance, ...] = ()  # running, never applied, wanted by no file
    held: tuple[AppliedEntry, ...] = ()  # file refused: keeps running on its last good config
    # (port, blocker): a start that waits until the tgtd of the same instance on `blocker`
    # has drained (systemd: one unit per name); the blocker's lane ending brings it back.
    waiting: tuple[tuple[int, int], ...] = ()
