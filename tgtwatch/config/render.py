"""The one canonical spelling of a typed config tree: the only config text tgt-admin is given.

Every value comes from the tree (so from a grammar), never from the file's own text; every
LUN is a block with its number and its settings resolved (target-level defaults folded
in), so tgt-admin's numbering and precedence rules have nothing left to decide. Parsing
the rendering gives back the same tree.
"""

from __future__ import annotations

from tgtwatch.model.tree import (
    ChapAccount,
    ConfigTree,
    Driver,
    Lun,
    Target,
)

HEADER = "# Rendered by tgtwatch from a checked config; every value passed its grammar.\n"
# tgt-admin has keys of its own for these; the others reach tgtd through `params`.
_OWN_KEYS = (
    "scsi_id",
    "scsi_sn",
    "vendor_id",
    "product_id",
    "product_rev",
    "sense_format",
    "removable",
    "online",
    "readonly",
    "lbppbe",
    "la_lba",
    "optimal_xfer_gran",
    "optimal_xfer_len",
)


def _on_off(value: bool) -> str:
    return "On" if value else "Off"


def _account(key: str, account: ChapAccount) -> str:
    return f"{key} {account.user} {account.secret}"


def render_globals(tree: ConfigTree, accounts: bool = True) -> str:
    lines = []
    isns = tree.isns
    if isns.server_ip is not None:
        lines.append(f"iSNSServerIP {isns.server_ip}")
    if isns.server_port is not None:
        lines.append(f"iSNSServerPort {isns.server_port}")
    if isns.access_control is not None:
        lines.append(f"iSNSAccessControl {_on_off(isns.access_control)}")
    if isns.enabled is not None:
        lines.append(f"iSNS {_on_off(isns.enabled)}")
    if accounts and tree.discovery_incoming is not None:
        lines.append(_account("incomingdiscoveryuser", tree.discovery_incoming))
    if accounts and tree.discovery_outgoing is not None:
        lines.append(_account("outgoingdiscoveryuser", tree.discovery_outgoing))
    return "".join(f"{line}\n" for line in lines)


def _lun(lun: Lun) -> list[str]:
    inner = [f"lun {lun.number}"]
    if lun.device_type is not None:
        inner.append(f"device-type {lun.device_type.value}")
    if lun.bs_type is not None:
        inner.append(f"bs-type {lun.bs_type.value}")
    if lun.bsoflags:
        inner.append("bsoflags " + ":".join(f.value for f in lun.bsoflags))
    if lun.block_size is not None:
        inner.append(f"block-size {lun.block_size}")
    for key, value in lun.params.items():
        inner.append(f"{key} {value}" if key in _OWN_KEYS else f"params {key}={value}")
    inner += [f"mode_page {page}" for page in lun.mode_pages]
    if not lun.write_cache:
        inner.append("write-cache off")
    if lun.allow_in_use:
        inner.append("allow-in-use yes")
    kind = lun.kind.value
    return [f"    <{kind} {lun.path}>", *(f"        {line}" for line in inner), f"    </{kind}>"]


def render_target(target: Target, accounts: bool = True) -> str:
    lines = [f"<target {target.name}>"]
    body = []
    if target.driver is not Driver.ISCSI:
        body.append(f"driver {target.driver.value}")
    if target.tid is not None:
        body.append(f"controller_tid {target.tid}")
    body += [f"{p.name} {p.value}" for p in target.params]
    if target.state is not None:
        body.append(f"state {target.state.value}")
    lines += [f"    {line}" for line in body]
    for lun in target.luns:
        lines += _lun(lun)
    body = [_account("incominguser", a) for a in target.incoming] if accounts else []
    if accounts and target.outgoing is not None:
        body.append(_account("outgoinguser", target.outgoing))
    body += [f"initiator-address {a}" for a in target.initiator_addresses]
    body += [f"initiator-name {n}" for n in target.initiator_names]
    lines += [f"    {line}" for line in body]
    lines.append("</target>")
    return "".join(f"{line}\n" for line in lines)


def render(tree: ConfigTree, accounts: bool = True) -> str:
    """The whole config for tgt-admin (SOCKET_OPTS, PORTAL_OPTS and control-port are
    tgtwatch's to pass as arguments, never in the text). Without `accounts`, no CHAP
    account: for a caller that gives tgtd the accounts itself, keeping secrets out of
    tgt-admin's tgtadm command lines."""
    parts = [HEADER, render_globals(tree, accounts)]
    parts += [render_target(target, accounts) for target in tree.targets]
    return "".join(parts)


def for_tgt_admin(tree: ConfigTree | None, text: str) -> str:
    """What tgt-admin may be given: the rendering without CHAP accounts (tgtwatch binds those
    over tgtd's socket). `text` stands in for a spec built without a tree (tests)."""
    return text if tree is None else render(tree, accounts=False)
