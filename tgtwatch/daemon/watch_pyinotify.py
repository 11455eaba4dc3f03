"""The optional `watcher: pyinotify` binding: the same semantics on pyinotify's notifier."""

from __future__ import annotations

import errno
import importlib
import re
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from tgtwatch.daemon.watch_events import (
    FsAction,
    FsEvent,
    IgnorePredicate,
    TriggerQueue,
    WatcherUnavailable,
    is_ignored_name,
)
from tgtwatch.daemon.watch_set import WatchSet


def _import_pyinotify() -> Any:
    try:
        return importlib.import_module("pyinotify")
    except ImportError as exc:  # also what Python 3.12+ (no asyncore) raises
        raise WatcherUnavailable(
            "watcher: pyinotify needs the pyinotify package (pip install 'tgtwatch[pyinotify]'),"
            f" which does not import on Python 3.12 or later: {exc}"
        ) from exc


class PyinotifyWatcher:
    """The `watcher: pyinotify` alternative; same semantics, pyinotify's ThreadedNotifier."""

    def __init__(self, triggers: TriggerQueue, *, ignore: IgnorePredicate = is_ignored_name):
        self._pyinotify = _import_pyinotify()
        self._watches = WatchSet(self, triggers, ignore)
        self._wm: Any = None
        self._notifier: Any = None

    def start(self, paths: Sequence[Path]) -> None:
        if self._notifier is not None:
            raise RuntimeError("watcher already started")
        pi = self._pyinotify
        watches = self._watches

        def process_default(_self: Any, event: Any) -> None:
            try:
                _pyinotify_event(pi, event, watches)
            except Exception as exc:
                watches.on_error(None, f"event handler failed on {event!r}: {exc!r}")

        def process_overflow(_self: Any, _event: Any) -> None:
            # pyinotify's own ProcessEvent.process_IN_Q_OVERFLOW only logs it.
            watches.on_overflow("inotify queue overflowed: events were lost")

        handler = type(
            "Handler",
            (pi.ProcessEvent,),
            {"process_default": process_default, "process_IN_Q_OVERFLOW": process_overflow},
        )
        self._wm = pi.WatchManager()
        self._notifier = pi.ThreadedNotifier(self._wm, handler())
        self._notifier.daemon = True
        self._notifier.start()
        # The loop scans after start(): the first arming needs no trigger.
        self._watches.set_paths(paths)
        self._watches.announce()

    def set_paths(self, paths: Sequence[Path]) -> None:
        self._watches.set_paths(paths)

    def stop(self) -> None:
        notifier, self._notifier = self._notifier, None
        self._watches.close()
        if notifier is not None:
            notifier.stop()

    def arm(self, path: Path, *, contents: bool) -> Hashable:
        pi = self._pyinotify
        mask = pi.IN_CREATE | pi.IN_DELETE | pi.IN_MOVED_FROM | pi.IN_MOVED_TO | pi.IN_DELETE_SELF
        mask |= pi.IN_MOVE_SELF | pi.IN_ONLYDIR
        if contents:
            mask |= pi.IN_CLOSE_WRITE
        try:
            result = self._wm.add_watch(str(path), mask, quiet=False)
        except pi.WatchManagerError as exc:
            # pyinotify names the errno only in its message: "... (ENOSPC)".
            name = re.search(r"\((E[A-Z]+)\)", str(exc))
            code = getattr(errno, name.group(1), errno.EIO) if name else errno.EIO
            raise OSError(code, str(exc)) from exc
        wd = result.get(str(path), -1)
        if wd < 0:
            raise OSError(errno.EIO, f"pyinotify could not watch {path}")
        return int(wd)

    def disarm(self, handle: Hashable) -> None:
        if self._wm is not None and isinstance(handle, int) and self._wm.get_path(handle):
            self._wm.rm_watch(handle, quiet=True)

    def alive(self, handle: Hashable) -> bool:
        return self._wm is not None and isinstance(handle, int) and bool(self._wm.get_path(handle))


def _pyinotify_event(pi: Any, event: Any, watches: WatchSet) -> None:
    """Translate one pyinotify event; its moves arrive unpaired (src_pathname on MOVED_TO)."""
    mask = event.mask
    if mask & pi.IN_Q_OVERFLOW:
        watches.on_overflow("inotify queue overflowed: events were lost")
        return
    if mask & (pi.IN_IGNORED | pi.IN_MOVE_SELF | pi.IN_DELETE_SELF):
        # The watched directory itself went away (its path may be stale: pyinotify
        # appends "-unknown-path" on IN_MOVE_SELF); find it by watch descriptor.
        watches.on_watch_gone(event.wd)
        return
    path = Path(event.pathname)
    is_dir = bool(event.dir)
    if mask & pi.IN_CLOSE_WRITE:
        watches.on_event(FsEvent(FsAction.CLOSED_WRITE, path))
    elif mask & pi.IN_CREATE:
        watches.on_event(FsEvent(FsAction.CREATED, path, is_dir=is_dir))
    elif mask & pi.IN_DELETE:
        watches.on_event(FsEvent(FsAction.DELETED, path, is_dir=is_dir))
    elif mask & pi.IN_MOVED_FROM:
        watches.on_event(FsEvent(FsAction.MOVED, path, None, is_dir=is_dir))
    elif mask & pi.IN_MOVED_TO:
        watches.on_event(FsEvent(FsAction.MOVED, None, path, is_dir=is_dir))
