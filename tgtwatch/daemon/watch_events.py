"""What inotify tells and what it means: classify events, pick watch points, ignore leftovers.

The watchers (watch_inotify, watch_pyinotify) turn events into `Trigger`s on a queue.

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

import enum
import os
import queue
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tgtwatch.daemon.debounce import Trigger, TriggerKind

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

REARM_ROUNDS = 8  # directories that keep vanishing while we arm: give up, report, retry later


class WatcherKind(enum.Enum):
    """The `watcher:` setting."""

    INOTIFY = "inotify"
    WATCHDOG = "watchdog"  # older settings files: the inotify reader too (no watchdog now)
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
            gone = event.action is FsAction.DELETED or (
                event.action is FsAction.MOVED and path == event.src
            )
            kind = TriggerKind.GONE if gone else TriggerKind.FILE
            triggers.append(Trigger(kind, path, event.action.value))
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


def normalize(paths: Iterable[Path]) -> frozenset[Path]:
    # abspath, not resolve(): a symlinked directory is watched through its link,
    # so re-pointing the link is seen as an event on the link's name.
    return frozenset(Path(os.path.abspath(p)) for p in paths)


def dir_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
