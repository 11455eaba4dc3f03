"""The systemd backend's own decisions, with a scripted systemctl and a fake /proc."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from pathlib import Path

from tgtwatch.backends.base import Outcome, Result
from tgtwatch.backends.systemd import Systemctl, SystemdBackend, unit_of_pid
from tgtwatch.backends.unit_dropin import DROPIN_NAME, UNIT_STATE_DIR, ensure_dropin
from tgtwatch.cli.wiring import make_backend
from tgtwatch.config.settings import BackendKind, Settings
from tgtwatch.model.structs import DrainStop, InstanceKind, InstanceSpec, Observed, ObservedInstance
from tgtwatch.tgt.gateway import TgtPrograms

# Never the host's /run/systemd/system: a directory whose parent does not exist.
NO_SYSTEMD = Path("/nonexistent/tgtwatch-test/tgtd@.service.d")


class ScriptedSystemctl(Systemctl):
    """Answers `show` from a list of states, one per call; records every call."""

    def __init__(self, states: list[tuple[str, int]]) -> None:
        super().__init__()
        object.__setattr__(self, "states", states)
        object.__setattr__(self, "calls", [])

    def run(self, *args: str) -> str:
        self.calls.append(args)  # type: ignore[attr-defined]
        states: list[tuple[str, int]] = self.states  # type: ignore[attr-defined]
        state, pid = states.pop(0) if len(states) > 1 else states[0]
        return f"ActiveState={state}\nMainPID={pid}\n"


def fake_tgtd(proc: Path, pid: int, control_port: int) -> None:
    (proc / str(pid)).mkdir(parents=True)
    argv = ["/usr/sbin/tgtd", "-f", "--iscsi", f"portal=0.0.0.0:{control_port}"]
    (proc / str(pid) / "cmdline").write_bytes(
        b"\0".join(a.encode() for a in [*argv, "-C", str(control_port)]) + b"\0"
    )


def spec(port: int) -> InstanceSpec:
    return InstanceSpec(
        "delta",
        InstanceKind.DROPIN,
        port,
        f"0.0.0.0:{port}",
        port,
        Path("/etc/mytgt/conf.d/delta.conf"),
        "0" * 64,
    )


def backend(tmp_path: Path, states: list[tuple[str, int]]) -> SystemdBackend:
    settings = Settings(state_dir=tmp_path / "run")
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    return SystemdBackend(
        settings, systemctl=ScriptedSystemctl(states), proc_root=proc, dropin_dir=NO_SYSTEMD
    )


def test_unit_of_pid_reads_the_cgroup(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text(
        "1:name=systemd:/system.slice/system-tgtd.slice/tgtd@a.service\n"
        "0::/system.slice/system-tgtd.slice/tgtd@a.service\n"
    )
    assert unit_of_pid(7, tmp_path) == "tgtd@a.service"
    assert unit_of_pid(8, tmp_path) is None


def test_no_wait_when_the_unit_is_down_or_on_the_same_port(tmp_path: Path) -> None:
    cancel = threading.Event()
    for states in ([("inactive", 0)], [("failed", 0)], [("activating", 0)]):
        assert (
            backend(tmp_path, states)._wait_old_port("tgtd@delta.service", spec(3401), cancel)
            is None
        )
    fake_tgtd(tmp_path / "proc", 50, 3401)
    same = backend(tmp_path, [("active", 50)])
    assert same._wait_old_port("tgtd@delta.service", spec(3401), cancel) is None


def test_a_unit_on_its_old_port_fails_the_start_at_once_instead_of_holding_a_lane(
    tmp_path: Path,
) -> None:
    """The plan holds a port change's start until the old port has drained; should the unit
    still run its old port anyway, the start must not wait (a drain may last hours, and a
    start lane waiting for it held one of the few shared lanes)."""
    b = backend(tmp_path, [("active", 50)])
    fake_tgtd(tmp_path / "proc", 50, 3400)
    outcome = b._wait_old_port("tgtd@delta.service", spec(3401), threading.Event())
    assert outcome is not None and outcome.result is Result.FAILED
    assert "still runs control port 3400" in outcome.message
    assert len(b.systemctl.calls) == 1  # type: ignore[attr-defined]


def test_a_port_change_after_the_drain_waits_only_for_the_stop_job(tmp_path: Path) -> None:
    """Deactivating without a MainPID (ExecStop still runs), then inactive: a start before
    that would cancel the stop job."""
    b = backend(tmp_path, [("deactivating", 0), ("deactivating", 0), ("inactive", 0)])
    assert b._wait_old_port("tgtd@delta.service", spec(3401), threading.Event()) is None
    assert len(b.systemctl.calls) == 3  # type: ignore[attr-defined]


def test_a_deactivating_unit_is_waited_for(tmp_path: Path) -> None:
    b = backend(tmp_path, [("deactivating", 0), ("inactive", 0)])
    assert b._wait_old_port("tgtd@delta.service", spec(3401), threading.Event()) is None
    assert len(b.systemctl.calls) == 2  # type: ignore[attr-defined]


def test_the_wait_ends_when_cancelled(tmp_path: Path) -> None:
    b = backend(tmp_path, [("deactivating", 0)])
    cancel = threading.Event()
    cancel.set()
    outcome = b._wait_old_port("tgtd@delta.service", spec(3401), cancel)
    assert outcome is not None and outcome.result is Result.FAILED
    assert "still stopping (cancelled)" in outcome.message


def test_the_loops_observation_names_the_instance_of_each_unit(tmp_path: Path) -> None:
    b, _systemctl, proc = counting_backend(tmp_path)
    unit_tgtd(proc, 60, 3400, "tgtd@delta.service")
    unit_tgtd(proc, 61, 3260, "tgt.service")
    seen = b.observe(()).instances
    assert (seen[3400].instance, seen[3260].instance) == ("delta", None)


class CountingSystemctl(Systemctl):
    """`list-units` answers the units in `activating`; `show` answers inactive."""

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "activating_units", set())
        object.__setattr__(self, "calls", [])

    def run(self, *args: str) -> str:
        self.calls.append(args)  # type: ignore[attr-defined]
        if args[0] == "list-units":
            units: set[str] = self.activating_units  # type: ignore[attr-defined]
            return "".join(f"{u} loaded activating start\n" for u in sorted(units))
        if args[0] == "show":
            return "0\n" if "--value" in args else "ActiveState=inactive\nMainPID=0\n"
        return ""


def unit_tgtd(proc: Path, pid: int, control_port: int, unit: str, exe: str = "/bin/false") -> None:
    """A tgtd in /proc as the backend checks it: root's, running its programs' tgtd (exe)."""
    fake_tgtd(proc, pid, control_port)
    (proc / str(pid) / "comm").write_text("tgtd\n")
    (proc / str(pid) / "cgroup").write_text(f"0::/system.slice/system-tgtd.slice/{unit}\n")
    (proc / str(pid) / "status").write_text("Name:\ttgtd\nUid:\t0\t0\t0\t0\n")
    (proc / str(pid) / "exe").symlink_to(os.path.realpath(exe))


def counting_backend(tmp_path: Path) -> tuple[SystemdBackend, CountingSystemctl, Path]:
    proc = tmp_path / "proc"
    proc.mkdir()
    systemctl = CountingSystemctl()
    settings = Settings(state_dir=tmp_path / "run")
    programs = TgtPrograms("/bin/false", "/bin/false", "/bin/false")  # no tgtd answers
    backend = SystemdBackend(
        settings, programs=programs, systemctl=systemctl, proc_root=proc, dropin_dir=NO_SYSTEMD
    )
    return backend, systemctl, proc


def asked(systemctl: CountingSystemctl, verb: str) -> int:
    calls: list[tuple[str, ...]] = systemctl.calls  # type: ignore[attr-defined]
    return sum(1 for c in calls if c[0] == verb)


# `status` asks for details (of some port): only then is systemd asked which units activate.
DETAIL = (1,)


def test_the_loops_observation_never_runs_systemctl(tmp_path: Path) -> None:
    """The daemon's loop observes with no details: /proc only. A systemctl call (timeout
    120 s) on the loop's thread would stall it past WatchdogSec when systemd is busy."""
    b, systemctl, proc = counting_backend(tmp_path)
    unit_tgtd(proc, 60, 3400, "tgtd@delta.service")
    systemctl.activating_units.add("tgtd@delta.service")  # type: ignore[attr-defined]
    for _ in range(3):
        running = b.observe(()).instances[3400]
        assert running.unit == "tgtd@delta.service" and not running.inspected
    assert systemctl.calls == []  # type: ignore[attr-defined]


