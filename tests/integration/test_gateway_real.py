"""The gateway driving a real tgtd, tgt-admin and a real iSCSI initiator (libiscsi)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import wait_for
from tgtd_harness import RunningTgtd, SessionHolder, TgtdFactory

from tgtwatch.tgt import gateway as g
from tgtwatch.tgt.admin_output import AdminProblemKind
from tgtwatch.tgt.cmdline import parse_tgtd_cmdline
from tgtwatch.tgt.show import SystemState

pytestmark = pytest.mark.integration

VOL1 = "iqn.2026-11.test.tgtwatch:vol1"
VOL2 = "iqn.2026-11.test.tgtwatch:vol2"


def write_config(path: Path, backing: Callable[..., Path], *, vol1_luns: int = 1) -> Path:
    lines = [f"<target {VOL1}>"]
    lines += [f"    backing-store {backing(f'v1-{i}.img')}" for i in range(vol1_luns)]
    lines += ["</target>", f"<target {VOL2}>"]
    lines += [
        f"    backing-store {backing('v2-a.img')}",
        f"    backing-store {backing('v2-b.img')}",
    ]
    lines += ["    initiator-address 127.0.0.1", "</target>", ""]
    path.write_text("\n".join(lines))
    return path


def iscsi_ls(tgtd: RunningTgtd) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iscsi-ls", "-s", tgtd.url()],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def listed_targets(tgtd: RunningTgtd) -> list[str]:
    done = iscsi_ls(tgtd)
    assert done.returncode == 0, done.stdout + done.stderr
    return sorted(
        line.split()[0].removeprefix("Target:")
        for line in done.stdout.splitlines()
        if line.startswith("Target:")
    )


def sessions(tgtd: RunningTgtd, name: str) -> int:
    return sum(t.sessions for t in tgtd.control.targets() if t.name == name)


def test_start_offline_execute_ready(
    tgtd_factory: TgtdFactory,
    make_backing_file: Callable[..., Path],
    tmp_path: Path,
    iscsi_tools: None,
) -> None:
    tgtd = tgtd_factory.start()
    assert tgtd.answered_after_s is not None and tgtd.answered_after_s < 5
    assert (Path("/var/run/tgtd") / f"socket.{tgtd.port}").is_socket()

    cmdline = parse_tgtd_cmdline(Path(f"/proc/{tgtd.pid}/cmdline").read_bytes())
    assert cmdline is not None
    assert (cmdline.control_port, cmdline.portal) == (tgtd.port, tgtd.portal)

    ctl = tgtd.control
    assert [p.address for p in ctl.portals()] == [tgtd.portal]
    assert ctl.system().state is SystemState.READY
    ctl.set_state(SystemState.OFFLINE)
    assert ctl.system().state is SystemState.OFFLINE

    config = write_config(tmp_path / "vol.conf", make_backing_file)
    result = ctl.execute(config)
    assert result.report.ok, result.command.output
    assert result.report.added == (VOL1, VOL2)

    # offline: the targets exist, but an initiator cannot log in (not even to discover)
    assert [t.name for t in ctl.targets()] == [VOL1, VOL2]
    refused = iscsi_ls(tgtd)
    assert refused.returncode != 0, refused.stdout

    ctl.set_state(SystemState.READY)
    observed = {t.name: (t.tid, t.luns, t.sessions) for t in ctl.targets()}
    assert observed == {VOL1: (1, 1, 0), VOL2: (2, 2, 0)}
    assert listed_targets(tgtd) == [VOL1, VOL2]


def test_update_skips_a_busy_target_and_recreates_idle_ones(
    tgtd: RunningTgtd,
    make_backing_file: Callable[..., Path],
    tmp_path: Path,
    session_holder: SessionHolder,
) -> None:
    config = write_config(tmp_path / "vol.conf", make_backing_file)
    tgtd.control.execute(config)
    initiator = session_holder.hold(tgtd, VOL1)
    assert sessions(tgtd, VOL1) == 1

    write_config(config, make_backing_file, vol1_luns=2)
    result = tgtd.control.update(config)
    assert result.command.returncode == 0
    assert result.report.busy_names == (VOL1,), (
        result.command.output + tgtd.control.show_targets_text() + initiator.log_path.read_text()
    )
    assert result.report.removed == (VOL2,)  # idle and unchanged, still deleted and re-added
    assert result.report.added == (VOL2,)
    assert result.report.ok
    luns = {t.name: t.luns for t in tgtd.control.targets()}
    assert luns == {VOL1: 1, VOL2: 2}  # the busy target still has its old config

    initiator.stop()
    wait_for(lambda: sessions(tgtd, VOL1) == 0, 20, "the session to end")
    again = tgtd.control.update(config)
    assert again.report.busy == ()
    assert {t.name: t.luns for t in tgtd.control.targets()} == {VOL1: 2, VOL2: 2}


def test_offline_refuses_logins_but_existing_sessions_keep_doing_io(
    tgtd: RunningTgtd,
    make_backing_file: Callable[..., Path],
    tmp_path: Path,
    session_holder: SessionHolder,
) -> None:
    tgtd.control.execute(write_config(tmp_path / "vol.conf", make_backing_file))
    initiator = session_holder.hold(tgtd, VOL1)
    tgtd.control.set_state(SystemState.OFFLINE)
    assert iscsi_ls(tgtd).returncode != 0

    reports = initiator.progress()
    wait_for(lambda: initiator.progress() >= reports + 2, 20, "I/O to go on while offline")
    assert initiator.proc.poll() is None
    assert sessions(tgtd, VOL1) == 1

    # removing targets without force leaves the busy one; delete system refuses while any exist
    removed = tgtd.control.remove_all()
    assert removed.report.busy_names == (VOL1,)
    with pytest.raises(g.TgtCommandError) as caught:
        tgtd.control.delete_system()
    assert caught.value.returncode == 22
    assert tgtd.alive()


def test_delete_system_makes_tgtd_exit(
    tgtd: RunningTgtd, make_backing_file: Callable[..., Path], tmp_path: Path
) -> None:
    tgtd.control.execute(write_config(tmp_path / "vol.conf", make_backing_file))
    with pytest.raises(g.TgtCommandError) as caught:
        tgtd.control.delete_system()  # refused while targets exist
    assert "invalid request" in str(caught.value)
    tgtd.proc.send_signal(15)  # tgtd ignores SIGTERM: the control socket is the way out
    assert tgtd.control.answers()
    # tgt-admin walks the running targets in Perl hash order: sort before comparing
    assert sorted(tgtd.control.remove_all(force=True).report.removed) == [VOL1, VOL2]
    tgtd.control.delete_system()
    assert tgtd.proc.wait(10) == 0
    assert not tgtd.control.answers()


def test_delete_targets_spares_a_busy_target_unless_forced_then_tgtd_can_exit(
    tgtd: RunningTgtd,
    make_backing_file: Callable[..., Path],
    tmp_path: Path,
    session_holder: SessionHolder,
) -> None:
    """The native engine's stop: tgtadm only, no tgt-admin."""
    tgtd.control.execute(write_config(tmp_path / "vol.conf", make_backing_file))
    initiator = session_holder.hold(tgtd, VOL1)
    with pytest.raises(g.TgtCommandError) as caught:
        tgtd.control.delete_targets()
    assert caught.value.returncode == 22  # "this target is still active"
    assert sessions(tgtd, VOL1) == 1
    assert initiator.proc.poll() is None
    assert sorted(tgtd.control.delete_targets(force=True)) == [VOL1, VOL2]
    assert tgtd.control.targets() == ()
    initiator.proc.kill()  # its session was cut: it would retry the login until its -t
    initiator.proc.wait(10)
    tgtd.control.delete_system()
    assert tgtd.proc.wait(10) == 0


