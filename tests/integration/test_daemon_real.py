"""`tgtwatch run` as a real process: readiness, the file lifecycle, signals, crashes, idle cost.

Each test runs `.venv/bin/tgtwatch run` (tests/integration/daemon_harness.py) with
NOTIFY_SOCKET and TGTWATCH_JOURNAL_SOCKET bound by the test, real tgtds on ports
13200-13399 and a real initiator (libiscsi's iscsi-ls / iscsi-inq). Every wait is on a
condition with a deadline; the only fixed windows (idle CPU, watchdog while stopped, a
writer's pause) *measure* a behaviour over time, they never synchronise.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from daemon_harness import (
    AUDIT_LOG_KEYS,
    JOURNAL_FIELDS,
    REAL,
    TGTWATCH,
    Daemon,
    DaemonWorld,
    Record,
    config_digest,
    cpu_seconds,
    iqn,
    listed_targets,
    lun_answers,
    process_gone,
    rss_kib,
    run_tool,
    wait_for,
    world_fixture,  # noqa: F401  (the `world` fixture)
)

from tgtwatch.cli.exits import EXIT_BUSY
from tgtwatch.model.records import AuditAction, AuditResult
from tgtwatch.telemetry.audit import MESSAGE_IDS, PRIORITIES

pytestmark = pytest.mark.integration

NAMES = ("alpha", "beta", "gamma")


# ---------------------------------------------------------------------------
# helpers


def sample_like(world: DaemonWorld) -> dict[str, int]:
    """Three instances as in sample-conf: alpha and beta one target, gamma two (3 LUNs)."""
    ports = {name: world.reserve_port() for name in NAMES}
    world.write_instance("alpha", ports["alpha"])
    world.write_instance("beta", ports["beta"])
    world.write_instance(
        "gamma",
        ports["gamma"],
        {
            iqn("gamma", 1): [world.backing("gamma-1.img")],
            iqn("gamma", 2): [world.backing("gamma-2a.img"), world.backing("gamma-2b.img")],
        },
    )
    return ports


def targets_of(name: str) -> list[str]:
    return [iqn(name, 1), iqn(name, 2)] if name == "gamma" else [iqn(name, 1)]


def try_listed(port: int) -> list[str] | None:
    """The targets iscsi-ls discovers on the portal, None while it does not answer."""
    done = run_tool(["iscsi-ls", "-s", f"iscsi://127.0.0.1:{port}/"], timeout=5)
    if done.returncode != 0:
        return None
    return sorted(
        line.split()[0].removeprefix("Target:")
        for line in done.stdout.splitlines()
        if line.startswith("Target:")
    )


def assert_full_record(record: Record, world: DaemonWorld, name: str, port: int) -> None:
    """Every field DESIGN.md's contract promises, with the right values."""
    fields = record.fields
    missing = [f for f in JOURNAL_FIELDS if f not in fields]
    assert not missing, f"record lacks {missing}: {fields}"
    action = AuditAction(fields["TGTWATCH_ACTION"])
    result = AuditResult(fields["TGTWATCH_RESULT"])
    assert fields["SYSLOG_IDENTIFIER"] == "tgtwatch"
    assert fields["TGTWATCH_INSTANCE"] == name
    assert fields["TGTWATCH_PORT"] == str(port)
    assert fields["TGTWATCH_CONFIG"] == str(world.conf(name))
    # A rejected file was not read into a config: its record has the field, empty.
    assert len(fields["TGTWATCH_SHA256"]) == (0 if action is AuditAction.REJECT else 64), fields
    assert int(fields["TGTWATCH_DURATION_MS"]) >= 0
    assert fields["MESSAGE_ID"] == MESSAGE_IDS[action]
    assert fields["PRIORITY"] == str(PRIORITIES[result])


def audit_of(world: DaemonWorld, name: str) -> list[dict[str, object]]:
    records = [r for r in world.audit() if r["instance"] == name]
    for r in records:
        assert set(AUDIT_LOG_KEYS) <= set(r), r
    return records


