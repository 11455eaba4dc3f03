"""`tgtwatch render-env NAME`: validate one instance file and write what its unit reads."""

from __future__ import annotations

from pathlib import Path

from tgtwatch.backends.envfile import EnvFileError, write_spec, written_port
from tgtwatch.config import inventory
from tgtwatch.config.settings import Settings
from tgtwatch.daemon.state import StateFile
from tgtwatch.model.structs import InstanceSpec


def spec_for(settings: Settings, name: str) -> InstanceSpec:
    """The validated instance of instances_dir/NAME.conf, with every rule applied."""
    config = settings.instances_dir / f"{name}.conf"
    applied, _ = StateFile(settings.state_dir).load()
    desired = inventory.scan(settings, applied)
    problems = [p.report() for p in desired.problems if p.path == config]
    if problems:
        raise EnvFileError("; ".join(problems))
    for spec in desired.instances.values():
        if spec.config == config:
            return spec
    raise EnvFileError(f"{config}: no such instance file")


def write(settings: Settings, name: str, *, same_port: bool = False) -> Path:
    """Validate NAME's file and write its env file and snapshot; EnvFileError when invalid.

    With `same_port` (a reload) a port change is refused: the unit's ExecStop must drain
    the port the unit runs on, so a new port needs a restart.
    """
    spec = spec_for(settings, name)
    current = written_port(settings, name)
    if same_port and current is not None and current != spec.control_port:
        raise EnvFileError(
            f"{spec.config}: port changed from {current} to {spec.control_port}; "
            f"a reload cannot move it: restart tgtd@{name}"
        )
    return write_spec(settings, spec)
