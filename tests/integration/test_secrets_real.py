"""No CHAP secret in any argv, log, journal or state file, and CHAP still gates logins.

`tgtwatch run` (direct backend) is traced with `strace -f -e trace=execve` from before the
instance file appears until after a reload changed its accounts: every program the daemon
and its children executed is in the trace, with its whole argv and environment. Meanwhile a
real initiator (libiscsi) logs in with the right secrets, and fails with wrong ones.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from daemon_harness import (  # noqa: F401  (world_fixture: the `world` fixture)
    Daemon,
    DaemonWorld,
    iqn,
    run_tool,
    wait_for,
    world_fixture,
)

pytestmark = pytest.mark.integration

# Test secrets (never real credentials): each one must be found nowhere but in the file.
DISCO = ("disco", "Disco-secret-7741")
ALICE = ("alice", "Alice-secret-0193")
ALICE2 = ("alice", "Alice-renewed-5528")
BOB = ("bob", "Bob-secret-8812")
CAROL = ("carol", "Carol-secret-3307")
MUTUAL = ("mutual", "Mutual-secret-6650")
SECRETS = {DISCO[1], ALICE[1], ALICE2[1], BOB[1], CAROL[1], MUTUAL[1]}


def conf_text(world: DaemonWorld, port: int, users: list[tuple[str, str]]) -> str:
    lines = [
        f'SOCKET_OPTS="{port}"',
        f'PORTAL_OPTS="127.0.0.1:{port}"',
        f"incomingdiscoveryuser {DISCO[0]} {DISCO[1]}",
        f"<target {iqn('chap')}>",
        f"    backing-store {world.backing('chap.img')}",
        *(f"    incominguser {u} {s}" for u, s in users),
        f"    outgoinguser {MUTUAL[0]} {MUTUAL[1]}",
        "</target>",
        "",
    ]
    return "\n".join(lines)


def inq(port: int, user: tuple[str, str] | None, env: Mapping[str, str] | None = None) -> bool:
    """iscsi-inq on LUN 1, logging in with CHAP as `user` (None: without CHAP)."""
    auth = f"{user[0]}%{user[1]}@" if user else ""
    done = subprocess.run(
        ["iscsi-inq", f"iscsi://{auth}127.0.0.1:{port}/{iqn('chap')}/1"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return done.returncode == 0 and "Peripheral Device Type" in done.stdout


def discovers(port: int, user: tuple[str, str] | None) -> bool:
    auth = f"{user[0]}%{user[1]}@" if user else ""
    done = run_tool(["iscsi-ls", f"iscsi://{auth}127.0.0.1:{port}/"])
    return done.returncode == 0 and iqn("chap") in done.stdout


def mutual(secret: str) -> dict[str, str]:
    return {"LIBISCSI_CHAP_TARGET_USERNAME": MUTUAL[0], "LIBISCSI_CHAP_TARGET_PASSWORD": secret}


class Tracer:
    """strace attached to the daemon: every execve of it and of its children, from now on."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.err = out.with_suffix(".err")
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    "strace",
                    "-f",
                    "-v",
                    "-s",
                    "4096",
                    "-e",
                    "trace=execve",
                    "-o",
                    str(out),
                    "-p",
                    str(pid),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        wait_for(lambda: "attached" in self.err.read_text(), 20, "strace to attach")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # detaches from every traced process
            self.proc.wait(30)
        return self.out.read_text(errors="replace")


@pytest.fixture
def tracer_of(tmp_path: Path) -> Iterator[list[Tracer]]:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (scripts/setup installs it)")
    tracers: list[Tracer] = []
    yield tracers
    for tracer in tracers:
        tracer.stop()


def files_holding_a_secret(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_socket():
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in SECRETS if s.encode() in data]
    return found


def test_accounts_reach_tgtd_without_any_argv_log_or_record_seeing_a_secret(
    world: DaemonWorld, tracer_of: list[Tracer], tmp_path: Path, engine: str
) -> None:
    port = world.reserve_port()
    daemon: Daemon = world.start()
    tracer = Tracer(daemon.pid, tmp_path / "execve.trace")
    tracer_of.append(tracer)

    world.move_in("chap", conf_text(world, port, [ALICE, BOB]))
    started = daemon.wait_for_record(action="start", instance="chap")
    assert started.get("TGTWATCH_RESULT") == "ok", started.fields

    # CHAP gates discovery and login; mutual CHAP proves the target.
    assert discovers(port, DISCO) and not discovers(port, None)
    assert not discovers(port, (DISCO[0], "wrong-secret-0000"))
    assert inq(port, ALICE) and inq(port, BOB)
    assert not inq(port, None) and not inq(port, (ALICE[0], BOB[1]))
    assert inq(port, ALICE, mutual(MUTUAL[1]))
    assert not inq(port, ALICE, mutual("wrong-secret-0000"))

    # A reload: alice's secret changes, bob goes, carol comes.
    world.move_in("chap", conf_text(world, port, [ALICE2, CAROL]))
    reloaded = daemon.wait_for_record(action="reload", instance="chap")
    assert reloaded.get("TGTWATCH_RESULT") == "ok", reloaded.fields
    assert inq(port, ALICE2) and inq(port, CAROL)
    assert not inq(port, ALICE) and not inq(port, BOB)
    assert discovers(port, DISCO)

    trace = tracer.stop()
    execs = [line for line in trace.splitlines() if "execve(" in line]
    # the program run, not the environment (PYTEST_CURRENT_TEST names the engine too)
    admins = [line for line in execs if re.search(r'execve\("[^"]*/tgt-admin"', line)]
    if engine == "native":
        # The native engine (the default) runs no tgt-admin at all: targets and accounts go
        # over tgtd's control socket.
        assert admins == [], "tgt-admin ran under the native engine"
    else:
        # tgt-admin loads the targets from the snapshot (no account line in it); the
        # accounts still go over tgtd's control socket, never through tgt-admin.
        assert admins, "the trace saw no tgt-admin under the tgt-admin engine"
        assert all(re.search(r'"-c", "[^"]*/snapshots/', line) for line in admins), admins
    assert any("/tgtd" in line for line in execs), "the trace saw no tgtd start"
    leaked = [line for line in execs if any(s in line for s in SECRETS)]
    assert leaked == [], "\n".join(leaked)
    assert not [line for line in execs if "--password" in line or "--mode account" in line]

    records = daemon.records(instance="chap")
    assert records and not [r for r in records if any(s in str(r.fields) for s in SECRETS)]
    assert not any(s in daemon.log() for s in SECRETS)
    assert files_holding_a_secret(world.state_dir) == []
    assert not any(s in world.audit_log.read_text() for s in SECRETS)