def actions(records: list[Record]) -> list[str]:
    return [r.action for r in records]


def latest_status(daemon: Daemon) -> str:
    notes = daemon.notes("STATUS")
    return notes[-1].fields["STATUS"] if notes else ""


def wait_status(daemon: Daemon, text: str, timeout: float = 60) -> str:
    """Wait until the latest STATUS= line contains `text`."""
    return str(
        wait_for(lambda: text in latest_status(daemon) and latest_status(daemon), timeout, text)
    )


# ---------------------------------------------------------------------------
# readiness


@pytest.mark.engine("tgt-admin", reason="the gate is a tgt-admin wrapper; native runs none")
def test_ready_only_after_every_target_answers_then_status(world: DaemonWorld) -> None:
    ports = sample_like(world)
    # Hold every tgt-admin of the first reconcile until the test opens the gate: the
    # tgtds run, their targets are not loaded yet, and READY=1 must not have come.
    entered, gate = world.root / "entered", world.root / "gate"
    entered.mkdir()
    world.install_wrapper(
        "tgt-admin",
        f"""#!/bin/sh
: > "{entered}/$$"
while [ ! -e "{gate}" ]; do sleep 0.02; done
exec {REAL.tgt_admin} "$@"
""",
    )
    daemon = world.start(wait_ready=False)
    wait_for(lambda: len(list(entered.iterdir())) >= 3, 60, "three tgt-admin held at the gate")
    assert sorted(world.pids()) == sorted(ports.values())
    assert not daemon.notes("READY"), "READY=1 before the first reconcile was done"
    opened = time.monotonic()
    gate.touch()

    ready = daemon.wait_for_notify("READY=1")
    # Straight after READY=1, with no other command: every target answers an initiator.
    for name, port in ports.items():
        assert listed_targets(port) == targets_of(name), name
    checked = time.monotonic()
    assert len(daemon.notes("READY")) == 1
    status = wait_status(daemon, "3 running")
    assert status == "3 running", status
    starts = daemon.records(action="start")
    assert sorted(r.instance for r in starts) == sorted(NAMES)
    for r in starts:
        assert_full_record(r, world, r.instance, ports[r.instance])
        assert r.fields["TGTWATCH_RESULT"] == "ok"
        assert r.fields["TGTWATCH_SHA256"] == config_digest(world.conf(r.instance))
        assert r.at < ready.at, "a start was audited after READY=1"
    print(
        f"READY=1 {ready.at - opened:.3f} s after the gate opened, "
        f"{ready.at - daemon.started_at:.3f} s after the daemon started; "
        f"iscsi-ls x3 done {checked - ready.at:.3f} s after READY"
    )


@pytest.mark.engine("native", reason="no instance: no engine runs")
def test_ready_without_instances_and_metrics_pass_promtool(world: DaemonWorld) -> None:
    port = world.reserve_port()
    world.write_instance("solo", port)
    daemon = world.start()
    assert listed_targets(port) == [iqn("solo")]
    wait_status(daemon, "1 running")
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (package prometheus) is not installed")
    wait_for(world.metrics_file.exists, 10, "the metrics file")
    text = world.metrics_file.read_text()
    assert 'tgtwatch_instances{state="running"} 1.0' in text, text
    assert 'tgtwatch_actions{action="start",result="ok"} 1.0' in text, text
    with world.metrics_file.open("rb") as metrics:
        done = subprocess.run(
            [promtool, "check", "metrics"], stdin=metrics, capture_output=True, check=False
        )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


# ---------------------------------------------------------------------------
# the file lifecycle


