"""One writer per state_dir: `run` and `apply` hold an flock that names who holds it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "lock"


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as it wrote itself into the lock file: `PID COMMAND`."""

    pid: int | None
    command: str

    def __str__(self) -> str:
        pid = self.pid if self.pid is not None else "?"
        return f"tgtwatch {self.command} (pid {pid})"


def parse_holder(text: str) -> Holder:
    """The lock file's `PID COMMAND` line; anything else is an unknown holder. Pure."""
    pid, _, command = text.strip().partition(" ")
    return Holder(int(pid) if pid.isascii() and pid.isdigit() else None, command.strip() or "?")


@dataclass(frozen=True)
class LockBusy(Exception):
    path: Path
    holder: Holder

    def __str__(self) -> str:
        return f"{self.path}: held by {self.holder}"


class StateLock:
    """An exclusive flock on state_dir/lock. The kernel drops it when its holder exits, so
    a crashed daemon never leaves a stale lock behind; only the text in the file stays."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def acquire(self, command: str, *, wait: bool = False) -> None:
        """Hold the lock as `command`; LockBusy (naming the holder) if another holds it."""
        fd = self._open()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise LockBusy(self.path, self._read(fd)) from None
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def holder(self) -> Holder | None:
        """Who holds the lock now, or None; takes nothing."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return self._read(fd)
            return None
        finally:
            os.close(fd)  # also drops the shared lock, if it was taken

    @staticmethod
    def _read(fd: int) -> Holder:
        return parse_holder(os.pread(fd, 256, 0).decode("utf-8", "replace"))

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
