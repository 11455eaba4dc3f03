"""The control-socket client against the real programs: tgtadm's bytes and tgtd's effects.

1. For each request tgtwatch builds, the real tgtadm is run with the same options against a
   socket this test listens on (TGT_IPC_SOCKET): what tgtadm sends must be byte for byte
   what ipc.Request.encode() produces. That checks the struct layout against the C compiler
   that built tgtadm, not against arithmetic.
2. The same sequence of operations is applied to two real tgtds, one through tgtadm argv,
   one through the socket: every show output must then be the same, and a refused request
   must fail with the same words.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from tgtd_harness import RunningTgtd, TgtdFactory

from tgtwatch.tgt import gateway as g
from tgtwatch.tgt import ipc
from tgtwatch.tgt import ipc_ops as ops
from tgtwatch.tgt.ipc_client import IpcError, TgtdSocket

pytestmark = pytest.mark.integration

IQN_A = "iqn.2026-11.test.tgtwatch:ipc-a"
IQN_B = "iqn.2026-11.test.tgtwatch:ipc-b"
FAKE_PORT = 7
DUMMY = "dummy-test-secret-1"  # a test value, not a real credential


class CapturingServer:
    """Listens where tgtadm connects; keeps what it sends; answers success and hangs up."""

    def __init__(self, base: Path) -> None:
        self.path = f"{base}.{FAKE_PORT}"

    def capture(self, argv: Sequence[str], tgtadm: str) -> bytes:
        got: list[bytes] = []
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(self.path)
            listener.listen(1)
            listener.settimeout(10)

            def serve() -> None:
                conn, _ = listener.accept()
                # Stop listening at once: after `delete system` tgtadm reconnects until refused.
                listener.close()
                with conn:
                    conn.settimeout(10)
                    header = _read(conn, ipc.REQUEST.size)
                    length = ipc.REQUEST.unpack(header)[3]
                    got.append(header + _read(conn, length - ipc.REQUEST.size))
                    conn.sendall(ipc.RESPONSE.pack(0, ipc.RESPONSE.size))

            thread = threading.Thread(target=serve)
            thread.start()
            env = {**g.child_env(os.environ), "TGT_IPC_SOCKET": self.path[: -len(f".{FAKE_PORT}")]}
            done = subprocess.run(
                [tgtadm, "-C", str(FAKE_PORT), *argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            thread.join(10)
        os.unlink(self.path)
        assert done.returncode == 0, done.stderr
        assert len(got) == 1, f"tgtadm {argv} sent nothing"
        return got[0]


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


# (tgtadm options, the builder tgtwatch uses for them)
SAME: list[tuple[list[str], ipc.Request]] = [
    (["--op", "show", "--mode", "sys"], ops.show_system()),
    (
        ["--op", "update", "--mode", "sys", "--name", "State", "-v", "offline"],
        ops.set_state("offline"),
    ),
    (["--op", "delete", "--mode", "system"], ops.delete_system()),
    (["--op", "show", "--mode", "target"], ops.show_targets()),
    (["--op", "show", "--mode", "target", "--tid", "3"], ops.show_target(3)),
    (["--lld", "iscsi", "--op", "show", "--mode", "portal"], ops.show_portals()),
    (["--op", "show", "--mode", "account"], ops.show_accounts()),
    (
        ["--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "2", "-T", IQN_A],
        ops.new_target(2, IQN_A, lld="iscsi"),
    ),
    (["--op", "delete", "--mode", "target", "--tid", "2"], ops.delete_target(2)),
    (
        ["--op", "delete", "--mode", "target", "--tid", "2", "--force"],
        ops.delete_target(2, force=True),
    ),
    (
        [
            "--op",
            "update",
            "--mode",
            "target",
            "--tid",
            "2",
            "--name",
            "HeaderDigest",
            "--value",
            "CRC32C,None",
        ],
        ops.update_target(2, "HeaderDigest", "CRC32C,None"),
    ),
    (
        ["--op", "update", "--mode", "target", "--tid", "2", "-n", "state", "-v", "offline"],
        ops.update_target(2, "state", "offline"),
    ),
    (["--op", "bind", "--mode", "target", "--tid", "2", "-I", "ALL"], ops.bind_address(2, "ALL")),
    (
        ["--op", "unbind", "--mode", "target", "--tid", "2", "-I", "10.0.0.0/24"],
        ops.unbind_address(2, "10.0.0.0/24"),
    ),
    (["--op", "bind", "--mode", "target", "--tid", "2", "-Q", IQN_B], ops.bind_initiator(2, IQN_B)),
    (
        ["--op", "unbind", "--mode", "target", "--tid", "2", "-Q", IQN_B],
        ops.unbind_initiator(2, IQN_B),
    ),
    (
        ["--op", "new", "--mode", "logicalunit", "--tid", "2", "--lun", "1", "-b", "/srv/a.img"],
        ops.new_lun(2, 1, "/srv/a.img"),
    ),
    (
        [
            "--lld",
            "iscsi",
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            "2",
            "--lun",
            "3",
            "-b",
            "/srv/b.img",
            "--bstype",
            "aio",
            "--bsopts",
            "x;y",
            "--bsoflags",
            "sync:direct",
            "--blocksize",
            "4096",
            "--device-type",
            "cd",
        ],
        ops.new_lun(
            2,
            3,
            "/srv/b.img",
            bstype="aio",
            bsopts="x;y",
            bsoflags="sync:direct",
            blocksize="4096",
            device_type=ipc.DeviceType.CD,
            lld="iscsi",
        ),
    ),
    (
        [
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            "2",
            "--lun",
            "4",
            "-b",
            "/dev/st0",
            "--device-type",
            "tape",
        ],
        ops.new_lun(2, 4, "/dev/st0", device_type=ipc.DeviceType.TAPE),
    ),
    (["--op", "delete", "--mode", "logicalunit", "--tid", "2", "--lun", "1"], ops.delete_lun(2, 1)),
    (
        [
            "--op",
            "update",
            "--mode",
            "logicalunit",
            "--tid",
            "2",
            "--lun",
            "1",
            "--params",
            "vendor_id=ACME,mode_page=8:0:18:0x10:0:0xff:0xff:0:0:0xff:0xff:0xff:0xff:0x80",
        ],
        ops.update_lun(
            2,
            1,
            [
                ("vendor_id", "ACME"),
                ("mode_page", "8:0:18:0x10:0:0xff:0xff:0:0:0xff:0xff:0xff:0xff:0x80"),
            ],
        ),
    ),
    (
        ["--op", "new", "--mode", "account", "--user", "alice", "--password", DUMMY],
        ops.new_account("alice", DUMMY),
    ),
    (["--op", "delete", "--mode", "account", "--user", "alice"], ops.delete_account("alice")),
    (["--op", "bind", "--mode", "account", "--user", "alice"], ops.bind_account("alice")),
    (
        ["--op", "bind", "--mode", "account", "--tid", "2", "--user", "alice", "--outgoing"],
        ops.bind_account("alice", 2, outgoing=True),
    ),
    (
        ["--op", "unbind", "--mode", "account", "--tid", "2", "--user", "alice"],
        ops.unbind_account("alice", 2),
    ),
    (
        ["--op", "unbind", "--mode", "account", "--user", "alice", "--outgoing"],
        ops.unbind_account("alice", outgoing=True),
    ),
]


@pytest.fixture
def capturing(tgt_programs: g.TgtPrograms) -> Iterator[CapturingServer]:
    with tempfile.TemporaryDirectory(prefix="twipc", dir="/tmp") as tmp:
        yield CapturingServer(Path(tmp) / "socket")


@pytest.mark.parametrize(("argv", "request_"), SAME, ids=[" ".join(a[:6]) for a, _ in SAME])
def test_the_bytes_are_what_tgtadm_sends(
    capturing: CapturingServer, tgt_programs: g.TgtPrograms, argv: list[str], request_: ipc.Request
) -> None:
    assert capturing.capture(argv, tgt_programs.tgtadm) == request_.encode()


# ---------------------------------------------------------------------------
# effects on real tgtds


def tgtadm(tgtd: RunningTgtd, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [g.TgtPrograms().tgtadm, "-C", str(tgtd.port), *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


SHOWS: list[tuple[str, list[str], ipc.Request]] = [
    ("targets", ["--op", "show", "--mode", "target"], ops.show_targets()),
    ("system", ["--op", "show", "--mode", "sys"], ops.show_system()),
    ("accounts", ["--op", "show", "--mode", "account"], ops.show_accounts()),
    ("portals", ["--lld", "iscsi", "--op", "show", "--mode", "portal"], ops.show_portals()),
    *(
        (
            f"params {tid}",
            ["--op", "show", "--mode", "target", "--tid", str(tid)],
            ops.show_target(tid),
        )
        for tid in (1, 2)
    ),
]


def shown_by_tgtadm(tgtd: RunningTgtd) -> dict[str, str]:
    """What tgtadm prints for every show, an error as its message; the port left out."""
    shown = {}
    for what, argv, _ in SHOWS:
        done = tgtadm(tgtd, argv)
        text = done.stdout if done.returncode == 0 else f"error: {done.stderr.strip()}"
        shown[what] = text.replace(str(tgtd.port), "PORT")
    return shown


def shown_by_socket(tgtd: RunningTgtd) -> dict[str, str]:
    client = TgtdSocket(tgtd.port, 10)
    shown = {}
    for what, _, request in SHOWS:
        try:
            text = client.call(request)
        except IpcError as exc:
            assert exc.refused, exc
            text = f"error: tgtadm: {ipc.status_message(exc.status or 0)}"
        shown[what] = text.replace(str(tgtd.port), "PORT")
    return shown


def steps(backing: Path) -> list[tuple[list[str], ipc.Request]]:
    """A provisioning and a set of live changes, in tgtadm options and as requests."""
    path = str(backing)
    return [
        (
            ["--op", "update", "--mode", "sys", "--name", "State", "-v", "offline"],
            ops.set_state("offline"),
        ),
        (
            ["--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "1", "-T", IQN_A],
            ops.new_target(1, IQN_A, lld="iscsi"),
        ),
        (["--op", "new", "--mode", "target", "--tid", "2", "-T", IQN_B], ops.new_target(2, IQN_B)),
        (
            ["--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", path],
            ops.new_lun(1, 1, path),
        ),
        (
            [
                "--op",
                "new",
                "--mode",
                "logicalunit",
                "--tid",
                "1",
                "--lun",
                "2",
                "-b",
                path,
                "--bstype",
                "rdwr",
                "--bsoflags",
                "sync",
            ],
            ops.new_lun(1, 2, path, bstype="rdwr", bsoflags="sync"),
        ),
        (
            [
                "--op",
                "update",
                "--mode",
                "logicalunit",
                "--tid",
                "1",
                "--lun",
                "2",
                "--params",
                "readonly=1,scsi_sn=SN42,vendor_id=ACME",
            ],
            ops.update_lun(1, 2, [("readonly", "1"), ("scsi_sn", "SN42"), ("vendor_id", "ACME")]),
        ),
        (
            ["--op", "bind", "--mode", "target", "--tid", "1", "-I", "10.0.0.0/24"],
            ops.bind_address(1, "10.0.0.0/24"),
        ),
        (
            ["--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"],
            ops.bind_address(1, "ALL"),
        ),
        (
            ["--op", "bind", "--mode", "target", "--tid", "1", "-Q", "iqn.2026-11.test:init"],
            ops.bind_initiator(1, "iqn.2026-11.test:init"),
        ),
        (
            ["--op", "unbind", "--mode", "target", "--tid", "1", "-I", "10.0.0.0/24"],
            ops.unbind_address(1, "10.0.0.0/24"),
        ),
        (
            [
                "--op",
                "update",
                "--mode",
                "target",
                "--tid",
                "1",
                "--name",
                "MaxRecvDataSegmentLength",
                "--value",
                "65536",
            ],
            ops.update_target(1, "MaxRecvDataSegmentLength", "65536"),
        ),
        (
            [
                "--op",
                "update",
                "--mode",
                "target",
                "--tid",
                "2",
                "--name",
                "HeaderDigest",
                "--value",
                "CRC32C,None",
            ],
            ops.update_target(2, "HeaderDigest", "CRC32C,None"),
        ),
        (
            ["--op", "new", "--mode", "account", "--user", "alice", "--password", DUMMY],
            ops.new_account("alice", DUMMY),
        ),
        (
            ["--op", "new", "--mode", "account", "--user", "bob", "--password", DUMMY],
            ops.new_account("bob", DUMMY),
        ),
        (
            ["--op", "new", "--mode", "account", "--user", "carol", "--password", DUMMY],
            ops.new_account("carol", DUMMY),
        ),
        (
            ["--op", "bind", "--mode", "account", "--tid", "1", "--user", "alice"],
            ops.bind_account("alice", 1),
        ),
        (
            ["--op", "bind", "--mode", "account", "--tid", "1", "--user", "bob"],
            ops.bind_account("bob", 1),
        ),
        (
            ["--op", "bind", "--mode", "account", "--tid", "1", "--user", "carol", "--outgoing"],
            ops.bind_account("carol", 1, outgoing=True),
        ),
        (["--op", "bind", "--mode", "account", "--user", "bob"], ops.bind_account("bob")),
        (
            ["--op", "bind", "--mode", "account", "--user", "carol", "--outgoing"],
            ops.bind_account("carol", outgoing=True),
        ),
        (
            ["--op", "unbind", "--mode", "account", "--tid", "1", "--user", "bob"],
            ops.unbind_account("bob", 1),
        ),
        (
            ["--op", "unbind", "--mode", "account", "--user", "carol", "--outgoing"],
            ops.unbind_account("carol", outgoing=True),
        ),
        (["--op", "delete", "--mode", "account", "--user", "bob"], ops.delete_account("bob")),
        (
            ["--op", "delete", "--mode", "logicalunit", "--tid", "1", "--lun", "1"],
            ops.delete_lun(1, 1),
        ),
        (["--op", "delete", "--mode", "target", "--tid", "2"], ops.delete_target(2)),
        (
            ["--op", "update", "--mode", "sys", "--name", "State", "-v", "ready"],
            ops.set_state("ready"),
        ),
    ]


def test_each_step_has_the_same_effect_through_the_socket_as_through_tgtadm(
    tgtd_factory: TgtdFactory, backing_file: Path
) -> None:
    by_tgtadm, by_socket = tgtd_factory.start(), tgtd_factory.start()
    client = TgtdSocket(by_socket.port, 10)
    for argv, request in steps(backing_file):
        done = tgtadm(by_tgtadm, argv)
        assert done.returncode == 0, f"tgtadm {argv}: {done.stderr}"
        client.call(request)
        assert shown_by_socket(by_socket) == shown_by_tgtadm(by_tgtadm), request.describe()
    assert client.target_params(1)["MaxRecvDataSegmentLength"] == "65536"


Refusal = tuple[list[str], Callable[[], ipc.Request]]


@pytest.mark.parametrize(
    ("argv", "make"),
    [
        (
            ["--op", "new", "--mode", "target", "--tid", "1", "-T", IQN_A],
            lambda: ops.new_target(1, IQN_A),
        ),
        (["--op", "delete", "--mode", "target", "--tid", "9"], lambda: ops.delete_target(9)),
        (["--op", "delete", "--mode", "system"], ops.delete_system),
        (
            ["--op", "bind", "--mode", "account", "--tid", "1", "--user", "nobody"],
            lambda: ops.bind_account("nobody", 1),
        ),
        (
            ["--op", "delete", "--mode", "logicalunit", "--tid", "1", "--lun", "0"],
            lambda: ops.delete_lun(1, 0),
        ),
        (
            [
                "--op",
                "update",
                "--mode",
                "target",
                "--tid",
                "1",
                "--name",
                "NoSuchKey",
                "--value",
                "1",
            ],
            lambda: ops.update_target(1, "NoSuchKey", "1"),
        ),
    ],
    ids=["target exists", "no target", "system busy", "no user", "lun 0", "unknown key"],
)
def test_a_refusal_says_what_tgtadm_says(
    tgtd: RunningTgtd, argv: list[str], make: Callable[[], ipc.Request]
) -> None:
    client = TgtdSocket(tgtd.port, 10)
    client.call(ops.new_target(1, IQN_A))
    done = tgtadm(tgtd, argv)
    assert done.returncode == 22, done
    with pytest.raises(IpcError) as caught:
        client.call(make())
    assert caught.value.refused
    assert done.stderr.strip() == f"tgtadm: {ipc.status_message(caught.value.status or 0)}"
    client.call(ops.delete_target(1))


def test_no_tgtd_and_a_deadline(tgtd_factory: TgtdFactory) -> None:
    port = tgtd_factory.reserve_port()
    with pytest.raises(IpcError) as caught:
        TgtdSocket(port, 1).call(ops.show_system())
    assert not caught.value.refused and f"socket.{port}" in str(caught.value)
    assert not TgtdSocket(port, 1).answers()


def test_wait_answering_then_delete_system_ends_tgtd(tgtd_factory: TgtdFactory) -> None:
    tgtd = tgtd_factory.spawn(tgtd_factory.reserve_port())
    client = TgtdSocket(tgtd.port, 10)
    tgtd.answered_after_s = client.wait_answering(10, alive=tgtd.alive)
    assert client.system().raw_state == "ready"
    assert [p.port for p in client.portals()] == [tgtd.port]
    client.delete_system()
    assert tgtd.proc.wait(10) == 0


def test_an_unprivileged_peer_gets_no_answer(tgtd: RunningTgtd) -> None:
    """tgtd answers only its own uid/gid: a local user cannot drive it through the socket."""
    probe = (
        "import socket,sys;from tgtwatch.tgt import ipc;"
        "s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);"
        "s.sendall(ops.show_system().encode());print(len(s.recv(8)))"
    )
    socket_file = TgtdSocket(tgtd.port).path
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            probe,
            socket_file,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    # Either the socket file refuses the connection (its mode) or tgtd hangs up unanswered.
    assert done.returncode != 0 or done.stdout.strip() == "0", done
    assert TgtdSocket(tgtd.port, 5).answers()


def test_the_answering_tgtd_names_its_pid(tgtd: RunningTgtd) -> None:
    """SO_PEERCRED: a reload learns tgtd's pid from the socket it already asks, no /proc scan."""
    client = TgtdSocket(tgtd.port, 10)
    info, pid = client.system_and_pid()
    assert pid == tgtd.pid
    assert info.raw_state == "ready"