def test_new_file_edit_delete_each_one_record(world: DaemonWorld) -> None:
    daemon = world.start()
    port = world.reserve_port()

    # 1. moved into the directory: started, with no other command.
    world.write_instance("delta", port)
    start = daemon.wait_for_record(action="start", instance="delta")
    assert start.fields["TGTWATCH_RESULT"] == "ok", start.fields
    assert listed_targets(port) == [iqn("delta")]
    assert_full_record(start, world, "delta", port)
    assert start.fields["TGTWATCH_SHA256"] == config_digest(world.conf("delta"))
    pid = world.pids()[port]

    # 2. edited in place (open, write, close): a second LUN answers.
    text = world.instance_text(
        "delta", port, {iqn("delta"): [world.backing("delta-1.img"), world.backing("delta-2.img")]}
    )
    with world.conf("delta").open("w") as f:
        f.write(text)
    reload = daemon.wait_for_record(action="reload", instance="delta")
    assert reload.fields["TGTWATCH_RESULT"] == "ok", reload.fields
    assert lun_answers(port, iqn("delta"), 2)
    assert_full_record(reload, world, "delta", port)
    assert reload.fields["TGTWATCH_SHA256"] == config_digest(world.conf("delta"))
    assert world.pids()[port] == pid

    # 3. deleted: drained and stopped.
    digest = reload.fields["TGTWATCH_SHA256"]
    world.conf("delta").unlink()
    stop = daemon.wait_for_record(action="stop", instance="delta")
    assert stop.fields["TGTWATCH_RESULT"] == "ok", stop.fields
    assert_full_record(stop, world, "delta", port)
    assert stop.fields["TGTWATCH_SHA256"] == digest
    wait_for(lambda: process_gone(pid), 10, f"tgtd {pid} to exit")
    assert port not in world.pids()
    assert try_listed(port) is None
    wait_status(daemon, "no instances")

    # Exactly one record per step, in the journal and in audit_log.
    assert actions(daemon.records(instance="delta")) == ["start", "reload", "stop"]
    logged = audit_of(world, "delta")
    assert [r["action"] for r in logged] == ["start", "reload", "stop"]
    assert [r["sha256"] for r in logged] == [
        start.fields["TGTWATCH_SHA256"],
        digest,
        digest,
    ]
    assert all(r["port"] == port and r["result"] == "ok" for r in logged), logged


def test_file_written_in_two_halves_is_acted_on_once_when_closed(world: DaemonWorld) -> None:
    daemon = world.start()
    wait_status(daemon, "no instances")
    port = world.reserve_port()
    path = world.conf("halves")
    data = world.instance_text("halves", port).encode()
    half = len(data) // 2
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data[:half])
        # The writer pauses, file open, five times the debounce: nothing may happen.
        threading.Event().wait(0.5)
        assert not daemon.records(instance="halves"), daemon.records(instance="halves")
        assert port not in world.pids()
        os.write(fd, data[half:])
    finally:
        os.close(fd)
    start = daemon.wait_for_record(action="start", instance="halves")
    assert start.fields["TGTWATCH_RESULT"] == "ok", start.fields
    assert start.fields["TGTWATCH_SHA256"] == config_digest(path)
    assert listed_targets(port) == [iqn("halves")]
    wait_status(daemon, "1 running")
    assert actions(daemon.records(instance="halves")) == ["start"]
    assert not daemon.records(action="reject")


def test_vim_style_save_reloads_once_and_never_drains(world: DaemonWorld) -> None:
    port = world.reserve_port()
    world.write_instance("vim", port)
    daemon = world.start()
    pid = world.pids()[port]
    path = world.conf("vim")
    backup = path.with_name("vim.conf~")
    text = world.instance_text(
        "vim", port, {iqn("vim"): [world.backing("vim-1.img"), world.backing("vim-2.img")]}
    )
    # vim's `backupcopy=no` write: rename to the backup, write a new file, drop the backup.
    os.rename(path, backup)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    os.write(fd, text.encode())
    os.fsync(fd)
    os.close(fd)
    backup.unlink()

    reload = daemon.wait_for_record(action="reload", instance="vim")
    assert reload.fields["TGTWATCH_RESULT"] == "ok", reload.fields
    assert reload.fields["TGTWATCH_SHA256"] == config_digest(path)
    assert lun_answers(port, iqn("vim"), 2)
    assert world.pids()[port] == pid
    wait_status(daemon, "1 running")
    assert actions(daemon.records(instance="vim")) == ["start", "reload"]


