"""The environment file tgtd@NAME.service reads: only values tgtwatch validated, rendered by us."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tgtwatch.backends import chap_files
from tgtwatch.config.accounts import account_set
from tgtwatch.config.render import for_tgt_admin
from tgtwatch.config.settings import Settings
from tgtwatch.model.structs import InstanceSpec

ENV_SUBDIR = "env"


class EnvFileError(Exception):
    """The instance cannot be started by hand: one line naming the file and the problem."""


def render(spec: InstanceSpec) -> str:
    """SOCKET_OPTS and PORTAL_OPTS as systemd reads them. Pure.

    Both values passed the rules (digits; an IPv4, [IPv6] or hostname portal), so they
    contain no quote, space, `$` or backslash that systemd could read differently.
    """
    return (
        f"# Rendered by tgtwatch from {spec.config}; do not edit.\n"
        f"SOCKET_OPTS={spec.control_port}\n"
        f"PORTAL_OPTS={spec.portal}\n"
    )


def env_path(settings: Settings, name: str) -> Path:
    return settings.state_dir / ENV_SUBDIR / f"{name}.env"


def config_path(settings: Settings, name: str) -> Path:
    """The unit's tgt-admin config: the canonical rendering of NAME.conf as checked."""
    return settings.state_dir / ENV_SUBDIR / f"{name}.conf"


def accounts_path(settings: Settings, name: str) -> Path:
    """The CHAP accounts `tgtwatch accounts --instance NAME` gives the unit's tgtd (0600)."""
    return settings.state_dir / ENV_SUBDIR / f"{name}.accounts"


def external_token(settings: Settings, name: str) -> Path:
    """Present from tgtwatch's start of the unit until its ExecStartPost removes it: then
    the unit leaves tgtd offline and tgtwatch loads it, binds accounts and sets it ready."""
    return settings.state_dir / ENV_SUBDIR / f"{name}.external"


def fresh_token(settings: Settings, name: str) -> Path:
    """Present from tgtwatch's own render until the unit's ExecStartPre removes it."""
    return settings.state_dir / ENV_SUBDIR / f"{name}.fresh"


def _replace(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_spec(settings: Settings, spec: InstanceSpec) -> Path:
    """The env file, the config snapshot and the accounts tgtd@NAME.service reads, all from
    one check.

    The unit's tgt-admin reads the snapshot, never the instance file: a file swapped
    after the check (tgt-admin passes values to a shell) is never what runs. The snapshot
    holds no CHAP account: the unit's `tgtwatch accounts` binds them over the control socket
    from NAME.accounts, which exists while there are accounts to give (or, once, to take
    back from the tgtd when the file no longer has any).
    """
    text = for_tgt_admin(spec.tree, spec.text or spec.config.read_text())
    _replace(config_path(settings, spec.name), text, 0o600)
    accounts = account_set(spec.tree)
    keep = accounts_path(settings, spec.name)
    if accounts.accounts or keep.exists():
        chap_files.write_private(keep, chap_files.to_json(accounts), private_dir=False)
    path = env_path(settings, spec.name)
    _replace(path, render(spec), 0o644)
    return path


def written_port(settings: Settings, name: str) -> int | None:
    """SOCKET_OPTS of the env file the unit runs with now, if any."""
    try:
        lines = env_path(settings, name).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key == "SOCKET_OPTS" and value.isascii() and value.isdigit():
            return int(value)
    return None
