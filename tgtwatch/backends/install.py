"""`tgtwatch install-units`: units, a default settings file and the drop-in directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

UNITS = ("tgtd@.service", "tgtwatch.service")
SETTINGS_TEMPLATE = """\
# tgtwatch settings (every key optional; see the README for all of them).
instances_dir: /etc/mytgt/conf.d
tgt_dir: /etc/tgt
backend: auto
"""


class InstallError(Exception):
    """One line for the operator."""


def units_source(prefix: Path = Path(sys.prefix), here: Path = Path(__file__)) -> Path:
    """Where the unit files are: installed with the package, or the source checkout's."""
    for candidate in (prefix / "share/tgtwatch/units", here.resolve().parents[2] / "units"):
        if all((candidate / unit).is_file() for unit in UNITS):
            return candidate
    raise InstallError("the unit files are not installed with this tgtwatch")


def install(
    root: Path,
    source: Path,
    *,
    daemon_reload: bool,
    run: Callable[[list[str]], object] = lambda argv: subprocess.run(argv, check=True),
) -> list[str]:
    """Copy the units, write the settings if missing, create the drop-in directory."""
    done: list[str] = []
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True, exist_ok=True)
    for unit in UNITS:
        shutil.copyfile(source / unit, unit_dir / unit)
        (unit_dir / unit).chmod(0o644)
        done.append(f"installed {unit_dir / unit}")
    settings = root / "etc/tgtwatch/tgtwatch.yaml"
    if settings.exists():
        done.append(f"kept {settings}")
    else:
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(SETTINGS_TEMPLATE)
        done.append(f"wrote {settings}")
    conf_d = root / "etc/mytgt/conf.d"
    conf_d.mkdir(parents=True, exist_ok=True, mode=0o755)
    conf_d.chmod(0o755)
    done.append(f"created {conf_d}")
    if daemon_reload:
        try:
            run(["systemctl", "daemon-reload"])
        except (OSError, subprocess.CalledProcessError) as exc:
            raise InstallError(f"systemctl daemon-reload failed: {exc}") from None
        done.append("ran systemctl daemon-reload")
    return done
