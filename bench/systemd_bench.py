# ruff: noqa: PLC0415
# ruff: noqa: E501
"""Under a real systemd (nspawn container, tests/system harness): the original template
unit (copied from the origin write-up, `ExecStartPost=/bin/sleep 5` included) started with
`systemctl start`, vs tgtwatch's systemd backend (tgtwatch.service + tgtd@.service)
reacting to a file renamed into /etc/mytgt/conf.d. Interleaved, initiator on the host.

The systemd backend's own floor is tgtd@.service started by hand: its env file and config
snapshot written as tgtwatch writes them, then `systemctl start`; beside it the same unit
with its sandboxing lines removed, which shows what the sandbox costs per start.

The original unit reads /etc/mytgt-orig/%i.conf (not conf.d, so the running tgtwatch does
not pick those files up); everything else is the write-up's unit, line for line.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    REPO,
    gone,
    inquiry,
    instance_text,
    iqn,
    lists,
    log,
    refuses,
    summary,
    tgtd_pid,
    wait_until,
)

sys.path.insert(0, str(REPO / "tests" / "system"))

ORIG_DIR = "/etc/mytgt-orig"
CONF_D = "/etc/mytgt/conf.d"
IMG = "/var/tmp/twbench"

# The template unit of origin/000_7c08a66b4621face.txt, with its PDF line breaks joined.
ORIGINAL_UNIT = """\
[Unit]
Description=tgtd iSCSI target daemon
After=network.target

[Service]
#EnvironmentFile=/etc/sysconfig/tgtd
EnvironmentFile=/etc/mytgt-orig/%i.conf
Environment="TGTD_CONFIG=/etc/mytgt-orig/%i.conf"

ExecStart=/usr/sbin/tgtd -f $TGTD_OPTS --iscsi portal=${PORTAL_OPTS} -C ${SOCKET_OPTS}
# see bz 848942. workaround for a race for now.
ExecStartPost=/bin/sleep 5
ExecStartPost=/usr/sbin/tgtadm --control-port ${SOCKET_OPTS} --op update --mode sys --name State -v offline
ExecStartPost=/usr/sbin/tgt-admin -C ${SOCKET_OPTS} -e -c $TGTD_CONFIG
ExecStartPost=/usr/sbin/tgtadm --control-port ${SOCKET_OPTS} --op update --mode sys --name State -v ready

ExecReload=/usr/sbin/tgt-admin -C ${SOCKET_OPTS} --update ALL -c $TGTD_CONFIG

ExecStop=/usr/sbin/tgtadm --control-port ${SOCKET_OPTS} --op update --mode sys --name State -v offline
ExecStop=/usr/sbin/tgt-admin -C ${SOCKET_OPTS} --update ALL -c /dev/null
ExecStop=/usr/sbin/tgtadm --control-port ${SOCKET_OPTS} --op delete --mode system