def test_an_activating_unit_is_starting_until_systemd_says_it_is_active(tmp_path: Path) -> None:
    b, systemctl, proc = counting_backend(tmp_path)
    unit_tgtd(proc, 60, 3400, "tgtd@delta.service")
    systemctl.activating_units.add("tgtd@delta.service")  # type: ignore[attr-defined]
    assert b.observe(DETAIL).instances[3400].starting
    assert b.observe(DETAIL).instances[3400].starting
    systemctl.activating_units.clear()  # type: ignore[attr-defined]
    running = b.observe(DETAIL).instances[3400]
    assert not running.starting and running.unit == "tgtd@delta.service"
    assert asked(systemctl, "list-units") == 3


def test_a_settled_tgtd_costs_no_systemctl_call(tmp_path: Path) -> None:
    b, systemctl, proc = counting_backend(tmp_path)
    unit_tgtd(proc, 60, 3400, "tgtd@delta.service")
    for _ in range(3):
        assert not b.observe(DETAIL).instances[3400].starting
    assert asked(systemctl, "list-units") == 1


def test_a_new_tgtd_on_a_pid_seen_before_is_asked_about_again(tmp_path: Path) -> None:
    b, systemctl, proc = counting_backend(tmp_path)
    unit_tgtd(proc, 60, 3400, "tgtd@delta.service")
    b.observe(DETAIL)
    shutil.rmtree(proc / "60")
    assert b.observe(DETAIL).instances == {}
    unit_tgtd(proc, 60, 3400, "tgtd@delta.service")  # the pid came round again
    systemctl.activating_units.add("tgtd@delta.service")  # type: ignore[attr-defined]
    assert b.observe(DETAIL).instances[3400].starting
    assert asked(systemctl, "list-units") == 2


