"""Smoke tests of the real-systemd harness: boot, systemctl, Debian's tgtd, our unit files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from container import PROPAGATE_DIR, Container, port_is_free, wait_until

pytestmark = pytest.mark.system

UNITS = Path(__file__).resolve().parents[2] / "units"

# Stand-in for the parts of the tgtwatch CLI that units/tgtd@.service calls, until the
# real one can be installed in the container. Same contract: render-env writes only
# validated SOCKET_OPTS/PORTAL_OPTS and the checked config tgt-admin reads; load = the
# tgt-admin engine on it; drain = offline, wait for no sessions, remove, delete.
TGTWATCH_STANDIN = r"""#!/bin/sh
set -eu
cmd=$1; shift
case "$cmd" in
render-env)
    inst=$2
    conf=/etc/mytgt/conf.d/$inst.conf
    port=$(sed -n 's/^SOCKET_OPTS="\{0,1\}\([0-9]\{1,5\}\)"\{0,1\}$/\1/p' "$conf" | tail -n 1)
    portal=$(sed -n 's/^PORTAL_OPTS="\{0,1\}\([0-9.]*:[0-9]\{1,5\}\)"\{0,1\}$/\1/p' "$conf" \
        | tail -n 1)
    [ -n "$port" ] && [ -n "$portal" ] || { echo "$conf: bad SOCKET_OPTS/PORTAL_OPTS" >&2; exit 1; }
    mkdir -p /run/tgtwatch/env
    printf 'SOCKET_OPTS=%s\nPORTAL_OPTS=%s\n' "$port" "$portal" > "/run/tgtwatch/env/$inst.env.new"
    mv "/run/tgtwatch/env/$inst.env.new" "/run/tgtwatch/env/$inst.env"
    install -m 600 "$conf" "/run/tgtwatch/env/$inst.conf"
    ;;
load)
    inst=$2
    port=$(sed -n 's/^SOCKET_OPTS=//p' "/run/tgtwatch/env/$inst.env")
    if [ "${3:-}" = --update ]; then
        exec tgt-admin -C "$port" --update ALL -c "/run/tgtwatch/env/$inst.conf"
    fi
    exec tgt-admin -C "$port" -e -c "/run/tgtwatch/env/$inst.conf"
    ;;
drain)
    port=$2
    tgtadm -C "$port" --op update --mode sys --name State -v offline
    while tgtadm -C "$port" --op show --mode target | grep -q 'I_T nexus:'; do sleep 0.2; done
    tgt-admin -C "$port" --update ALL -c /dev/null
    tgtadm -C "$port" --op delete --mode system
    ;;
run)
    exec /usr/bin/python3 -c 'import os, signal, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"]); s.send(b"READY=1")
signal.sigwait({signal.SIGTERM})'
    ;;
