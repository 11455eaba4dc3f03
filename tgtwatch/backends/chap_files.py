"""Where CHAP accounts wait for a tgtd (root-only files under state_dir) and the record of
what each tgtd was given; applying them through the control socket, with that record."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tgtwatch.config.accounts import Account, AccountSet
from tgtwatch.model.tree import Direction
from tgtwatch.tgt.chap import AccountRecord, AccountsApplied, apply_accounts
from tgtwatch.tgt.ipc_client import TgtdSocket

RECORD_SUBDIR = "accounts"


def record_path(state_dir: Path, control_port: int) -> Path:
    return state_dir / RECORD_SUBDIR / f"{control_port}.json"


def write_private(path: Path, text: str, *, private_dir: bool = True) -> None:
    """Replace `path` atomically with a 0600 file (it may hold secrets), by default in a
    0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if private_dir else 0o755)
    if private_dir:
        path.parent.chmod(0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_record(state_dir: Path, control_port: int) -> AccountRecord | None:
    """What tgtwatch last gave this tgtd; None when it never gave it anything."""
    try:
        return AccountRecord.from_json(record_path(state_dir, control_port).read_text())
    except OSError:
        return None


def apply(
    state_dir: Path, control_port: int, desired: AccountSet, timeout_s: float
) -> AccountsApplied | None:
    """Give the tgtd on control_port exactly `desired`; None when there was nothing to do
    (no account wanted, none ever given). AccountError on failure: the record is dropped,
    so the next attempt renews every account."""
    record = load_record(state_dir, control_port)
    if not desired.accounts and record is None:
        return None
    path = record_path(state_dir, control_port)
    try:
        applied = apply_accounts(
            TgtdSocket(control_port, timeout_s), desired, record or AccountRecord()
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    write_private(path, applied.record.to_json())
    return applied


def summary(applied: AccountsApplied | None) -> str:
    """ "; CHAP: ..." for an outcome message (user names only), or nothing."""
    if applied is None or not applied.changes:
        return ""
    shown = ", ".join(applied.changes[:4])
    more = f" and {len(applied.changes) - 4} more" if len(applied.changes) > 4 else ""
    return f"; CHAP: {shown}{more}"


# ---------------------------------------------------------------------------
# the accounts a unit's tgtd gets from `tgtwatch accounts` (tgtd@.service)


def to_json(accounts: AccountSet) -> str:
    return json.dumps(
        {
            "accounts": [
                {
                    "user": a.user,
                    "secret": a.secret,
                    "direction": a.direction.value,
                    "target": a.target,
                }
                for a in accounts.accounts
            ],
            "targets": list(accounts.targets),
        },
        indent=1,
    )


def from_json(text: str) -> AccountSet:
    """The set written by to_json; ValueError when it is not one."""
    try:
        body = json.loads(text)
        found = tuple(
            Account(str(a["user"]), str(a["secret"]), Direction(a["direction"]), a["target"])
            for a in body["accounts"]
        )
        targets = tuple(str(t) for t in body["targets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an accounts file: {exc}") from None
    if any(a.target is not None and not isinstance(a.target, str) for a in found):
        raise ValueError("not an accounts file: a target is not a name")
    return AccountSet(found, targets)
