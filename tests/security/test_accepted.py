"""The closed language still says everything a real config needs: the sample and a file
using every documented key are accepted, and serve (a real initiator discovers and reads)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rel_harness import RelWorld, dh

from tests.every_key import DISCOVERY, TENANT, every_key_text

pytestmark = [pytest.mark.integration, pytest.mark.security]

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample-conf/etc/mytgt/conf.d"


def url(
    port: int, creds: tuple[str, str] | None = None, target: str = "", lun: int | None = None
) -> str:
    who = f"{creds[0]}%{creds[1]}@" if creds else ""
    tail = f"/{target}" + (f"/{lun}" if lun is not None else "") if target else "/"
    return f"iscsi://{who}127.0.0.1:{port}{tail}"


def discovered(address: str) -> list[str]:
    done = dh.run_tool(["iscsi-ls", address])
    assert done.returncode == 0, f"iscsi-ls {address}: {done.stdout}{done.stderr}"
    return sorted(
        line.split()[0].removeprefix("Target:")
        for line in done.stdout.splitlines()
        if line.startswith("Target:")
    )


def reads(address: str) -> bool:
    done = dh.run_tool(["iscsi-inq", address])
    return done.returncode == 0 and "Peripheral Device Type" in done.stdout


def test_the_sample_is_accepted_and_serves(world: RelWorld) -> None:
    expected: dict[int, list[str]] = {}
    for conf in sorted(SAMPLE.glob("*.conf")):
        text = conf.read_text()
        sample_port = re.search(r'SOCKET_OPTS="(\d+)"', text)
        assert sample_port is not None
        port = world.reserve_port()
        text = text.replace(sample_port.group(1), str(port))
        text = text.replace("/var/lib/tgtwatch/sample/", f"{world.backing_dir}/")
        for image in re.findall(rf"{re.escape(str(world.backing_dir))}/(\S+)", text):
            world.backing(image)
        world.move_in(conf.stem, text)
        expected[port] = sorted(re.findall(r"<target (\S+)>", text))
    ran = world.apply()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for port, targets in expected.items():
        assert discovered(url(port)) == targets
        for target in targets:
            assert reads(url(port, target=target, lun=1)), target


@pytest.mark.parametrize("engine", ["native", "tgt-admin"])
def test_a_file_with_every_documented_key_is_accepted_and_serves(
    world: RelWorld, engine: str
) -> None:
    world.write_settings(engine=engine)
    port = world.reserve_port()
    target = f"{dh.IQN_PREFIX}:every-key"
    stores = [world.backing(name) for name in ("a.img", "b.img", "c.img")]
    text = every_key_text(port, target, *(str(s) for s in stores))
    if engine == "native":
        # The native engine does no direct-store (a device's own identity): same LUN as a
        # backing-store. That it refuses one is test_native_engine_refuses_direct_store.
        direct = f"    direct-store {stores[2]}\n"
        assert direct in text
        text = text.replace(direct, f"    <backing-store {stores[2]}>\n    </backing-store>\n")
    world.move_in("every", text)
    check = world.tgtwatch("check")
    assert check.returncode == 0, check.stdout + check.stderr
    ran = world.apply()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "start every port" in ran.stdout and ": ok in" in ran.stdout, ran.stdout
    # discovery needs the discovery account; each LUN needs the target's account
    assert dh.run_tool(["iscsi-ls", url(port)]).returncode != 0
    assert discovered(url(port, DISCOVERY)) == [target]
    for lun in (1, 2, 5):
        assert reads(url(port, TENANT, target, lun)), lun
    assert not reads(url(port, ("tenant-a", "wrongsecret-1"), target, 1))
    shown = dh.g.TgtControl(port, dh.REAL).show_targets_text()
    assert f"Target 7: {target}" in shown  # controller_tid
    assert "tenant-a" in shown and "target-a (outgoing)" in shown
    assert (
        "127.0.0.1" in shown
        and "10.0.0.0/8" in shown
        and "iqn.2026-01.test.tgtwatch:initiator" in shown
    )
    for path in stores:
        assert str(path) in shown


def test_what_tgt_admin_is_given_is_the_rendering(world: RelWorld) -> None:
    world.write_settings(engine="tgt-admin")  # the native engine renders no snapshot
    port = world.reserve_port()
    conf = world.write_instance("plain", port)
    conf.write_text(conf.read_text() + "# a comment tgt-admin never sees\n")
    ran = world.apply()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    snapshot = world.state_dir / "snapshots" / f"{port}-plain.conf"
    text = snapshot.read_text()
    assert text.startswith("# Rendered by tgtwatch")
    assert "a comment" not in text and "SOCKET_OPTS" not in text and "lun 1" in text
    assert snapshot.stat().st_mode & 0o077 == 0


def test_native_engine_refuses_direct_store(world: RelWorld) -> None:
    port = world.reserve_port()
    store = world.backing("d.img")
    text = world.instance_text("direct", port).replace(
        "</target>", f"    direct-store {store}\n</target>", 1
    )
    world.move_in("direct", text)
    check = world.tgtwatch("check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"direct-store {store}: needs `engine: tgt-admin`" in check.stdout, check.stdout
    assert "[rule: grammar]" in check.stdout
    world.write_settings(engine="tgt-admin")
    assert world.tgtwatch("check").returncode == 0