*) exit 2 ;;
esac
"""


def instance_conf(port: int, iqn: str, backing: str) -> str:
    return (
        f'SOCKET_OPTS="{port}"\nPORTAL_OPTS="0.0.0.0:{port}"\n'
        f"<target {iqn}>\n    backing-store {backing}\n</target>\n"
    )


def host_sees_target(iscsi_ls: str, port: int, iqn: str) -> bool:
    done = subprocess.run(
        [iscsi_ls, f"iscsi://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0 and f"Target:{iqn} " in done.stdout


def test_boots_to_running(container: Container) -> None:
    assert container.boot_state == "running", container.systemctl("--failed").stdout
    assert container.run(["systemctl", "is-system-running"]).stdout.strip() == "running"
    assert container.read_file("/proc/1/comm").strip() == b"systemd"
    assert container.timings["boot_s"] < 30, container.timings


def test_systemctl_and_files(container: Container) -> None:
    container.write_file("/etc/smoke/hello.txt", "hi\n", mode=0o600)
    done = container.run(
        ["systemd-run", "--wait", "--quiet", "--pipe", "cat", "/etc/smoke/hello.txt"]
    )
    assert done.stdout == "hi\n"
    assert container.run(["stat", "-c", "%a %U", "/etc/smoke/hello.txt"]).stdout.split() == [
        "600",
        "root",
    ]
    assert "tgt.service" in container.systemctl("list-unit-files", "--state=masked").stdout


def test_debian_tgtd_serves_the_host_initiator(
    container: Container, free_port: int, iscsi_ls: str
) -> None:
    port, iqn = free_port, "iqn.2026-11.test:smoke"
    unit = f"smoke-tgtd-{port}"
    container.sh(f"truncate -s 16M /var/tmp/smoke-{port}.img")
    container.write_file(
        f"/root/smoke-{port}.conf", instance_conf(port, iqn, f"/var/tmp/smoke-{port}.img")
    )
    # Type=notify: the start only returns once Debian's tgtd sent READY=1.
    container.run(
        [
            "systemd-run",
            f"--unit={unit}",
            "--property=Type=notify",
            "/usr/sbin/tgtd",
            "-f",
            "--iscsi",
            f"portal=0.0.0.0:{port}",
            "-C",
            str(port),
        ]
    )
    try:
        container.run(["tgt-admin", "-C", str(port), "-e", "-c", f"/root/smoke-{port}.conf"])
        assert host_sees_target(iscsi_ls, port, iqn)
    finally:
        # tgtd ignores SIGTERM and only exits on `delete system` once it has no targets.
        container.run(["tgt-admin", "-C", str(port), "--update", "ALL", "-c", "/dev/null"])
        container.run(["tgtadm", "-C", str(port), "--op", "delete", "--mode", "system"])
        wait_until(
            lambda: (
                container.systemctl("is-active", unit, check=False).stdout.strip()
                in ("inactive", "failed")
            ),
            timeout=30,
            what=f"{unit} to exit",
        )
    assert port_is_free(port)


def test_unit_files_verify_and_rate(container: Container) -> None:
    container.write_file("/usr/local/bin/tgtwatch", TGTWATCH_STANDIN, mode=0o755)
    for name in ("tgtd@.service", "tgtwatch.service"):
        container.copy_in(UNITS / name, f"/etc/systemd/system/{name}")
    container.systemctl("daemon-reload")
    for unit in ("tgtd@smoke.service", "tgtwatch.service"):
        done = container.run(["systemd-analyze", "verify", "--man=no", unit], check=False)
        assert done.returncode == 0, done.stderr
    for unit, limit in (("tgtd@smoke.service", 69), ("tgtwatch.service", 49)):
        done = container.run(
            ["systemd-analyze", "security", f"--threshold={limit}", "--no-pager", unit], check=False
        )
        assert done.returncode == 0, done.stdout[-600:]


def test_tgtd_template_lifecycle(container: Container, free_port: int, iscsi_ls: str) -> None:
    port, iqn = free_port, "iqn.2026-11.test:unit"
    name = f"smoke{port}"
    container.write_file("/usr/local/bin/tgtwatch", TGTWATCH_STANDIN, mode=0o755)
    container.copy_in(UNITS / "tgtd@.service", "/etc/systemd/system/tgtd@.service")
    container.systemctl("daemon-reload")
    container.sh(f"truncate -s 16M /var/tmp/{name}.img")
    container.write_file(
        f"/etc/mytgt/conf.d/{name}.conf", instance_conf(port, iqn, f"/var/tmp/{name}.img"), 0o600
    )
    unit = f"tgtd@{name}.service"
    try:
        container.systemctl("start", unit)
        # The env file written by ExecStartPre reached ExecStart's command line.
        cmdline = container.run(["systemctl", "show", "-p", "MainPID", "--value", unit])
        argv = container.read_file(f"/proc/{cmdline.stdout.strip()}/cmdline").split(b"\0")
        assert f"portal=0.0.0.0:{port}".encode() in argv
        assert host_sees_target(iscsi_ls, port, iqn)
        state = container.run(["tgtadm", "-C", str(port), "--op", "show", "--mode", "sys"]).stdout
        assert "State: ready" in state
        container.systemctl("reload", unit)
        assert host_sees_target(iscsi_ls, port, iqn)
    finally:
        container.systemctl("stop", unit, check=False)
    assert container.systemctl("show", "-p", "Result", "--value", unit).stdout.strip() == "success"
    assert port_is_free(port)


def test_lifecycle_leaves_nothing_behind(rootfs: Path) -> None:
    mounts_before = Path("/proc/self/mountinfo").read_text()
    box = Container(rootfs)
    try:
        box.start()
        box.write_file("/etc/leak-check", "x")
        nspawn, pid1, cgroups = box.nspawn_pid, box.pid1, box.cgroup_dirs
        assert nspawn is not None and cgroups
        box.stop(timeout=60)
    finally:
        box.cleanup()
    assert box.timings["shutdown_s"] < 30, box.timings
    assert not Path(f"/proc/{pid1}").exists()
    assert not Path(f"/proc/{nspawn}").exists()
    assert not any(d.exists() for d in cgroups)
    assert Path("/proc/self/mountinfo").read_text() == mounts_before
    assert not (rootfs / "etc/leak-check").exists()
    assert not box.workdir.exists()
    assert not (PROPAGATE_DIR / box.name).exists()
