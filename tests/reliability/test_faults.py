"""Faults of the world: each gives a clear audit record and status, leaves the other ports
alone, and the daemon converges once the fault is gone. Every fault is undone in a
finally block (mounts unmounted, the host-wide inotify limit restored)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rel_harness import RelWorld, dh, mounted

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

MAX_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")


# Long enough for another port to start while tgt-admin hangs (~0.5 s), short for a test.
HANG_TIMEOUT_S = 10
# A fault of the world (tgtd, the portal, the state or instances directory, inotify): the
# engine only loads the bystander, so these run under the default engine (CI time).
WORLD_FAULT = pytest.mark.engine("native", cost=True, reason="a fault outside the engine")


def bystander(world: RelWorld) -> tuple[int, int, dh.Daemon]:
    port = world.reserve_port()
    world.write_instance("by", port)
    daemon = world.start(env={"WATCHDOG_USEC": "1000000"})
    return port, world.pids()[port], daemon


def assert_bystander(world: RelWorld, port: int, pid: int) -> None:
    assert world.pids()[port] == pid, "the other port's tgtd was touched"
    assert world.targets_on(port) == ([f"{dh.iqn('by')}/1"], "ready")


def no_tgtd_left(world: RelWorld, port: int) -> None:
    """A failed start is retried (at once, then after 1 s, 2 s ...): between attempts no tgtd
    is left on the port."""
    dh.wait_for(lambda: world.tgtds_on(port) == [], 10, f"no tgtd left on {port}")


def status_of(world: RelWorld, name: str) -> dict[str, object]:
    return world.status().get(name, {})


def converged(world: RelWorld, name: str, port: int) -> bool:
    try:
        return world.targets_on(port) == ([f"{dh.iqn(name)}/1"], "ready")
    except dh.g.TgtCommandError:
        return False


@WORLD_FAULT
def test_tgtd_failing(world: RelWorld) -> None:
    program_failing(world, "tgtd", "exited with code 1 during start")


@pytest.mark.engine("tgt-admin", reason="the fault is a failing tgt-admin; native runs none")
def test_tgt_admin_failing(world: RelWorld) -> None:
    program_failing(world, "tgt-admin", "injected failure")


def program_failing(world: RelWorld, program: str, expect: str) -> None:
    by_port, by_pid, daemon = bystander(world)
    world.fault(program, "fail")
    port = world.reserve_port()
    world.write_instance("x", port)
    record = daemon.wait_for_record(action="start", instance="x", result="failed")
    assert expect in (record.get("MESSAGE") or ""), record.fields
    dh.wait_for(lambda: status_of(world, "x").get("state") == "failed", 30, "status failed")
    no_tgtd_left(world, port)
    assert_bystander(world, by_port, by_pid)
    world.heal()
    daemon.wait_for_record(action="start", instance="x", result="ok", timeout=30)
    assert converged(world, "x", port)
    assert status_of(world, "x").get("state") == "running"
    assert_bystander(world, by_port, by_pid)


@pytest.mark.engine("tgt-admin", reason="the fault is a hung tgt-admin; native runs none")
def test_tgt_admin_hanging(world: RelWorld) -> None:
    """A hung tgt-admin holds its own port's lane only: another port starts meanwhile and
    the loop keeps pinging the watchdog; the gateway's timeout (tool_timeout_s) ends it."""
    world.write_settings(tool_timeout_s=HANG_TIMEOUT_S)
    by_port, by_pid, daemon = bystander(world)
    world.fault("tgt-admin", "hang")
    port = world.reserve_port()
    world.write_instance("x", port)
    dh.wait_for(
        lambda: any(c.program == "tgt-admin" and str(port) in c.args for c in world.calls()),
        30,
        "the hanging tgt-admin",
    )
    (world.faults_dir / "tgt-admin.hang").unlink()
    other = world.reserve_port()
    world.write_instance("y", other)
    started = daemon.wait_for_record(action="start", instance="y", result="ok", timeout=30)
    pings = len(daemon.notes("WATCHDOG"))
    daemon.wait_for_notify("WATCHDOG=1", after=daemon.notes("WATCHDOG")[-1].at, timeout=5)
    assert len(daemon.notes("WATCHDOG")) > pings
    record = daemon.wait_for_record(action="start", instance="x", result="failed", timeout=60)
    assert f"timed out after {HANG_TIMEOUT_S}s" in (record.get("MESSAGE") or ""), record.fields
    assert started.at < record.at, "y waited for x's hung tgt-admin"
    daemon.wait_for_record(action="start", instance="x", result="ok", timeout=30)
    assert converged(world, "x", port)
    assert_bystander(world, by_port, by_pid)