def test_problem_file_is_rejected_and_its_port_keeps_running(world: DaemonWorld) -> None:
    ports = sample_like(world)
    daemon = world.start()
    pids = world.pids()
    port = ports["alpha"]
    bad = world.instance_text("alpha", port).replace(
        f'PORTAL_OPTS="127.0.0.1:{port}"', f'PORTAL_OPTS="127.0.0.1:{port + 1}"'
    )
    world.move_in("alpha", bad)
    reject = daemon.wait_for_record(action="reject", instance="alpha")
    assert reject.fields["TGTWATCH_RESULT"] == "skipped"
    assert_full_record(reject, world, "alpha", port)  # the port that keeps running
    assert "PORTAL_OPTS" in reject.fields["MESSAGE"] or "port" in reject.fields["MESSAGE"]
    status = wait_status(daemon, "alpha.conf")
    assert "1 problem" in status, status
    # The port keeps its last good config: same tgtd, same targets, still `running`.
    assert world.pids() == pids
    assert listed_targets(port) == [iqn("alpha")]
    assert world.status()["alpha"]["state"] == "running"
    assert actions(daemon.records(instance="alpha")) == ["start", "reject"]
    assert [r["action"] for r in audit_of(world, "alpha")] == ["start", "reject"]


# ---------------------------------------------------------------------------
# signals


def test_sighup_reloads_sigterm_leaves_tgtds_and_restart_adopts(world: DaemonWorld) -> None:
    ports = sample_like(world)
    first = world.start()
    pids = world.pids()
    assert sorted(pids) == sorted(ports.values())
    before = len(first.records())

    asked = time.monotonic()
    first.proc.send_signal(signal.SIGHUP)
    reloading = first.wait_for_notify("RELOADING=1", after=asked)
    usec = int(reloading.fields["MONOTONIC_USEC"])
    assert asked * 1e6 <= usec <= reloading.at * 1e6, (asked, usec, reloading.at)
    first.wait_for_notify("READY=1", after=reloading.at)
    assert len(first.records()) == before, "SIGHUP with nothing changed acted"

    asked = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    first.wait_for_notify("STOPPING=1", after=asked)
    assert first.terminate() == 0, first.log()
    assert world.pids() == pids
    assert not any(process_gone(pid) for pid in pids.values())

    second = world.start()
    wait_status(second, "3 running")
    assert world.pids() == pids
    # With a valid state file nothing needs doing: no start, reload, or adopt record.
    assert second.records() == [], second.records()
    for name, port in ports.items():
        assert listed_targets(port) == targets_of(name)
    assert {n: s["state"] for n, s in world.status().items()} == dict.fromkeys(NAMES, "running")


