"""The env file and config snapshot tgtd@NAME.service reads, and the direct backend's snapshot."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from builders import instance_text, write

from tgtwatch.backends import envfile
from tgtwatch.backends.direct import write_snapshot
from tgtwatch.cli import render_env
from tgtwatch.config.settings import Settings
from tgtwatch.model.structs import InstanceKind, InstanceSpec


def root_owned(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings, default_instance=dataclasses.replace(settings.default_instance, manage=False)
    )


@pytest.fixture
def tree(settings: Settings) -> Settings:
    if os.getuid() != 0:
        pytest.skip("the trust policy wants root-owned files")
    return root_owned(settings)


def test_render_has_only_validated_values() -> None:
    spec = InstanceSpec("v", InstanceKind.DROPIN, 3263, "[::1]:3263", 3263, Path("/x/v.conf"), "")
    assert envfile.render(spec).splitlines()[1:] == ["SOCKET_OPTS=3263", "PORTAL_OPTS=[::1]:3263"]


def test_write_renders_env_and_an_include_free_snapshot(tree: Settings) -> None:
    write(
        tree.instances_dir / "shared.inc",
        "<target iqn.2026-01.x:b>\n backing-store /srv/b\n</target>\n",
    )
    write(
        tree.instances_dir / "v.conf",
        instance_text(3263, "iqn.2026-01.x:a") + "include shared.inc\n",
    )
    env = render_env.write(tree, "v")
    assert env == tree.state_dir / "env/v.env"
    assert "SOCKET_OPTS=3263\n" in env.read_text()
    snapshot = envfile.config_path(tree, "v")
    text = snapshot.read_text()
    assert (
        "include" not in text
        and "<target iqn.2026-01.x:b>" in text
        and "<target iqn.2026-01.x:a>" in text
    )
    assert snapshot.stat().st_mode & 0o777 == 0o600


def test_a_bad_file_writes_nothing(tree: Settings) -> None:
    write(tree.instances_dir / "v.conf", 'SOCKET_OPTS="3263"\nPORTAL_OPTS="0.0.0.0:3264"\n')
    with pytest.raises(envfile.EnvFileError, match="disagree"):
        render_env.write(tree, "v")
    assert not envfile.env_path(tree, "v").exists()
    with pytest.raises(envfile.EnvFileError, match="no such instance file"):
        render_env.write(tree, "nope")


def test_a_reload_refuses_a_port_change(tree: Settings) -> None:
    write(tree.instances_dir / "v.conf", instance_text(3263, "iqn.2026-01.x:a"))
    render_env.write(tree, "v")
    write(tree.instances_dir / "v.conf", instance_text(3264, "iqn.2026-01.x:a"))
    with pytest.raises(envfile.EnvFileError, match="port changed from 3263 to 3264"):
        render_env.write(tree, "v", same_port=True)
    assert "SOCKET_OPTS=3263\n" in envfile.env_path(tree, "v").read_text()
    render_env.write(tree, "v")  # a (re)start may move it
    assert "SOCKET_OPTS=3264\n" in envfile.env_path(tree, "v").read_text()


def test_the_direct_backend_hands_tgt_admin_a_private_snapshot(tmp_path: Path) -> None:
    spec = InstanceSpec(
        "v",
        InstanceKind.DROPIN,
        3263,
        "0.0.0.0:3263",
        3263,
        tmp_path / "v.conf",
        "",
        text="<target iqn.2026-01.x:a>\nbacking-store /srv/a\n</target>\n",
    )
    path = write_snapshot(tmp_path / "snapshots", spec)
    assert path.read_text() == spec.text
    assert (tmp_path / "snapshots").stat().st_mode & 0o777 == 0o700
    # A spec built without text (by hand, in tests) is its own file.
    bare = dataclasses.replace(spec, text="")
    assert write_snapshot(tmp_path / "snapshots", bare) == spec.config


@pytest.mark.parametrize(
    ("text", "port"),
    [("SOCKET_OPTS=3261\n", 3261), ("SOCKET_OPTS=²\n", None), ("PORTAL_OPTS=1\n", None)],
)
def test_the_written_port_is_ascii_digits_or_nothing(
    tmp_path: Path, text: str, port: int | None
) -> None:
    settings = Settings(state_dir=tmp_path)
    write(envfile.env_path(settings, "a"), text)
    assert envfile.written_port(settings, "a") == port
    assert envfile.written_port(settings, "missing") is None
