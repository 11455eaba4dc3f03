"""The typed parse tree of a tgt config: every accepted key as a value tgtd can be given."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from pathlib import Path


class Driver(enum.Enum):
    ISCSI = "iscsi"
    ISER = "iser"


class StoreKind(enum.Enum):
    """How tgt-admin creates the LUN: a plain store, or one whose SCSI identity comes from
    the device itself (`sg_inq`, `sg_readcap`)."""

    BACKING = "backing-store"
    DIRECT = "direct-store"


class DeviceType(enum.Enum):
    DISK = "disk"
    CD = "cd"
    TAPE = "tape"


class BsType(enum.Enum):
    """Backing-store engines on a local file or block device (no network, no pass-through)."""

    RDWR = "rdwr"
    AIO = "aio"
    SSC = "ssc"
    MMC = "mmc"


class BsOFlag(enum.Enum):
    SYNC = "sync"
    DIRECT = "direct"


class TargetState(enum.Enum):
    READY = "ready"
    OFFLINE = "offline"


class Direction(enum.Enum):
    """Who proves itself with a CHAP account: the initiator (incoming) or the target (outgoing)."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"


@dataclass(frozen=True)
class ChapAccount:
    """One CHAP account as tgtd's account table holds it. The secret never appears in repr."""

    user: str
    secret: str = field(repr=False)
    direction: Direction = Direction.INCOMING


@dataclass(frozen=True)
class ModePage:
    """A SCSI mode page as tgtd's `mode_page=` takes it: page:subpage:length:byte...."""

    page: int
    subpage: int
    data: tuple[int, ...]

    def __str__(self) -> str:
        return ":".join(str(n) for n in (self.page, self.subpage, len(self.data), *self.data))


# write-cache off: the caching mode page tgt-admin sends (its exact bytes).
WRITE_CACHE_OFF = ModePage(
    8, 0, (0x10, 0, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x14, 0, 0, 0, 0, 0, 0)
)


@dataclass(frozen=True)
class LunParams:
    """`--op update --mode logicalunit --params` keys; None means tgtd's default."""

    scsi_id: str | None = None
    scsi_sn: str | None = None
    vendor_id: str | None = None
    product_id: str | None = None
    product_rev: str | None = None
    sense_format: int | None = None
    removable: int | None = None
    online: int | None = None
    readonly: int | None = None
    lbppbe: int | None = None
    la_lba: int | None = None
    optimal_xfer_gran: int | None = None
    optimal_xfer_len: int | None = None
    thin_provisioning: int | None = None
    rotation_rate: int | None = None

    def items(self) -> tuple[tuple[str, str], ...]:
        """(key, value) of every parameter set, in this class's field order."""
        # LUN_PARAM_KEYS, not fields(self): fields() is most of a reload's rendering of
        # 200 targets' records (bench/README.md, the native engine).
        return tuple(
            (key, str(value)) for key in LUN_PARAM_KEYS if (value := getattr(self, key)) is not None
        )


LUN_PARAM_KEYS = tuple(f.name for f in fields(LunParams))


@dataclass(frozen=True)
class Lun:
    """One LUN, fully resolved: target-level defaults already applied, number assigned."""

    number: int
    path: str
    kind: StoreKind = StoreKind.BACKING
    device_type: DeviceType | None = None
    bs_type: BsType | None = None
    bsoflags: tuple[BsOFlag, ...] = ()
    block_size: int | None = None
    params: LunParams = LunParams()
    # in the order tgtd must apply them (a later page with the same code replaces one)
    mode_pages: tuple[ModePage, ...] = ()
    write_cache: bool = True
    allow_in_use: bool = False
    # where the config names it, for problems (an included file, possibly)
    file: Path | None = field(default=None, compare=False)
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class IscsiParam:
    """A session key set with `--mode target --op update --name NAME --value VALUE`."""

    name: str
    value: str


@dataclass(frozen=True)
class Target:
    name: str
    luns: tuple[Lun, ...] = ()  # by number
    driver: Driver = Driver.ISCSI
    tid: int | None = None  # controller_tid: None lets tgt-admin choose
    # ACLs in file order; no initiator-address means tgt-admin binds ALL
    initiator_addresses: tuple[str, ...] = ()
    initiator_names: tuple[str, ...] = ()
    incoming: tuple[ChapAccount, ...] = ()
    outgoing: ChapAccount | None = None
    params: tuple[IscsiParam, ...] = ()  # sorted by name, as tgt-admin applies them
    state: TargetState | None = None
    line: int = field(default=0, compare=False)

    @property
    def address_acls(self) -> tuple[str, ...]:
        """What tgt-admin binds with -I: the addresses, or ALL when none is named."""
        return self.initiator_addresses or ("ALL",)


@dataclass(frozen=True)
class IsnsSettings:
    server_ip: str | None = None
    server_port: int | None = None
    access_control: bool | None = None
    enabled: bool | None = None


@dataclass(frozen=True)
class ConfigTree:
    """A whole config (one file and its includes) as tgtwatch will configure tgtd."""

    targets: tuple[Target, ...] = ()  # sorted by name, as tgt-admin creates them
    isns: IsnsSettings = IsnsSettings()
    discovery_incoming: ChapAccount | None = None
    discovery_outgoing: ChapAccount | None = None
    control_port: int | None = None  # the default instance's targets.conf only
    socket_opts: str | None = None  # instance files only: tgtwatch's own keys
    portal_opts: str | None = None

    def accounts(self) -> tuple[ChapAccount, ...]:
        """Every CHAP account the config creates, each user once."""
        seen: dict[str, ChapAccount] = {}
        for account in (self.discovery_incoming, self.discovery_outgoing):
            if account is not None:
                seen.setdefault(account.user, account)
        for target in self.targets:
            for account in (*target.incoming, target.outgoing):
                if account is not None:
                    seen.setdefault(account.user, account)
        return tuple(seen.values())
