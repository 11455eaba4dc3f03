"""inotify(7) itself, through libc (ctypes): one instance, its watches, its events parsed.

tgtwatch owns this small edge instead of a library's: what it must know of the kernel's
queue, above all IN_Q_OVERFLOW (events were lost) and IN_IGNORED (a watch is gone: its
directory deleted, moved or unmounted), no public API of watchdog reports to a handler,
and Debian 12's python3-watchdog (2.2) and today's (7.x) differ in the internals that do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_MASK_ADD = 0x20000000
IN_ISDIR = 0x40000000

# struct inotify_event { int wd; uint32_t mask, cookie, len; char name[len]; }
_HEADER = struct.Struct("iIII")
READ_SIZE = 64 * 1024  # many events per read(); one event is at most 16 + NAME_MAX + 1


@dataclass(frozen=True)
class RawEvent:
    """One struct inotify_event (name without its NUL padding; wd -1 for an overflow)."""

    wd: int
    mask: int
    cookie: int
    name: bytes


def parse_events(data: bytes) -> list[RawEvent]:
    """The events in what one read() returned (the kernel never splits an event). Pure."""
    events: list[RawEvent] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        name = data[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        events.append(RawEvent(wd, mask, cookie, name))
    return events


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.inotify_rm_watch.restype = ctypes.c_int
    return libc


def _error(path: Path | None = None) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), None if path is None else str(path))


class Inotify:
    """One inotify instance: non-blocking, close-on-exec, read by its owner's thread."""

    def __init__(self) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise _error()
        self.fd: int = fd

    def add_watch(self, path: Path, mask: int) -> int:
        """The watch descriptor (the same one for the same inode: masks add up)."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask | IN_MASK_ADD)
        if wd < 0:
            raise _error(path)
        return int(wd)

    def rm_watch(self, wd: int) -> None:
        """Remove a watch; one the kernel already dropped (EINVAL) is no error."""
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[RawEvent]:
        """Everything queued now ([] when nothing is)."""
        events: list[RawEvent] = []
        while True:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                return events
            if not data:
                return events
            events += parse_events(data)

    def close(self) -> None:
        os.close(self.fd)
