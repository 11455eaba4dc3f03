"""The default watcher: tgtwatch's own inotify reader (daemon/inotify), one thread.

Each watched directory is one inotify watch; its events become FsEvents for the shared
WatchSet. The kernel's own signals are ours to act on: IN_Q_OVERFLOW (events were lost)
is an OVERFLOW trigger; IN_IGNORED, IN_DELETE_SELF, IN_MOVE_SELF and IN_UNMOUNT (the watch
is gone, or its directory is no longer where it was) re-arm the watches.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
from collections.abc import Hashable, Sequence
from pathlib import Path

from tgtwatch.daemon.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_ISDIR,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
    Inotify,
    RawEvent,
)
from tgtwatch.daemon.watch_events import (
    FsAction,
    FsEvent,
    IgnorePredicate,
    TriggerQueue,
    is_ignored_name,
)
from tgtwatch.daemon.watch_set import WatchSet

STRUCTURE = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
GONE = IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT
OVERFLOW = "inotify queue overflowed: events were lost"


def fs_events(event: RawEvent, directory: Path) -> list[FsEvent]:
    """What one event on a watched directory means to the WatchSet (moves come unpaired:
    classify() needs only each side). Pure."""
    if not event.name:
        return []  # an event on the directory itself: see GONE
    path = directory / os.fsdecode(event.name)
    is_dir = bool(event.mask & IN_ISDIR)
    mask = event.mask
    if mask & IN_CLOSE_WRITE:
        return [FsEvent(FsAction.CLOSED_WRITE, path)]
    if mask & IN_CREATE:
        return [FsEvent(FsAction.CREATED, path, is_dir=is_dir)]
    if mask & IN_DELETE:
        return [FsEvent(FsAction.DELETED, path, is_dir=is_dir)]
    if mask & IN_MOVED_FROM:
        return [FsEvent(FsAction.MOVED, path, None, is_dir=is_dir)]
    if mask & IN_MOVED_TO:
        return [FsEvent(FsAction.MOVED, None, path, is_dir=is_dir)]
    return []


class InotifyWatcher:
    """`watcher: inotify` (the default); see the module docstring."""

    def __init__(
        self, triggers: TriggerQueue, *, ignore: IgnorePredicate = is_ignored_name
    ) -> None:
        self._watches = WatchSet(self, triggers, ignore)
        self._inotify: Inotify | None = None
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = -1, -1
        self._lock = threading.Lock()
        self._paths: dict[int, dict[Path, bool]] = {}  # wd -> {path: contents} (hard links)

    def start(self, paths: Sequence[Path]) -> None:
        if self._inotify is not None:
            raise RuntimeError("watcher already started")
        self._inotify = Inotify()  # fs.inotify.max_queued_events is taken now
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="inotify", daemon=True)
        self._thread.start()
        # The loop scans after start(): the first arming needs no trigger.
        self._watches.set_paths(paths)
        self._watches.announce()

    def set_paths(self, paths: Sequence[Path]) -> None:
        self._watches.set_paths(paths)

    def stop(self) -> None:
        inotify, self._inotify = self._inotify, None
        self._watches.close()
        if inotify is None:
            return
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join()
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)
        inotify.close()

    # ---- the reader thread -----------------------------------------------------------------

    def _run(self) -> None:
        inotify = self._inotify
        assert inotify is not None
        poller = select.poll()
        poller.register(inotify.fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._stop_r in ready:
                return
            try:
                events = inotify.read()
            except OSError as exc:
                self._watches.on_error(None, f"reading inotify events failed: {exc}")
                return
            for event in events:
                try:
                    self._dispatch(event)
                except Exception as exc:  # never let one event end the reader
                    self._watches.on_error(None, f"event handler failed on {event!r}: {exc!r}")

    def _dispatch(self, event: RawEvent) -> None:
        if event.mask & IN_Q_OVERFLOW:
            self._watches.on_overflow(OVERFLOW)
            return
        with self._lock:
            paths = dict(self._paths.get(event.wd, {}))
            if event.mask & IN_IGNORED:
                self._paths.pop(event.wd, None)  # the kernel dropped it: never rm_watch it
        for directory in paths:
            for fs_event in fs_events(event, directory):
                self._watches.on_event(fs_event)
        if event.mask & GONE:
            for directory in paths:
                self._watches.on_watch_gone((event.wd, directory))

    # ---- InotifyBinding --------------------------------------------------------------------

    def arm(self, path: Path, *, contents: bool) -> Hashable:
        inotify = self._inotify
        if inotify is None:
            raise OSError(errno.ESHUTDOWN, "watcher stopped")
        mask = STRUCTURE | IN_ONLYDIR | (IN_CLOSE_WRITE if contents else 0)
        with self._lock:
            wd = inotify.add_watch(path, mask)
            self._paths.setdefault(wd, {})[path] = contents
        return (wd, path)

    def disarm(self, handle: Hashable) -> None:
        inotify = self._inotify
        if inotify is None or not isinstance(handle, tuple):
            return
        wd, path = handle
        with self._lock:
            paths = self._paths.get(wd)
            if paths is None:
                return  # already dropped by the kernel
            paths.pop(path, None)
            if paths:
                return  # the same directory by another name is still watched
            del self._paths[wd]
            with contextlib.suppress(OSError):
                inotify.rm_watch(wd)

    def alive(self, handle: Hashable) -> bool:
        if not isinstance(handle, tuple):
            return False
        wd, path = handle
        with self._lock:
            return path in self._paths.get(wd, {})
