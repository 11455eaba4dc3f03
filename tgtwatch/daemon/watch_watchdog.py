"""The default watcher: watchdog's inotify observer, one non-recursive watch per directory."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyFullEmitter, InotifyObserver
from watchdog.observers.inotify_c import InotifyEvent, InotifyFD

from tgtwatch.daemon.watch_events import (
    FsAction,
    FsEvent,
    IgnorePredicate,
    TriggerQueue,
    is_ignored_name,
)
from tgtwatch.daemon.watch_set import WatchSet

_CONTENT_EVENTS: list[type[FileSystemEvent]] = [
    FileClosedEvent,  # IN_CLOSE_WRITE
    FileCreatedEvent,  # IN_CREATE
    DirCreatedEvent,
    FileDeletedEvent,  # IN_DELETE
    DirDeletedEvent,
    FileMovedEvent,  # IN_MOVED_FROM / IN_MOVED_TO, paired or not
    DirMovedEvent,
]
# Ancestors only matter for names on the path to a watched directory; not
# asking for IN_CLOSE_WRITE keeps a watch on e.g. /etc quiet.
_STRUCTURE_EVENTS = [e for e in _CONTENT_EVENTS if e is not FileClosedEvent]


class _OverflowAwareFD(InotifyFD):
    """watchdog's inotify reader, reporting IN_Q_OVERFLOW (watchdog 7.1 only logs it)."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__()
        self._on_overflow = on_overflow

    def handle_event(self, event: InotifyEvent) -> None:
        super().handle_event(event)  # watchdog drops its half-paired moves first
        if event.is_queue_overflow:
            self._on_overflow()


class _Observer(InotifyObserver):
    """InotifyObserver with our reader and full (unpaired) move events."""

    def __init__(self, fd: InotifyFD, *, timeout: float) -> None:
        # Same as InotifyObserver.__init__, which builds its own InotifyFD.
        self._inotify_fd = fd
        fd.start()
        BaseObserver.__init__(self, InotifyFullEmitter, timeout=timeout, inotify_fd=fd)


def _fs_event(event: FileSystemEvent) -> FsEvent | None:
    def path(raw: bytes | str) -> Path | None:
        return Path(os.fsdecode(raw)) if raw else None

    src, is_dir = path(event.src_path), event.is_directory
    if isinstance(event, FileClosedEvent):
        return FsEvent(FsAction.CLOSED_WRITE, src)
    if isinstance(event, FileCreatedEvent | DirCreatedEvent):
        return FsEvent(FsAction.CREATED, src, is_dir=is_dir)
    if isinstance(event, FileDeletedEvent | DirDeletedEvent):
        return FsEvent(FsAction.DELETED, src, is_dir=is_dir)
    if isinstance(event, FileMovedEvent | DirMovedEvent):
        return FsEvent(FsAction.MOVED, src, path(event.dest_path), is_dir=is_dir)
    return None


class _Handler(FileSystemEventHandler):
    """Runs on watchdog's observer thread; an exception here would kill that thread."""

    def __init__(self, watches: WatchSet) -> None:
        self._watches = watches

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            fs_event = _fs_event(event)
            if fs_event is not None:
                self._watches.on_event(fs_event)
        except Exception as exc:
            self._watches.on_error(None, f"event handler failed on {event!r}: {exc!r}")


class WatchdogWatcher:
    """The default watcher: watchdog's inotify observer, one non-recursive watch per directory.

    Overflow: watchdog 7.1's InotifyFD logs IN_Q_OVERFLOW and tells its watch
    groups (which only discard half-paired moves); no handler hears of it. We
    subclass InotifyFD.handle_event rather than hook the log line: it is per
    watcher (no global logging handler), survives any log level or message
    rewording, and fails loudly at import if the internals move.
    """

    def __init__(
        self,
        triggers: TriggerQueue,
        *,
        ignore: IgnorePredicate = is_ignored_name,
        observer_timeout_s: float = 1.0,
    ) -> None:
        self._triggers = triggers
        self._timeout = observer_timeout_s
        self._watches = WatchSet(self, triggers, ignore)
        self._handler = _Handler(self._watches)
        self._observer: _Observer | None = None

    def start(self, paths: Sequence[Path]) -> None:
        if self._observer is not None:
            raise RuntimeError("watcher already started")
        fd = _OverflowAwareFD(
            lambda: self._watches.on_overflow("inotify queue overflowed: events were lost")
        )
        self._observer = _Observer(fd, timeout=self._timeout)
        # Started before any schedule(): a watch that fails to arm then raises
        # from schedule() (ERROR trigger) instead of from observer.start().
        self._observer.start()
        # The loop scans after start(): the first arming needs no trigger.
        self._watches.set_paths(paths)
        self._watches.announce()

    def set_paths(self, paths: Sequence[Path]) -> None:
        self._watches.set_paths(paths)

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        self._watches.close()
        if observer is not None:
            observer.stop()
            observer.join()

    # InotifyBinding
    def arm(self, path: Path, *, contents: bool) -> Hashable:
        observer = self._observer
        if observer is None:
            raise OSError(errno.ESHUTDOWN, "watcher stopped")
        return observer.schedule(
            self._handler,
            str(path),
            recursive=False,
            event_filter=_CONTENT_EVENTS if contents else _STRUCTURE_EVENTS,
            # A symlinked directory is watched where it points (IN_DONT_FOLLOW
            # would watch the link itself, which never has events).
            follow_symlink=True,
        )

    def disarm(self, handle: Hashable) -> None:
        observer = self._observer
        if observer is not None and isinstance(handle, ObservedWatch):
            with contextlib.suppress(KeyError):
                observer.unschedule(handle)

    def alive(self, handle: Hashable) -> bool:
        # On IN_DELETE_SELF watchdog's emitter stops itself but stays scheduled:
        # a dead watch that a second schedule() of the same path would return.
        observer = self._observer
        if observer is None:
            return False
        return any(
            e.watch == handle and e.is_alive() and not e.stopped_event.is_set()
            for e in list(observer.emitters)
        )
