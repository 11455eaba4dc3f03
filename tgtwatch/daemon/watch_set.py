"""The watch bookkeeping every inotify binding shares: arming, re-arming, triggers."""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tgtwatch.daemon.debounce import Trigger, TriggerKind
from tgtwatch.daemon.watch_events import (
    REARM_ROUNDS,
    FsEvent,
    IgnorePredicate,
    TriggerQueue,
    ancestors,
    classify,
    dir_identity,
    is_ignored_name,
    normalize,
    watch_points,
)


class InotifyBinding(Protocol):
    """What WatchSet needs from an inotify binding."""

    def arm(self, path: Path, *, contents: bool) -> Hashable:
        """Watch `path` (non-recursively); raises OSError."""

    def disarm(self, handle: Hashable) -> None:
        """Stop watching; must tolerate a watch the kernel already dropped."""

    def alive(self, handle: Hashable) -> bool:
        """Whether events still flow for this watch."""


@dataclass
class _Armed:
    handle: Hashable
    contents: bool
    identity: tuple[int, int] | None


@dataclass
class WatchSet:
    """The shared watch bookkeeping: which directories to arm, re-arming, trigger emission.

    Backend threads call on_event()/on_overflow(); the loop's thread calls
    set_paths(). Re-arming calls into the backend, which takes the backend's own
    locks; a backend thread therefore only *tries* our lock and, if it is
    busy, leaves a dirty flag that the holder re-checks before it returns.
    """

    backend: InotifyBinding
    triggers: TriggerQueue
    ignore: IgnorePredicate = is_ignored_name
    _dirs: frozenset[Path] = frozenset()
    _chain: frozenset[Path] = frozenset()
    _armed: dict[Path, _Armed] = field(default_factory=dict)
    _dead: set[Path] = field(default_factory=set)
    _failed: dict[Path, str] = field(default_factory=dict)
    _announce: bool = False
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _marks: threading.Lock = field(default_factory=threading.Lock)
    _dirty: threading.Event = field(default_factory=threading.Event)

    def set_paths(self, paths: Sequence[Path]) -> None:
        dirs = normalize(paths)
        # One rebinding each, read as snapshots by backend threads.
        self._dirs, self._chain = dirs, ancestors(dirs)
        self._dirty.set()
        self._kick(blocking=True)

    def announce(self) -> None:
        """From now on, a (re-)armed watch triggers a look: files may have landed before it."""
        self._announce = True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for armed in self._armed.values():
                with contextlib.suppress(Exception):
                    self.backend.disarm(armed.handle)
            self._armed.clear()

    def on_event(self, event: FsEvent) -> None:
        """Backend thread: classify, send triggers, re-arm if the directory chain changed."""
        result = classify(event, self._dirs, self._chain, ignore=self.ignore)
        for trigger in result.triggers:
            self.triggers.put(trigger)
        if result.structural:
            self._mark_dead(event.paths)
            self._dirty.set()
            self._kick(blocking=False)

    def on_overflow(self, detail: str) -> None:
        """Backend thread: events were lost, including perhaps a directory's deletion."""
        self.triggers.put(Trigger(TriggerKind.OVERFLOW, None, detail))
        self._dirty.set()
        self._kick(blocking=False)

    def on_watch_gone(self, handle: Hashable) -> None:
        """Backend thread: the kernel dropped a watch (IN_IGNORED, IN_MOVE_SELF): re-arm."""
        with self._marks:
            self._dead.update(p for p, a in list(self._armed.items()) if a.handle == handle)
        self._dirty.set()
        self._kick(blocking=False)

    def on_error(self, path: Path | None, detail: str) -> None:
        self.triggers.put(Trigger(TriggerKind.ERROR, path, detail))

    def _mark_dead(self, paths: Iterable[Path]) -> None:
        # A watch on a deleted or moved-away directory is dead even if the name
        # is back by the time we look (and may have the old inode number again).
        with self._marks:
            for p in paths:
                self._dead.update(a for a in self._armed if a == p or p in a.parents)

    def _kick(self, *, blocking: bool) -> None:
        while self._dirty.is_set():
            if not self._lock.acquire(blocking=blocking):
                return  # the holder re-checks _dirty after releasing
            try:
                self._dirty.clear()
                if not self._closed:
                    self._reconcile()
            except Exception as exc:  # never let re-arming kill a watcher thread
                self.on_error(None, f"re-arming watches failed: {exc!r}")
            finally:
                self._lock.release()

    def _reconcile(self) -> None:
        for _ in range(REARM_ROUNDS):
            if not self._reconcile_once():
                return
        self.on_error(None, "watched directories keep changing while being armed")

    def _reconcile_once(self) -> bool:
        """Arm what is wanted now; True if the file system moved under us (go again)."""
        wanted = watch_points(self._dirs)
        with self._marks:
            dead, self._dead = self._dead, set()
        for path, armed in list(self._armed.items()):
            keep = (
                path not in dead
                and wanted.get(path) is armed.contents
                and armed.identity is not None
                and armed.identity == dir_identity(path)
                and self.backend.alive(armed.handle)
            )
            if not keep:
                del self._armed[path]
                with contextlib.suppress(Exception):
                    self.backend.disarm(armed.handle)
                if armed.contents and self._announce:
                    self.triggers.put(Trigger(TriggerKind.FILE, path, "watch lost, re-arming"))
        for path, contents in wanted.items():
            if path in self._armed:
                continue
            # Identity first, then arm: if the directory is swapped in between,
            # the next round sees a different identity and arms again.
            identity = dir_identity(path)
            try:
                handle = self.backend.arm(path, contents=contents)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    return True  # vanished since watch_points(): recompute
                detail = f"cannot watch {path}: {exc.strerror or exc}"
                if self._failed.get(path) != detail:  # once per failure, not per cycle
                    self._failed[path] = detail
                    self.on_error(path, detail)
                continue
            self._failed.pop(path, None)
            self._armed[path] = _Armed(handle, contents, identity)
            if contents and self._announce:
                # Files may have landed before the watch existed: look once more.
                self.triggers.put(Trigger(TriggerKind.FILE, path, "watching directory"))
        # Armed a parent while its missing child appeared? Then the event was missed.
        now = {p: c for p, c in watch_points(self._dirs).items() if p not in self._failed}
        return now != {p: a.contents for p, a in self._armed.items()}
