"""sd_notify: readiness, status, reload, stop and watchdog messages to systemd.

We speak the protocol ourselves instead of wrapping the ``sdnotify`` package: it is one
datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by ``$NOTIFY_SOCKET``
(a leading ``@`` means the abstract namespace). ``sdnotify`` 0.3.2 catches every
exception with a bare ``except`` (a lost READY=1 would be invisible until systemd kills
us on its start timeout), encodes latin-1 (a STATUS with any other character raises
inside it and is silently dropped, although systemd takes UTF-8), reads
``os.environ`` itself (not injectable) and keeps one socket connected for its lifetime.
Wrapping it safely would mean ``debug=True`` plus our own encoding and sanitising —
i.e. everything but the ``sendto``.

Send failures raise ``NotifyError``: the daemon decides (log and go on). Without
``$NOTIFY_SOCKET`` every method is a no-op, as with ``sd_notify(3)``.

A send never blocks: when systemd does not read its socket (busy, or stuck), a blocking
``sendto`` would hold the loop, and with a timeout it spins (``poll`` says the socket is
writable, ``sendto`` says EAGAIN). ``NotifyError.transient`` says "try again later";
``telemetry.outbox`` keeps and retries such messages.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping
from typing import Protocol

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
# Meant for tgtwatch alone: children (tgtd, tgt-admin) must never inherit them.
SYSTEMD_NOTIFY_ENV = (NOTIFY_SOCKET_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV)

# The receiver's queue is full (systemd is not reading): the message may go through later.
TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR})

# systemd reads notifications into a PIPE_BUF (4096-byte) buffer and ignores truncated
# ones; a STATUS is meant to be one line in `systemctl status`. Bytes, UTF-8 encoded.
STATUS_MAX_BYTES = 1024
_ELLIPSIS = "…"


class NotifyError(Exception):
    """A notification was not delivered to systemd."""

    def __init__(self, address: str, message: str, cause: OSError) -> None:
        self.address = address
        self.message = message
        self.cause = cause
        self.errno: int | None = cause.errno
        reason = os.strerror(cause.errno) if cause.errno is not None else str(cause)
        first = message.split("\n", 1)[0]
        super().__init__(f"sd_notify {first!r} to {address}: {reason}")

    @property
    def transient(self) -> bool:
        """Not delivered *now* (systemd's queue is full): worth sending again later."""
        return self.errno in TRANSIENT_ERRNOS


class Notifier(Protocol):
    """What the daemon tells its service manager."""

    def ready(self) -> None: ...

    def status(self, text: str) -> None: ...

    def reloading(self, monotonic_usec: int) -> None: ...

    def stopping(self) -> None: ...

    def watchdog(self) -> None: ...

    def extend_timeout(self, usec: int) -> None: ...


def sanitize_status(text: str, max_bytes: int = STATUS_MAX_BYTES) -> str:
    """One line of valid UTF-8, at most ``max_bytes`` encoded, safe inside a notification.

    Line breaks and other control characters would end the STATUS= line (or, for NUL,
    make systemd drop the whole datagram), so every run of whitespace/control characters
    becomes one space. Lone surrogates (undecodable file names) would make the message
    invalid UTF-8, which systemd ignores: they are shown as ``\\udcXX``.
    """
    out: list[str] = []
    gap = False
    for c in text:
        code = ord(c)
        if c.isspace() or code < 0x20 or 0x7F <= code <= 0x9F:
            gap = True
            continue
        if gap and out:
            out.append(" ")
        gap = False
        out.append(f"\\u{code:04x}" if 0xD800 <= code <= 0xDFFF else c)
    line = "".join(out)
    encoded = line.encode("utf-8")
    if len(encoded) <= max_bytes:
        return line
    room = max_bytes - len(_ELLIPSIS.encode("utf-8"))
    # Cutting bytes may split a character: drop the partial one, never emit bad UTF-8.
    return encoded[: max(room, 0)].decode("utf-8", "ignore") + _ELLIPSIS


def _usec(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer of microseconds: {value!r}")
    return value


def ready_message() -> str:
    return "READY=1"


def status_message(text: str) -> str:
    return f"STATUS={sanitize_status(text)}"


def reloading_message(monotonic_usec: int) -> str:
    # Type=notify-reload needs both in one datagram: MONOTONIC_USEC ties RELOADING=1 to
    # the reload request, so systemd can tell this reload from a later one.
    return f"RELOADING=1\nMONOTONIC_USEC={_usec(monotonic_usec, 'monotonic_usec')}"


def stopping_message() -> str:
    return "STOPPING=1"


def watchdog_message() -> str:
    return "WATCHDOG=1"


def extend_timeout_message(usec: int) -> str:
    return f"EXTEND_TIMEOUT_USEC={_usec(usec, 'usec')}"


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), None if not asked.

    Like ``sd_watchdog_enabled(3)``: the watchdog is ours only when ``WATCHDOG_PID`` is
    unset or names ``pid``; malformed or zero values mean no watchdog.
    """
    raw_pid = env.get(WATCHDOG_PID_ENV)
    if raw_pid is not None:
        try:
            if int(raw_pid) != pid:
                return None
        except ValueError:
            return None
    raw_usec = env.get(WATCHDOG_USEC_ENV)
    if raw_usec is None:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


class MessageNotifier:
    """The six notifications, built the same way for the real and the recording notifier."""

    def send(self, message: str) -> None:
        raise NotImplementedError

    def ready(self) -> None:
        self.send(ready_message())

    def status(self, text: str) -> None:
        self.send(status_message(text))

    def reloading(self, monotonic_usec: int) -> None:
        self.send(reloading_message(monotonic_usec))

    def stopping(self) -> None:
        self.send(stopping_message())

    def watchdog(self) -> None:
        self.send(watchdog_message())

    def extend_timeout(self, usec: int) -> None:
        self.send(extend_timeout_message(usec))


class SystemdNotifier(MessageNotifier):
    """Sends to ``$NOTIFY_SOCKET``; a no-op when the service manager gave none."""

    def __init__(self, address: str | None) -> None:
        """``address`` is ``$NOTIFY_SOCKET`` as given (``/path`` or ``@abstract``)."""
        self._address = address or None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SystemdNotifier:
        return cls(env.get(NOTIFY_SOCKET_ENV))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, message: str) -> None:
        """Send one raw notification, without blocking; ``NotifyError`` if not delivered."""
        address = self._address
        if address is None:
            return
        data = message.encode("utf-8", "backslashreplace")
        try:
            if address.startswith("@"):
                target = "\0" + address[1:]
            elif address.startswith("/"):
                target = address
            else:
                # e.g. systemd 254's vsock: addresses, which only VMs' managers use.
                raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
            # A socket per message, like sd_notify(3): nothing to close or leak to children,
            # and a restarted manager's new socket is found again.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(data, target)
        except OSError as e:
            raise NotifyError(address, message, e) from e
