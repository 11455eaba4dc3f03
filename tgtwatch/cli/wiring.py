"""Build the parts a command needs (backend, audit trail, reconciler) from settings and env."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from tgtwatch.backends.base import Backend
from tgtwatch.backends.direct import DirectBackend
from tgtwatch.backends.systemd import SystemdBackend
from tgtwatch.config.settings import BackendKind, Settings
from tgtwatch.config.trust import TrustPolicy
from tgtwatch.daemon.lanes import Executor
from tgtwatch.daemon.reconcile import Reconciler
from tgtwatch.daemon.state import StateFile
from tgtwatch.telemetry.audit import Auditor, make_auditor
from tgtwatch.telemetry.journal import JournalClient, socket_path_from_env

SYSTEMD_RUNNING = Path("/run/systemd/system")


def backend_kind(settings: Settings, systemd_running: Path = SYSTEMD_RUNNING) -> BackendKind:
    """`auto` is systemd when PID 1 is systemd, the direct backend otherwise."""
    if settings.backend is not BackendKind.AUTO:
        return settings.backend
    return BackendKind.SYSTEMD if systemd_running.is_dir() else BackendKind.DIRECT


def make_backend(settings: Settings) -> Backend:
    kind = backend_kind(settings)
    if kind is BackendKind.SYSTEMD:
        return SystemdBackend(settings)
    return DirectBackend(
        settings.state_dir / "log",
        default_portal_port=settings.default_instance.portal.port,
        tool_timeout_s=settings.tool_timeout_s,
        engine=settings.engine,
    )


def make_audit(settings: Settings, env: Mapping[str, str], stderr: TextIO) -> Auditor:
    """The journal when its socket exists (else one line per record on stderr), + audit_log."""
    path = socket_path_from_env(env)
    journal = JournalClient(path) if os.path.exists(path) else None
    return make_auditor(
        clock=time.time, stderr=stderr, journal=journal, audit_log=settings.audit_log
    )


def make_reconciler(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    stderr: TextIO | None = None,
    backend: Backend | None = None,
    keep_draining: bool = True,
) -> Reconciler:
    env = os.environ if env is None else env
    stderr = sys.stderr if stderr is None else stderr
    backend = backend or make_backend(settings)
    return Reconciler(
        settings,
        backend,
        StateFile(settings.state_dir),
        make_audit(settings, env, stderr),
        Executor(),
        policy=TrustPolicy(owner_uid=0),
        keep_draining=keep_draining,
    )
