"""The real tgtwatch under a real systemd: both units, the systemd backend, install-units.

One container for this module, with tgtwatch installed the way an operator does it (a venv
at /opt/tgtwatch from wheels, /usr/local/bin/tgtwatch, `tgtwatch install-units`) and the
settings `install-units` writes (backend: auto, so systemd). tgt.service is masked in the
rootfs, so the default instance never runs. Every initiator is the HOST's libiscsi.
The tests share the running tgtwatch and build on each other's instances, in file order;
each one also starts tgtwatch itself when it needs it, so any one of them runs alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from container import Container, ContainerError, port_is_free, wait_until
from install import install_tgtwatch

pytestmark = pytest.mark.system

CONF_D = "/etc/mytgt/conf.d"
IMG_DIR = "/srv/tgtwatch-systest"  # under /srv: a default backing-store root
IQN = "iqn.2026-11.test.tgtwatch"
# Every field DESIGN.md promises in an audit record.
AUDIT_FIELDS = (
    "TGTWATCH_ACTION",
    "TGTWATCH_INSTANCE",
    "TGTWATCH_PORT",
    "TGTWATCH_CONFIG",
    "TGTWATCH_SHA256",
    "TGTWATCH_RESULT",
    "TGTWATCH_DURATION_MS",
)
SAMPLE = ("alpha", "beta")
PORTS = range(3400, 3500)  # ours on this shared host network; see conftest.py
TIMINGS: dict[str, float] = {}


# --------------------------------------------------------------------------- helpers


class PortPool:
    """Hands out ports in 3400-3499 that are free on the host and not handed out before."""

    def __init__(self) -> None:
        self.given: set[int] = set()

    def take(self) -> int:
        for port in PORTS:
            if port not in self.given and port_is_free(port):
                self.given.add(port)
                return port
        raise ContainerError("no free port in 3400-3499")


class Box:
    """The container plus the instances the tests created in it (name -> port)."""

    def __init__(self, container: Container) -> None:
        self.c = container
        self.ports = PortPool()
        self.instances: dict[str, int] = {}

    def conf(self, name: str, port: int, luns: int = 1) -> str:
        """An instance file: one target, `luns` backing files (created here, 8 MiB each)."""
        lines = [f'SOCKET_OPTS="{port}"', f'PORTAL_OPTS="0.0.0.0:{port}"', f"<target {IQN}:{name}>"]
        for lun in range(1, luns + 1):
            image = f"{IMG_DIR}/{name}-{lun}.img"
            self.c.run(["truncate", "-s", "8M", image])
            lines.append(f"    backing-store {image}")
        lines += ["    initiator-address ALL", "</target>", ""]
        return "\n".join(lines)

    def drop(self, name: str, text: str) -> None:
        """Write NAME.conf atomically (a dotfile, which tgtwatch ignores, then a rename)."""
        tmp = f"{CONF_D}/.{name}.conf.tmp"
        self.c.write_file(tmp, text, mode=0o644)
        self.c.run(["mv", "-f", tmp, f"{CONF_D}/{name}.conf"])

    def remove(self, name: str) -> None:
        self.c.run(["rm", "-f", f"{CONF_D}/{name}.conf"])

    def show(self, unit: str, prop: str) -> str:
        return self.c.run(["systemctl", "show", "-p", prop, "--value", unit]).stdout.strip()

    def main_pid(self, unit: str) -> int:
        return int(self.show(unit, "MainPID") or 0)

    def active(self, unit: str) -> str:
        return self.show(unit, "ActiveState")

    def tgtd_units(self) -> dict[str, int]:
        """Every loaded tgtd@ unit that runs, with its MainPID."""
        out = self.c.run(
            ["systemctl", "list-units", "--plain", "--no-legend", "--state=active", "tgtd@*"]
        ).stdout
        units = [line.split()[0] for line in out.splitlines() if line.strip()]
        return {unit: self.main_pid(unit) for unit in units}

    def tgtd_pids_on(self, control_port: int) -> list[int]:
        """tgtd processes inside the container whose command line has `-C PORT`."""
        out = self.c.run(["pgrep", "-a", "-x", "tgtd"], check=False).stdout
        return [
            int(line.split()[0])
            for line in out.splitlines()
            if line.split()[-2:] == ["-C", str(control_port)]
        ]

    def records(self, *matches: str) -> list[dict[str, str]]:
        """Audit records: `journalctl -t tgtwatch MATCH... -o json`."""
        out = self.c.run(
            ["journalctl", "--no-pager", "-t", "tgtwatch", *matches, "-o", "json"], check=False
        ).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def start_tgtwatch(self) -> float:
        started = time.monotonic()
        self.c.systemctl("start", "tgtwatch.service")
        return time.monotonic() - started

    def wait_unit(self, unit: str, states: tuple[str, ...], timeout: float = 30) -> str:
        return wait_until(
            lambda: state if (state := self.active(unit)) in states else None,
            timeout=timeout,
            what=f"{unit} to be {'/'.join(states)}",
        )


def iscsi_ls(port: int) -> str | None:
    """The host initiator's discovery on 127.0.0.1:PORT; None when it cannot log in."""
    done = subprocess.run(
        ["iscsi-ls", f"iscsi://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout if done.returncode == 0 else None


def sees(port: int, iqn: str) -> bool:
    return f"Target:{iqn} " in (iscsi_ls(port) or "")


def inquiry(port: int, iqn: str, lun: int) -> bool:
    """iscsi-inq of one LUN answers (it is a real, online LUN)."""
    done = subprocess.run(
        ["iscsi-inq", f"iscsi://127.0.0.1:{port}/{iqn}/{lun}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0 and "DIRECT_ACCESS" in done.stdout


def brief(record: dict[str, str]) -> dict[str, str]:
    """An audit record without journald's own fields, for assertion messages."""
    return {k: v for k, v in record.items() if k.startswith("TGTWATCH_") or k == "MESSAGE"}


def exposure(output: str, unit: str) -> float:
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", output)
    assert found, output[-800:]
    return float(found.group(1))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def box(rootfs: Path, iscsi_ls: str) -> Iterator[Box]:
    """A container of our own (boot 0.3 s), with the real tgtwatch installed."""
    for tool in ("iscsi-inq", "iscsi-perf"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing on the host (apt-get install libiscsi-bin)")
    container = Container(rootfs)
    try:
        container.start()
        TIMINGS.update(install_tgtwatch(container))
        container.run(["mkdir", "-p", IMG_DIR])
        yield Box(container)
    except ContainerError as exc:
        pytest.fail(f"container setup failed: {exc}\n{container.console_tail()}")
    finally:
        # tgtd ignores SIGTERM: stop every instance the way an operator would (drain),
        # so poweroff has nothing left to wait for; cleanup() kills whatever remains.
        if container.pid1 is not None:
            container.systemctl("stop", "tgtwatch.service", check=False)
            container.systemctl("stop", "tgtd@*.service", check=False)
        container.cleanup()
        if TIMINGS:
            print(
                "\nsystem-test timings: " + json.dumps({k: round(v, 3) for k, v in TIMINGS.items()})
            )


@pytest.fixture(scope="module")
def sample(box: Box) -> dict[str, int]:
    """A sample tree: two instance files on free ports (written before tgtwatch starts)."""
    for name in SAMPLE:
        if name not in box.instances:
            port = box.ports.take()
            box.drop(name, box.conf(name, port))
            box.instances[name] = port
    return {name: box.instances[name] for name in SAMPLE}


# --------------------------------------------------------------------------- tests


def test_units_verify_with_the_real_tgtwatch(box: Box) -> None:
    """install-units put both units in place; verify resolves /usr/local/bin/tgtwatch."""
    link = box.c.run(["readlink", "-f", "/usr/local/bin/tgtwatch"]).stdout.strip()
    assert link == "/opt/tgtwatch/bin/tgtwatch"
    for path in ("tgtwatch.service", "tgtd@.service"):
        got = box.c.read_file(f"/etc/systemd/system/{path}")
        assert got == (Path(__file__).resolve().parents[2] / "units" / path).read_bytes()
    done = box.c.run(
        ["systemd-analyze", "verify", "--man=no", "tgtwatch.service", "tgtd@verify.service"],
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if "tgt" in line], done.stderr


def test_start_returns_after_ready_and_every_sample_answers(
    box: Box, sample: dict[str, int]
) -> None:
    """`systemctl start` returns only at READY=1, and READY=1 means the targets answer."""
    assert box.active("tgtwatch.service") == "inactive"
    TIMINGS["systemctl_start_s"] = box.start_tgtwatch()
    # No polling: right after `systemctl start` returned, every target must already answer.
    for name, port in sample.items():
        assert sees(port, f"{IQN}:{name}"), (name, port, box.c.journal("-u", "tgtwatch"))
        assert box.active(f"tgtd@{name}.service") == "active"
    exec_us = int(box.show("tgtwatch.service", "ExecMainStartTimestampMonotonic"))
    ready_us = int(box.show("tgtwatch.service", "ActiveEnterTimestampMonotonic"))
    TIMINGS["exec_to_ready_s"] = (ready_us - exec_us) / 1e6
    assert 0 < ready_us - exec_us < 30_000_000
    status = box.show("tgtwatch.service", "StatusText")
    assert f"{len(sample)} running" in status, status
    for name, port in sample.items():
        (record,) = box.records("TGTWATCH_ACTION=start", f"TGTWATCH_INSTANCE={name}")
        assert record["TGTWATCH_RESULT"] == "ok"
        assert record["TGTWATCH_PORT"] == str(port)


def test_dropin_start_reload_drain_stop(box: Box) -> None:
    """A dropped file starts tgtd@NAME; an edit reloads it in place; a delete drains it."""
    box.start_tgtwatch()
    name, port = "gamma", box.ports.take()
    unit, iqn, config = f"tgtd@{name}.service", f"{IQN}:{name}", f"{CONF_D}/{name}.conf"
    text = box.conf(name, port)
    box.drop(name, text)
    box.instances[name] = port
    box.wait_unit(unit, ("active",))
    wait_until(lambda: sees(port, iqn), timeout=30, what=f"{iqn} on {port}")
    pid = box.main_pid(unit)
    assert box.tgtd_pids_on(port) == [pid]

    (record,) = box.records("TGTWATCH_ACTION=start", f"TGTWATCH_INSTANCE={name}")
    missing = [f for f in (*AUDIT_FIELDS, "SYSLOG_IDENTIFIER") if not record.get(f)]
    assert not missing, record
    assert record["SYSLOG_IDENTIFIER"] == "tgtwatch"
    assert record["TGTWATCH_PORT"] == str(port)
    assert record["TGTWATCH_CONFIG"] == config
    # The digest of the file and what it includes: path, length and bytes of each.
    data = text.encode()
    want = hashlib.sha256(f"{config}\0{len(data)}\0".encode() + data).hexdigest()
    assert record["TGTWATCH_SHA256"] == want
    assert record["TGTWATCH_RESULT"] == "ok"
    assert int(record["TGTWATCH_DURATION_MS"]) > 0

    # Edit: a second LUN. Reloaded in the running tgtd (same MainPID), not restarted.
    assert not inquiry(port, iqn, 2)
    box.drop(name, box.conf(name, port, luns=2))
    wait_until(lambda: inquiry(port, iqn, 2), timeout=30, what="LUN 2 to answer iscsi-inq")
    assert box.main_pid(unit) == pid
    assert inquiry(port, iqn, 1)
    wait_until(
        lambda: box.records("TGTWATCH_ACTION=reload", f"TGTWATCH_INSTANCE={name}"),
        timeout=10,
        what="the reload record",
    )

    # Delete while an initiator has a session: the port goes offline (no new logins), the
    # session keeps doing I/O, the unit keeps running until the session ends, then stops.
    perf = subprocess.Popen(
        ["iscsi-perf", "-m", "1", "-b", "8", f"iscsi://127.0.0.1:{port}/{iqn}/1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        show = ["tgtadm", "-C", str(port), "--op", "show", "--mode"]
        wait_until(
            lambda: "I_T nexus: " in box.c.run([*show, "target"]).stdout,
            timeout=30,
            what="the iscsi-perf session",
        )
        box.remove(name)
        wait_until(
            lambda: "State: offline" in box.c.run([*show, "sys"]).stdout,
            timeout=30,
            what="the port to go offline",
        )
        assert iscsi_ls(port) is None, "a draining port must refuse new logins"
        assert perf.poll() is None, "the existing session must keep running"
        assert box.active(unit) == "active"
        assert box.main_pid(unit) == pid
    finally:
        perf.send_signal(signal.SIGINT)
        try:
            perf.wait(timeout=10)
        except subprocess.TimeoutExpired:
            perf.kill()
            perf.wait()
    box.wait_unit(unit, ("inactive", "failed"))
    assert box.show(unit, "Result") == "success"
    assert box.tgtd_pids_on(port) == []
    wait_until(lambda: port_is_free(port), timeout=10, what=f"port {port} to be free")
    del box.instances[name]

    def stops() -> list[dict[str, str]]:
        found = box.records("TGTWATCH_ACTION=stop", f"TGTWATCH_INSTANCE={name}")
        return [brief(r) for r in found]

    wait_until(lambda: bool(stops()), timeout=10, what=f"the stop record of {name}")
    # One record per action: the unit's ExecStop leaves the audit to tgtwatch.
    assert len(stops()) == 1 and stops()[0]["TGTWATCH_RESULT"] == "ok", stops()


def test_port_change_drains_the_old_port_then_starts_the_new(box: Box) -> None:
    """One file, one unit, two ports: the old port's ExecStop must drain the OLD port."""
    box.start_tgtwatch()
    name, old, new = "delta", box.ports.take(), box.ports.take()
    unit, iqn = f"tgtd@{name}.service", f"{IQN}:{name}"
    box.drop(name, box.conf(name, old))
    box.instances[name] = old
    box.wait_unit(unit, ("active",))
    wait_until(lambda: sees(old, iqn), timeout=30, what=f"{iqn} on {old}")
    old_pid = box.main_pid(unit)
    box.drop(name, box.conf(name, new))
    box.instances[name] = new
    wait_until(lambda: sees(new, iqn), timeout=30, what=f"{iqn} on {new}")
    wait_until(lambda: port_is_free(old), timeout=30, what=f"old port {old} to be free")
    assert box.active(unit) == "active"
    assert box.main_pid(unit) not in (0, old_pid)
    assert box.tgtd_pids_on(old) == []
    assert box.tgtd_pids_on(new) == [box.main_pid(unit)]
    env = box.c.read_file(f"/run/tgtwatch/env/{name}.env").decode()
    assert f"SOCKET_OPTS={new}\n" in env
    stop = [brief(r) for r in box.records("TGTWATCH_ACTION=stop", f"TGTWATCH_INSTANCE={name}")]
    assert stop and all(r["TGTWATCH_PORT"] == str(old) for r in stop), stop
    assert all(r["TGTWATCH_RESULT"] == "ok" for r in stop), stop


def test_restart_and_stop_of_tgtwatch_leave_every_tgtd_alone(
    box: Box, sample: dict[str, int]
) -> None:
    box.start_tgtwatch()
    before = box.tgtd_units()
    assert {f"tgtd@{n}.service" for n in sample} <= set(before), before
    watcher = box.main_pid("tgtwatch.service")
    box.c.systemctl("restart", "tgtwatch.service")
    assert box.main_pid("tgtwatch.service") != watcher
    assert box.tgtd_units() == before
    box.c.systemctl("stop", "tgtwatch.service")
    assert box.active("tgtwatch.service") == "inactive"
    assert box.tgtd_units() == before
    for name, port in box.instances.items():
        assert sees(port, f"{IQN}:{name}"), name
    TIMINGS["restart_start_s"] = box.start_tgtwatch()
    assert box.tgtd_units() == before
    # A restart adopts nothing new and starts nothing: the applied state survived in /run.
    assert not box.records("TGTWATCH_ACTION=adopt")


def test_watchdog_restarts_a_hung_tgtwatch(box: Box) -> None:
    dropin = "/etc/systemd/system/tgtwatch.service.d/50-systest-watchdog.conf"
    box.c.write_file(dropin, "[Service]\nWatchdogSec=2s\n")
    box.c.systemctl("daemon-reload")
    try:
        box.c.systemctl("restart", "tgtwatch.service")
        assert box.show("tgtwatch.service", "WatchdogUSec") == "2s"
        before = box.tgtd_units()
        pid = box.main_pid("tgtwatch.service")
        restarts = int(box.show("tgtwatch.service", "NRestarts"))
        started = time.monotonic()
        box.c.systemctl("kill", "-s", "SIGSTOP", "tgtwatch.service")

        def restarted() -> bool:
            return (
                int(box.show("tgtwatch.service", "NRestarts")) > restarts
                and box.main_pid("tgtwatch.service") not in (0, pid)
                and box.active("tgtwatch.service") == "active"
            )

        wait_until(restarted, timeout=60, what="the watchdog to restart tgtwatch")
        TIMINGS["watchdog_restart_s"] = time.monotonic() - started
        assert "Watchdog timeout" in box.c.journal("-u", "tgtwatch.service")
        assert box.tgtd_units() == before
    finally:
        box.c.run(["rm", "-f", dropin])
        box.c.systemctl("daemon-reload")
        box.c.systemctl("restart", "tgtwatch.service")


def test_manual_start_stop_and_adoption(box: Box) -> None:
    """The original instructions still work by hand; tgtwatch then adopts, never duplicates."""
    box.c.systemctl("stop", "tgtwatch.service")
    name, port = "epsilon", box.ports.take()
    unit, iqn = f"tgtd@{name}.service", f"{IQN}:{name}"
    box.drop(name, box.conf(name, port))
    box.instances[name] = port
    box.c.systemctl("start", unit)
    assert sees(port, iqn)  # ExecStartPost loaded the targets before start returned
    box.c.systemctl("stop", unit)
    assert box.active(unit) == "inactive"
    assert box.show(unit, "Result") == "success"
    assert box.tgtd_pids_on(port) == []

    # A bad file: render-env refuses it, the start fails and the journal says why.
    bad, bad_port = "zeta", box.ports.take()
    box.drop(bad, box.conf(bad, bad_port).replace(f':{bad_port}"', f':{bad_port + 1}"', 1))
    done = box.c.run(["systemctl", "start", f"tgtd@{bad}.service"], check=False)
    assert done.returncode != 0
    log = box.c.journal("-u", f"tgtd@{bad}.service")
    assert re.search(rf"{CONF_D}/{bad}\.conf: SOCKET_OPTS {bad_port} .* disagree", log), log
    # Restart=on-failure retries (the file may be fixed meanwhile) until StartLimitBurst.
    state = (box.active(f"tgtd@{bad}.service"), box.show(f"tgtd@{bad}.service", "SubState"))
    assert state in (("failed", "failed"), ("activating", "auto-restart")), state
    assert box.tgtd_pids_on(bad_port) == []
    box.remove(bad)
    box.c.systemctl("stop", f"tgtd@{bad}.service")
    box.c.systemctl("reset-failed", f"tgtd@{bad}.service", check=False)

    box.c.systemctl("start", unit)
    pid = box.main_pid(unit)
    box.start_tgtwatch()
    assert box.main_pid(unit) == pid
    assert box.tgtd_pids_on(port) == [pid]
    (adopt,) = box.records("TGTWATCH_ACTION=adopt", f"TGTWATCH_INSTANCE={name}")
    assert adopt["TGTWATCH_RESULT"] == "ok" and adopt["TGTWATCH_PORT"] == str(port)
    assert not box.records("TGTWATCH_ACTION=start", f"TGTWATCH_INSTANCE={name}")
    assert sees(port, iqn)


def test_tgtd_units_are_bounded(box: Box, sample: dict[str, int]) -> None:
    """TasksMax=/MemoryMax= of tgtd@.service (bench/README.md says how they were chosen),
    and what systemd counts for a one-LUN instance: tgtd's main thread and 16 I/O threads."""
    box.start_tgtwatch()
    unit = f"tgtd@{SAMPLE[0]}.service"
    assert box.show(unit, "TasksMax") == "18432"
    assert box.show(unit, "MemoryMax") == str(2 << 30)
    assert box.show(unit, "OOMScoreAdjust") == "-999"
    # (a container without CAP_SYS_RESOURCE cannot lower it: the process may show 0)
    pid = box.main_pid(unit)
    adj = box.c.read_file(f"/proc/{pid}/oom_score_adj").decode().strip()
    assert adj in ("-999", "0"), adj
    tasks, memory = box.show(unit, "TasksCurrent"), box.show(unit, "MemoryCurrent")
    TIMINGS["tgtd_one_lun_tasks"] = float(tasks) if tasks.isdigit() else -1
    TIMINGS["tgtd_one_lun_memory_mib"] = int(memory) / 2**20 if memory.isdigit() else -1
    if tasks.isdigit():  # the container's systemd may lack the pids controller
        assert int(tasks) == 1 + 16, tasks
    if memory.isdigit():
        assert int(memory) < 64 << 20, memory


CHAP_OLD = "Chap-secret-4417"
CHAP_NEW = "Chap-renewed-9035"
CHAP_MUTUAL = "Mutual-secret-2208"


def chap_conf(box: Box, name: str, port: int, secret: str) -> str:
    return box.conf(name, port).replace(
        "    initiator-address ALL\n",
        f"    initiator-address ALL\n    incominguser alice {secret}\n"
        f"    outgoinguser mutual {CHAP_MUTUAL}\n",
    )


def chap_login(port: int, iqn: str, secret: str | None) -> bool:
    auth = f"alice%{secret}@" if secret else ""
    done = subprocess.run(
        ["iscsi-inq", f"iscsi://{auth}127.0.0.1:{port}/{iqn}/1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0 and "DIRECT_ACCESS" in done.stdout


def test_chap_accounts_reach_the_units_tgtd_without_an_argv(box: Box) -> None:
    """Started by tgtwatch, reloaded by tgtwatch, restarted and reloaded by hand: the
    accounts always arrive (libiscsi logs in with the secret, not without), and no
    snapshot, journal line or unit command line holds a secret."""
    box.start_tgtwatch()
    name, port = "chap", box.ports.take()
    unit, iqn = f"tgtd@{name}.service", f"{IQN}:{name}"
    box.drop(name, chap_conf(box, name, port, CHAP_OLD))
    box.wait_unit(unit, ("active",))
    wait_until(lambda: chap_login(port, iqn, CHAP_OLD), timeout=30, what="a CHAP login")
    assert not chap_login(port, iqn, None) and not chap_login(port, iqn, CHAP_NEW)

    box.drop(name, chap_conf(box, name, port, CHAP_NEW))  # tgtwatch reloads it
    wait_until(lambda: chap_login(port, iqn, CHAP_NEW), timeout=30, what="the new secret")
    assert not chap_login(port, iqn, CHAP_OLD)

    box.c.systemctl("stop", "tgtwatch.service")
    box.c.systemctl("restart", unit)  # by hand: ExecStartPre renders, ExecStartPost binds
    assert chap_login(port, iqn, CHAP_NEW) and not chap_login(port, iqn, None)
    box.drop(name, chap_conf(box, name, port, CHAP_OLD))
    box.c.systemctl("reload", unit)  # by hand: ExecReload
    assert chap_login(port, iqn, CHAP_OLD) and not chap_login(port, iqn, CHAP_NEW)
    assert (
        "State: ready"
        in box.c.run(["tgtadm", "-C", str(port), "--op", "show", "--mode", "sys"]).stdout
    )

    mode = box.c.run(["stat", "-c", "%a", f"/run/tgtwatch/env/{name}.accounts"]).stdout.strip()
    assert mode == "600"
    snapshot = box.c.read_file(f"/run/tgtwatch/env/{name}.conf").decode()
    assert "incominguser" not in snapshot and f"<target {iqn}>" in snapshot
    logs = box.c.journal("-o", "verbose")
    leaks = [s for s in (CHAP_OLD, CHAP_NEW, CHAP_MUTUAL) if s in logs]
    assert leaks == [], "a secret reached the journal"
    box.remove(name)
    box.c.systemctl("stop", unit)
    box.start_tgtwatch()


def test_security_exposure_of_both_units(box: Box) -> None:
    """Scores of the installed units, while every instance above runs under them."""
    scores = {}
    for unit, limit in (("tgtwatch.service", 4.9), ("tgtd@alpha.service", 6.9)):
        done = box.c.run(
            ["systemd-analyze", "security", "--offline=true", "--no-pager", unit], check=False
        )
        scores[unit] = exposure(done.stdout, unit)
        assert scores[unit] <= limit, done.stdout[-1500:]
        TIMINGS[f"exposure {unit}"] = scores[unit]
    # And everything still works under that sandbox.
    box.start_tgtwatch()
    for name, port in box.instances.items():
        assert box.active(f"tgtd@{name}.service") == "active"
        assert sees(port, f"{IQN}:{name}"), name
    assert box.active("tgtwatch.service") == "active"


def test_units_follow_a_state_dir_elsewhere(box: Box) -> None:
    """state_dir is a setting, but the units named /run/tgtwatch: with another state_dir
    every start failed (the unit read an env file never written). The daemon points
    tgtd@.service at its state_dir (a runtime drop-in) and removes it when back on the
    default. Last in this module: the other daemon's state makes it adopt the others."""
    settings, state = "/etc/tgtwatch/tgtwatch.yaml", "/var/lib/tgtwatch-systest"
    dropin = "/run/systemd/system/tgtd@.service.d/50-tgtwatch-state-dir.conf"
    done = box.c.run(["systemd-analyze", "verify", "--man=no", "tgtd@verify.service"], check=False)
    assert done.returncode == 0 and "tgt" not in done.stderr, done.stderr
    saved = box.c.read_file(settings)
    box.c.systemctl("stop", "tgtwatch.service", check=False)
    box.c.write_file(settings, saved.decode() + f"state_dir: {state}\n")
    name, port = "eta", box.ports.take()
    unit, iqn = f"tgtd@{name}.service", f"{IQN}:{name}"
    try:
        box.start_tgtwatch()
        box.drop(name, box.conf(name, port))
        box.instances[name] = port
        box.wait_unit(unit, ("active",))
        wait_until(lambda: sees(port, iqn), timeout=30, what=f"{iqn} on {port}")
        assert f"TGTWATCH_STATE_DIR={state}" in box.show(unit, "Environment")
        env = box.c.read_file(f"{state}/env/{name}.env").decode()
        assert f"SOCKET_OPTS={port}\n" in env
        (record,) = box.records("TGTWATCH_ACTION=start", f"TGTWATCH_INSTANCE={name}")
        assert record["TGTWATCH_RESULT"] == "ok", brief(record)
        box.remove(name)  # the unit's ExecStop reads the env file under state_dir too
        box.wait_unit(unit, ("inactive", "failed"))
        assert box.show(unit, "Result") == "success"
        del box.instances[name]
        wait_until(
            lambda: box.records("TGTWATCH_ACTION=stop", f"TGTWATCH_INSTANCE={name}"),
            timeout=10,
            what=f"the stop record of {name}",
        )
    finally:
        box.c.systemctl("stop", "tgtwatch.service", check=False)
        box.c.write_file(settings, saved)
        box.start_tgtwatch()
    assert box.c.run(["test", "-e", dropin], check=False).returncode != 0, "stale drop-in"
