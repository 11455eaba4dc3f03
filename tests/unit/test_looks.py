"""The daemon's look at /proc and its plan(): reused while nothing says they are stale."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from builders import entry, running, spec

from tgtwatch.backends.base import Backend
from tgtwatch.backends.tgtd_procs import may_run
from tgtwatch.daemon.looks import Looks
from tgtwatch.model.structs import Applied, Desired, Observed


class Proc:
    """A backend whose /proc holds `observed`; counts its looks."""

    def __init__(self, observed: Observed) -> None:
        self.observed = observed
        self.looks = 0  # of all of /proc
        self.entries: list[list[int]] = []  # looks at a few pids' entries
        self.sockets: set[int] = set()  # control ports whose control socket exists

    def may_run(self, control_ports: Collection[int]) -> bool:
        return bool(self.sockets & set(control_ports))

    def observe(
        self, detail: Collection[int] | None = None, pids: Collection[int] | None = None
    ) -> Observed:
        assert detail == ()
        if pids is not None:
            self.entries.append(sorted(pids))
            return Observed({p: r for p, r in self.observed.instances.items() if r.pid in pids})
        self.looks += 1
        return self.observed


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


ME = os.getpid()


def rig(*ports: int, pid: int = ME) -> tuple[Looks, Proc, Desired, Applied]:
    # As a /proc scan sees a tgtd: its pid, not what it holds.
    proc = Proc(Observed({p: replace(running(p, pid=pid), inspected=False) for p in ports}))
    desired = Desired({p: spec(f"i{p}", p) for p in ports})
    applied = Applied({p: entry(f"i{p}", p) for p in ports})
    return Looks(cast(Backend, proc)), proc, desired, applied


def test_a_watched_tgtd_on_every_wanted_port_is_not_looked_for_again() -> None:
    looks, proc, desired, applied = rig(3261, 3262)
    first = looks.observe(desired, applied, {ME})
    assert looks.observe(desired, applied, {ME}) is first
    assert proc.looks == 1


def test_no_watched_pids_means_a_new_look_every_time() -> None:
    looks, proc, desired, applied = rig(3261)
    looks.observe(desired, applied, None)
    looks.observe(desired, applied, None)
    assert proc.looks == 2


def test_an_exit_heard_of_makes_the_next_look_whole() -> None:
    looks, proc, desired, applied = rig(3261)
    looks.observe(desired, applied, {ME})
    looks.forget()
    looks.observe(desired, applied, {ME})
    assert proc.looks == 2


def test_a_wanted_or_applied_port_not_seen_is_looked_for() -> None:
    looks, proc, desired, applied = rig(3261)
    first = looks.observe(desired, applied, {ME})
    # A new file's port, where no tgtd can run (no control socket): nothing to look for.
    wanted = Desired({**desired.instances, 3263: spec("new", 3263)})
    assert looks.observe(wanted, applied, {ME}) is first
    assert proc.looks == 1
    # Its control socket exists (a tgtd started by hand, or one that died): look.
    proc.sockets.add(3263)
    looks.observe(wanted, applied, {ME})
    assert proc.looks == 2
    applied_more = Applied({**applied.entries, 3264: entry("old", 3264)})
    looks.observe(desired, applied_more, {ME})
    assert proc.looks == 3


def test_a_port_whose_lane_runs_is_not_looked_for_until_it_ends() -> None:
    # A start under way has a control socket but no pid reported yet: with 200 files at
    # once, each cycle looked at all of /proc for them.
    looks, proc, desired, applied = rig(3261)
    first = looks.observe(desired, applied, {ME})
    wanted = Desired({**desired.instances, 3263: spec("new", 3263)})
    proc.sockets.add(3263)
    assert looks.observe(wanted, applied, {ME}, busy={3263}) is first
    assert proc.looks == 1
    looks.observe(wanted, applied, {ME})  # its lane ended without a pid reported: look
    assert proc.looks == 2


def test_an_unwatched_tgtd_is_checked_alive_and_a_dead_one_means_a_new_look() -> None:
    # A tgtd nobody wants (started by hand): no pidfd watches it, a signal 0 does.
    looks, proc, desired, applied = rig(3261)
    proc.observed = Observed({**proc.observed.instances, 4000: running(4000, pid=ME)})
    looks.observe(desired, applied, set())
    looks.observe(desired, applied, set())
    assert proc.looks == 1  # alive: the last look serves
    proc.observed = Observed({3261: running(3261, pid=ME), 4000: running(4000, pid=dead_pid())})
    looks.forget()
    looks.observe(desired, applied, {ME})
    looks.observe(desired, applied, {ME})
    assert proc.looks == 3  # its pid is gone: looked at again


def test_plan_is_made_again_only_when_an_input_changed() -> None:
    looks, _, desired, applied = rig(3261)
    observed = looks.observe(desired, applied, {ME})
    first = looks.plan(desired, applied, observed, frozenset())
    assert looks.plan(desired, applied, observed, frozenset()) is first
    checked = looks.plan(desired, applied, observed, frozenset({3261}))
    assert checked is not first and [a.port for a in checked.actions] == [3261]
    other: Any = Desired(dict(desired.instances))
    assert looks.plan(other, applied, observed, frozenset()) is not first


def test_a_tgtd_a_lane_started_is_looked_at_alone() -> None:
    looks, proc, desired, applied = rig(3261)
    looks.observe(desired, applied, {ME})
    child = subprocess.Popen(["sleep", "30"])
    try:
        proc.observed = Observed(
            {
                **proc.observed.instances,
                3262: replace(running(3262, pid=child.pid), inspected=False),
            }
        )
        wanted = Desired({**desired.instances, 3262: spec("new", 3262)})
        looks.started(3262, child.pid)
        got = looks.observe(wanted, applied, {ME})
        assert proc.looks == 1 and proc.entries == [[child.pid]]
        assert got.instances.keys() == {3261, 3262}
        assert looks.observe(wanted, applied, {ME}) is got  # alive (signal 0): kept
        # A port no lane reported starting, a control socket there: all of /proc.
        proc.sockets.add(3263)
        looks.observe(Desired({**wanted.instances, 3263: spec("x", 3263)}), applied, {ME})
        assert proc.looks == 2
    finally:
        child.kill()
        child.wait()


def test_a_tgtd_may_run_only_where_its_control_socket_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TGT_IPC_SOCKET", str(tmp_path / "socket"))
    assert not may_run([3261, 3262])
    (tmp_path / "socket.3262").touch()  # a tgtd's, or left by one that died
    assert may_run([3261, 3262]) and not may_run([3261])