@WORLD_FAULT
def test_port_taken_by_another_program(world: RelWorld) -> None:
    by_port, by_pid, daemon = bystander(world)
    port = world.reserve_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        world.write_instance("x", port)
        record = daemon.wait_for_record(action="start", instance="x", result="failed")
        assert f"could not bind portal 127.0.0.1:{port}" in (record.get("MESSAGE") or "")
        dh.wait_for(lambda: status_of(world, "x").get("state") == "failed", 30, "failed")
        no_tgtd_left(world, port)
        assert_bystander(world, by_port, by_pid)
    daemon.wait_for_record(action="start", instance="x", result="ok", timeout=30)
    assert converged(world, "x", port)
    assert_bystander(world, by_port, by_pid)


@pytest.mark.parametrize("how", ["read-only", "full"])
@WORLD_FAULT
def test_state_dir_unwritable(world: RelWorld, how: str) -> None:
    """Starts need the state directory (tgtd's log, the state file): with it read-only or
    full they fail with a clear record and message; other ports keep running; once it is
    writable again the instance starts and the state file is written."""
    by_port, by_pid, daemon = bystander(world)
    state = world.state_dir
    if how == "read-only":
        argv = ["mount", "--bind", "-o", "ro", str(state), str(state)]
    else:
        argv = ["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=64", "tgtwatch-test", str(state)]
    saved = {p.relative_to(state): p.read_bytes() for p in state.rglob("*") if p.is_file()}
    with mounted(argv, state):
        if how == "full":
            (state / "log").mkdir()
            for rel, data in saved.items():
                (state / rel).parent.mkdir(parents=True, exist_ok=True)
                (state / rel).write_bytes(data)
            fd = os.open(state / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * 4096):
                        pass
            finally:
                os.close(fd)
        port = world.reserve_port()
        world.write_instance("x", port)
        record = daemon.wait_for_record(action="start", instance="x", result="failed")
        message = record.get("MESSAGE") or ""
        # Read-only: opening tgtd's log fails and says so. Full: tgtd itself exits (it cannot
        # write its log); the message names the log under the state directory.
        expected = "Read-only file system" if how == "read-only" else str(state)
        assert expected in message, message
        no_tgtd_left(world, port)
        assert_bystander(world, by_port, by_pid)
        assert daemon.alive()
        if how == "full":
            # Space freed where it ran out (an unmount now would hide the state file the
            # retry writes there).
            (state / "filler").unlink()
            recovers(world, daemon, port, by_port, by_pid)
    if how == "read-only":
        recovers(world, daemon, port, by_port, by_pid)


def recovers(world: RelWorld, daemon: dh.Daemon, port: int, by_port: int, by_pid: int) -> None:
    """The failed start is retried within its backoff; the state file lists both ports."""
    # The backoff doubles from 1 s: a fault held for up to ~15 s retries within 16 s.
    daemon.wait_for_record(action="start", instance="x", result="ok", timeout=45)
    assert converged(world, "x", port)

    def both_saved() -> bool:
        entries = json.loads((world.state_dir / "applied.json").read_text())["ports"]
        return str(port) in entries and str(by_port) in entries

    dh.wait_for(both_saved, 10, "the state file lists both ports")
    assert_bystander(world, by_port, by_pid)


