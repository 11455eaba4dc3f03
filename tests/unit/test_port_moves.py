"""A file moved to another port where one name runs one tgtd (systemd units): the start
waits for the old port's drain without holding a lane (FakeBackend with units)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import THREAD_TIMEOUT_S, Host

from tgtwatch.config.settings import Settings
from tgtwatch.daemon.lanes import DEFAULT_LANES

T = "iqn.2026-01.com.example:t"


@pytest.fixture
def host(settings: Settings) -> Iterator[Host]:
    h = Host(settings, drain_timeout_s=1.0)
    h.backend.units = True
    yield h
    h.close()


def test_eight_port_moves_draining_for_hours_leave_every_start_lane_free(host: Host) -> None:
    """Each move drains its old port while an initiator stays (hours, maybe). The start on
    the new port used to wait inside a shared start lane: DEFAULT_LANES such moves stalled
    every start on the host. Now the start waits in the plan and takes no lane."""
    old = {f"m{i}": 3301 + i for i in range(DEFAULT_LANES)}
    for name, port in old.items():
        host.write(name, port, {T: f"/srv/{name}.img"})
    host.cycle()
    for name, port in old.items():
        host.backend.connect(port, T)
        host.write(name, port + 100, {T: f"/srv/{name}.img"})  # the file moves to a new port
    report = host.cycle(wait=False)
    assert {a.kind.value for a in report.plan.actions} == {"drain_stop"}
    assert report.deferred == {
        port + 100: f"waits for port {port} to drain (the same instance runs there)"
        for port in old.values()
    }
    assert report.wake_on == frozenset(old.values())
    host.write("fresh", 3500, {T: "/srv/fresh.img"})
    host.cycle(wait=False)
    host.wait_lane(3500)  # not queued behind eight waiting starts
    assert 3500 in host.backend.running
    assert host.executor.busy() == frozenset(old.values())  # only the drains
    for port in old.values():
        host.backend.disconnect(port)
    assert host.executor.wait(THREAD_TIMEOUT_S)
    report = host.cycle()  # the drains' ends bring the starts
    assert sorted(a.port for a in report.plan.actions) == [p + 100 for p in old.values()]
    assert set(host.backend.running) == {3500, *(p + 100 for p in old.values())}
