"""The systemd backend's own decisions, with a scripted systemctl and a fake /proc."""

from __future__ import annotations

import threading
from pathlib import Path

from tgtwatch.backend import Result
from tgtwatch.settings import Settings
from tgtwatch.structs import InstanceKind, InstanceSpec
from tgtwatch.systemd_backend import Systemctl, SystemdBackend, unit_of_pid


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
    return SystemdBackend(settings, systemctl=ScriptedSystemctl(states), proc_root=proc)


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


def test_port_change_waits_until_the_old_unit_has_stopped(tmp_path: Path) -> None:
    """Active on the old port, then deactivating without a MainPID (ExecStop still runs),
    then inactive: a start before that would cancel the stop job."""
    b = backend(tmp_path, [("active", 50), ("active", 50), ("deactivating", 0), ("inactive", 0)])
    fake_tgtd(tmp_path / "proc", 50, 3400)
    cancel = threading.Event()
    assert b._wait_old_port("tgtd@delta.service", spec(3401), cancel) is None
    assert len(b.systemctl.calls) == 4  # type: ignore[attr-defined]


def test_a_deactivating_unit_is_waited_for(tmp_path: Path) -> None:
    b = backend(tmp_path, [("deactivating", 0), ("inactive", 0)])
    assert b._wait_old_port("tgtd@delta.service", spec(3401), threading.Event()) is None
    assert len(b.systemctl.calls) == 2  # type: ignore[attr-defined]


def test_the_wait_ends_when_cancelled(tmp_path: Path) -> None:
    b = backend(tmp_path, [("active", 50)])
    fake_tgtd(tmp_path / "proc", 50, 3400)
    cancel = threading.Event()
    cancel.set()
    outcome = b._wait_old_port("tgtd@delta.service", spec(3401), cancel)
    assert outcome is not None and outcome.result is Result.FAILED
    assert "control port 3400" in outcome.message
