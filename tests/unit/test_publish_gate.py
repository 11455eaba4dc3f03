"""The loop's work while starts it submitted run: publication held back (bounded), no re-arm."""

from __future__ import annotations

from test_daemon_loop import T1, Rig

from tgtwatch.config.settings import Settings
from tgtwatch.daemon import publish
from tgtwatch.daemon.debounce import Trigger, TriggerKind
from tgtwatch.daemon.gate import PUBLISH_DEFER_S, PublishGate


def test_the_gate_is_open_when_no_start_it_was_told_of_runs() -> None:
    gate = PublishGate(0.25)
    assert gate.open(frozenset({3261}), 0.0)  # a drain or a check runs: no hold
    gate.started([3261])
    assert not gate.open(frozenset({3261}), 1.0)
    assert gate.due == 1.25
    assert not gate.open(frozenset({3261}), 1.2)  # still within the bound: still held
    assert gate.due == 1.25  # the bound counts from the oldest change held back
    assert gate.open(frozenset(), 1.21)  # its lane ended: at once
    assert gate.due is None


def test_the_gate_opens_at_the_bound_while_starts_still_run() -> None:
    gate = PublishGate(0.25)
    gate.started([3261, 3262])
    assert not gate.open(frozenset({3261, 3262}), 0.0)
    assert gate.open(frozenset({3261, 3262}), 0.25)
    # The next change is held again, for at most the bound from then.
    assert not gate.open(frozenset({3262}), 0.3)
    assert gate.due == 0.55
    assert gate.open(frozenset({3262, 9999}), 0.55)
    gate.started([])
    assert gate.open(frozenset({9999}), 0.6)  # 3262 ended, 9999 was never its start


def test_a_start_under_way_holds_the_cycles_publication_until_the_bound(
    settings: Settings,
) -> None:
    rig = Rig(settings, sync_lanes=False)
    try:
        rig.host.write("alpha", 3261)
        gate = rig.backend.gate("start", 3261)
        statuses: list[list[str]] = []
        rig.waiter.before_wait = lambda: statuses.append(rig.messages("STATUS="))
        held: list[publish.Published | None] = []

        def release() -> None:
            held.append(publish.read(settings.state_dir))
            gate.open()
            assert rig.host.executor.wait(5.0)

        rig.then(1.0, release)
        rig.stop()
        assert rig.run() == 0
        # The first cycle submitted the start and published nothing; the loop woke at
        # the bound and published while the start still ran; its end published again.
        assert rig.waiter.timeouts[0] == PUBLISH_DEFER_S
        assert statuses[0] == []
        assert statuses[1] == ["STATUS=1 stopped"]
        assert held[0] is not None and [i.busy for i in held[0].instances] == [True]
        assert rig.messages("STATUS=")[-1] == "STATUS=1 running"
        after = publish.read(settings.state_dir)
        assert after is not None and [i.state for i in after.instances] == ["running"]
    finally:
        rig.close()


def test_a_drain_that_waits_for_its_sessions_shows_at_once(settings: Settings) -> None:
    seed = Rig(settings)
    seed.host.write("alpha", 3261, {T1: "/srv/t1.img"})
    seed.host.cycle()
    running = seed.backend.running
    seed.close()
    rig = Rig(settings, sync_lanes=False, delete_grace_ms=0)
    try:
        rig.backend.running = running
        rig.backend.connect(3261, T1)  # the drain waits for it without limit
        statuses: list[list[str]] = []
        rig.waiter.before_wait = lambda: statuses.append(rig.messages("STATUS="))
        rig.host.remove("alpha")
        rig.stop(60.0)
        assert rig.run() == 0
        assert statuses[0] == ["STATUS=1 draining"]  # the cycle's own, not held back
        assert rig.backend.ops()[-1] == "drain_stop"
    finally:
        rig.close()


def test_a_new_file_whose_directories_are_watched_already_rearms_nothing(
    settings: Settings,
) -> None:
    rig = Rig(settings, stop_at=10.0)
    try:
        rig.host.write("alpha", 3261)

        def add_beta() -> None:
            path = rig.host.write("beta", 3262)
            rig.watcher.push(Trigger(TriggerKind.FILE, path))

        rig.then(1.0, add_beta)
        assert rig.run() == 0
        assert rig.changed[-1] is not None and len(rig.rec.applied.entries) == 2
        # start() and the first cycle (a whole scan re-arms); the new file's cycle: nothing.
        assert len(rig.watcher.path_history) == 2
    finally:
        rig.close()


def test_a_new_file_that_includes_from_a_new_directory_has_it_watched(
    settings: Settings,
) -> None:
    rig = Rig(settings, stop_at=10.0)
    try:
        rig.host.write("alpha", 3261)
        luns = settings.instances_dir / "beta.d"

        def add_beta() -> None:
            path = rig.host.write("beta", 3262)
            (luns / "more").mkdir(parents=True)
            (luns / "a.inc").write_text(f"<target {T1}b>\n</target>\n")
            (luns / "more" / "b.inc").write_text(f"<target {T1}c>\n</target>\n")
            with path.open("a") as text:
                text.write("include beta.d/*.inc\ninclude beta.d/more/b.inc\n")
            rig.watcher.push(Trigger(TriggerKind.FILE, path))

        rig.then(1.0, add_beta)
        assert rig.run() == 0
        assert len(rig.rec.applied.entries) == 2
        assert rig.watcher.paths == tuple(
            sorted({settings.instances_dir, settings.tgt_dir, luns, luns / "more"})
        )
    finally:
        rig.close()


def test_while_a_start_runs_the_loop_makes_no_pass_over_the_ports(settings: Settings) -> None:
    """The pidfds, reaping and counts wait with the publication: at 500 ports they were
    ~1 ms of the loop's thread beside the start; the bound or the lane's end brings them."""
    rig = Rig(settings, sync_lanes=False)
    try:
        rig.host.write("alpha", 3261)
        gate = rig.backend.gate("start", 3261)
        reaps: list[float] = []
        rig.daemon.reap = lambda: reaps.append(rig.clock())
        seen: list[tuple[int, int]] = []
        rig.waiter.before_wait = lambda: seen.append((len(rig.waiter.watched), len(reaps)))

        def release() -> None:
            gate.open()
            assert rig.host.executor.wait(5.0)

        rig.then(1.0, release)
        rig.stop(0.5)
        assert rig.run() == 0
        # After the first cycle: nothing; at the bound: the pidfds (none runs yet) and a
        # reap; the lane's end: alpha's tgtd watched.
        assert seen[0] == (0, 0)
        assert seen[1] == (1, 1)
        assert rig.waiter.watched[-1] == [rig.backend.running[3261].pid]
    finally:
        rig.close()