@WORLD_FAULT
def test_instances_dir_moved_away_holds_every_instance_and_says_so(world: RelWorld) -> None:
    """Moving instances_dir away (or a typo in the setting) deletes no file: every instance
    keeps its tgtd, pid and targets, and the daemon says so: a `reject` record naming the
    directory, STATUS, the metrics. Moved back, nothing happens. An empty directory is
    every file deleted (how a whole directory is retired on purpose): its instances drain;
    a file dropped there then starts."""
    port, pid, daemon = bystander(world)
    moved = world.instances_dir.with_name("moved-away")
    world.instances_dir.rename(moved)
    record = daemon.wait_for_record(action="reject", instance=world.instances_dir.name)
    message = record.get("MESSAGE") or ""
    assert "does not exist: the 1 instances applied from it are held" in message, message
    assert "[rule: directory]" in message
    dh.wait_for(
        lambda: "1 problem (conf.d: does not exist" in daemon.notes("STATUS")[-1].fields["STATUS"],
        10,
        "STATUS to name the missing directory",
    )
    dh.wait_for(lambda: metric(world, "tgtwatch_held_instances") == 1, 10, "the held metric")
    assert_bystander(world, port, pid)
    moved.rename(world.instances_dir)
    dh.wait_for(
        lambda: daemon.notes("STATUS")[-1].fields["STATUS"] == "1 running", 10, "problem gone"
    )
    assert metric(world, "tgtwatch_held_instances") == 0
    assert_bystander(world, port, pid)
    assert not daemon.records(action="drain") and not daemon.records(action="stop")
    # Retire the whole directory on purpose: delete its files (an empty directory).
    world.remove_instance("by")
    daemon.wait_for_record(action="stop", instance="by", result="ok", timeout=30)
    assert dh.process_gone(pid)
    other = world.reserve_port()
    world.write_instance("x", other)
    daemon.wait_for_record(action="start", instance="x", result="ok", timeout=30)
    assert converged(world, "x", other)


@WORLD_FAULT
def test_an_unmounted_instances_dir_holds_every_instance(world: RelWorld) -> None:
    """instances_dir as a mount point: unmounted, it is the empty directory beneath, which
    would read as every file deleted. Owned by another user (as README's advice has it),
    that directory is refused instead: every instance is held as it runs."""
    os.chown(world.instances_dir, 65534, 65534)
    argv = ["mount", "-t", "tmpfs", "-o", "mode=0755", "tgtwatch-conf", str(world.instances_dir)]
    with mounted(argv, world.instances_dir):
        port = world.reserve_port()
        conf = world.conf("by")
        conf.write_text(world.instance_text("by", port))  # the staging dir is elsewhere
        conf.chmod(0o644)
        daemon = world.start()
        pid = world.pids()[port]
        subprocess.run(["umount", str(world.instances_dir)], check=True)
        record = daemon.wait_for_record(action="reject", instance=world.instances_dir.name)
        assert "directory owned by uid 65534" in (record.get("MESSAGE") or "")
        dh.wait_for(lambda: metric(world, "tgtwatch_held_instances") == 1, 10, "held")
        assert_bystander(world, port, pid)
        assert not daemon.records(action="drain") and not daemon.records(action="stop")


def inotify_watches(pid: int) -> int:
    """The inotify watches a process holds, from /proc/PID/fdinfo."""
    count = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        with contextlib.suppress(OSError):
            count += info.read_text().count("inotify wd:")
    return count


@contextlib.contextmanager
def no_inotify_watches() -> Iterator[None]:
    """max_user_watches = 0: no new inotify watch can be added, host-wide.
    Keep the block short; the limit is restored whatever happens."""
    original = MAX_WATCHES.read_text()
    try:
        MAX_WATCHES.write_text("0\n")
        yield
    finally:
        MAX_WATCHES.write_text(original)


@WORLD_FAULT
def test_inotify_watches_exhausted_still_converges(world: RelWorld) -> None:
    """No inotify watch can be added: the daemon still converges (first cycle, then its
    resync timer) and watches again once watches can be had (it re-arms every cycle)."""
    world.write_settings(resync_interval_s=1)
    port = world.reserve_port()
    world.write_instance("x", port)
    with no_inotify_watches():
        daemon = world.start()  # READY=1: the watcher tried (and failed) before the cycle
        assert inotify_watches(daemon.pid) == 0
    assert converged(world, "x", port)
    dh.wait_for(lambda: inotify_watches(daemon.pid) > 0, 30, "the daemon to watch again")
    other = world.reserve_port()
    world.write_instance("y", other)
    daemon.wait_for_record(action="start", instance="y", result="ok", timeout=30)


