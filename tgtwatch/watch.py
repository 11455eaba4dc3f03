"""Watch config directories with inotify and turn what happens into `Trigger`s on a queue.

Events are triggers only (DESIGN.md): the watcher says "look again", never
"this changed". What it must get right is *when* to say it:

- act on close-after-write, moves into or out of place, creations of things no
  writer will close (links, symlinks, directories) and deletions; never on
  plain modifications, so a half-written file is not read while its writer
  still holds it open;
- keep watching a directory that is deleted, moved away or replaced and comes
  back, and start watching one that does not exist yet: each watched directory
  is armed together with its parent (or, while it is missing, its nearest
  existing ancestor), and any event on that chain re-arms;
- an inotify queue overflow (events were lost) and a watcher failure (e.g.
  the inotify watch limit) become OVERFLOW / ERROR triggers, never a crash.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import importlib
import os
import queue
import re
import stat
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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

from tgtwatch.debounce import Trigger, TriggerKind

__all__ = [
    "FakeWatcher",
    "FsAction",
    "FsEvent",
    "PyinotifyWatcher",
    "Trigger",
    "TriggerKind",
    "WatchdogWatcher",
    "Watcher",
    "WatcherKind",
    "WatcherUnavailable",
    "classify",
    "is_ignored_name",
    "make_watcher",
    "watch_points",
]

TriggerQueue = queue.Queue[Trigger]
IgnorePredicate = Callable[[str], bool]
Lstat = Callable[[Path], os.stat_result]

# Editor swap/backup files and package-manager leftovers: never a config of their own.
_IGNORED = re.compile(
    r"""^\.                      # dotfiles: vim .x.swp, rsync .x.XXXXXX, emacs .#x
      | ~$                       # backups: vim's x.conf~
      | ^\#.*\#$                 # emacs autosave
      | \.sw[a-px]$              # vim swap files and its .swx probe
      | \.(tmp|orig|rej|bak)$
      | \.dpkg-[a-z]+$           # dpkg-new, -old, -dist, -tmp, -bak
      | \.ucf-[a-z]+$
      | \.rpm(new|save|orig)$
    """,
    re.VERBOSE,
)

_REARM_ROUNDS = 8  # directories that keep vanishing while we arm: give up, report, retry later


class WatcherKind(enum.Enum):
    """The `watcher:` setting."""

    WATCHDOG = "watchdog"
    PYINOTIFY = "pyinotify"


class WatcherUnavailable(RuntimeError):
    """The configured watcher cannot run here (e.g. pyinotify missing or on Python 3.12+)."""


class Watcher(Protocol):
    """Watches directories; puts `Trigger`s on the queue it was built with, from its own threads."""

    def start(self, paths: Sequence[Path]) -> None:
        """Arm watches for `paths` (directories); call before the first scan."""

    def set_paths(self, paths: Sequence[Path]) -> None:
        """Replace the watched directories; idempotent, also re-arms lost watches."""

    def stop(self) -> None:
        """Remove every watch and join the watcher's threads."""


def is_ignored_name(name: str) -> bool:
    """Whether an event on a file of this name is no reason to rescan."""
    return bool(_IGNORED.search(name))


class FsAction(enum.Enum):
    """What a backend saw, reduced to what matters here."""

    CREATED = "created"
    DELETED = "deleted"
    MOVED = "moved"  # src or dest is None when the other side is outside the watches
    CLOSED_WRITE = "closed_write"


@dataclass(frozen=True)
class FsEvent:
    """One backend event, backend-neutral."""

    action: FsAction
    src: Path | None
    dest: Path | None = None
    is_dir: bool = False

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.src, self.dest) if p is not None)


@dataclass(frozen=True)
class Classified:
    """classify()'s answer: triggers to send, and whether the watch set must be re-checked."""

    triggers: tuple[Trigger, ...] = ()
    structural: tuple[Path, ...] = ()  # watched dirs or their ancestors that were touched


def ancestors(dirs: Iterable[Path]) -> frozenset[Path]:
    """Every proper ancestor of `dirs`: where a watched directory can appear or vanish."""
    return frozenset(a for d in dirs for a in d.parents)


def _awaits_close(path: Path, lstat: Lstat) -> bool:
    """A new regular file with one link is being written: its close-after-write will follow.

    Anything else created (hard link, symlink, fifo, directory) gets no close, so
    it triggers now. If the file is already gone, its deletion triggers instead.
    """
    try:
        st = lstat(path)
    except OSError:
        return True
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1


