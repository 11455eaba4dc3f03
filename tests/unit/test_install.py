"""install-units: what lands where, and what it leaves alone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tgtwatch.backends import install

REPO_UNITS = Path(__file__).resolve().parents[2] / "units"


def test_installs_units_settings_and_dropin_dir(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    done = install.install(tmp_path, REPO_UNITS, daemon_reload=True, run=calls.append)
    for unit in install.UNITS:
        installed = tmp_path / "etc/systemd/system" / unit
        assert installed.read_bytes() == (REPO_UNITS / unit).read_bytes()
        assert installed.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "etc/tgtwatch/tgtwatch.yaml").read_text() == install.SETTINGS_TEMPLATE
    assert (tmp_path / "etc/mytgt/conf.d").stat().st_mode & 0o777 == 0o755
    assert calls == [["systemctl", "daemon-reload"]]
    assert done[-1] == "ran systemctl daemon-reload"


def test_keeps_existing_settings(tmp_path: Path) -> None:
    settings = tmp_path / "etc/tgtwatch/tgtwatch.yaml"
    settings.parent.mkdir(parents=True)
    settings.write_text("backend: direct\n")
    done = install.install(tmp_path, REPO_UNITS, daemon_reload=False)
    assert settings.read_text() == "backend: direct\n"
    assert f"kept {settings}" in done


def test_a_failed_daemon_reload_is_one_line(tmp_path: Path) -> None:
    def fail(argv: list[str]) -> object:
        raise subprocess.CalledProcessError(1, argv)

    with pytest.raises(install.InstallError, match="daemon-reload failed"):
        install.install(tmp_path, REPO_UNITS, daemon_reload=True, run=fail)


def test_units_source_prefers_the_installed_copy(tmp_path: Path) -> None:
    with pytest.raises(install.InstallError):
        install.units_source(prefix=tmp_path, here=tmp_path / "pkg/tgtwatch/backends/install.py")
    shared = tmp_path / "share/tgtwatch/units"
    shared.mkdir(parents=True)
    for unit in install.UNITS:
        (shared / unit).write_text("[Unit]\n")
    assert install.units_source(prefix=tmp_path) == shared


def test_units_source_finds_the_checkouts_units() -> None:
    # No installed copy under this prefix: the units beside the package's source tree.
    assert install.units_source(prefix=Path("/nonexistent")) == REPO_UNITS
