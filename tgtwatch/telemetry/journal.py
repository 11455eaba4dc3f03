"""A minimal client for systemd-journald's native protocol (structured entries over AF_UNIX).

Protocol: https://systemd.io/JOURNAL_NATIVE_PROTOCOL/ — one datagram per entry to
journald's SOCK_DGRAM socket; each field is ``KEY=value\\n``, or, when the value holds a
newline, ``KEY\\n`` + 64-bit little-endian length + value + ``\\n``. An entry too large
for a datagram (EMSGSIZE/ENOBUFS) is written to a memfd, fully sealed, and passed as the
only file descriptor of an empty datagram (SCM_RIGHTS).

Why our own client rather than a library: systemd-python (``systemd.journal``) is a C
extension that needs libsystemd-dev and a compiler to install, and cysystemd always
talks to the fixed ``/run/systemd/journal/socket`` — it cannot be pointed at another
socket, which tests (and ``TGTWATCH_JOURNAL_SOCKET``) need. The protocol is small.

Errors are never swallowed: ``JournalClient.send`` raises ``JournalError`` (socket
missing, refused, permission, timeout ...) and the caller decides how to fall back
(the audit trail writes the record to stderr).
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Iterable, Mapping

DEFAULT_SOCKET = "/run/systemd/journal/socket"
SOCKET_ENV = "TGTWATCH_JOURNAL_SOCKET"

# journald's own limit for field names (journal_field_valid() in systemd).
MAX_FIELD_NAME = 64

# libsystemd raises its journal socket's send buffer to 8 MiB too: the kernel refuses a
# datagram larger than the sender's SO_SNDBUF with EMSGSIZE, so a bigger buffer keeps
# most entries on the cheap path. The kernel caps it at net.core.wmem_max (x2).
DEFAULT_SNDBUF = 8 * 1024 * 1024

# The errors the protocol answers with "retry through a memfd".
_TOO_BIG = frozenset({errno.EMSGSIZE, errno.ENOBUFS})

# Fully sealed: journald refuses to trust a memfd the sender could still change.
MEMFD_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL

FieldValue = str | bytes | int
Field = tuple[str, FieldValue]


class InvalidFieldName(ValueError):
    """A field name journald would reject; a programming error, raised before any I/O."""


class JournalError(Exception):
    """An entry could not be handed to journald; the caller must fall back (stderr)."""

    def __init__(self, path: str, cause: OSError) -> None:
        self.path = path
        self.cause = cause
        self.errno: int | None = cause.errno
        reason = os.strerror(cause.errno) if cause.errno is not None else str(cause)
        super().__init__(f"journal socket {path}: {reason}")


def socket_path_from_env(env: Mapping[str, str]) -> str:
    """The native socket tgtwatch logs to: ``TGTWATCH_JOURNAL_SOCKET`` or journald's default."""
    return env.get(SOCKET_ENV) or DEFAULT_SOCKET


def valid_field_name(name: str) -> bool:
    """True if journald accepts ``name`` from a client: [A-Z0-9_], not leading ``_`` or digit."""
    if not 0 < len(name) <= MAX_FIELD_NAME:
        return False
    # A leading underscore marks fields journald itself adds (trusted): clients' are dropped.
    if name[0] == "_" or name[0].isdigit():
        return False
    return all(c == "_" or "A" <= c <= "Z" or "0" <= c <= "9" for c in name)


def _value_bytes(value: FieldValue) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):  # bool is an int: refuse "True" sneaking in as a number
        raise TypeError("journal field values are str, bytes or int, not bool")
    if isinstance(value, int):
        return str(value).encode("ascii")
    # A str may carry lone surrogates (surrogateescape'd file names): keep the entry valid
    # UTF-8 and still show what was there, rather than failing the whole entry.
    return value.encode("utf-8", "backslashreplace")


def encode_entry(fields: Iterable[Field]) -> bytes:
    """Serialise fields in order (duplicates allowed, as the protocol permits)."""
    parts: list[bytes] = []
    for name, value in fields:
        if not valid_field_name(name):
            raise InvalidFieldName(f"invalid journal field name: {name!r}")
        key = name.encode("ascii")
        data = _value_bytes(value)
        if b"\n" in data:
            parts.append(key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(key + b"=" + data + b"\n")
    return b"".join(parts)


class JournalClient:
    """Sends entries to one native journal socket. Thread-safe: it keeps no socket open."""

    def __init__(
        self,
        path: str = DEFAULT_SOCKET,
        *,
        sndbuf: int = DEFAULT_SNDBUF,
        timeout_s: float | None = 5.0,
    ) -> None:
        """``timeout_s`` bounds a send when journald's queue is full (None blocks forever)."""
        self._path = path
        self._sndbuf = sndbuf
        self._timeout_s = timeout_s

    @property
    def path(self) -> str:
        return self._path

    def send(self, fields: Iterable[Field]) -> None:
        """Write one entry; raises ``JournalError`` if journald did not get it."""
        payload = encode_entry(fields)
        # A socket per entry: audit entries are rare, and nothing is left to close or to
        # share between the executor's threads.
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except OSError as e:
            raise JournalError(self._path, e) from e
        with sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._sndbuf)
                sock.settimeout(self._timeout_s)
                try:
                    sock.sendto(payload, self._path)
                    return
                except OSError as e:
                    if e.errno not in _TOO_BIG:
                        raise
                self._send_memfd(sock, payload)
            except OSError as e:
                raise JournalError(self._path, e) from e

    def _send_memfd(self, sock: socket.socket, payload: bytes) -> None:
        fd = os.memfd_create("tgtwatch-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, MEMFD_SEALS)
            # Empty payload + exactly one fd: the only other shape journald accepts.
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            sock.sendmsg([], rights, 0, self._path)
        finally:
            os.close(fd)
