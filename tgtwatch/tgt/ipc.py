"""tgtd's management socket as bytes: struct tgtadm_req/rsp, the enums, the payload. Pure.

The layout is tgt's usr/tgtadm.h (unchanged from v1.0.30 to v1.0.97): tgtadm writes one
`struct tgtadm_req` in host byte order, then a NUL-terminated payload that it builds from
its options in a fixed order, and tgtd answers `struct tgtadm_rsp {err, len}` followed, on
success only, by len - 8 bytes of NUL-terminated text. One request per connection.
tests/integration/test_ipc_real.py checks every builder of ipc_ops.py byte for byte against
what the real tgtadm sends for the same argv, and its effect against a real tgtd.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field, fields

# mode, op, lld[64], len, tid, sid, lun, cid, host_no, device_type, ac_dir, pack, force:
# "=" is host byte order with no padding; sid is 8-aligned anyway (offset 80): 120 bytes.
REQUEST = struct.Struct("=ii64sIiQQIIIIII")
RESPONSE = struct.Struct("=II")
LLD_LEN = 64
# tgtd closes the connection without an answer when the payload is larger (mgmt.c).
MAX_PAYLOAD = 8 * 1024
NO_TID = -1  # tgtadm's default; also GLOBAL_TID (~0U) as tgtd reads the int32
NO_LUN = (1 << 64) - 1  # tgtadm's "no --lun given"


class Op(enum.IntEnum):
    NEW = 0
    DELETE = 1
    SHOW = 2
    BIND = 3
    UNBIND = 4
    UPDATE = 5
    STATS = 6
    START = 7
    STOP = 8


class Mode(enum.IntEnum):
    SYSTEM = 0
    TARGET = 1
    DEVICE = 2  # tgtadm's "logicalunit"
    PORTAL = 3
    LLD = 4
    SESSION = 5
    CONNECTION = 6
    ACCOUNT = 7


class AccountDir(enum.IntEnum):
    INCOMING = 0
    OUTGOING = 1


class DeviceType(enum.IntEnum):
    """SCSI peripheral types tgtadm's --device-type names (scsi.h)."""

    DISK = 0x00
    TAPE = 0x01
    CD = 0x05
    CHANGER = 0x08
    OSD = 0x11
    PT = 0xFF


class Status(enum.IntEnum):
    """tgtd's answer (tgtadm_error.h); the texts exist only in tgtadm, copied below."""

    SUCCESS = 0
    UNKNOWN_ERR = 1
    NOMEM = 2
    NO_DRIVER = 3
    NO_TARGET = 4
    NO_LUN = 5
    NO_SESSION = 6
    NO_CONNECTION = 7
    NO_BINDING = 8
    TARGET_EXIST = 9
    LUN_EXIST = 10
    BINDING_EXIST = 11
    ACL_EXIST = 12
    ACL_NOEXIST = 13
    USER_EXIST = 14
    NO_USER = 15
    TOO_MANY_USER = 16
    INVALID_REQUEST = 17
    OUTACCOUNT_EXIST = 18
    TARGET_ACTIVE = 19
    LUN_ACTIVE = 20
    DRIVER_ACTIVE = 21
    UNSUPPORTED_OPERATION = 22
    UNKNOWN_PARAM = 23
    PREVENT_REMOVAL = 24


# The words tgtadm prints, so an operator who knows tgtadm recognises them.
MESSAGES = {
    Status.SUCCESS: "success",
    Status.UNKNOWN_ERR: "unknown error",
    Status.NOMEM: "out of memory",
    Status.NO_DRIVER: "can't find the driver",
    Status.NO_TARGET: "can't find the target",
    Status.NO_LUN: "can't find the logical unit",
    Status.NO_SESSION: "can't find the session",
    Status.NO_CONNECTION: "can't find the connection",
    Status.NO_BINDING: "can't find the binding",
    Status.TARGET_EXIST: "this target already exists",
    Status.LUN_EXIST: "this logical unit number already exists",
    Status.BINDING_EXIST: "this binding already exists",
    Status.ACL_EXIST: "this access control rule already exists",
    Status.ACL_NOEXIST: "this access control rule does not exist",
    Status.USER_EXIST: "this account already exists",
    Status.NO_USER: "can't find the account",
    Status.TOO_MANY_USER: "too many accounts",
    Status.INVALID_REQUEST: "invalid request",
    Status.OUTACCOUNT_EXIST: "this target already has an outgoing account",
    Status.TARGET_ACTIVE: "this target is still active",
    Status.LUN_ACTIVE: "this logical unit is still active",
    Status.DRIVER_ACTIVE: "this driver is busy",
    Status.UNSUPPORTED_OPERATION: "this operation isn't supported",
    Status.UNKNOWN_PARAM: "unknown parameter",
    Status.PREVENT_REMOVAL: "this device has Prevent Removal set",
}


def status_message(code: int) -> str:
    try:
        return MESSAGES[Status(code)]
    except ValueError:
        return f"unknown tgtadm error {code}"


class RequestError(ValueError):
    """A request tgtd would read differently from what was meant; never sent."""