@WORLD_FAULT
def test_inotify_watches_exhausted_is_reported(world: RelWorld) -> None:
    with no_inotify_watches():
        daemon = world.start()
        # One line in the daemon's log (the journal under systemd) names the directory.
        # (One per directory, in no set order: wait for the instances directory's own.)
        line = f"watcher: cannot watch {world.instances_dir}: No space left on device"
        dh.wait_for(lambda: line in daemon.log(), 10, "the watch failure reported")


@WORLD_FAULT
def test_state_file_unwritable_is_reported(world: RelWorld) -> None:
    """applied.json cannot be replaced (a directory stands in its place): the start still
    happens, and the daemon says the state was not saved in its log (the journal under
    systemd), in STATUS and in the metrics, once; then that it was written again."""
    _port, _pid, daemon = bystander(world)
    state = world.state_dir / "applied.json"
    state.unlink()
    state.mkdir()
    (state / "in-the-way").touch()
    port = world.reserve_port()
    world.write_instance("x", port)
    daemon.wait_for_record(action="start", instance="x", result="ok")
    dh.wait_for(
        lambda: any("state not saved (" in d.fields["STATUS"] for d in daemon.notes("STATUS")),
        10,
        "STATUS to say the state was not saved",
    )
    dh.wait_for(lambda: "cannot write the state" in daemon.log(), 10, "the log line")
    assert metric(world, "tgtwatch_state_save_failing") == 1
    shutil.rmtree(state)
    other = world.reserve_port()
    world.write_instance("y", other)
    daemon.wait_for_record(action="start", instance="y", result="ok")
    dh.wait_for(lambda: "written again" in daemon.log(), 10, "the state written again")
    assert daemon.log().count("cannot write the state") == 1, daemon.log()
    # The log line comes first; STATUS and the metrics file at the end of that cycle.
    dh.wait_for(
        lambda: "state not saved" not in daemon.notes("STATUS")[-1].fields["STATUS"],
        10,
        "STATUS to stop saying the state was not saved",
    )
    dh.wait_for(lambda: metric(world, "tgtwatch_state_save_failing") == 0, 10, "the metric")
    # The first write after the fix may be a cycle's, before y's start ended.
    dh.wait_for(
        lambda: {str(port), str(other)} <= set(json.loads(state.read_text())["ports"]),
        10,
        "both starts in the state file",
    )


def metric(world: RelWorld, name: str) -> float:
    """The value of an unlabelled gauge in the daemon's metrics file."""
    for line in world.metrics_file.read_text().splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {world.metrics_file}")


QUEUED_EVENTS = Path("/proc/sys/fs/inotify/max_queued_events")


@contextlib.contextmanager
def small_inotify_queue(events: int) -> Iterator[None]:
    """fs.inotify.max_queued_events lowered (host-wide) while an inotify instance is made:
    the instance keeps the limit it was made with. Restored whatever happens."""
    original = QUEUED_EVENTS.read_text()
    try:
        QUEUED_EVENTS.write_text(f"{events}\n")
        yield
    finally:
        QUEUED_EVENTS.write_text(original)


@WORLD_FAULT
def test_an_inotify_overflow_is_caught_up_by_a_rescan(world: RelWorld) -> None:
    """The kernel drops events past the queue's limit: the daemon hears IN_Q_OVERFLOW from
    its own reader, says so, and rescans, so a file whose events were lost still starts.
    The daemon is stopped (SIGSTOP) while 100 events pile up; the new file comes last."""
    with small_inotify_queue(16):
        daemon = world.start()
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        for n in range(50):  # ignored names: only events, no instances
            junk = world.instances_dir / f".junk{n}"
            junk.touch()
            junk.unlink()
        port = world.reserve_port()
        world.write_instance("x", port)
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    daemon.wait_for_record(action="start", instance="x", result="ok", timeout=30)
    assert "watcher: inotify queue overflowed: events were lost; rescanning" in daemon.log()
    assert converged(world, "x", port)
