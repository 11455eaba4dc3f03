"""Has it happened yet: a process's exit (pidfd), a portal that accepts connections."""

from __future__ import annotations

import os
import select
import socket


def wait_exit(pid: int, timeout_s: float) -> bool:
    """Wait for any process (child or not) to exit, without polling; True when it has.

    poll(), not select(): a daemon managing hundreds of tgtds holds more than 1024
    descriptors, and select() refuses any descriptor number past FD_SETSIZE.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout_s * 1000))))
    finally:
        os.close(fd)


def _connect_host(host: str) -> str:
    """Where to knock to see a portal listen: its own address, or loopback for a wildcard."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("[::]", "::"):
        return "::1"
    return host.strip("[]")


def portal_listens(portal: str, timeout_s: float = 1.0) -> bool:
    host, _, port = portal.rpartition(":")
    try:
        with socket.create_connection((_connect_host(host), int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False
