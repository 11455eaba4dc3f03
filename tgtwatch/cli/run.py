"""`tgtwatch run`: wire the daemon's parts (imported only for it: the watcher, prometheus)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TextIO

from tgtwatch.backends.direct import DirectBackend
from tgtwatch.backends.systemd import SystemdBackend
from tgtwatch.cli.exits import EXIT_BUSY
from tgtwatch.cli.wiring import make_reconciler
from tgtwatch.config.settings import Settings, WatcherKind, load
from tgtwatch.daemon.lock import LockBusy, StateLock
from tgtwatch.daemon.loop import Daemon
from tgtwatch.daemon.wakeup import SelectWaiter
from tgtwatch.daemon.watch import make_watcher
from tgtwatch.telemetry.notify import SystemdNotifier, watchdog_interval


def run(settings_path: Path, settings: Settings, err: TextIO) -> int:
    """The daemon, in the foreground, until SIGTERM or SIGINT."""
    # First, before any signal handler: a blocked flock must still die on SIGTERM.
    lock = StateLock(settings.state_dir)
    try:
        lock.acquire("run")
    except LockBusy as busy:
        if busy.holder.command == "run":
            print(f"tgtwatch: {busy}: a daemon already runs; not starting another", file=err)
            return EXIT_BUSY
        print(f"tgtwatch: waiting for {busy.holder} to finish", file=err, flush=True)
        lock.acquire("run", wait=True)
    with lock:
        return _run(settings_path, settings, err)


def _run(settings_path: Path, settings: Settings, err: TextIO) -> int:
    env = dict(os.environ)
    # Children must never see these: tgtd would tell systemd that *tgtwatch* is ready.
    for name in ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC"):
        os.environ.pop(name, None)
    if settings.watcher is WatcherKind.WATCHDOG:
        print(
            "tgtwatch: watcher: watchdog is tgtwatch's own inotify reader now (the watchdog "
            "package reports no lost events); write `watcher: inotify`",
            file=err,
        )
    waiter = SelectWaiter((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    reconciler = make_reconciler(settings, env=env, stderr=err)
    if reconciler.state_warning:
        print(f"tgtwatch: {reconciler.state_warning}", file=err)
    reconciler.on_lane_done = waiter.lane_done
    backend = reconciler.backend
    if isinstance(backend, SystemdBackend):
        # Before the loop (it may run systemctl daemon-reload): tgtd@.service reads the
        # files this daemon renders under its state_dir.
        failed = backend.follow_state_dir()
        if failed is not None:
            print(f"tgtwatch: {failed.message}", file=err)

    daemon = Daemon(
        settings,
        reconciler,
        make_watcher(settings.watcher.value, waiter.triggers),
        waiter,
        SystemdNotifier.from_env(env),
        reload_settings=lambda: load(settings_path, required=False),
        reap=backend.reap if isinstance(backend, DirectBackend) else lambda: None,
        observe_light=lambda: reconciler.observe_now(daemon.state.watched.keys()),
        watchdog_interval_s=watchdog_interval(env, os.getpid()),
        log=err,
    )
    return daemon.run()
