"""Install the real tgtwatch into a system-test container: wheels built on the host, offline.

pip inside a fresh container may not reach the index, so the host builds every wheel
(tgtwatch and its dependencies; the container's Python is 3.11, the same minor) and the
container installs them with `--no-index`. Layout as the units expect: a venv at
/opt/tgtwatch, /usr/local/bin/tgtwatch -> /opt/tgtwatch/bin/tgtwatch, then
`tgtwatch install-units` (units, /etc/tgtwatch/tgtwatch.yaml, /etc/mytgt/conf.d).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from container import Container, ContainerError

REPO = Path(__file__).resolve().parents[2]
VENV = "/opt/tgtwatch"
WHEELS_INSIDE = "/var/tmp/tgtwatch-wheels"


def build_wheels(dest: Path, repo: Path = REPO) -> list[Path]:
    """`pip wheel REPO -w DEST` with the host venv's pip: tgtwatch plus its dependencies."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", str(repo), "-w", str(dest)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not any(w.name.startswith("tgtwatch-") for w in wheels):
        raise ContainerError(f"pip wheel failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wheels


def install_tgtwatch(box: Container, wheel_dir: Path | None = None) -> dict[str, float]:
    """Build (unless given) and install the wheels inside `box`; return the timings."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tgtwatch-wheels.") as tmp:
        source = wheel_dir or Path(tmp)
        if wheel_dir is None:
            build_wheels(source)
        timings["wheels_s"] = time.monotonic() - started
        box.copy_in(source, WHEELS_INSIDE)
    box.sh(
        f"""
        python3 -m venv {VENV}
        {VENV}/bin/pip install --quiet --no-index --no-cache-dir \
            --find-links {WHEELS_INSIDE} tgtwatch
        ln -sfn {VENV}/bin/tgtwatch /usr/local/bin/tgtwatch
        rm -rf {WHEELS_INSIDE}
        """,
        timeout=300,
    )
    box.run(["tgtwatch", "install-units"])
    timings["install_s"] = time.monotonic() - started
    return timings
