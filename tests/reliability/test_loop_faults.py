"""Faults that used to stall the daemon's loop: each must leave the loop responsive (starts on
time, watchdog pings on time, little CPU) while the fault lasts, and be caught up after.
Every fault is undone in a finally block or by the world's cleanup."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from instances import Initiators
from rel_harness import Call, RelWorld, dh

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

# What a prompt start takes here: the debounce (0.1 s) plus tgtd and tgt-admin (~0.3 s).
PROMPT_S = 3.0
IDLE_WINDOW_S = 3.0


@pytest.mark.engine("native", cost=True, reason="the notify socket")
def test_a_notify_socket_nobody_reads_never_stalls_the_loop(world: RelWorld) -> None:
    """systemd busy: its notify socket's queue is full. Before, each sd_notify blocked the
    loop for up to 5 s, spinning (poll: writable, sendto: EAGAIN): drops took 10 s each and
    the idle daemon used a whole core. Now sends fail at once and are kept: files start on
    time, the idle daemon uses little CPU, and once systemd reads again it gets the latest
    STATUS, RELOADING=1 then READY=1 of a SIGHUP it missed, and the watchdog pings."""
    world.write_instance("a", world.reserve_port())
    daemon = world.start(env={"WATCHDOG_USEC": "1000000"})
    daemon.notify.hold()
    assert daemon.notify.fill() > 0
    cpu = dh.cpu_seconds(daemon.pid)
    busy_from = time.monotonic()
    for name in ("b", "c", "d"):
        written = time.monotonic()
        world.write_instance(name, world.reserve_port())
        record = daemon.wait_for_record(action="start", instance=name, result="ok", timeout=60)
        assert record.at - written < PROMPT_S, f"{name} started {record.at - written:.1f} s late"
    daemon.proc.send_signal(signal.SIGHUP)
    threading.Event().wait(IDLE_WINDOW_S)  # the window measured, not a synchronisation
    used = dh.cpu_seconds(daemon.pid) - cpu
    elapsed = time.monotonic() - busy_from
    print(f"deaf notify socket: {used:.2f} s CPU in {elapsed:.1f} s")
    assert used < 0.25 * elapsed, f"{used:.2f} s CPU in {elapsed:.1f} s: spinning"
    released = time.monotonic()
    daemon.notify.release()
    daemon.wait_for_notify("STATUS=4 running", after=released, timeout=10)
    reloading = daemon.wait_for_notify("RELOADING=1", after=released, timeout=10)
    daemon.wait_for_notify("READY=1", after=reloading.at - 1e-9, timeout=10)
    later = [d for d in daemon.notes() if d.at >= reloading.at]
    assert "RELOADING" in later[0].fields
    assert any("READY" in d.fields for d in later[1:]), "READY=1 lost or before RELOADING=1"
    ping = daemon.wait_for_notify("WATCHDOG=1", after=released, timeout=10)
    daemon.wait_for_notify("WATCHDOG=1", after=ping.at, timeout=5)


@pytest.mark.engine("native", cost=True, reason="drains: same calls")
def test_a_long_drain_polls_its_sessions_with_backoff(world: RelWorld, tmp_path: Path) -> None:
    """A drain waits for its sessions for as long as they last: it used to ask tgtd 10 times
    a second, per port, for hours. Now the pauses double up to 5 s; the last session to
    leave is still noticed within that."""
    world.write_settings(on_drain_timeout="wait", drain_timeout_s=1)
    port = world.reserve_port()
    target = dh.iqn("a", 1)
    world.write_instance("a", port, {target: [world.backing("a-1.img")]})
    daemon = world.start()
    initiators = Initiators(tmp_path)
    try:
        initiators.hold(port, target)
        world.remove_instance("a")
        daemon.wait_for_record(action="drain", instance="a", result="partial")
        mark = world.call_count()
        threading.Event().wait(DRAIN_WINDOW_S)  # the window measured, not a synchronisation
        polls = [c for c in world.calls()[mark:] if is_session_poll(c, port)]
        print(f"drain: {len(polls)} session polls in {DRAIN_WINDOW_S:g} s")
        assert len(polls) <= 8, polls  # 10 Hz was 60
    finally:
        initiators.stop_all()
    gone = time.monotonic()
    record = daemon.wait_for_record(action="stop", instance="a", result="ok", timeout=30)
    assert record.at - gone < 5.0 + PROMPT_S, f"noticed {record.at - gone:.1f} s late"


DRAIN_WINDOW_S = 6.0


def is_session_poll(call: Call, port: int) -> bool:
    return (
        call.program == "tgtadm"
        and call.args[:2] == ("-C", str(port))
        and (" ".join(call.args).endswith("--op show --mode target"))
    )


def test_a_stopped_tgtd_holds_only_its_own_lane(world: RelWorld) -> None:
    """A tgtd that does not answer (SIGSTOP: hung) used to be asked on the loop's thread
    (the details of a draining, pending or default port) for tool_timeout_s: the loop, and
    the watchdog pings with it, stopped; systemd killed tgtwatch. Now it is asked on its own
    lane: the pings keep their pace, another file starts at once, a crashed tgtd is
    restarted at once; once it answers again its drain finishes."""
    world.write_settings(tool_timeout_s=10)
    hung, crashy = world.reserve_port(), world.reserve_port()
    world.write_instance("h", hung)
    world.write_instance("c", crashy)
    daemon = world.start(env={"WATCHDOG_USEC": "1000000"})
    stopped = world.pids()[hung]
    os.kill(stopped, signal.SIGSTOP)
    try:
        world.remove_instance("h")  # its drain, and the cycle's look at it, find it hung
        since = time.monotonic()
        written = time.monotonic()
        other = world.reserve_port()
        world.write_instance("n", other)
        record = daemon.wait_for_record(action="start", instance="n", result="ok", timeout=30)
        assert record.at - written < PROMPT_S, f"n started {record.at - written:.1f} s late"
        killed = world.pids()[crashy]
        os.kill(killed, signal.SIGKILL)
        died = time.monotonic()
        record = daemon.wait_for_record(action="start", instance="c", result="ok", timeout=30)
        assert record.at - died < PROMPT_S, f"c restarted {record.at - died:.1f} s late"
        failed = daemon.wait_for_record(action="stop", instance="h", result="failed", timeout=30)
        assert "timed out after 10s" in (failed.get("MESSAGE") or ""), failed.fields
        pings = [d.at for d in daemon.notes("WATCHDOG") if d.at >= since]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert pings and max(gaps, default=0.0) < 1.0, f"watchdog gaps {gaps}"
    finally:
        os.kill(stopped, signal.SIGCONT)
    daemon.wait_for_record(action="stop", instance="h", result="ok", timeout=60)
    assert dh.process_gone(stopped)
