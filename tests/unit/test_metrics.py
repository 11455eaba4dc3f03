"""Metrics: what render_registry/write produce parses as Prometheus text, with the values."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tgtwatch.model.status import InstanceStatus
from tgtwatch.model.structs import InstanceState
from tgtwatch.telemetry import metrics


def status(
    state: InstanceState, port: int, managed: bool = True, pending: tuple[str, ...] = ()
) -> InstanceStatus:
    return InstanceStatus(
        f"i{port}", port, f"/c/{port}.conf", state, None, (), 0, managed, pending=pending
    )


SNAPSHOT = metrics.MetricsSnapshot(
    statuses=(
        status(InstanceState.RUNNING, 3261),
        status(InstanceState.RUNNING, 3262),
        status(InstanceState.PENDING, 3263, pending=("iqn.a", "iqn.b")),
        status(InstanceState.DRAINING, 3264),
        status(InstanceState.FAILED, 3265),
        status(InstanceState.RUNNING, 3299, managed=False),
    ),
    actions={("start", "ok"): 4, ("start", "failed"): 2, ("reload", "partial"): 1},
    problems=3,
    last_cycle_seconds=0.125,
    last_cycle_timestamp=1_700_000_000.5,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name
        assert family.type == "gauge", family.name
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_rendered_metrics_parse_and_hold_the_snapshot() -> None:
    got = samples(generate_latest(metrics.render_registry(SNAPSHOT)).decode())
    by_state = {
        labels[0][1]: value for (name, labels), value in got.items() if name == "tgtwatch_instances"
    }
    assert by_state == {
        "running": 2,
        "starting": 0,
        "draining": 1,
        "stopped": 0,
        "failed": 1,
        "pending": 1,
    }
    assert got[("tgtwatch_foreign_tgtd", ())] == 1
    assert got[("tgtwatch_problems", ())] == 3
    assert got[("tgtwatch_pending_targets", ())] == 2
    assert got[("tgtwatch_last_cycle_duration_seconds", ())] == 0.125
    assert got[("tgtwatch_last_cycle_timestamp_seconds", ())] == 1_700_000_000.5
    actions = {
        dict(labels)["action"] + "/" + dict(labels)["result"]: value
        for (name, labels), value in got.items()
        if name == "tgtwatch_actions"
    }
    assert actions == {"start/ok": 4, "start/failed": 2, "reload/partial": 1}


def test_an_empty_snapshot_still_names_every_state() -> None:
    empty = metrics.MetricsSnapshot((), {}, 0, 0.0, 0.0)
    got = samples(generate_latest(metrics.render_registry(empty)).decode())
    assert sum(1 for name, _ in got if name == "tgtwatch_instances") == len(InstanceState)
    assert not any(name == "tgtwatch_actions" for name, _ in got)
    assert got[("tgtwatch_foreign_tgtd", ())] == 0


def test_each_render_is_a_fresh_registry() -> None:
    first = generate_latest(metrics.render_registry(SNAPSHOT))
    assert generate_latest(metrics.render_registry(SNAPSHOT)) == first


def test_write_leaves_a_parsable_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "tgtwatch.prom"
    metrics.write(path, SNAPSHOT)
    metrics.write(path, SNAPSHOT)  # replaces, atomically
    got = samples(path.read_text())
    assert got[("tgtwatch_problems", ())] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["tgtwatch.prom"]
