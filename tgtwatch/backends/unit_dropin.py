"""The runtime drop-in that points tgtd@.service at tgtwatch's state_dir, when not the default.

The unit reads what tgtwatch renders under state_dir (the env file, the config snapshot,
the one-shot start token). Its defaults name /run/tgtwatch; systemd cannot take a path in
EnvironmentFile= from a variable, so for another state_dir the daemon writes a drop-in in
/run/systemd/system (gone at reboot, written again when the daemon starts units) and has
systemd reload its units, only when the drop-in's text changes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

UNIT_STATE_DIR = Path("/run/tgtwatch")  # what units/tgtd@.service says without a drop-in
DROPIN_DIR = Path("/run/systemd/system/tgtd@.service.d")
DROPIN_NAME = "50-tgtwatch-state-dir.conf"


class DropinError(Exception):
    """The drop-in could not be written or systemd not reloaded: one line."""


def dropin_text(state_dir: Path) -> str | None:
    """The drop-in for `state_dir`; None when the unit's own defaults already fit. Pure."""
    if state_dir == UNIT_STATE_DIR:
        return None
    return (
        "# Written by tgtwatch: its state_dir is not the unit's default. Do not edit.\n"
        "[Service]\n"
        f"Environment=TGTWATCH_STATE_DIR={state_dir}\n"
        "EnvironmentFile=\n"
        f"EnvironmentFile=-{state_dir}/env/%i.env\n"
    )


def ensure_dropin(
    state_dir: Path, reload_units: Callable[[], None], directory: Path = DROPIN_DIR
) -> bool:
    """Make the drop-in match `state_dir` (write it, or remove a stale one) and reload
    systemd's units if that changed anything; True when it did. Without the directory's
    parent (/run/systemd/system: PID 1 is not systemd) there is no unit to point: nothing
    is written."""
    path = directory / DROPIN_NAME
    want = dropin_text(state_dir)
    if not directory.parent.is_dir():
        return False
    try:
        have = path.read_text(encoding="utf-8") if path.exists() else None
        if have == want:
            return False
        if want is None:
            path.unlink()
        else:
            directory.mkdir(exist_ok=True, mode=0o755)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{DROPIN_NAME}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(want)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except OSError as exc:
        raise DropinError(f"{path}: cannot write: {exc.strerror or exc}") from None
    reload_units()
    return True