def test_only_tgtd_units_are_asked_about(tmp_path: Path) -> None:
    b, systemctl, proc = counting_backend(tmp_path)
    unit_tgtd(proc, 61, 3260, "tgt.service")
    assert b.observe(DETAIL).instances[3260].unit == "tgt.service"
    assert asked(systemctl, "list-units") == 0


def test_a_start_asks_for_the_old_unit_only_when_it_may_be_up(tmp_path: Path) -> None:
    """Unseen and not being stopped: straight to `systemctl start` (no `show` first)."""
    b, systemctl, proc = counting_backend(tmp_path)
    new = dataclasses.replace(spec(3401), text="<target iqn.2026-11.t:delta>\n</target>\n")
    b.start(new, threading.Event())
    calls: list[tuple[str, ...]] = systemctl.calls  # type: ignore[attr-defined]
    assert calls[0] == ("start", "tgtd@delta.service")
    unit_tgtd(proc, 60, 3400, "tgtd@delta.service")  # now seen running the old port
    b.observe(())
    calls.clear()
    b.start(new, threading.Event())
    assert calls[0][0] == "show" and calls[1] == ("start", "tgtd@delta.service")


class StoppingSystemctl(CountingSystemctl):
    """The first `stop` blocks until released, as systemctl does while ExecStop drains."""

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "in_stop", threading.Event())
        object.__setattr__(self, "release", threading.Event())

    def run(self, *args: str) -> str:
        if args[0] == "stop" and not self.in_stop.is_set():  # type: ignore[attr-defined]
            self.in_stop.set()  # type: ignore[attr-defined]
            assert self.release.wait(10)  # type: ignore[attr-defined]
        return super().run(*args)


