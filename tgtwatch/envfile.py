"""The environment file tgtd@NAME.service reads: only values tgtwatch validated, rendered by us."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tgtwatch import inventory
from tgtwatch.settings import Settings
from tgtwatch.state import StateFile
from tgtwatch.structs import InstanceSpec

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


def spec_for(settings: Settings, name: str) -> InstanceSpec:
    """The validated instance of instances_dir/NAME.conf, with every rule applied."""
    config = settings.instances_dir / f"{name}.conf"
    applied, _ = StateFile(settings.state_dir).load()
    desired = inventory.scan(settings, applied)
    problems = [str(p) for p in desired.problems if p.path == config]
    if problems:
        raise EnvFileError("; ".join(problems))
    for spec in desired.instances.values():
        if spec.config == config:
            return spec
    raise EnvFileError(f"{config}: no such instance file")


def write(settings: Settings, name: str) -> Path:
    """Validate NAME's file and write its env file atomically; EnvFileError when invalid."""
    spec = spec_for(settings, name)
    path = env_path(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(render(spec))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
