"""The tgt gateway's argv builders, environment and runner, with stand-in programs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tgtwatch.tgt import gateway as g
from tgtwatch.tgt.show import SystemState

P = g.TgtPrograms(tgtd="/sbin/tgtd", tgtadm="/sbin/tgtadm", tgt_admin="/sbin/tgt-admin")


def script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# --- argv builders ---------------------------------------------------------------------


def test_tgtd_argv() -> None:
    assert g.tgtd_argv(P, "0.0.0.0:3263", 3263) == [
        "/sbin/tgtd",
        "-f",
        "--iscsi",
        "portal=0.0.0.0:3263",
        "-C",
        "3263",
    ]


def test_tgtadm_argvs() -> None:
    assert g.set_state_argv(P, 7, SystemState.OFFLINE) == (
        [
            "/sbin/tgtadm",
            "-C",
            "7",
            "--op",
            "update",
            "--mode",
            "sys",
            "--name",
            "State",
            "-v",
            "offline",
        ]
    )
    assert g.set_state_argv(P, 0, SystemState.READY)[-1] == "ready"
    assert g.show_targets_argv(P, 7) == [
        "/sbin/tgtadm",
        "-C",
        "7",
        "--op",
        "show",
        "--mode",
        "target",
    ]
    assert g.show_system_argv(P, 7) == ["/sbin/tgtadm", "-C", "7", "--op", "show", "--mode", "sys"]
    assert g.delete_system_argv(P, 7) == [
        "/sbin/tgtadm",
        "-C",
        "7",
        "--op",
        "delete",
        "--mode",
        "system",
    ]
    assert g.show_portals_argv(P, 7) == (
        ["/sbin/tgtadm", "-C", "7", "--lld", "iscsi", "--op", "show", "--mode", "portal"]
    )


def test_tgt_admin_argvs() -> None:
    conf = Path("/etc/mytgt/conf.d/a.conf")
    assert g.admin_execute_argv(P, 7, conf) == (
        ["/sbin/tgt-admin", "-C", "7", "-v", "-e", "-c", "/etc/mytgt/conf.d/a.conf"]
    )
    assert g.admin_execute_argv(P, 7, conf, pretend=True) == (
        ["/sbin/tgt-admin", "-C", "7", "-p", "-e", "-c", "/etc/mytgt/conf.d/a.conf"]
    )
    assert g.admin_update_argv(P, 7, conf) == (
        ["/sbin/tgt-admin", "-C", "7", "-v", "--update", "ALL", "-c", "/etc/mytgt/conf.d/a.conf"]
    )
    assert g.admin_update_argv(P, 7, conf, force=True)[-1] == "-f"
    assert g.admin_remove_all_argv(P, 7) == (
        ["/sbin/tgt-admin", "-C", "7", "-v", "--update", "ALL", "-c", "/dev/null"]
    )
    assert g.admin_remove_all_argv(P, 7, force=True)[-1] == "-f"
    assert g.delete_target_argv(P, 7, 3) == (
        ["/sbin/tgtadm", "-C", "7", "--op", "delete", "--mode", "target", "--tid", "3"]
    )
    assert g.delete_target_argv(P, 7, 3, force=True)[-1] == "--force"


def test_admin_cwd_is_the_config_directory() -> None:
    assert g.admin_cwd(Path("/etc/tgt/targets.conf")) == Path("/etc/tgt")
    assert g.admin_cwd(g.NO_CONFIG) == Path("/")


# --- environment and program lookup ------------------------------------------------------


def test_child_env_drops_service_variables() -> None:
    base = {
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_PID": "1",
        "WATCHDOG_USEC": "30000000",
        "LISTEN_FDS": "1",
        "LANG": "C.UTF-8",
        "PATH": "/opt/wrappers:/usr/bin",
    }
    env = g.child_env(base)
    assert env["LANG"] == "C.UTF-8"
    assert not {"NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS"} & env.keys()
    assert env["PATH"] == "/opt/wrappers:/usr/bin:/usr/sbin:/sbin"
    assert "NOTIFY_SOCKET" in base  # the input is not modified


def test_child_env_keeps_sbin_order() -> None:
    assert g.child_env({"PATH": "/sbin:/usr/sbin:/bin"})["PATH"] == "/sbin:/usr/sbin:/bin"
    assert g.child_env({})["PATH"] == "/usr/bin:/bin:/usr/sbin:/sbin"


def test_programs_are_looked_up_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper = script(tmp_path, "tgtadm", "exit 0\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    programs = g.TgtPrograms()
    assert programs.tgtadm == str(wrapper)
    assert Path(programs.tgtd).name == "tgtd"


# --- run ---------------------------------------------------------------------------------


def test_run_captures_both_streams(tmp_path: Path) -> None:
    prog = script(tmp_path, "p", 'echo out; echo err >&2; pwd; echo "N=${NOTIFY_SOCKET-unset}"\n')
    done = g.run([str(prog)], timeout=10, cwd=tmp_path)
    assert done.returncode == 0
    assert done.output.splitlines() == ["out", "err", str(tmp_path), "N=unset"]
    assert done.argv == (str(prog),)


def test_run_default_env_hides_notify_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "1")
    prog = script(tmp_path, "p", 'echo "${NOTIFY_SOCKET-unset} ${WATCHDOG_USEC-unset}"\n')
    assert g.run([str(prog)], timeout=10).output == "unset unset\n"


def test_run_nonzero_exit(tmp_path: Path) -> None:
    prog = script(
        tmp_path,
        "tgtadm",
        "echo 'tgtadm: failed to send request hdr to tgt daemon, Transport endpoint is not"
        " connected' >&2; exit 107\n",
    )
    with pytest.raises(g.TgtCommandError) as caught:
        g.run([str(prog), "-C", "13000", "--op", "show", "--mode", "sys"], timeout=10)
    err = caught.value
    assert err.returncode == 107
    assert not err.timed_out
    assert "Transport endpoint" in err.output
    assert str(err) == (
        "tgtadm -C 13000 --op show --mode sys: exit 107: tgtadm: failed to send request hdr"
        " to tgt daemon, Transport endpoint is not connected"
    )


def test_run_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    prog = script(tmp_path, "slow", f"echo started; sleep 60 & echo $! > {pidfile}; wait\n")
    with pytest.raises(g.TgtCommandError) as caught:
        g.run([str(prog)], timeout=0.5)
    err = caught.value
    assert err.timed_out
    assert err.returncode is None
    assert err.output == "started\n"
    assert "\n" not in str(err)
    assert "timed out after 0.5s" in str(err)
    child = int(pidfile.read_text())

    def child_gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        # a zombie still accepts signal 0; it is gone for our purpose
        return Path(f"/proc/{child}/stat").read_text().split(") ")[1].startswith("Z")

    wait_for(child_gone, 10, "the timed-out command's child to be gone")


def test_run_missing_program(tmp_path: Path) -> None:
    with pytest.raises(g.TgtCommandError) as caught:
        g.run([str(tmp_path / "nope")], timeout=5)
    assert caught.value.returncode is None
    assert not caught.value.timed_out
    assert "could not run" in str(caught.value)


def test_run_redacts_passwords(tmp_path: Path) -> None:
    prog = script(tmp_path, "p", "echo 'tgtadm --op new --user=u --password=hunter2'; exit 3\n")
    with pytest.raises(g.TgtCommandError) as caught:
        g.run([str(prog)], timeout=5)
    assert "hunter2" not in caught.value.output
    assert "hunter2" not in str(caught.value)


# --- spawn_tgtd and TgtControl with stand-ins --------------------------------------------


def test_spawn_detaches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    prog = script(
        tmp_path,
        "tgtd",
        'echo "N=${NOTIFY_SOCKET-unset} cwd=$(pwd)"; echo oops >&2; read x; echo "stdin=$?"\n',
    )
    log = tmp_path / "tgtd.log"
    proc = g.spawn_tgtd([str(prog)], log_path=log)
    assert proc.wait(10) == 0
    assert log.read_text().splitlines() == ["N=unset cwd=/", "oops", "stdin=1"]


def test_spawn_own_session(tmp_path: Path) -> None:
    prog = script(tmp_path, "tgtd", "exec sleep 30\n")
    proc = g.spawn_tgtd([str(prog)], log_path=tmp_path / "log")
    try:
        assert os.getsid(proc.pid) == proc.pid
        assert os.getsid(proc.pid) != os.getsid(0)
    finally:
        proc.kill()
        proc.wait(10)


def test_wait_answering_polls_until_success(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    counter.write_text("0")
    tgtadm = script(
        tmp_path,
        "tgtadm",
        f"n=$(($(cat {counter}) + 1)); echo $n > {counter}; [ $n -ge 4 ] || exit 107\n"
        'echo "System:"; echo "    State: ready"\n',
    )
    ctl = g.TgtControl(13000, g.TgtPrograms(tgtadm=str(tgtadm)), timeout_s=5)
    assert ctl.wait_answering(20) >= 0
    assert counter.read_text().strip() == "4"
    assert ctl.answers()
    assert ctl.system().state is SystemState.READY


def test_wait_answering_times_out(tmp_path: Path) -> None:
    tgtadm = script(tmp_path, "tgtadm", "echo 'tgtadm: not connected' >&2; exit 107\n")
    ctl = g.TgtControl(13000, g.TgtPrograms(tgtadm=str(tgtadm)), timeout_s=5)
    with pytest.raises(g.TgtCommandError) as caught:
        ctl.wait_answering(0.3)
    assert caught.value.timed_out
    assert "not connected" in str(caught.value)
    assert not ctl.answers()


def test_wait_answering_stops_when_tgtd_died(tmp_path: Path) -> None:
    tgtadm = script(tmp_path, "tgtadm", "exit 107\n")
    ctl = g.TgtControl(13000, g.TgtPrograms(tgtadm=str(tgtadm)), timeout_s=5)
    with pytest.raises(g.TgtCommandError) as caught:
        ctl.wait_answering(60, alive=lambda: False)
    assert not caught.value.timed_out
    assert "exited before answering" in str(caught.value)


def test_admin_runs_in_the_config_directory(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    conf = conf_dir / "a.conf"
    conf.write_text("")
    admin = script(
        tmp_path,
        "tgt-admin",
        'pwd; echo "$@"\n'
        'echo "# Target with tid 3 (iqn.x:busy) is in use, it won\'t be updated."\n',
    )
    ctl = g.TgtControl(13000, g.TgtPrograms(tgt_admin=str(admin)), timeout_s=5)
    result = ctl.update(conf)
    lines = result.command.output.splitlines()
    assert lines[0] == str(conf_dir)
    assert lines[1] == f"-C 13000 -v --update ALL -c {conf}"
    assert result.report.busy_names == ("iqn.x:busy",)
    assert ctl.remove_all().command.output.splitlines()[0] == "/"


def test_forced_delete_targets_closes_connections_then_waits_for_commands_in_flight(
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls"
    refusals = tmp_path / "refusals"
    refusals.write_text("xx")
    tgtadm = script(
        tmp_path,
        "tgtadm",
        f'echo "$*" >> {calls}\n'
        'case "$*" in\n'
        '  *"--op show"*) printf "Target 4: iqn.x:busy\\n    I_T nexus information:\\n'
        '        I_T nexus: 7\\n            Connection: 2\\n";;\n'
        '  *"--mode target"*)\n'
        f'    left=$(cat {refusals}); if [ -n "$left" ]; then\n'
        f'      printf "%s" "${{left#x}}" > {refusals}\n'
        '      echo "tgtadm: this logical unit is still active"; exit 22; fi;;\n'
        "esac\n",
    )
    ctl = g.TgtControl(13000, g.TgtPrograms(tgtadm=str(tgtadm)), timeout_s=5)
    assert ctl.delete_targets(force=True) == ("iqn.x:busy",)
    lines = calls.read_text().splitlines()
    assert lines[1] == "-C 13000 --op delete --mode conn --tid 4 --sid 7 --cid 2"
    assert lines[2:] == ["-C 13000 --op delete --mode target --tid 4 --force"] * 3


def test_delete_targets_gives_up_on_a_lun_that_stays_active(tmp_path: Path) -> None:
    tgtadm = script(
        tmp_path,
        "tgtadm",
        'case "$*" in\n'
        '  *"--op show"*) echo "Target 4: iqn.x:busy";;\n'
        '  *) echo "tgtadm: this logical unit is still active"; exit 22;;\n'
        "esac\n",
    )
    ctl = g.TgtControl(13000, g.TgtPrograms(tgtadm=str(tgtadm)), timeout_s=5)
    with pytest.raises(g.TgtCommandError) as caught:
        ctl.delete_targets(force=True, settle_s=0.05)
    assert "still active" in caught.value.output
