"""`tgtwatch wait` against the real daemon: real tgtds, a real initiator, the real executable.

Each test runs `tgtwatch run` (daemon_harness.py: ports 13200-13399, direct backend) and then
`tgtwatch wait` as a subprocess, the way automation runs it right after dropping a file.
`wait` itself is the only thing that waits here, on inotify with its own deadline.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from daemon_harness import (
    REAL,
    TGTWATCH,
    DaemonWorld,
    iqn,
    listed_targets,
    world_fixture,  # noqa: F401  (the `world` fixture)
)

from tgtwatch.cli.exits import EXIT_OK, EXIT_PROBLEMS, EXIT_TIMEOUT

pytestmark = pytest.mark.integration


def wait(world: DaemonWorld, *args: str, timeout: float = 90) -> tuple[int, str, float]:
    """`tgtwatch -c SETTINGS wait ARGS`: exit code, stdout, seconds it took."""
    started = time.monotonic()
    done = subprocess.run(
        [str(TGTWATCH), "-c", str(world.settings_path), "wait", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=world.env(journal=False),
        check=False,
    )
    assert done.stderr == "", done.stderr
    return done.returncode, done.stdout, time.monotonic() - started


def test_wait_returns_once_the_dropped_files_targets_answer(world: DaemonWorld) -> None:
    world.start()
    ports = {name: world.reserve_port() for name in ("alpha", "beta")}
    for name, port in ports.items():
        world.write_instance(name, port)
    code, out, seconds = wait(world, "alpha", "beta", "--timeout", "60")
    assert code == EXIT_OK, out
    lines = out.splitlines()
    for line, (name, port) in zip(lines, ports.items(), strict=True):
        assert line.startswith(f"{name}: ready: port {port}, pid ") and line.endswith("1 target")
        # No retry: when wait says ready, an initiator finds the target at once.
        assert listed_targets(port) == [iqn(name)]
    assert seconds < 10, seconds

    # An edit: the old content runs until the reload lands; wait answers for the new one.
    world.write_instance("alpha", ports["alpha"], {iqn("alpha", 2): [world.backing("alpha-2.img")]})
    code, out, _ = wait(world, "alpha", "--timeout", "60")
    assert code == EXIT_OK, out + world.daemons[0].log()
    assert listed_targets(ports["alpha"]) == [iqn("alpha", 2)]


@pytest.mark.engine("native", reason="refused at check: no engine runs")
def test_wait_names_the_rule_a_refused_file_broke(world: DaemonWorld) -> None:
    world.start()
    port = world.reserve_port()
    path = world.move_in("bad", f'SOCKET_OPTS="{port}"\nPORTAL_OPTS="127.0.0.1:{port + 1}"\n')
    code, out, _ = wait(world, "bad", "--timeout", "60")
    assert code == EXIT_PROBLEMS, out
    assert out.startswith(f"bad: failed: refused: {path}: ")
    assert out.rstrip().endswith("[rule: port]")


@pytest.mark.engine("native", cost=True, reason="tgtd dies first")
def test_wait_reports_a_failed_start_and_its_reason(world: DaemonWorld) -> None:
    port = world.reserve_port()
    world.install_wrapper(
        "tgtd",
        f"""#!/bin/sh
case " $* " in *" -C {port} "*) echo "tgtd: cannot start" >&2; exit 1 ;; esac
exec {REAL.tgtd} "$@"
""",
    )
    world.start()
    world.write_instance("doomed", port)
    code, out, _ = wait(world, "doomed", "--timeout", "60")
    assert code == EXIT_PROBLEMS, out
    assert out.startswith(f"doomed: failed: port {port}: start failed: "), out


@pytest.mark.engine("native", cost=True, reason="wait's own timeout")
def test_wait_times_out_with_124_and_says_on_what(world: DaemonWorld) -> None:
    world.start()
    port = world.reserve_port()
    world.write_instance("alpha", port)
    code, out, _ = wait(world, "alpha", "--timeout", "60")
    assert code == EXIT_OK, out
    daemon = world.daemons[0]
    daemon.proc.send_signal(signal.SIGSTOP)  # the daemon reads nothing more
    try:
        world.write_instance("alpha", port, {iqn("alpha", 3): [world.backing("alpha-3.img")]})
        code, out, seconds = wait(world, "alpha", "--timeout", "1")
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    assert code == EXIT_TIMEOUT, out
    assert out.splitlines() == [
        f"alpha: waiting: tgtwatch has not read {world.conf('alpha')} as it is now",
        "tgtwatch: timed out after 1 s",
    ]
    assert 1 <= seconds < 5


@pytest.mark.engine("native", reason="no daemon: no engine runs")
def test_wait_without_a_daemon_fails_at_once(world: DaemonWorld) -> None:
    port = world.reserve_port()
    world.write_instance("alpha", port)
    code, out, seconds = wait(world, "alpha", "--timeout", "60")
    assert code == EXIT_PROBLEMS
    assert out == "alpha: failed: no tgtwatch daemon runs (start tgtwatch.service)\n"
    assert seconds < 5