def test_a_start_waits_for_a_unit_this_backend_is_stopping(tmp_path: Path) -> None:
    """tgtd has exited but `systemctl stop` has not returned (ExecStop still runs): a
    start must ask systemd first, though no observation shows the unit any more."""
    proc = tmp_path / "proc"
    proc.mkdir()
    systemctl = StoppingSystemctl()
    programs = TgtPrograms("/bin/false", "/bin/false", "/bin/false")  # no tgtd answers
    b = SystemdBackend(
        Settings(state_dir=tmp_path / "run"),
        programs=programs,
        systemctl=systemctl,
        proc_root=proc,
        dropin_dir=NO_SYSTEMD,
    )
    unit_tgtd(proc, 60, 3400, "tgtd@delta.service")
    b.direct = DrainingDirect(Outcome(Result.OK, "drained", pid=60))  # type: ignore[assignment]
    drain = threading.Thread(
        target=b.drain_stop,
        args=(DrainStop(3400, 3400, "delta", spec(3400).config), None, False, threading.Event()),
    )
    drain.start()
    try:
        assert systemctl.in_stop.wait(10)  # type: ignore[attr-defined]
        shutil.rmtree(proc / "60")
        b.observe(())  # the unit is no longer seen
        calls: list[tuple[str, ...]] = systemctl.calls  # type: ignore[attr-defined]
        calls.clear()
        new = dataclasses.replace(spec(3401), text="<target iqn.2026-11.t:delta>\n</target>\n")
        b.start(new, threading.Event())
        assert calls[0][0] == "show"
    finally:
        systemctl.release.set()  # type: ignore[attr-defined]
        drain.join(10)
    calls.clear()
    b.start(new, threading.Event())  # stopped: no longer asked about
    assert calls[0] == ("start", "tgtd@delta.service")


class DrainingDirect:
    """The direct backend's drain, faked: it ends as told and records that it ran."""

    def __init__(self, ends: Outcome) -> None:
        self.ends = ends
        self.drains = 0

    def observe(self, detail: object = None, pids: object = None) -> Observed:
        return Observed({3400: ObservedInstance(3400, 3400, 60)})

    def drain_stop(self, *args: object) -> Outcome:
        self.drains += 1
        return self.ends


class ResultSystemctl(CountingSystemctl):
    def __init__(self, result: str) -> None:
        super().__init__()
        object.__setattr__(self, "result", result)

    def run(self, *args: str) -> str:
        if args[0] == "show" and "--property=Result" in args:
            self.calls.append(args)  # type: ignore[attr-defined]
            return f"Result={self.result}\n"  # type: ignore[attr-defined]
        return super().run(*args)


def drain_with(tmp_path: Path, ends: Outcome, result: str = "success") -> tuple[Outcome, list[str]]:
    proc = tmp_path / "proc"
    proc.mkdir()
    unit_tgtd(proc, 60, 3400, "tgtd@delta.service")
    systemctl = ResultSystemctl(result)
    b = SystemdBackend(
        Settings(state_dir=tmp_path / "run"),
        systemctl=systemctl,
        proc_root=proc,
        dropin_dir=NO_SYSTEMD,
    )
    direct = DrainingDirect(ends)
    b.direct = direct  # type: ignore[assignment]
    action = DrainStop(3400, 3400, "delta", spec(3400).config)
    outcome = b.drain_stop(action, 5.0, False, threading.Event())
    assert direct.drains == 1
    calls: list[tuple[str, ...]] = systemctl.calls  # type: ignore[attr-defined]
    assert not (tmp_path / "run" / "stopping" / "3400").exists()
    return outcome, [c[0] for c in calls]


def test_a_drained_unit_is_stopped_by_systemctl(tmp_path: Path) -> None:
    outcome, verbs = drain_with(
        tmp_path, Outcome(Result.OK, "tgtd pid 60 drained and exited after 0.1 s", pid=60)
    )
    assert verbs == ["stop", "show"]
    assert (outcome.result, outcome.message) == (
        Result.OK,
        "tgtd@delta.service (pid 60) drained and stopped",
    )


def test_a_forced_drain_says_how_many_sessions_it_cut_off(tmp_path: Path) -> None:
    cut = "tgtd pid 60 drained and exited after 5.0 s; 2 sessions cut off (force)"
    outcome, _ = drain_with(tmp_path, Outcome(Result.OK, cut, pid=60))
    assert outcome.message.endswith("drained and stopped; 2 sessions cut off (force)")


def test_sessions_that_remain_leave_the_unit_running(tmp_path: Path) -> None:
    remains = Outcome(Result.PARTIAL, "1 sessions remain", pid=60, draining=True)
    outcome, verbs = drain_with(tmp_path, remains)
    assert outcome == remains and verbs == []


