"""Load an instance's targets into its tgtd with the configured engine: native or tgt-admin.

Both backends (and `tgtwatch load`, run by tgtd@.service) call `load_targets` between
"tgtd answers" and "ready"; its result is the part of an action's outcome that says which
targets were loaded, which wait for their sessions to end, and what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tgtwatch.backends.base import Result
from tgtwatch.config.settings import EngineKind
from tgtwatch.model.structs import InstanceSpec
from tgtwatch.tgt import engine
from tgtwatch.tgt.gateway import TgtControl
from tgtwatch.tgt.ipc_client import TgtdSocket

RECORD_SUBDIR = "records"


@dataclass(frozen=True)
class Loaded:
    """How loading went: the result, a clause for the audit message, and the details."""

    result: Result
    message: str  # "" or a clause: "; 2 live (...)", ", but: ..."
    output: str = ""
    busy: tuple[str, ...] = ()  # targets left as they were because of their sessions
    incomplete: bool = False  # not everything the file asks for is there (a missing store)


def record_file(state_dir: Path, control_port: int) -> engine.RecordFile:
    """What the native engine applied to the tgtd on `control_port` (no secret in it)."""
    return engine.RecordFile(state_dir / RECORD_SUBDIR / f"{control_port}.json")


def _native(spec: InstanceSpec, records: engine.RecordFile, timeout_s: float) -> Loaded:
    if spec.tree is None:
        return Loaded(Result.FAILED, f": {spec.config} has no checked config tree")
    client = TgtdSocket(spec.control_port, timeout_s)
    report = engine.load(client, spec.tree, records)
    if not report.ok:
        return Loaded(Result.FAILED, f": {report.error}", busy=report.busy)
    shown = report.summary()
    changes = [*report.live, *report.next_login]
    listed = f" ({'; '.join(changes[:6])}{' ...' if len(changes) > 6 else ''})" if changes else ""
    if report.waiting:
        listed += f"; waiting: {'; '.join(report.waiting[:6])}"
    if report.missing:
        return Loaded(Result.PARTIAL, f", but: {shown}{listed}", busy=report.busy, incomplete=True)
    return Loaded(Result.OK, f"; {shown}{listed}", busy=report.busy)


def _tgt_admin(control: TgtControl, snapshot: Path, *, update: bool) -> Loaded:
    loaded = control.update(snapshot) if update else control.execute(snapshot)
    report = loaded.report
    if report.problems:
        problems = "; ".join(p.message for p in report.problems)
        return Loaded(
            Result.PARTIAL,
            f", but: {problems}",
            loaded.command.output,
            report.busy_names,
            incomplete=True,
        )
    return Loaded(Result.OK, "", busy=report.busy_names)


def load_targets(
    spec: InstanceSpec,
    kind: EngineKind,
    *,
    control: TgtControl,
    state_dir: Path,
    snapshot: Callable[[], Path],
    update: bool,
    timeout_s: float,
    records: engine.RecordFile | None = None,
) -> Loaded:
    """Load `spec`'s targets into the tgtd on its control port (running, any state).

    `snapshot` gives the canonical rendering tgt-admin reads (written by the caller only
    when the engine is tgt-admin: rendering 200 targets costs ~2 ms of a reload); `update`
    asks tgt-admin for `--update ALL` rather than `-e`; `records` is the native engine's
    record of this tgtd (a long-lived caller keeps one: it holds the last record read).
    TgtCommandError and IpcError of a tgtd that cannot be asked propagate, as the
    callers' other tool calls do.
    """
    if kind is EngineKind.NATIVE:
        if records is None:
            records = record_file(state_dir, spec.control_port)
        return _native(spec, records, timeout_s)
    return _tgt_admin(control, snapshot(), update=update)
