"""make_watcher: the watcher the `watcher:` setting names."""

from __future__ import annotations

from tgtwatch.daemon.watch_events import (
    IgnorePredicate,
    TriggerQueue,
    Watcher,
    WatcherKind,
    WatcherUnavailable,
    is_ignored_name,
)
from tgtwatch.daemon.watch_inotify import InotifyWatcher
from tgtwatch.daemon.watch_pyinotify import PyinotifyWatcher


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
    # `watchdog` (older settings files) is the same reader: the watchdog package's public
    # API reports no inotify overflow, so tgtwatch reads inotify itself.
    return InotifyWatcher(triggers, ignore=ignore)