def test_second_tgtd_on_the_same_control_port_exits(tgtd_factory: TgtdFactory) -> None:
    first = tgtd_factory.start()
    second = tgtd_factory.spawn(first.port)
    assert second.proc.wait(10) == 1
    assert f"another tgtd is using /var/run/tgtd/socket.{first.port}.lock" in second.log()
    assert first.control.answers()


def test_tgtd_logs_to_stderr_and_notifies_only_when_told(
    tgtd_factory: TgtdFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(10)
        env = {**g.child_env({"PATH": "/usr/bin:/bin"}), "NOTIFY_SOCKET": str(notify_path)}
        told = tgtd_factory.start(env=env)
        assert b"READY=1" in notify.recv(4096).split(b"\n")

        # the default environment hides tgtwatch's own NOTIFY_SOCKET from tgtd
        monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
        untold = tgtd_factory.start()
        told.stop()  # a later datagram can only come from the second tgtd
        notify.settimeout(0.5)
        with pytest.raises(TimeoutError):
            notify.recv(4096)
    assert "work_timer_start" in untold.log()  # tgtd -f writes its log to stderr


def test_relative_includes_and_pretend(
    tgtd: RunningTgtd, make_backing_file: Callable[..., Path], tmp_path: Path
) -> None:
    confdir = tmp_path / "etc"
    (confdir / "conf.d").mkdir(parents=True)
    write_config(confdir / "conf.d" / "vols.conf", make_backing_file)
    top = confdir / "targets.conf"
    top.write_text("include conf.d/*.conf\n")
    pretend = tgtd.control.pretend(top)
    assert f"-T {VOL1}" in pretend
    assert tgtd.control.targets() == ()  # pretend changes nothing
    assert tgtd.control.execute(top).report.added == (VOL1, VOL2)


def test_control_port_in_the_file_conflicts_with_C(
    tgtd: RunningTgtd, backing_file: Path, tmp_path: Path
) -> None:
    config = tmp_path / "cp.conf"
    config.write_text(
        f"control-port {tgtd.port}\n<target {VOL1}>\n backing-store {backing_file}\n</target>\n"
    )
    with pytest.raises(g.TgtCommandError) as caught:
        tgtd.control.execute(config)
    assert caught.value.returncode == 1
    assert "Multiple control-port definitions are not allowed!" in str(caught.value)
    assert tgtd.control.targets() == ()


def test_missing_backing_store_exits_0_but_is_reported(tgtd: RunningTgtd, tmp_path: Path) -> None:
    config = tmp_path / "bad.conf"
    config.write_text(f"<target {VOL1}>\n backing-store {tmp_path / 'nope.img'}\n</target>\n")
    result = tgtd.control.execute(config)
    assert [p.kind for p in result.report.problems] == [AdminProblemKind.DEVICE_SKIPPED]
    assert [(t.name, t.luns) for t in tgtd.control.targets()] == [(VOL1, 0)]