@pytest.mark.engine("native", cost=True, reason="watchdog pings")
def test_watchdog_pings_stop_while_the_daemon_is_stopped(world: DaemonWorld) -> None:
    port = world.reserve_port()
    world.write_instance("dog", port)
    daemon = world.start(env={"WATCHDOG_USEC": "1000000"})
    first = daemon.wait_for_notify("WATCHDOG=1", after=time.monotonic())
    second = daemon.wait_for_notify("WATCHDOG=1", after=first.at)
    assert 0.3 <= second.at - first.at <= 0.8, second.at - first.at
    # Children never inherit systemd's variables.
    environ = Path(f"/proc/{world.pids()[port]}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_"))]

    os.kill(daemon.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        threading.Event().wait(1.5)  # three ping intervals: the window measured
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    resumed = time.monotonic()
    during = [d for d in daemon.notes("WATCHDOG") if stopped + 0.05 < d.at < resumed]
    assert not during, [d.at - stopped for d in during]
    after = daemon.wait_for_notify("WATCHDOG=1", after=resumed, timeout=2)
    assert after.at - resumed < 1.0


# ---------------------------------------------------------------------------
# crashes


def test_kill_9_of_a_tgtd_is_restarted_within_a_second(world: DaemonWorld) -> None:
    ports = sample_like(world)
    daemon = world.start()
    pids = world.pids()
    before = {name: len(daemon.records(instance=name)) for name in NAMES}
    victim = ports["beta"]
    os.kill(pids[victim], signal.SIGKILL)
    killed = time.monotonic()
    listed = wait_for(lambda: try_listed(victim), 10, "beta to answer iscsi-ls again")
    recovered = time.monotonic() - killed
    assert listed == [iqn("beta")]
    print(f"kill -9: port {victim} answered iscsi-ls again after {recovered:.3f} s")
    assert recovered < 1.0, recovered
    restart = daemon.wait_for_record(action="start", instance="beta", count=2)
    assert restart.fields["TGTWATCH_RESULT"] == "ok"
    assert "died" in restart.fields["MESSAGE"], restart.fields
    now = world.pids()
    assert now[victim] != pids[victim]
    assert {p: pid for p, pid in now.items() if p != victim} == {
        p: pid for p, pid in pids.items() if p != victim
    }
    wait_status(daemon, "3 running")
    assert {n: len(daemon.records(instance=n)) for n in NAMES} == {**before, "beta": 2}


KILLER = """#!{python}
# Fault injection: SIGKILL tgtd PID once tgtwatch has recorded its start as applied.
import json, os, signal, sys, time
pid, state, port = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def applied_at():
    try:
        with open(state) as f:
            return json.load(f)["ports"].get(port, {{}}).get("applied_at")
    except (OSError, ValueError):
        return None
before = applied_at()
open(sys.argv[4], "w").close()  # armed: the wrapper may exec tgtd now
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    if applied_at() != before:
        os.kill(pid, signal.SIGKILL)
        break
    time.sleep(0.01)
"""


@pytest.mark.engine("native", cost=True, reason="tgtd dies first")
def test_tgtd_dying_at_every_start_backs_off_and_is_failed(world: DaemonWorld) -> None:
    ok_port, doomed = world.reserve_port(), world.reserve_port()
    world.install_wrapper("tgtd-killer", KILLER.format(python=Path(sys.executable).resolve()))
    world.install_wrapper(
        "tgtd",
        f"""#!/bin/sh
# tgtd on every port but {doomed}; there, killed once its start is applied.
case " $* " in
  *" -C {doomed} "*)
    armed="{world.root}/armed.$$"
    "{world.bin_dir}/tgtd-killer" $$ "{world.state_dir}/applied.json" {doomed} "$armed" &
    while [ ! -e "$armed" ]; do sleep 0.01; done ;;
esac
exec {REAL.tgtd} "$@"
""",
    )
    world.write_instance("fine", ok_port)
    world.write_instance("doomed", doomed)
    daemon = world.start()
    fine_pid = world.pids()[ok_port]
    starts = [
        daemon.wait_for_record(action="start", instance="doomed", count=n) for n in (1, 2, 3, 4)
    ]
    gaps = [b.at - a.at for a, b in itertools.pairwise(starts)]
    print("doomed restarts after", ", ".join(f"{g:.2f} s" for g in gaps))
    # Retries 1 s then 2 s after the previous start began (the gaps between the records
    # also carry each start's own duration, a few hundred ms at most).
    assert gaps[1] >= 0.7 and gaps[2] >= 1.5, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps
    assert all("died" in s.fields["MESSAGE"] for s in starts[1:])
    wait_for(
        lambda: world.status()["doomed"]["state"] == "failed", 20, "status to say doomed failed"
    )
    status = wait_status(daemon, "failed")
    assert "1 failed" in status, status
    assert world.pids()[ok_port] == fine_pid
    assert actions(daemon.records(instance="fine")) == ["start"]


# ---------------------------------------------------------------------------
# scale and idle cost


@pytest.mark.engine("native", cost=True, reason="idle: no engine runs")
def test_idle_daemon_with_50_instances_uses_little_cpu(world: DaemonWorld) -> None:
    for n in range(50):
        world.write_instance(f"idle{n:02d}", world.reserve_port())
    started = time.monotonic()
    daemon = world.start()
    wait_status(daemon, "50 running", timeout=120)
    print(f"50 instances running {time.monotonic() - started:.1f} s after the daemon started")
    records = len(daemon.records())
    cpu = cpu_seconds(daemon.pid)
    threading.Event().wait(20)  # the idle window measured, not a synchronisation
    used = cpu_seconds(daemon.pid) - cpu
    print(f"idle: {used:.3f} s CPU in 20 s with 50 instances")
    assert used < 0.2, used
    assert len(daemon.records()) == records


@pytest.mark.engine("native", cost=True, reason="the loop; scale: bench/")
def test_200_files_converge_and_200_rewrites_reload_at_most_twice(world: DaemonWorld) -> None:
    daemon = world.start()
    wait_status(daemon, "no instances")
    names = [f"many{n:03d}" for n in range(200)]
    staged = []
    for name in names:
        path = world.staging_dir / f"{name}.conf"
        path.write_text(world.instance_text(name, world.reserve_port()))
        path.chmod(0o644)
        staged.append(path)
    dropped = time.monotonic()
    for path in staged:
        path.rename(world.instances_dir / path.name)
    assert time.monotonic() - dropped < 1.0
    wait_status(daemon, "200 running", timeout=600)
    converged = time.monotonic() - dropped
    # The journal's datagrams are read by another thread than STATUS=: let them land.
    daemon.wait_for_record(action="start", count=200, timeout=10)
    starts = daemon.records(action="start")
    per = {name: sum(1 for r in starts if r.instance == name) for name in names}
    assert set(per.values()) == {1}, {n: c for n, c in per.items() if c != 1}
    assert all(r.fields["TGTWATCH_RESULT"] == "ok" for r in starts)
    pids = world.pids()
    assert len(pids) == 200
    tgtd_rss = sum(rss_kib(pid) for pid in pids.values()) // 1024
    print(
        f"200 files: converged in {converged:.1f} s; tgtds RSS {tgtd_rss} MiB, "
        f"daemon RSS {rss_kib(daemon.pid) // 1024} MiB, CPU {cpu_seconds(daemon.pid):.1f} s"
    )
    for port in (world.ports[0], world.ports[-1]):
        assert try_listed(port) is not None

    # 200 rewrites of one file within a second: at most two reloads, the last the final one.
    name, port = names[7], world.ports[7]
    path = world.conf(name)
    first = time.monotonic()
    written: list[float] = []
    for n in range(200):
        text = world.instance_text(name, port) + f"# rewrite {n}\n"
        staged_path = world.staging_dir / f"{name}.conf"
        staged_path.write_text(text)
        staged_path.chmod(0o644)
        staged_path.replace(path)
        written.append(time.monotonic())
    # A writer descheduled for a whole debounce (a loaded machine) ends a batch there: the
    # first rename leads, each such pause ends one batch, the last batch lands the rest.
    quiet_s = world.default_settings()["debounce_ms"] / 1000
    pauses = sum(b - a >= quiet_s for a, b in itertools.pairwise(written))
    assert time.monotonic() - first < 1.0
    final = config_digest(path)
    last = daemon.wait_for_record(action="reload", instance=name, sha256=final)
    assert last.fields["TGTWATCH_RESULT"] == "ok"
    reloads = daemon.records(action="reload", instance=name)
    print(f"200 rewrites in {time.monotonic() - first:.2f} s: {len(reloads)} reload(s)")
    assert 1 <= len(reloads) <= 2 + pauses, (actions(reloads), pauses)
    assert reloads[-1] is last
    assert world.pids()[port] == pids[port]


# ---------------------------------------------------------------------------
# no journal


@pytest.mark.engine("native", cost=True, reason="where records go")
def test_without_a_journal_socket_records_go_to_stderr(world: DaemonWorld) -> None:
    port = world.reserve_port()
    world.write_instance("plain", port)
    daemon = world.start(journal=False)
    wait_status(daemon, "1 running")
    lines = [line for line in daemon.log().splitlines() if line.startswith("tgtwatch audit: ")]
    assert len(lines) == 1, daemon.log()
    line = lines[0]
    for key in AUDIT_LOG_KEYS:
        assert f" {key}=" in line, line
    assert "action=start" in line and "instance=plain" in line and f"port={port}" in line
    assert [r["action"] for r in audit_of(world, "plain")] == ["start"]


@pytest.mark.engine("native", cost=True, reason="tgtd dies first")
def test_tgtd_exiting_at_once_is_retried_with_growing_delays(world: DaemonWorld) -> None:
    doomed = world.reserve_port()
    world.install_wrapper(
        "tgtd",
        f"""#!/bin/sh
# tgtd on every port but {doomed}; there, it exits at once, as on a broken host.
case " $* " in *" -C {doomed} "*) echo "tgtd: cannot start" >&2; exit 1 ;; esac
exec {REAL.tgtd} "$@"
""",
    )
    world.write_instance("broken", doomed)
    daemon = world.start()
    starts = [
        daemon.wait_for_record(action="start", instance="broken", count=n) for n in (1, 2, 3, 4)
    ]
    assert all(s.fields["TGTWATCH_RESULT"] == "failed" for s in starts), starts
    gaps = [b.at - a.at for a, b in itertools.pairwise(starts)]
    print("broken retried after", ", ".join(f"{g:.2f} s" for g in gaps))
    # The first retry is at once, then 1 s, 2 s ... after the previous attempt.
    assert gaps[0] < gaps[1] < gaps[2], gaps
    assert gaps[1] >= 0.7 and gaps[2] >= 1.5, gaps
    assert world.status()["broken"]["state"] == "failed"
    assert "1 failed" in wait_status(daemon, "failed")
    assert doomed not in world.pids()


@pytest.mark.engine("native", cost=True, reason="the state lock")
def test_one_writer_per_state_dir_and_no_stale_lock_after_kill_9(world: DaemonWorld) -> None:
    """A second daemon, an apply and a drain while a daemon runs do nothing and exit 75;
    a daemon killed with SIGKILL leaves no lock behind (the kernel drops the flock)."""
    port = world.reserve_port()
    world.write_instance("solo", port)
    first = world.start()
    pid = world.pids()[port]
    tool = [str(TGTWATCH), "-c", str(world.settings_path)]
    second = world.start(wait_ready=False)
    assert second.proc.wait(30) == EXIT_BUSY, second.log()
    assert f"held by tgtwatch run (pid {first.pid})" in second.log()
    for argv in (["apply"], ["drain", "--port", str(port)]):
        done = run_tool([*tool, *argv])
        assert done.returncode == EXIT_BUSY, done
        assert f"tgtwatch run (pid {first.pid}) manages this host" in done.stderr, done
    assert world.pids() == {port: pid}, "a refused command touched the tgtd"
    assert listed_targets(port) == [iqn("solo")]

    first.proc.kill()
    first.proc.wait(30)
    done = run_tool([*tool, "apply"])
    assert (done.returncode, done.stdout.strip()) == (0, "nothing to do"), done
    third = world.start()
    wait_status(third, "1 running")
    assert world.pids() == {port: pid}
