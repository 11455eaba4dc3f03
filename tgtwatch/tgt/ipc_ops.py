"""One builder per tgtadm command line tgtwatch replaces: the ipc.Request it sends. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from tgtwatch.tgt.ipc import (
    NO_TID,
    AccountDir,
    DeviceType,
    Mode,
    Op,
    Payload,
    Request,
    RequestError,
)


def show_system() -> Request:
    """tgtadm --op show --mode sys"""
    return Request(Mode.SYSTEM, Op.SHOW)


def set_state(state: str) -> Request:
    """tgtadm --op update --mode sys --name State -v STATE"""
    return Request(Mode.SYSTEM, Op.UPDATE, payload=Payload(name="State", value=state))


def delete_system() -> Request:
    """tgtadm --op delete --mode system (tgtd exits; refused while targets exist)"""
    return Request(Mode.SYSTEM, Op.DELETE)


def show_targets() -> Request:
    """tgtadm --op show --mode target"""
    return Request(Mode.TARGET, Op.SHOW)


def show_target(tid: int, lld: str = "") -> Request:
    """tgtadm --op show --mode target --tid T: that target's iSCSI parameters"""
    return Request(Mode.TARGET, Op.SHOW, tid=tid, lld=lld)


def show_portals() -> Request:
    """tgtadm --lld iscsi --op show --mode portal"""
    return Request(Mode.PORTAL, Op.SHOW, lld="iscsi")


def show_accounts() -> Request:
    """tgtadm --op show --mode account"""
    return Request(Mode.ACCOUNT, Op.SHOW)


def new_target(tid: int, name: str, lld: str = "") -> Request:
    """tgtadm --op new --mode target --tid T -T NAME"""
    return Request(Mode.TARGET, Op.NEW, tid=tid, lld=lld, payload=Payload(targetname=name))


def delete_target(tid: int, *, force: bool = False, lld: str = "") -> Request:
    """tgtadm --op delete --mode target --tid T [--force]"""
    return Request(Mode.TARGET, Op.DELETE, tid=tid, force=force, lld=lld)


def update_target(tid: int, name: str, value: str, lld: str = "") -> Request:
    """tgtadm --op update --mode target --tid T --name N --value V (iSCSI parameters, state)"""
    payload = Payload(name=name, value=value)
    return Request(Mode.TARGET, Op.UPDATE, tid=tid, lld=lld, payload=payload)


def _acl(op: Op, tid: int, address: str | None, initiator: str | None, lld: str) -> Request:
    if (address is None) == (initiator is None):
        raise RequestError("an ACL request names an address or an initiator, exactly one")
    payload = Payload(address=address, initiator=initiator)
    return Request(Mode.TARGET, op, tid=tid, lld=lld, payload=payload)


def bind_address(tid: int, address: str, lld: str = "") -> Request:
    """tgtadm --op bind --mode target --tid T -I ADDRESS"""
    return _acl(Op.BIND, tid, address, None, lld)


def unbind_address(tid: int, address: str, lld: str = "") -> Request:
    """tgtadm --op unbind --mode target --tid T -I ADDRESS"""
    return _acl(Op.UNBIND, tid, address, None, lld)


def bind_initiator(tid: int, name: str, lld: str = "") -> Request:
    """tgtadm --op bind --mode target --tid T -Q NAME"""
    return _acl(Op.BIND, tid, None, name, lld)


def unbind_initiator(tid: int, name: str, lld: str = "") -> Request:
    """tgtadm --op unbind --mode target --tid T -Q NAME"""
    return _acl(Op.UNBIND, tid, None, name, lld)


def new_lun(
    tid: int,
    lun: int,
    path: str,
    *,
    bstype: str | None = None,
    bsopts: str | None = None,
    bsoflags: str | None = None,
    blocksize: str | None = None,
    device_type: DeviceType = DeviceType.DISK,
    lld: str = "",
) -> Request:
    """tgtadm --op new --mode logicalunit --tid T --lun L -b PATH [--bstype ...]"""
    payload = Payload(
        path=path, bstype=bstype, bsopts=bsopts, bsoflags=bsoflags, blocksize=blocksize
    )
    return Request(
        Mode.DEVICE, Op.NEW, tid=tid, lun=lun, device_type=device_type, lld=lld, payload=payload
    )


def delete_lun(tid: int, lun: int, lld: str = "") -> Request:
    """tgtadm --op delete --mode logicalunit --tid T --lun L"""
    return Request(Mode.DEVICE, Op.DELETE, tid=tid, lun=lun, lld=lld)


def update_lun(tid: int, lun: int, params: Sequence[tuple[str, str]], lld: str = "") -> Request:
    """tgtadm --op update --mode logicalunit --tid T --lun L --params k=v,k=v"""
    if not params:
        raise RequestError("a logical unit update needs at least one parameter")
    for key, value in params:
        if not key or any(c in key for c in ",= \0") or any(c in value for c in ",\0"):
            raise RequestError(f"parameter {key!r}={value!r} would be split by tgtd")
    ops = ",".join(f"{k}={v}" for k, v in params)
    return Request(
        Mode.DEVICE, Op.UPDATE, tid=tid, lun=lun, lld=lld, payload=Payload(target_ops=ops)
    )


def new_account(user: str, secret: str) -> Request:
    """tgtadm --op new --mode account --user U --password P (the password only here, never
    in an argv: this request goes straight to the socket)"""
    return Request(Mode.ACCOUNT, Op.NEW, payload=Payload(user=user, password=secret))


def delete_account(user: str) -> Request:
    """tgtadm --op delete --mode account --user U (tgtd unbinds it from every target)"""
    return Request(Mode.ACCOUNT, Op.DELETE, payload=Payload(user=user))


def bind_account(user: str, tid: int = NO_TID, *, outgoing: bool = False) -> Request:
    """tgtadm --op bind --mode account [--tid T] --user U [--outgoing]; no tid: discovery"""
    direction = AccountDir.OUTGOING if outgoing else AccountDir.INCOMING
    return Request(Mode.ACCOUNT, Op.BIND, tid=tid, ac_dir=direction, payload=Payload(user=user))


def unbind_account(user: str, tid: int = NO_TID, *, outgoing: bool = False) -> Request:
    """tgtadm --op unbind --mode account [--tid T] --user U [--outgoing]"""
    direction = AccountDir.OUTGOING if outgoing else AccountDir.INCOMING
    return Request(Mode.ACCOUNT, Op.UNBIND, tid=tid, ac_dir=direction, payload=Payload(user=user))
