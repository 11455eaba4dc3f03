"""`tgtwatch run`: wire the daemon's parts (imported only for it: watchdog, prometheus)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TextIO

from tgtwatch.app import make_reconciler
from tgtwatch.daemon import Daemon, managed_pids
from tgtwatch.direct import DirectBackend
from tgtwatch.notify import SystemdNotifier, watchdog_interval
from tgtwatch.settings import Settings, load
from tgtwatch.structs import Desired, Observed
from tgtwatch.wakeup import SelectWaiter
from tgtwatch.watch import make_watcher


def run(settings_path: Path, settings: Settings, err: TextIO) -> int:
    """The daemon, in the foreground, until SIGTERM or SIGINT."""
    env = dict(os.environ)
    # Children must never see these: tgtd would tell systemd that *tgtwatch* is ready.
    for name in ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC"):
        os.environ.pop(name, None)
    waiter = SelectWaiter((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    reconciler = make_reconciler(settings, env=env, stderr=err)
    if reconciler.state_warning:
        print(f"tgtwatch: {reconciler.state_warning}", file=err)
    reconciler.on_lane_done = waiter.lane_done
    backend = reconciler.backend

    def pids_of(observed: Observed, desired: Desired) -> list[int]:
        if isinstance(backend, DirectBackend):
            backend.reap()
        return managed_pids(observed, desired, set(reconciler.applied.entries))

    daemon = Daemon(
        settings,
        reconciler,
        make_watcher(settings.watcher.value, waiter.triggers),
        waiter,
        SystemdNotifier.from_env(env),
        reload_settings=lambda: load(settings_path, required=False),
        pids_of=pids_of,
        observe_light=lambda: backend.observe(()),
        watchdog_interval_s=watchdog_interval(env, os.getpid()),
        log=err,
    )
    return daemon.run()