@dataclass(frozen=True)
class Payload:
    """tgtadm's option strings; text() joins them exactly as tgtadm.c main() does."""

    name: str | None = None
    value: str | None = None
    path: str | None = None
    bstype: str | None = None
    bsopts: str | None = None
    bsoflags: str | None = None
    blocksize: str | None = None
    targetname: str | None = None
    address: str | None = None  # --initiator-address
    initiator: str | None = None  # --initiator-name
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    target_ops: str | None = None  # --params outside portal mode
    portal_ops: str | None = None  # --params in portal mode

    def text(self, device_type: int = DeviceType.DISK) -> str:
        parts: list[str] = []
        head = f"{self.name}={self.value}" if self.name is not None else ""
        # tgtadm forces bstype ssc for a tape, whatever --bstype said.
        bstype = "ssc" if device_type == DeviceType.TAPE else self.bstype
        for key, value in (
            ("path", self.path),
            ("bstype", bstype),
            ("bsopts", self.bsopts),
            ("bsoflags", self.bsoflags),
            ("blocksize", self.blocksize),
            ("targetname", self.targetname),
            ("initiator-address", self.address),
            ("initiator-name", self.initiator),
            ("user", self.user),
            ("password", self.password),
        ):
            if value is not None:
                parts.append(f"{key}={value}")
        # "Trailing ',' makes parsing params in modules easier" (tgtadm.c)
        if self.target_ops is not None:
            parts.append(f"targetOps {self.target_ops},")
        if self.portal_ops is not None:
            parts.append(f"portalOps {self.portal_ops},")
        return ",".join(([head] if self.name is not None else []) + parts)


# Where tgtd splits the payload at ',' (strsep in tgt_target_create, tgt_device_create,
# account_mgmt's user): a comma there would smuggle in another option. Values that are
# read to the end of the payload (name=value, the password) or are lists by design
# (--params) may hold one.
_NO_COMMA = (
    "path",
    "bstype",
    "bsopts",
    "bsoflags",
    "blocksize",
    "targetname",
    "address",
    "initiator",
    "user",
    "name",
)


def _validate(payload: Payload) -> None:
    for f in fields(payload):
        value = getattr(payload, f.name)
        if value is None:
            continue
        what = "the password" if f.name == "password" else f"{f.name} {value!r}"
        if "\0" in value:
            raise RequestError(f"{what} holds a NUL byte")
        if f.name in _NO_COMMA and "," in value:
            raise RequestError(f"{what} holds a ',' (tgtd would split it there)")
    if payload.name is not None and "=" in payload.name:
        raise RequestError(f"name {payload.name!r} holds a '='")


@dataclass(frozen=True)
class Request:
    """One struct tgtadm_req and its payload; defaults are tgtadm's."""

    mode: Mode
    op: Op
    tid: int = NO_TID
    lun: int = NO_LUN
    sid: int = 0
    cid: int = 0
    host_no: int = 0
    device_type: DeviceType = DeviceType.DISK
    ac_dir: AccountDir = AccountDir.INCOMING
    force: bool = False
    lld: str = ""
    payload: Payload = Payload()

    def body(self) -> bytes:
        """The payload bytes: its text and a NUL, or nothing at all (tgtadm's concat_buf)."""
        text = self.payload.text(self.device_type)
        return text.encode("utf-8") + b"\0" if text else b""

    def encode(self) -> bytes:
        """The exact bytes tgtadm writes for the same options; RequestError if unsafe."""
        _validate(self.payload)
        lld = self.lld.encode("ascii")
        if len(lld) >= LLD_LEN:
            raise RequestError(f"driver name {self.lld!r} is too long")
        body = self.body()
        if len(body) > MAX_PAYLOAD:
            raise RequestError(f"payload of {len(body)} bytes, more than tgtd's {MAX_PAYLOAD}")
        header = REQUEST.pack(
            self.mode,
            self.op,
            lld,
            REQUEST.size + len(body),
            self.tid,
            self.sid,
            self.lun,
            self.cid,
            self.host_no,
            self.device_type,
            self.ac_dir,
            0,
            int(self.force),
        )
        return header + body

    def describe(self) -> str:
        """The request as tgtadm options, for messages; a password is never shown."""
        words = [f"--mode {self.mode.name.lower()}", f"--op {self.op.name.lower()}"]
        if self.lld:
            words.append(f"--lld {self.lld}")
        if self.tid != NO_TID:
            words.append(f"--tid {self.tid}")
        if self.lun != NO_LUN:
            words.append(f"--lun {self.lun}")
        if self.ac_dir is AccountDir.OUTGOING:
            words.append("--outgoing")
        if self.force:
            words.append("--force")
        text = self.payload.text(self.device_type)
        if self.payload.password is not None:
            text = text.replace(f"password={self.payload.password}", "password=***")
        return " ".join(words) + (f" [{text}]" if text else "")


@dataclass(frozen=True)
class Response:
    status: int
    length: int  # header included

    @property
    def ok(self) -> bool:
        return self.status == Status.SUCCESS

    @property
    def body_length(self) -> int:
        return max(0, self.length - RESPONSE.size)


def decode_response(header: bytes) -> Response:
    status, length = RESPONSE.unpack(header)
    return Response(status, length)


def decode_text(body: bytes) -> str:
    """A response body: NUL-terminated text (tgtadm prints it with fputs)."""
    return body.split(b"\0", 1)[0].decode("utf-8", "replace")
