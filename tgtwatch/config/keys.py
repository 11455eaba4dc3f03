"""The closed list of keys tgtwatch accepts, where, and the value grammar of each.

These are tgt-admin's keys (research/tgt-semantics.md, Q3), less the ones that let a file
reach something its grammar cannot bound (REFUSED says why for each). Any other key is a
problem: tgt-admin would silently ignore a misspelt one, tgtwatch names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tgtwatch.config import values as v
from tgtwatch.model.tree import (
    BsOFlag,
    BsType,
    DeviceType,
    Direction,
    Driver,
    TargetState,
)

Parse = Callable[[str], Any]


@dataclass(frozen=True)
class Key:
    parse: Parse
    repeat: bool = False  # may be given more than once (each value kept, in order)
    help: str = ""  # the grammar, for docs and messages


def _bsoflags(text: str) -> tuple[BsOFlag, ...]:
    """sync, direct or sync:direct (tgtd splits at `:`)."""
    flags = text.split(":")
    if len(set(flags)) != len(flags) or not all(f in ("sync", "direct") for f in flags):
        raise ValueError(f"{text!r} is not sync, direct or sync:direct")
    return tuple(BsOFlag(f) for f in flags)


def _refuse_bsopts(text: str) -> str:
    raise ValueError(
        "bsopts only configures the rbd and glfs backing stores, which tgtwatch does not accept"
    )


ON_OFF = v.choice({"On": True, "Off": False})
YES_NO = v.choice({"Yes": "Yes", "No": "No"})
BINARY = v.number(0, 1)
DIGEST = v.choice({d: d for d in ("None", "CRC32C", "CRC32C,None", "None,CRC32C")})
DRIVER = v.choice({d.value: d for d in Driver})
PORT = v.number(1, 65535)

# `--params KEY=VALUE` of `--mode logicalunit --op update`: each typed as tgtd reads it.
LUN_PARAMS: dict[str, Parse] = {
    "scsi_id": v.scsi_string(36),
    "scsi_sn": v.scsi_string(36),
    "vendor_id": v.scsi_string(8),
    "product_id": v.scsi_string(16),
    "product_rev": v.scsi_string(4),
    "sense_format": BINARY,
    "removable": BINARY,
    "online": BINARY,
    "readonly": BINARY,
    "lbppbe": v.number(0, 15),
    "la_lba": v.number(0, 16383),
    "optimal_xfer_gran": v.number(0, 65535),
    "optimal_xfer_len": v.number(0, 2**31 - 1),
    "thin_provisioning": BINARY,
    "rotation_rate": v.number(0, 65535),
}
# The ones tgt-admin also takes as keys of their own (the others only through `params`).
LUN_PARAM_KEYS = tuple(k for k in LUN_PARAMS if k not in ("thin_provisioning", "rotation_rate"))


def lun_params(text: str) -> tuple[tuple[str, Any], ...]:
    """`params KEY=VALUE[,KEY=VALUE...]`: tgtd's own payload syntax, every pair typed."""
    pairs = []
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if not eq or key not in LUN_PARAMS:
            raise ValueError(
                f"{item[:40]!r} is not KEY=VALUE with KEY one of {', '.join(LUN_PARAMS)}"
            )
        try:
            pairs.append((key, LUN_PARAMS[key](value)))
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return tuple(pairs)


# Settings of a LUN: per LUN inside <backing-store PATH>...</backing-store>, or at target
# level as the default of every LUN of the target.
LUN_SETTINGS: dict[str, Key] = {
    "device-type": Key(v.choice({d.value: d for d in DeviceType}), help="disk | cd | tape"),
    "bs-type": Key(v.choice({b.value: b for b in BsType}), help="rdwr | aio | ssc | mmc"),
    "bsoflags": Key(_bsoflags, help="sync | direct | sync:direct"),
    "bsopts": Key(_refuse_bsopts, help="(rbd/glfs only: refused)"),
    "write-cache": Key(v.choice({"on": True, "off": False}), help="on | off"),
    "allow-in-use": Key(v.choice({"yes": True, "no": False}), help="yes | no"),
    "mode_page": Key(v.mode_page, repeat=True, help="PAGE:SUBPAGE:LENGTH:BYTE..."),
    "params": Key(lun_params, repeat=True, help="KEY=VALUE[,KEY=VALUE]"),
    **{k: Key(LUN_PARAMS[k]) for k in LUN_PARAM_KEYS},
}

