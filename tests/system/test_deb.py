"""The Debian package under a real systemd: apt install, serve, `tgtwatch wait`, apt purge.

scripts/build-deb builds the .deb from this tree on the host; a container of its own (the
rootfs holds tgt and the python3-* packages the .deb depends on: it has no network)
installs it with apt, the way an operator does. The initiator is the host's libiscsi.
The two tests share the container, in file order: install and serve, then purge.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from container import Container, ContainerError, wait_until

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
DEB_INSIDE = "/var/tmp/tgtwatch.deb"
CONF_D = "/etc/mytgt/conf.d"
IMG_DIR = "/srv/tgtwatch-deb"  # under /srv: a default backing-store root
IQN = "iqn.2026-11.test.tgtwatch.deb"
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tgtwatch_VERSION_all.deb, built from this tree (scripts/build-deb: lintian included)."""
    out = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    done = subprocess.run(
        [str(REPO / "scripts/build-deb"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"scripts/build-deb failed:\n{done.stderr[-3000:]}"
    TIMINGS["build_s"] = time.monotonic() - started
    (built,) = out.glob("tgtwatch_*_all.deb")
    return built


@pytest.fixture(scope="module")
def box(rootfs: Path, iscsi_ls: str, deb: Path) -> Iterator[Container]:
    container = Container(rootfs)
    try:
        container.start()
        container.copy_in(deb, DEB_INSIDE)
        container.run(["mkdir", "-p", IMG_DIR])
        yield container
    except ContainerError as exc:
        pytest.fail(f"container setup failed: {exc}\n{container.console_tail()}")
    finally:
        if container.nspawn_pid is not None:
            container.systemctl("stop", "tgtwatch.service", check=False)
            container.systemctl("stop", "tgtd@*.service", check=False)
        container.cleanup()
        if TIMINGS:
            print("\ndeb timings: " + ", ".join(f"{k} {v:.2f}" for k, v in TIMINGS.items()))


def host_lists(port: int, iqn: str) -> bool:
    done = subprocess.run(
        ["iscsi-ls", f"iscsi://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0 and f"Target:{iqn} " in done.stdout


def unit_names(box: Container, *patterns: str) -> list[str]:
    """Units systemd knows (loaded, or as unit files) matching the patterns (none: exit 1)."""
    listed = ("--plain", "--no-legend", *patterns)
    loaded = box.systemctl("list-units", "--all", *listed, check=False).stdout
    files = box.systemctl("list-unit-files", *listed, check=False).stdout
    return [line.split()[0] for line in (loaded + files).splitlines() if line.strip()]


def test_apt_install_enable_drop_wait_and_an_initiator_lists_it(
    box: Container, free_port: int
) -> None:
    started = time.monotonic()
    installed = box.run(["apt-get", "install", "-y", DEB_INSIDE], env=APT_ENV, timeout=300)
    TIMINGS["apt_install_s"] = time.monotonic() - started
    assert "tgtwatch" in installed.stdout
    # Policy: the daemon's unit enabled by the package; the template left to tgtwatch.
    assert box.systemctl("is-enabled", "tgtwatch.service").stdout.strip() == "enabled"
    assert box.systemctl("is-enabled", "tgtd@.service", check=False).stdout.strip() in (
        "indirect",
        "disabled",
    )
    conffiles = box.run(["dpkg-query", "-W", "-f=${Conffiles}", "tgtwatch"]).stdout
    assert "/etc/tgtwatch/tgtwatch.yaml" in conffiles
    assert box.run(["stat", "-c", "%U:%G %a", CONF_D]).stdout.strip() == "root:root 755"
    for page in ("man8/tgtwatch.8.gz", "man5/tgtwatch.yaml.5.gz", "man5/tgtwatch-instance.5.gz"):
        box.run(["test", "-s", f"/usr/share/man/{page}"])
    unit = box.read_file("/lib/systemd/system/tgtwatch.service").decode()
    assert "ExecStart=/usr/bin/tgtwatch run" in unit and "/usr/local" not in unit

    started = time.monotonic()
    box.systemctl("enable", "--now", "tgtwatch.service")
    box.systemctl("restart", "tgtwatch.service")  # started by the package, maybe failed
    TIMINGS["start_s"] = time.monotonic() - started
    assert box.systemctl("is-active", "tgtwatch.service").stdout.strip() == "active"

    port, name = free_port, "debvol"
    image = f"{IMG_DIR}/{name}.img"
    box.run(["truncate", "-s", "8M", image])
    text = (
        f'SOCKET_OPTS="{port}"\nPORTAL_OPTS="0.0.0.0:{port}"\n'
        f"<target {IQN}:{name}>\n    backing-store {image}\n    initiator-address ALL\n"
        "</target>\n"
    )
    started = time.monotonic()
    box.write_file(f"{CONF_D}/.{name}.conf.new", text)
    box.run(["mv", f"{CONF_D}/.{name}.conf.new", f"{CONF_D}/{name}.conf"])
    waited = box.run(["tgtwatch", "wait", name, "--timeout", "60"], check=False, timeout=90)
    TIMINGS["drop_to_ready_s"] = time.monotonic() - started
    assert waited.returncode == 0, f"{waited.stdout}{waited.stderr}\n{box.journal('-b')[-3000:]}"
    assert waited.stdout.startswith(f"{name}: ready: port {port}, pid ")
    # Ready means an initiator finds it now, with no retry.
    assert host_lists(port, f"{IQN}:{name}")
    assert box.systemctl("is-active", f"tgtd@{name}.service").stdout.strip() == "active"


def test_apt_purge_leaves_no_unit_no_tgtd_no_state(box: Container) -> None:
    if box.run(["dpkg-query", "-W", "tgtwatch"], check=False).returncode != 0:
        pytest.skip("runs after the install test (same container)")
    served = [p for p in range(3400, 3500) if host_lists(p, f"{IQN}:debvol")]
    assert served, "the install test left nothing serving"
    started = time.monotonic()
    box.run(["apt-get", "purge", "-y", "tgtwatch"], env=APT_ENV, timeout=600)
    TIMINGS["apt_purge_s"] = time.monotonic() - started

    assert box.run(["pgrep", "-a", "-x", "tgtd"], check=False).stdout == ""
    assert unit_names(box, "tgtwatch*", "tgtd@*") == []
    links = ["find", "/etc/systemd/system", "-name", "tgtwatch*", "-o", "-name", "tgtd@*"]
    assert box.run(links).stdout == ""  # no enablement left (tgt.service's mask is the rootfs')
    for gone in ("/run/tgtwatch", "/etc/tgtwatch", "/usr/bin/tgtwatch"):
        assert box.run(["test", "-e", gone], check=False).returncode != 0, gone
    # The operator's instance file is theirs: it stays, and so does its directory.
    assert box.run(["ls", CONF_D]).stdout.split() == ["debvol.conf"]
    wait_until(lambda: not host_lists(served[0], f"{IQN}:debvol"), timeout=10, what="port free")