def test_a_failed_drain_leaves_the_unit_running_for_the_next_cycle(tmp_path: Path) -> None:
    failed = Outcome(Result.FAILED, "drain failed: tgtadm: exit 107", pid=60)
    outcome, verbs = drain_with(tmp_path, failed)
    assert outcome == failed and verbs == []


def test_a_tgtd_the_drain_had_to_kill_is_stopped_before_it_restarts(tmp_path: Path) -> None:
    killed = Outcome(Result.PARTIAL, "tgtd pid 60 did not exit after delete system: killed")
    outcome, verbs = drain_with(tmp_path, killed)
    assert verbs == ["stop", "show"]  # Restart=on-failure would bring a killed tgtd back
    assert outcome.result is Result.PARTIAL
    assert outcome.message == f"tgtd@delta.service: {killed.message}; unit stopped"


def test_a_unit_that_stopped_badly_is_partial(tmp_path: Path) -> None:
    outcome, _ = drain_with(tmp_path, Outcome(Result.OK, "drained", pid=60), result="exit-code")
    assert outcome.result is Result.PARTIAL
    assert "stopped, but with result 'exit-code'" in outcome.message


def test_every_tgt_tool_call_gets_the_configured_timeout(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, tool_timeout_s=120.0)
    assert SystemdBackend(settings).direct.control(3400).timeout_s == 120.0
    assert (
        make_backend(dataclasses.replace(settings, backend=BackendKind.DIRECT))
        .control(3400)
        .timeout_s
        == 120.0
    )  # type: ignore[attr-defined]


# --- the units follow state_dir -------------------------------------------------------------


def test_units_follow_a_state_dir_other_than_their_default(tmp_path: Path) -> None:
    """tgtd@.service names /run/tgtwatch; with another state_dir every start used to fail
    (the unit read an env file that was never written). The backend writes a runtime
    drop-in for its state_dir and reloads systemd once, before its first start."""
    b, systemctl, _proc = counting_backend(tmp_path)
    (tmp_path / "system").mkdir()  # as /run/systemd/system: PID 1 is systemd
    b.dropin_dir = tmp_path / "system" / "tgtd@.service.d"
    new = dataclasses.replace(spec(3401), text="<target iqn.2026-11.t:delta>\n</target>\n")
    b.start(new, threading.Event())
    b.start(new, threading.Event())
    state = b.settings.state_dir
    assert (b.dropin_dir / DROPIN_NAME).read_text() == (
        "# Written by tgtwatch: its state_dir is not the unit's default. Do not edit.\n"
        "[Service]\n"
        f"Environment=TGTWATCH_STATE_DIR={state}\n"
        "EnvironmentFile=\n"
        f"EnvironmentFile=-{state}/env/%i.env\n"
    )
    assert asked(systemctl, "daemon-reload") == 1
    assert (state / "env" / "delta.env").is_file()  # where the drop-in points the unit


def test_the_default_state_dir_needs_no_drop_in_and_a_stale_one_goes(tmp_path: Path) -> None:
    reloads: list[str] = []
    directory = tmp_path / "tgtd@.service.d"
    assert not ensure_dropin(Path("/srv/tw"), lambda: reloads.append("x"), directory / "x" / "y")
    assert not (directory / "x").exists()  # no systemd there: nothing written
    assert not ensure_dropin(UNIT_STATE_DIR, lambda: reloads.append("x"), directory)
    assert ensure_dropin(Path("/srv/tw"), lambda: reloads.append("x"), directory)
    assert not ensure_dropin(Path("/srv/tw"), lambda: reloads.append("x"), directory)
    assert ensure_dropin(UNIT_STATE_DIR, lambda: reloads.append("x"), directory)
    assert not (directory / DROPIN_NAME).exists()
    assert reloads == ["x", "x"]


def test_a_drop_in_that_cannot_be_written_fails_the_start_saying_why(tmp_path: Path) -> None:
    b, systemctl, _proc = counting_backend(tmp_path)
    (tmp_path / "system").mkdir()
    blocker = tmp_path / "system" / "tgtd@.service.d"
    blocker.write_text("a file where the drop-in directory should be")
    b.dropin_dir = blocker
    outcome = b.start(spec(3401), threading.Event())
    assert outcome.result is Result.FAILED
    assert f"tgtd@.service cannot read state_dir {b.settings.state_dir}" in outcome.message
    assert asked(systemctl, "start") == 0
