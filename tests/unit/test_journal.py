"""The journal native-protocol client, against real AF_UNIX datagram sockets."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.journal_proto import decode_entry
from tgtwatch.telemetry.journal import (
    DEFAULT_SOCKET,
    MEMFD_SEALS,
    SOCKET_ENV,
    Field,
    InvalidFieldName,
    JournalClient,
    JournalError,
    encode_entry,
    socket_path_from_env,
    valid_field_name,
)

# sun_path holds 108 bytes; pytest's tmp_path can be longer for long test names.
_MAX_SUN_PATH = 100


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    if len(str(tmp_path)) < _MAX_SUN_PATH - 10:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="tw", dir="/tmp"))
    try:
        yield short
    finally:
        shutil.rmtree(short)


@pytest.fixture
def server(sock_dir: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_dir / "j.sock"))
    sock.settimeout(5)  # a bug must fail the test, not hang it
    with sock:
        yield sock


def _path(sock: socket.socket) -> str:
    name = sock.getsockname()
    assert isinstance(name, str)
    return name


# --- encoding -----------------------------------------------------------------------------


def test_plain_fields_are_key_equals_value_lines_in_order() -> None:
    entry = encode_entry([("MESSAGE", "hello"), ("PRIORITY", 6), ("SYSLOG_IDENTIFIER", "tw")])
    assert entry == b"MESSAGE=hello\nPRIORITY=6\nSYSLOG_IDENTIFIER=tw\n"


def test_value_with_newline_uses_the_binary_form() -> None:
    entry = encode_entry([("MESSAGE", "a\nb")])
    assert entry == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\n"


def test_binary_form_matches_the_protocol_example() -> None:
    entry = encode_entry([("BINARY_BLOB", b"xx\nx")])
    assert entry == b"BINARY_BLOB\n\x04\x00\x00\x00\x00\x00\x00\x00xx\nx\n"


def test_values_are_utf8_and_empty_and_duplicates_are_allowed() -> None:
    entry = encode_entry([("M", "päth ✓"), ("M", ""), ("M", b"\x00\xff")])
    assert entry == "M=päth ✓\nM=\nM=\x00".encode() + b"\xff\n"


def test_lone_surrogates_are_escaped_not_fatal() -> None:
    name = os.fsdecode(b"/etc/mytgt/conf.d/\xff.conf")
    assert encode_entry([("C", name)]) == b"C=/etc/mytgt/conf.d/\\udcff.conf\n"


def test_bool_is_not_a_value() -> None:
    with pytest.raises(TypeError):
        encode_entry([("FLAG", True)])


@pytest.mark.parametrize("name", ["A", "MESSAGE", "TGTWATCH_PORT", "A1_", "X" * 64])
def test_valid_field_names(name: str) -> None:
    assert valid_field_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "message", "Message", "_PID", "1ABC", "A-B", "A=B", "A B", "A\nB", "É", "X" * 65, "٣A"],
)
def test_invalid_field_names_are_refused_before_any_io(name: str) -> None:
    assert not valid_field_name(name)
    with pytest.raises(InvalidFieldName):
        encode_entry([("MESSAGE", "ok"), (name, "x")])


_names = st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True)


@given(st.lists(st.tuples(_names, st.binary(max_size=64)), max_size=8))
def test_encoding_round_trips_any_bytes(fields: list[tuple[str, bytes]]) -> None:
    assert decode_entry(encode_entry(fields)) == fields


@given(st.lists(st.tuples(_names, st.text(max_size=64)), max_size=8))
def test_text_newlines_always_use_the_binary_form(fields: list[tuple[str, str]]) -> None:
    entry = encode_entry(fields)
    decoded = decode_entry(entry)
    assert [k for k, _ in decoded] == [k for k, _ in fields]
    assert [v.decode("utf-8", "surrogateescape") for _, v in decoded] == [
        v.encode("utf-8", "backslashreplace").decode() for _, v in fields
    ]


# --- environment --------------------------------------------------------------------------


def test_socket_path_from_env() -> None:
    assert socket_path_from_env({}) == DEFAULT_SOCKET
    assert socket_path_from_env({SOCKET_ENV: ""}) == DEFAULT_SOCKET
    assert socket_path_from_env({SOCKET_ENV: "/tmp/j.sock"}) == "/tmp/j.sock"


# --- sending ------------------------------------------------------------------------------


def test_small_entry_is_one_datagram_with_exactly_the_encoded_bytes(
    server: socket.socket,
) -> None:
    fields: list[Field] = [("MESSAGE", "line one\nline two"), ("PRIORITY", 3)]
    JournalClient(_path(server)).send(fields)
    data, fds, _flags, _addr = socket.recv_fds(server, 1 << 16, 1)
    assert fds == []
    assert data == encode_entry(fields)


def _receive_memfd(server: socket.socket) -> tuple[bytes, int]:
    data, fds, _flags, _addr = socket.recv_fds(server, 1 << 16, 4)
    try:
        assert data == b"", "a memfd datagram carries no payload"
        assert len(fds) == 1, "exactly one fd"
        seals = fcntl.fcntl(fds[0], fcntl.F_GET_SEALS)
        size = os.fstat(fds[0]).st_size
        return os.pread(fds[0], size, 0), seals
    finally:
        for fd in fds:
            os.close(fd)


def test_entry_larger_than_the_send_buffer_goes_through_a_sealed_memfd(
    server: socket.socket,
) -> None:
    fields = [("MESSAGE", "big"), ("TGTWATCH_OUTPUT", "x" * 200_000 + "\nend")]
    JournalClient(_path(server), sndbuf=4096).send(fields)
    content, seals = _receive_memfd(server)
    assert content == encode_entry(fields)
    assert seals & MEMFD_SEALS == MEMFD_SEALS


def test_entry_larger_than_any_send_buffer_goes_through_a_memfd(
    server: socket.socket,
) -> None:
    # The kernel caps SO_SNDBUF at 2 x net.core.wmem_max: one byte more cannot fit.
    size = 2 * int(Path("/proc/sys/net/core/wmem_max").read_text()) + 1
    fields = [("MESSAGE", b"y" * size)]
    JournalClient(_path(server)).send(fields)
    content, _seals = _receive_memfd(server)
    assert len(content) == len(encode_entry(fields))


def test_missing_socket_raises_journal_error_with_enoent(sock_dir: Path) -> None:
    path = str(sock_dir / "absent.sock")
    with pytest.raises(JournalError) as info:
        JournalClient(path).send([("MESSAGE", "x")])
    assert info.value.errno == errno.ENOENT
    assert info.value.path == path
    assert path in str(info.value)


def test_missing_socket_is_reported_for_the_memfd_path_too(sock_dir: Path) -> None:
    with pytest.raises(JournalError) as info:
        JournalClient(str(sock_dir / "absent.sock"), sndbuf=4096).send([("MESSAGE", "z" * 100_000)])
    assert info.value.errno == errno.ENOENT


def test_socket_nobody_listens_on_is_refused(sock_dir: Path) -> None:
    path = str(sock_dir / "dead.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
        dead.bind(path)
    with pytest.raises(JournalError) as info:
        JournalClient(path).send([("MESSAGE", "x")])
    assert info.value.errno == errno.ECONNREFUSED


def test_a_regular_file_is_not_a_journal(sock_dir: Path) -> None:
    path = sock_dir / "file"
    path.write_text("")
    with pytest.raises(JournalError):
        JournalClient(str(path)).send([("MESSAGE", "x")])


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_is_reported(sock_dir: Path, server: socket.socket) -> None:
    os.chmod(_path(server), 0)
    with pytest.raises(JournalError) as info:
        JournalClient(_path(server)).send([("MESSAGE", "x")])
    assert info.value.errno == errno.EACCES


def test_full_queue_times_out_instead_of_blocking_forever(server: socket.socket) -> None:
    client = JournalClient(_path(server), timeout_s=0)
    with pytest.raises(JournalError):
        for _ in range(100_000):  # journald not reading: the queue fills (max_dgram_qlen)
            client.send([("MESSAGE", "x")])
