"""The delete grace through the Reconciler: delete-then-recreate never drains a live port."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from fakes import Host

from tgtwatch.config.settings import Settings
from tgtwatch.model.structs import ActionKind

T1 = "iqn.2026-01.com.example:t1"
STORES = {T1: "/srv/t1.img"}


@pytest.fixture
def host(settings: Settings) -> Iterator[Host]:
    h = Host(dataclasses.replace(settings, delete_grace_ms=1000))
    yield h
    h.close()


def test_a_delete_then_recreate_within_the_grace_never_drains(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.remove("alpha")
    report = host.cycle()  # the leading edge sees the file gone
    assert report.plan.actions == ()
    assert "its file is gone" in report.deferred[3261]
    assert host.rec.next_retry() == pytest.approx(host.clock() + 1.0)
    host.clock.advance(0.3)
    host.write("alpha", 3261, STORES)  # the same content back
    report = host.cycle()
    assert [a.kind for a in report.plan.actions] in ([], [ActionKind.CHECK])
    assert host.backend.ops() == ["start"]
    assert 3261 in host.backend.running
    assert host.rec.next_retry() is None  # nothing left to wake for
    host.clock.advance(5.0)
    host.cycle()
    assert host.backend.ops() == ["start"]


def test_a_delete_that_stays_drains_once_the_grace_is_over(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.remove("alpha")
    host.cycle()
    host.clock.advance(0.999)
    host.cycle()
    assert host.backend.ops() == ["start"]
    host.clock.advance(0.001)
    assert host.rec.next_retry() == host.clock()  # the loop wakes for it
    report = host.cycle()
    assert host.backend.ops() == ["start", "drain_stop"]
    # Its lane's end brings the daemon back (a failed drain is tried again then).
    assert 3261 in report.wake_on
    assert host.backend.running == {}
    assert host.rec.applied.entries == {}


def test_a_second_delete_gets_a_whole_grace_of_its_own(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.remove("alpha")
    host.cycle()
    host.clock.advance(0.8)
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.clock.advance(0.5)
    host.remove("alpha")
    host.cycle()  # 1.3 s after the first delete, but a new one
    assert host.backend.ops() == ["start"]


def test_a_rename_to_another_file_on_the_same_port_does_not_wait(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.remove("alpha")
    host.write("beta", 3261, STORES)
    host.cycle()
    assert host.backend.ops() == ["start", "drain_stop", "start"]


def test_a_port_change_does_not_wait(host: Host) -> None:
    host.write("alpha", 3261, STORES)
    host.cycle()
    host.write("alpha", 3262, STORES)
    host.cycle()
    assert sorted(host.backend.running) == [3262]
    assert "drain_stop" in host.backend.ops()


def test_apply_has_no_grace(settings: Settings) -> None:
    h = Host(dataclasses.replace(settings, delete_grace_ms=1000), keep_draining=False)
    try:
        h.write("alpha", 3261, STORES)
        h.cycle()
        h.remove("alpha")
        h.cycle()
        assert h.backend.ops() == ["start", "drain_stop"]
    finally:
        h.close()