def classify(
    event: FsEvent,
    dirs: frozenset[Path],
    chain: frozenset[Path],
    *,
    ignore: IgnorePredicate = is_ignored_name,
    lstat: Lstat = os.lstat,
) -> Classified:
    """Which triggers `event` makes, given the watched `dirs` and their `ancestors`."""
    triggers: list[Trigger] = []
    structural: list[Path] = []
    for path in event.paths:
        if path in dirs or path in chain:
            structural.append(path)
            triggers.append(Trigger(TriggerKind.FILE, path, f"directory {event.action.value}"))
        elif path.parent in dirs and not ignore(path.name):
            if event.action is FsAction.CREATED and not event.is_dir and _awaits_close(path, lstat):
                continue
            triggers.append(Trigger(TriggerKind.FILE, path, event.action.value))
    return Classified(tuple(triggers), tuple(structural))


def _nearest_existing(path: Path, isdir: Callable[[Path], bool]) -> Path:
    for candidate in path.parents:
        if isdir(candidate):
            return candidate
    return Path(path.anchor or "/")


def watch_points(
    dirs: Iterable[Path], isdir: Callable[[Path], bool] = os.path.isdir
) -> dict[Path, bool]:
    """Directories to arm now, mapped to whether their contents matter (else only structure)."""
    points: dict[Path, bool] = {}
    for d in dirs:
        if isdir(d):
            points[d] = True
            if d.parent != d:
                points.setdefault(d.parent, False)
        else:
            points.setdefault(_nearest_existing(d, isdir), False)
    return points


def _normalize(paths: Iterable[Path]) -> frozenset[Path]:
    # abspath, not resolve(): a symlinked directory is watched through its link,
    # so re-pointing the link is seen as an event on the link's name.
    return frozenset(Path(os.path.abspath(p)) for p in paths)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


class _Backend(Protocol):
    """What _WatchSet needs from an inotify binding."""

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
class _WatchSet:
    """The shared watch bookkeeping: which directories to arm, re-arming, trigger emission.

    Backend threads call on_event()/on_overflow(); the loop's thread calls
    set_paths(). Re-arming calls into the backend, which takes the backend's own
    locks; a backend thread therefore only *tries* our lock and, if it is
    busy, leaves a dirty flag that the holder re-checks before it returns.
    """

    backend: _Backend
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
        dirs = _normalize(paths)
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
        for _ in range(_REARM_ROUNDS):
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
                and armed.identity == _identity(path)
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
            identity = _identity(path)
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


# --- watchdog ---------------------------------------------------------------------------

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

    def __init__(self, watches: _WatchSet) -> None:
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
        self._watches = _WatchSet(self, triggers, ignore)
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

    # _Backend
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


# --- pyinotify (optional) -----------------------------------------------------------------


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
        self._watches = _WatchSet(self, triggers, ignore)
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


def _pyinotify_event(pi: Any, event: Any, watches: _WatchSet) -> None:
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


# --- fake and factory ---------------------------------------------------------------------


class FakeWatcher:
    """A Watcher for the loop's unit tests: replays scripted trigger batches on demand."""

    def __init__(self, triggers: TriggerQueue, script: Sequence[Sequence[Trigger]] = ()) -> None:
        self._triggers = triggers
        self._script = [tuple(batch) for batch in script]
        self.path_history: list[tuple[Path, ...]] = []
        self.started = False
        self.stopped = False

    def start(self, paths: Sequence[Path]) -> None:
        if self.started:
            raise RuntimeError("watcher already started")
        self.started = True
        self.path_history.append(tuple(paths))

    def set_paths(self, paths: Sequence[Path]) -> None:
        self.path_history.append(tuple(paths))

    def stop(self) -> None:
        self.stopped = True

    @property
    def paths(self) -> tuple[Path, ...]:
        """The directories last asked for."""
        return self.path_history[-1] if self.path_history else ()

    @property
    def remaining(self) -> int:
        return len(self._script)

    def push(self, *triggers: Trigger) -> None:
        """Deliver triggers now, as a backend thread would."""
        for trigger in triggers:
            self._triggers.put(trigger)

    def play_next(self) -> bool:
        """Deliver the next scripted batch; False when the script is exhausted."""
        if not self._script:
            return False
        self.push(*self._script.pop(0))
        return True


def make_watcher(
    kind: WatcherKind | str,
    triggers: TriggerQueue,
    *,
    ignore: IgnorePredicate = is_ignored_name,
) -> Watcher:
    """The watcher the `watcher:` setting names; WatcherUnavailable if it cannot run."""
    try:
        kind = WatcherKind(kind)
    except ValueError:
        raise WatcherUnavailable(
            f"unknown watcher {kind!r}; expected one of {', '.join(k.value for k in WatcherKind)}"
        ) from None
    if kind is WatcherKind.PYINOTIFY:
        return PyinotifyWatcher(triggers, ignore=ignore)
    return WatchdogWatcher(triggers, ignore=ignore)
