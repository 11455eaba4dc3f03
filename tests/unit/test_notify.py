"""sd_notify over real AF_UNIX datagram sockets (filesystem and abstract), and its fake."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import RecordingNotifier
from hypothesis import given
from hypothesis import strategies as st

from tgtwatch.telemetry.notify import (
    STATUS_MAX_BYTES,
    SYSTEMD_NOTIFY_ENV,
    Notifier,
    NotifyError,
    SystemdNotifier,
    sanitize_status,
    watchdog_interval,
)


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    if len(str(tmp_path)) < 90:  # sun_path is 108 bytes
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="tw", dir="/tmp"))
    try:
        yield short
    finally:
        shutil.rmtree(short)


@pytest.fixture
def path_server(sock_dir: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(sock_dir / "n.sock")
    sock.bind(path)
    sock.settimeout(5)  # a bug must fail the test, not hang it
    with sock:
        yield sock, path


@pytest.fixture
def abstract_server() -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0tgtwatch-test-" + os.urandom(8).hex())
    name = sock.getsockname()
    assert isinstance(name, bytes) and name.startswith(b"\0")
    sock.settimeout(5)
    with sock:
        yield sock, "@" + name[1:].decode()


def _all_messages(n: Notifier) -> None:
    n.ready()
    n.status("3 running, 1 draining")
    n.reloading(123456789)
    n.stopping()
    n.watchdog()
    n.extend_timeout(30_000_000)


EXPECTED = [
    b"READY=1",
    b"STATUS=3 running, 1 draining",
    b"RELOADING=1\nMONOTONIC_USEC=123456789",
    b"STOPPING=1",
    b"WATCHDOG=1",
    b"EXTEND_TIMEOUT_USEC=30000000",
]


@pytest.mark.parametrize("server_name", ["path_server", "abstract_server"])
def test_each_notification_is_one_exact_datagram(
    server_name: str, request: pytest.FixtureRequest
) -> None:
    server, address = request.getfixturevalue(server_name)
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    _all_messages(notifier)
    assert [server.recv(4096) for _ in EXPECTED] == EXPECTED


def test_non_latin1_status_arrives_intact_as_utf8(
    path_server: tuple[socket.socket, str],
) -> None:
    server, address = path_server
    text = "卷 vol1 ready — 3 targets ✓ émigré"
    SystemdNotifier(address).status(text)
    assert server.recv(4096) == ("STATUS=" + text).encode("utf-8")


def test_multiline_status_arrives_as_one_line(path_server: tuple[socket.socket, str]) -> None:
    server, address = path_server
    SystemdNotifier(address).status("2 problems:\n  a.conf: bad port\r\n\tb.conf: conflict\n")
    assert server.recv(4096) == b"STATUS=2 problems: a.conf: bad port b.conf: conflict"


def test_without_notify_socket_every_method_is_a_no_op() -> None:
    for notifier in (SystemdNotifier.from_env({}), SystemdNotifier(None), SystemdNotifier("")):
        assert not notifier.enabled
        _all_messages(notifier)


def test_unreachable_socket_raises_notify_error(sock_dir: Path) -> None:
    address = str(sock_dir / "gone.sock")
    with pytest.raises(NotifyError) as info:
        SystemdNotifier(address).ready()
    assert info.value.errno == errno.ENOENT
    assert info.value.address == address
    assert info.value.message == "READY=1"
    assert "READY=1" in str(info.value)


def test_unreachable_abstract_socket_raises_notify_error() -> None:
    with pytest.raises(NotifyError) as info:
        SystemdNotifier("@tgtwatch-nobody-" + os.urandom(8).hex()).watchdog()
    assert info.value.errno == errno.ECONNREFUSED


def test_unsupported_address_family_raises_notify_error() -> None:
    with pytest.raises(NotifyError) as info:
        SystemdNotifier("vsock:2:1234").ready()
    assert info.value.errno == errno.EAFNOSUPPORT


def test_a_full_queue_fails_at_once_and_says_try_again(
    path_server: tuple[socket.socket, str],
) -> None:
    """systemd not reading: the send never blocks (nor spins): EAGAIN, marked transient."""
    _server, address = path_server
    notifier = SystemdNotifier(address)
    with pytest.raises(NotifyError) as info:
        for _ in range(100_000):  # the manager not reading: the queue fills
            notifier.watchdog()
    assert info.value.errno == errno.EAGAIN
    assert info.value.transient


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_microsecond_arguments_are_validated(bad: object) -> None:
    notifier = RecordingNotifier()
    with pytest.raises(ValueError):
        notifier.reloading(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        notifier.extend_timeout(bad)  # type: ignore[arg-type]
    assert notifier.messages == []


# --- STATUS sanitising --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("ok", "ok"),
        ("  lead and trail  \n", "lead and trail"),
        ("a\n\nb", "a b"),
        ("a\x00b", "a b"),  # systemd drops a datagram holding NUL
        ("a\x1b[31mred", "a [31mred"),  # no terminal escapes in systemctl status
        ("a\u2028b\x85c", "a b c"),
        ("naïve ✓", "naïve ✓"),
        (os.fsdecode(b"bad\xffname"), "bad\\udcffname"),
    ],
)
def test_sanitize_status(raw: str, clean: str) -> None:
    assert sanitize_status(raw) == clean


def test_long_status_is_bounded_with_an_ellipsis() -> None:
    text = sanitize_status("x" * 5000)
    assert len(text.encode()) == STATUS_MAX_BYTES
    assert text.endswith("…")


@given(st.text(), st.integers(min_value=4, max_value=STATUS_MAX_BYTES))
def test_sanitized_status_is_one_bounded_line_of_valid_utf8(text: str, limit: int) -> None:
    clean = sanitize_status(text, limit)
    encoded = clean.encode("utf-8")  # raises if a surrogate survived
    assert len(encoded) <= limit
    assert clean.splitlines() in ([], [clean])
    assert b"\0" not in encoded and b"\n" not in encoded
    assert clean == clean.strip()


# --- watchdog -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "42"}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "43"}, None),  # a parent's watchdog
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_PID": "42"}, None),
        ({"WATCHDOG_USEC": "1"}, 0.0000005),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, 42) == expected


def test_child_scrub_list_names_all_three_variables() -> None:
    assert set(SYSTEMD_NOTIFY_ENV) == {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}


# --- the fake -----------------------------------------------------------------------------


def test_recording_notifier_records_what_systemd_would_receive() -> None:
    fake = RecordingNotifier()
    _all_messages(fake)
    fake.status("two\nlines")
    assert [m.encode() for m in fake.messages] == [*EXPECTED, b"STATUS=two lines"]
    assert fake.fields()[2] == {"RELOADING": "1", "MONOTONIC_USEC": "123456789"}


def test_recording_notifier_can_fail() -> None:
    fake = RecordingNotifier(fail=ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    with pytest.raises(NotifyError) as info:
        fake.ready()
    assert info.value.errno == errno.ECONNREFUSED
    assert fake.messages == []


def test_both_satisfy_the_protocol() -> None:
    notifiers: list[Notifier] = [RecordingNotifier(), SystemdNotifier(None)]
    assert len(notifiers) == 2