LUN_KEYS: dict[str, Key] = {
    **LUN_SETTINGS,
    "lun": Key(v.number(1, 16383), help="1-16383"),
    "block-size": Key(v.block_size, help="512-65536, a power of two"),
}

# The iSCSI session keys tgt-admin passes to `--mode target --op update`, with tgtd's own
# ranges (usr/iscsi/param.c, session_keys[]).
ISCSI_PARAMS: dict[str, Key] = {
    "MaxRecvDataSegmentLength": Key(v.number(512, 16777215)),
    "MaxXmitDataSegmentLength": Key(v.number(512, 16777215)),
    "HeaderDigest": Key(DIGEST),
    "DataDigest": Key(DIGEST),
    "InitialR2T": Key(YES_NO),
    "MaxOutstandingR2T": Key(v.number(1, 65535)),
    "ImmediateData": Key(YES_NO),
    "FirstBurstLength": Key(v.number(512, 16777215)),
    "MaxBurstLength": Key(v.number(512, 16777215)),
    "DataPDUInOrder": Key(YES_NO),
    "DataSequenceInOrder": Key(YES_NO),
    "ErrorRecoveryLevel": Key(v.number(0, 2)),
    "IFMarker": Key(YES_NO),
    "OFMarker": Key(YES_NO),
    "DefaultTime2Wait": Key(v.number(0, 3600)),
    "DefaultTime2Retain": Key(v.number(0, 3600)),
    "OFMarkInt": Key(v.number(1, 65535)),
    "IFMarkInt": Key(v.number(1, 65535)),
    "MaxConnections": Key(v.number(1, 65535)),
}

TARGET_KEYS: dict[str, Key] = {
    **LUN_SETTINGS,
    **ISCSI_PARAMS,
    "driver": Key(DRIVER, help="iscsi | iser"),
    "controller_tid": Key(v.number(1, 2**31 - 1)),
    "backing-store": Key(v.absolute_path, repeat=True),
    "direct-store": Key(v.absolute_path, repeat=True),
    "incominguser": Key(v.chap_account(Direction.INCOMING), repeat=True, help="USER SECRET"),
    "outgoinguser": Key(v.chap_account(Direction.OUTGOING), help="USER SECRET"),
    "initiator-address": Key(v.initiator_address, repeat=True, help="ALL | ADDRESS[/PREFIX]"),
    "initiator-name": Key(v.iscsi_name, repeat=True),
    "state": Key(v.choice({s.value: s for s in TargetState}), help="ready | offline"),
}

GLOBAL_KEYS: dict[str, Key] = {
    "default-driver": Key(DRIVER, help="iscsi | iser"),
    "iSNSServerIP": Key(v.ip_address),
    "iSNSServerPort": Key(PORT),
    "iSNSAccessControl": Key(ON_OFF, help="On | Off"),
    "iSNS": Key(ON_OFF, help="On | Off"),
    "incomingdiscoveryuser": Key(v.chap_account(Direction.INCOMING), help="USER SECRET"),
    "outgoingdiscoveryuser": Key(v.chap_account(Direction.OUTGOING), help="USER SECRET"),
}
# tgtwatch's own keys of an instance file; inventory reads and checks them.
INSTANCE_KEYS = ("SOCKET_OPTS", "PORTAL_OPTS")
CONTROL_PORT = Key(v.number(0, 65535))

# Keys of tgt-admin (or of tgtd) that tgtwatch refuses, and why.
REFUSED: dict[str, str] = {
    "ignore-errors": "tgtwatch reports every failed call; tgt-admin would hide them",
    "path": "a LUN's path is its backing-store or direct-store, checked against the roots",
    "MaxQueueCmd": "tgt-admin does not pass it on",
    "RedirectAddress": "tgt-admin does not pass redirects on",
    "RedirectPort": "tgt-admin does not pass redirects on",
    "RedirectReason": "tgt-admin does not pass redirects on",
    "RedirectCallback": "a program tgtd would run",
    "nop_interval": "tgt-admin does not pass it on",
    "nop_count": "tgt-admin does not pass it on",
}
