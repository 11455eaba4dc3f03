"""Parse /proc/PID/cmdline of a tgtd: its portal and control port. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

DEFAULT_ISCSI_PORT = 3260


@dataclass(frozen=True)
class TgtdCmdline:
    """What a running tgtd was told on its command line."""

    control_port: int
    portal: str  # host:port as tgtd binds it; "0.0.0.0:3260"-like default when absent
    host: str  # "" means every address (tgtd's default)
    port: int
    foreground: bool = False


def _split_portal(value: str) -> tuple[str, int] | None:
    """ "HOST:PORT", "[V6]:PORT" or "HOST" (port 3260), as tgtd's --iscsi portal= takes it."""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep:
            return None
        if not rest:
            return host, DEFAULT_ISCSI_PORT
        if not rest.startswith(":") or not _decimal(rest[1:]):
            return None
        return host, int(rest[1:])
    if value.count(":") > 1:  # a bare IPv6 address: tgtd takes it without a port
        return value, DEFAULT_ISCSI_PORT
    host, sep, port = value.partition(":")
    if not sep:
        return value, DEFAULT_ISCSI_PORT
    if not _decimal(port) or not host:
        return None
    return host, int(port)


def _decimal(value: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts "²", which int() refuses."""
    return value.isascii() and value.isdigit()


def _port_number(value: str) -> int | None:
    if _decimal(value) and len(value) <= 5 and int(value) <= 65535:
        return int(value)
    return None


def parse_tgtd_cmdline(raw: bytes) -> TgtdCmdline | None:
    """Recognise a tgtd from /proc/PID/cmdline; None when it is not one (or is unparseable)."""
    argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0")]
    if argv and argv[-1] == "":
        argv.pop()
    if not argv or PurePosixPath(argv[0]).name != "tgtd":
        return None
    control_port = 0
    host, port = "", DEFAULT_ISCSI_PORT
    foreground = False
    i = 1
    while i < len(argv):
        arg = argv[i]
        value: str | None = None
        if arg in ("-C", "--control-port"):
            value = argv[i + 1] if i + 1 < len(argv) else None
            i += 1
            cp = _port_number(value or "")
            if cp is None:
                return None
            control_port = cp
        elif arg.startswith("--control-port="):
            cp = _port_number(arg.partition("=")[2])
            if cp is None:
                return None
            control_port = cp
        elif arg.startswith("-C") and not arg.startswith("--"):
            cp = _port_number(arg[2:])
            if cp is None:
                return None
            control_port = cp
        elif arg == "--iscsi":
            # tgtd takes the LLD options only as a separate word: "--iscsi portal=H:P,k=v"
            value = argv[i + 1] if i + 1 < len(argv) else ""
            i += 1
            for item in value.split(","):
                key, _, val = item.partition("=")
                if key == "portal":
                    split = _split_portal(val)
                    if split is not None and not host:
                        host, port = split
        elif arg in ("-f", "--foreground"):
            foreground = True
        i += 1
    shown_host = f"[{host}]" if ":" in host else host
    portal = f"{shown_host}:{port}" if host else f"0.0.0.0:{port}"
    return TgtdCmdline(
        control_port=control_port, portal=portal, host=host, port=port, foreground=foreground
    )