[Install]
WantedBy=multi-user.target
"""


class Inside:
    """Host-side paths into the container's root (atomic renames from the host)."""

    def __init__(self, pid1: int) -> None:
        self.root = Path(f"/proc/{pid1}/root")

    def p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def drop(self, path: str, text: str) -> None:
        staging = self.p("/etc/mytgt/staging")
        staging.mkdir(parents=True, exist_ok=True)
        tmp = staging / (Path(path).name + ".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        tmp.replace(self.p(path))


def unsandboxed(unit: str) -> str:
    """tgtd@.service without its sandboxing block (from NoNewPrivileges= to [Install])."""
    return unit[: unit.index("NoNewPrivileges=")] + unit[unit.index("[Install]") :]


def _text(name: str, port: int, luns: int) -> str:
    return instance_text(name, port, [Path(f"{IMG}/{name}-{i}.img") for i in range(1, luns + 1)])


def _images(c: Any, names: list[str]) -> None:
    c.sh(
        f"mkdir -p {IMG}; cd {IMG}; for n in {' '.join(names)}; do "
        "truncate -s 1M $n-1.img $n-2.img; done"
    )


def _lun2(c: Any, port: int, name: str) -> bool:
    """LUN 2 is there: first on tgtd's control socket in the container (no iSCSI session),
    then iscsi-inq from the host. A login in the middle of a reload makes tgt-admin skip
    the busy target (lifecycle.lun2 has the same guard)."""
    shown = c.run(["tgtadm", "-C", str(port), "--op", "show", "--mode", "target"], check=False)
    return "LUN: 2" in shown.stdout and inquiry(port, iqn(name), 2)


def _original(c: Any, ins: Inside, name: str, port: int) -> dict[str, float]:
    ins.drop(f"{ORIG_DIR}/{name}.conf", _text(name, port, 1))
    unit = f"tgtd-orig@{name}.service"
    t0 = time.monotonic()
    c.systemctl("start", unit)
    t1 = wait_until(lambda: lists(port, iqn(name)), 60, f"orig {name} listed")
    pid = tgtd_pid(port)
    ins.drop(f"{ORIG_DIR}/{name}.conf", _text(name, port, 2))
    t2 = time.monotonic()
    c.systemctl("reload", unit)
    t3 = wait_until(lambda: _lun2(c, port, name), 60, f"orig {name} LUN 2")
    t4 = time.monotonic()
    c.systemctl("stop", unit)
    assert pid is not None
    t5 = wait_until(lambda: refuses(port) and gone(pid), 60, f"orig {name} stopped")
    return {"provision": t1 - t0, "reload": t3 - t2, "drain": t5 - t4}


def _by_hand(c: Any, template: str, name: str, port: int) -> dict[str, float]:
    """What tgtwatch does for a start, by hand: render the unit's inputs, `systemctl start`."""
    env = "/run/tgtwatch/env"
    c.write_file(f"{env}/{name}.conf", _text(name, port, 1), mode=0o600)
    c.write_file(f"{env}/{name}.env", f"SOCKET_OPTS={port}\nPORTAL_OPTS=127.0.0.1:{port}\n")
    c.write_file(f"{env}/{name}.fresh", "", mode=0o600)  # ExecStartPre skips its check
    unit = f"{template}@{name}.service"
    t0 = time.monotonic()
    c.systemctl("start", unit)
    t1 = wait_until(lambda: lists(port, iqn(name)), 60, f"{unit} listed")
    c.systemctl("stop", unit)
    return {"provision": t1 - t0}


def _backend(c: Any, ins: Inside, name: str, port: int) -> dict[str, float]:
    path = f"{CONF_D}/{name}.conf"
    t0 = time.monotonic()
    ins.drop(path, _text(name, port, 1))
    t1 = wait_until(lambda: lists(port, iqn(name)), 60, f"systemd {name} listed")
    pid = tgtd_pid(port)
    t2 = time.monotonic()
    ins.drop(path, _text(name, port, 2))
    t3 = wait_until(lambda: _lun2(c, port, name), 60, f"systemd {name} LUN 2")
    t4 = time.monotonic()
    ins.p(path).unlink()
    assert pid is not None
    t5 = wait_until(lambda: refuses(port) and gone(pid), 60, f"systemd {name} stopped")
    return {"provision": t1 - t0, "reload": t3 - t2, "drain": t5 - t4}


def run(runs: int, ports: list[int]) -> dict[str, Any]:
    from container import Container, ensure_rootfs
    from install import install_tgtwatch

    out: dict[str, Any] = {"runs": runs}
    t = time.monotonic()
    rootfs = ensure_rootfs(log=log)
    c = Container(rootfs, name=f"tgtwatch-bench-{os.getpid()}")
    raw: dict[str, dict[str, list[float]]] = {
        w: {"provision": [], "reload": [], "drain": []} for w in ("original", "systemd")
    }
    raw |= {w: {"provision": []} for w in ("unit_by_hand", "unsandboxed_by_hand")}
    try:
        c.start()
        out["install"] = install_tgtwatch(c)
        out["setup_s"] = time.monotonic() - t
        log(f"container up and tgtwatch installed in {out['setup_s']:.1f} s")
        ins = Inside(c.pid1)
        c.write_file("/etc/systemd/system/tgtd-orig@.service", ORIGINAL_UNIT)
        unit = (REPO / "units" / "tgtd@.service").read_text()
        c.write_file("/etc/systemd/system/tgtd-bare@.service", unsandboxed(unit))
        c.run(["mkdir", "-p", ORIG_DIR, CONF_D])
        c.systemctl("daemon-reload")
        names = ["swarm"] + [f"{w}{i}" for w in "oshb" for i in range(runs)]
        _images(c, names)
        c.systemctl("start", "tgtwatch.service")
        o_port, s_port, h_port = ports
        _backend(c, ins, "swarm", s_port)  # warm-up (first tgtd@ start loads the unit)
        contenders = {
            "original": lambda i: _original(c, ins, f"o{i}", o_port),
            "systemd": lambda i: _backend(c, ins, f"s{i}", s_port),
            "unit_by_hand": lambda i: _by_hand(c, "tgtd", f"h{i}", h_port),
            "unsandboxed_by_hand": lambda i: _by_hand(c, "tgtd-bare", f"b{i}", h_port),
        }
        for i in range(runs):
            order = list(contenders) if i % 2 == 0 else list(reversed(contenders))
            for who in order:
                for k, v in contenders[who](i).items():
                    raw[who][k].append(v)
            log(
                f"systemd run {i + 1}/{runs}: original {raw['original']['provision'][-1]:.2f} s,"
                f" tgtwatch systemd backend {raw['systemd']['provision'][-1]:.3f} s,"
                f" unit by hand {raw['unit_by_hand']['provision'][-1]:.3f} s,"
                f" unsandboxed {raw['unsandboxed_by_hand']['provision'][-1]:.3f} s"
            )
    finally:
        with contextlib.suppress(Exception):
            c.systemctl("stop", "tgtwatch.service", check=False)
            c.systemctl(
                "stop", "tgtd@*.service", "tgtd-orig@*.service", "tgtd-bare@*.service", check=False
            )
        c.cleanup()
    for who, d in raw.items():
        out[who] = {k: summary(v) for k, v in d.items()}
    return out
