"""Prometheus text-format metrics for node_exporter's textfile collector, written atomically."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from tgtwatch.model.status import InstanceStatus
from tgtwatch.model.structs import InstanceState


@dataclass(frozen=True)
class MetricsSnapshot:
    statuses: tuple[InstanceStatus, ...]
    actions: Mapping[tuple[str, str], int]  # (action, result) -> count since the daemon started
    problems: int
    last_cycle_seconds: float
    last_cycle_timestamp: float
    state_save_failing: bool = False
    held: int = 0  # instances kept as they run because their file cannot be seen


def render_registry(snapshot: MetricsSnapshot) -> CollectorRegistry:
    """A fresh registry holding the snapshot (a new one each time: no global state)."""
    registry = CollectorRegistry()
    by_state = Gauge("tgtwatch_instances", "Instances by state.", ["state"], registry=registry)
    counts = Counter(s.state for s in snapshot.statuses if s.managed)
    for state in InstanceState:
        by_state.labels(state.value).set(counts[state])
    foreign = Gauge(
        "tgtwatch_foreign_tgtd", "Running tgtd processes no file asks for.", registry=registry
    )
    foreign.set(sum(1 for s in snapshot.statuses if not s.managed))
    # Counters in the exposition format would need _total samples that only grow; a gauge
    # of the daemon's own running count is honest about resets when it restarts.
    actions = Gauge(
        "tgtwatch_actions",
        "Actions since the daemon started, by kind and result.",
        ["action", "result"],
        registry=registry,
    )
    for (action, result), count in sorted(snapshot.actions.items()):
        actions.labels(action, result).set(count)
    Gauge("tgtwatch_problems", "Files refused.", registry=registry).set(snapshot.problems)
    Gauge(
        "tgtwatch_held_instances",
        "Instances kept running as they are because their file is refused or cannot be seen "
        "(e.g. instances_dir missing).",
        registry=registry,
    ).set(snapshot.held)
    pending = Gauge(
        "tgtwatch_pending_targets",
        "Targets waiting for their sessions to end before a reload applies.",
        registry=registry,
    )
    pending.set(sum(len(s.pending) for s in snapshot.statuses))
    Gauge(
        "tgtwatch_state_save_failing",
        "1 while the last write of the applied-state file failed (a restart would not know "
        "what was applied), else 0.",
        registry=registry,
    ).set(int(snapshot.state_save_failing))
    Gauge(
        "tgtwatch_last_cycle_duration_seconds",
        "How long the last cycle took to plan.",
        registry=registry,
    ).set(snapshot.last_cycle_seconds)
    Gauge(
        "tgtwatch_last_cycle_timestamp_seconds",
        "When the last cycle ran (Unix time).",
        registry=registry,
    ).set(snapshot.last_cycle_timestamp)
    return registry


def write(path: Path, snapshot: MetricsSnapshot) -> None:
    """Write atomically (prometheus_client writes a temp file and renames it)."""
    write_to_textfile(str(path), render_registry(snapshot))
