"""`tgtwatch wait`: the daemon's publication (status.json) and the judgement made of it.

The daemon runs on the loop's fakes (test_daemon_loop.Rig: a FakeBackend, a FakeClock that
only the FakeWaiter moves); each check judges the real status.json it wrote, against a real
scan of the real instance files, exactly as `wait` does. `wait_until_decided` runs on a fake
clock and fake wake-ups: nothing here sleeps.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import SHA_A, SHA_B, spec
from fakes import FakeClock
from test_daemon_loop import Rig

from tgtwatch.cli import main as cli
from tgtwatch.cli import wait as wait_cmd
from tgtwatch.cli.exits import EXIT_OK, EXIT_PROBLEMS, EXIT_TIMEOUT, EXIT_USAGE
from tgtwatch.config import inventory
from tgtwatch.config.settings import Settings
from tgtwatch.config.trust import TrustPolicy
from tgtwatch.daemon import publish
from tgtwatch.daemon.debounce import Trigger, TriggerKind
from tgtwatch.daemon.gate import PUBLISH_DEFER_S
from tgtwatch.daemon.lock import StateLock
from tgtwatch.daemon.outcomes import CycleReport
from tgtwatch.model.published import Published, PublishedInstance
from tgtwatch.model.readiness import Daemon, Readiness, Verdict, judge
from tgtwatch.model.status import InstanceStatus
from tgtwatch.model.structs import (
    Applied,
    Desired,
    InstanceState,
    Observed,
    Plan,
    Problem,
    Reload,
    Rule,
    Start,
    TargetSpec,
)

T1 = "iqn.2026-01.com.example:t1"
T2 = "iqn.2026-01.com.example:t2"
ME = Daemon(os.getpid(), "run")
FILE = Trigger(TriggerKind.FILE)


@pytest.fixture
def make(settings: Settings) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def build(**kw: Any) -> Rig:
        rig = Rig(settings, **kw)
        rigs.append(rig)
        return rig

    yield build
    for rig in rigs:
        rig.close()


def judged(rig: Rig, name: str = "alpha") -> Verdict:
    """`wait`'s verdict now: the files as they are, the status.json the daemon wrote."""
    settings = rig.host.settings
    desired = inventory.scan(settings, rig.rec.applied, TrustPolicy(owner_uid=os.getuid()))
    config = wait_cmd.config_of(settings, name)
    return judge(name, config, desired, publish.read(settings.state_dir), ME)


def run_judging(rig: Rig, *steps: tuple[float, Callable[[], object] | None]) -> list[Verdict]:
    """Run the daemon; after each step's delay, do its action, then judge (in loop time)."""
    verdicts: list[Verdict] = []
    for after, action in steps:

        def step(action: Callable[[], object] | None = action) -> None:
            if action is not None:
                action()
            verdicts.append(judged(rig))

        rig.then(after, step)
    rig.stop(0.5)
    assert rig.run() == 0
    return verdicts


# --- the daemon publishes; wait judges ------------------------------------------------------


def test_ready_once_the_daemon_runs_the_files_content(make: Callable[..., Rig]) -> None:
    rig = make()
    rig.host.write("alpha", 3261, {T1: "/srv/a.img", T2: "/srv/b.img"})
    (verdict,) = run_judging(rig, (0.1, None))
    assert verdict.readiness is Readiness.READY, verdict
    assert verdict.reason.startswith("port 3261, pid ") and verdict.reason.endswith("2 targets")
    body = json.loads(publish.status_path(rig.host.settings.state_dir).read_text())
    assert body["pid"] == os.getpid()
    (alpha,) = body["instances"]
    assert alpha["state"] == "running" and alpha["busy"] is False
    assert alpha["seen_sha256"] == alpha["applied_sha256"] == alpha["attempt_sha256"] != ""
    assert sorted(alpha["applied_targets"]) == [T1, T2]


def test_a_new_content_waits_until_the_daemon_has_read_and_applied_it(
    make: Callable[..., Rig],
) -> None:
    rig = make(sync_lanes=False)
    rig.host.write("alpha", 3261, {T1: "/srv/a.img"})
    gate = rig.backend.gate("reload", 3261)
    verdicts = run_judging(
        rig,
        # The start has ended (its lane, on a real thread); the new content is not read yet.
        # (Past PUBLISH_DEFER_S: the first cycle's publication waits while its start runs.)
        (
            PUBLISH_DEFER_S + 0.1,
            lambda: (rig.settle(), rig.host.write("alpha", 3261, {T1: "/srv/b.img"})),
        ),
        (0.0, lambda: rig.waiter.triggers.put(FILE)),  # read, reloading
        (1.0, gate.wait_entered),
        (0.0, lambda: (gate.open(), rig.settle())),  # the lane ended; the loop not told yet
        (0.0, None),
    )
    assert [v.readiness for v in verdicts] == [Readiness.WAITING] * 4 + [Readiness.READY]
    assert "has not read" in verdicts[0].reason
    assert "an action is under way" in verdicts[2].reason


def test_a_failed_start_of_the_current_content_is_decided(make: Callable[..., Rig]) -> None:
    rig = make()
    rig.host.write("alpha", 3261, {T1: "/srv/a.img"})
    rig.backend.fail("start", 3261, "tgtd: cannot bind 0.0.0.0:3261", times=100)
    (verdict,) = run_judging(rig, (0.1, None))
    assert verdict == Verdict(
        "alpha", Readiness.FAILED, "port 3261: start failed: tgtd: cannot bind 0.0.0.0:3261"
    )


def test_an_old_contents_failure_under_backoff_is_not_the_new_ones(
    make: Callable[..., Rig],
) -> None:
    rig = make()
    rig.host.write("alpha", 3261, {T1: "/srv/a.img"})
    rig.backend.fail("start", 3261, "no such file /srv/a.img", times=2)  # at once, then +1 s
    fixed = {T1: "/srv/b.img"}
    verdicts = run_judging(
        rig,
        (0.1, None),
        (0.1, lambda: rig.host.write("alpha", 3261, fixed)),
        (0.0, lambda: rig.waiter.triggers.put(FILE)),
        (0.4, None),  # read after the debounce; its start waits for the backoff
        (2.0, None),  # the backoff's retry has run: with the fixed content
    )
    first, written, _, read, retried = verdicts
    assert first.readiness is Readiness.FAILED and "no such file /srv/a.img" in first.reason
    assert written.readiness is Readiness.WAITING and "has not read" in written.reason
    assert read.readiness is Readiness.WAITING and "retrying in" in read.reason
    assert retried.readiness is Readiness.READY, retried


def test_pending_targets_are_decided_with_their_names(make: Callable[..., Rig]) -> None:
    rig = make()
    rig.host.write("alpha", 3261, {T1: "/srv/a.img"})

    def change_in_use() -> None:
        rig.backend.connect(3261, T1)
        rig.host.write("alpha", 3261, {T1: "/srv/b.img"})
        rig.waiter.triggers.put(FILE)

    verdicts = run_judging(rig, (0.1, change_in_use), (1.0, None))
    assert verdicts[-1] == Verdict(
        "alpha",
        Readiness.FAILED,
        f"port 3261: pending: in use, applied once their sessions end: {T1}",
    )


def test_a_refused_file_is_decided_once_the_daemon_refused_it(make: Callable[..., Rig]) -> None:
    rig = make()
    path = rig.host.settings.instances_dir / "alpha.conf"

    def bad() -> None:
        path.write_text('SOCKET_OPTS="3261"\nPORTAL_OPTS="0.0.0.0:3262"\n')
        os.chmod(path, 0o644)

    verdicts = run_judging(
        rig,
        (0.1, bad),
        (0.0, lambda: rig.waiter.triggers.put(FILE)),
        (1.0, None),
    )
    assert (
        verdicts[0].readiness is Readiness.WAITING and "has not read it yet" in verdicts[0].reason
    )
    assert verdicts[-1].readiness is Readiness.FAILED
    assert verdicts[-1].reason.startswith(f"refused: {path}: ")
    assert verdicts[-1].reason.endswith("[rule: port]")


# --- judge() on its own ---------------------------------------------------------------------


def published_for(**changes: Any) -> Published:
    fields: dict[str, Any] = {
        "name": "alpha",
        "port": 3261,
        "config": "/etc/mytgt/conf.d/alpha.conf",
        "state": "running",
        "pid": 4000,
        "seen_sha256": SHA_A,
        "applied_sha256": SHA_A,
        "applied_targets": (T1,),
        "attempt_sha256": SHA_A,
    }
    fields.update(changes)
    return Published(ME.pid or 0, 1.0, (PublishedInstance(**fields),))


ALPHA = spec("alpha", 3261, targets=(TargetSpec(T1, 1),))
WANTED = Desired({3261: ALPHA})


def judge_alpha(published: Published | None, daemon: Daemon | None = ME) -> Verdict:
    return judge("alpha", ALPHA.config, WANTED, published, daemon)


@pytest.mark.parametrize(
    ("published", "daemon", "readiness", "words"),
    [
        (published_for(), ME, Readiness.READY, "port 3261, pid 4000, 1 target"),
        (published_for(), None, Readiness.FAILED, "no tgtwatch daemon runs"),
        (published_for(), Daemon(1, "apply"), Readiness.WAITING, "tgtwatch apply holds"),
        (published_for(), Daemon(1, "run"), Readiness.WAITING, "(pid 1) has not published"),
        (None, ME, Readiness.WAITING, "has not published yet"),
        (published_for(seen_sha256=SHA_B), ME, Readiness.WAITING, "has not read"),
        (published_for(config="/elsewhere.conf"), ME, Readiness.WAITING, "has not read"),
        (published_for(busy=True), ME, Readiness.WAITING, "an action is under way"),
        (published_for(applied_sha256=SHA_B), ME, Readiness.WAITING, "not applied yet"),
        (published_for(pid=None, state="stopped"), ME, Readiness.WAITING, "stopped"),
        (published_for(state="starting"), ME, Readiness.WAITING, "starting"),
        (published_for(applied_targets=()), ME, Readiness.WAITING, "running"),
        (
            published_for(failure="start failed: x", attempt_sha256=SHA_A, state="failed"),
            ME,
            Readiness.FAILED,
            "port 3261: start failed: x",
        ),
        (
            published_for(
                failure="start failed: x",
                attempt_sha256=SHA_B,
                applied_sha256="",
                deferred="retry 2 s",
            ),
            ME,
            Readiness.WAITING,
            "retry 2 s",
        ),
        (
            published_for(pending=(T1,), state="pending"),
            ME,
            Readiness.FAILED,
            f"pending: in use, applied once their sessions end: {T1}",
        ),
    ],
)
def test_judge(
    published: Published | None, daemon: Daemon | None, readiness: Readiness, words: str
) -> None:
    verdict = judge_alpha(published, daemon)
    assert verdict.readiness is readiness, verdict
    assert words in verdict.reason


def test_judge_a_missing_file_and_a_refused_directory() -> None:
    missing = judge("beta", Path("/etc/mytgt/conf.d/beta.conf"), WANTED, published_for(), ME)
    assert missing == Verdict(
        "beta", Readiness.FAILED, "/etc/mytgt/conf.d/beta.conf: no such instance file"
    )
    directory = Problem(Path("/etc/mytgt/conf.d"), Rule.DIRECTORY, "world-writable")
    refused = Desired(problems=(directory,))
    both = Published(ME.pid or 0, 1.0, (), (directory,))
    assert judge("alpha", ALPHA.config, refused, both, ME).readiness is Readiness.FAILED
    assert judge("alpha", ALPHA.config, refused, published_for(), ME).readiness is (
        Readiness.WAITING
    )


def test_publication_round_trips_through_json() -> None:
    problem = Problem(Path("/x.conf"), Rule.SYNTAX, "bad", 3)
    published = Published(
        12,
        3.5,
        (PublishedInstance("a", 1, "/a.conf", "running", None, pending=("t",)),),
        (problem,),
    )
    assert Published.from_json(json.loads(json.dumps(published.to_json()))) == published
    with pytest.raises(ValueError):
        Published.from_json({"version": 99})


def test_snapshot_records_what_each_port_was_last_given() -> None:
    beta = spec("beta", 3262, SHA_A)
    gamma = spec("gamma", 3263, SHA_A)
    report = CycleReport(
        Desired({3261: ALPHA, 3262: beta, 3263: gamma}),
        Observed(),
        Plan((Start(ALPHA), Reload(beta), Start(gamma))),
        deferred={3263: "retrying in 4.0 s: start failed: boom"},
    )
    statuses = [
        InstanceStatus(s.name, s.port, str(s.config), InstanceState.STARTING, None, (), 0)
        for s in (ALPHA, beta, gamma)
    ]
    published = publish.snapshot(
        report,
        statuses,
        Applied(),
        frozenset({3261}),
        {3263: "start failed: boom"},
        {3263: SHA_B},  # begun in an earlier cycle
        pid=7,
        now=9.0,
    )
    by_port = {i.port: i for i in published.instances}
    assert by_port[3261].attempt_sha256 == ALPHA.sha256 and by_port[3261].busy
    assert by_port[3262].attempt_sha256 == beta.sha256 and not by_port[3262].busy
    assert by_port[3263].attempt_sha256 == SHA_B  # held back: still the earlier one
    assert by_port[3263].deferred.startswith("retrying in")
    assert by_port[3263].failure == "start failed: boom"


class IdleReconciler:
    """What a publication reads of the reconciler: nothing applied, no lane, no failure."""

    applied = Applied()

    class executor:
        @staticmethod
        def busy() -> frozenset[int]:
            return frozenset()

    @staticmethod
    def failures() -> dict[int, str]:
        return {}


def test_a_publication_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.write_text("not a directory")
    log = io.StringIO()

    publish.write(state_dir, CycleReport(Desired(), Observed(), Plan()), [], IdleReconciler(), log)
    line = f"tgtwatch: {state_dir}/status.json: cannot publish the status: "
    assert log.getvalue().startswith(line) and log.getvalue().count("\n") == 1
    assert publish.read(state_dir) is None


# --- the waiting itself ---------------------------------------------------------------------


class FakeWakeups:
    """Each wait lets `clock` pass (an event after `event_after`, else the whole timeout)."""

    def __init__(self, clock: FakeClock, event_after: float | None = None) -> None:
        self.clock = clock
        self.event_after = event_after
        self.timeouts: list[float] = []
        self.closed = False

    def wait(self, timeout: float) -> None:
        self.timeouts.append(timeout)
        after = self.event_after
        self.clock.advance(timeout if after is None else min(after, timeout))

    def close(self) -> None:
        self.closed = True


def scripted(*readiness: Readiness) -> Callable[[], list[Verdict]]:
    """A looker that answers with the next readiness each time (the last one forever)."""
    answers = list(readiness)

    def look() -> list[Verdict]:
        now = answers.pop(0) if len(answers) > 1 else answers[0]
        return [Verdict("alpha", now, now.value), Verdict("beta", Readiness.READY, "ok")]

    return look


def test_decided_at_the_first_look_makes_no_watch() -> None:
    made: list[FakeWakeups] = []

    def wakeups() -> FakeWakeups:
        made.append(FakeWakeups(FakeClock()))
        return made[-1]

    code, _ = wait_cmd.wait_until_decided(scripted(Readiness.READY), wakeups, 10)
    assert code == EXIT_OK and made == []


def test_waits_on_events_until_ready_then_closes_the_watch() -> None:
    clock = FakeClock()
    woken = FakeWakeups(clock, event_after=0.05)
    look = scripted(Readiness.WAITING, Readiness.WAITING, Readiness.WAITING, Readiness.READY)
    code, verdicts = wait_cmd.wait_until_decided(look, lambda: woken, 10, clock)
    assert code == EXIT_OK and {v.readiness for v in verdicts} == {Readiness.READY}
    # The first look after the watch starts needs no event; two events follow.
    assert woken.timeouts == [wait_cmd.LIVENESS_S] * 2 and woken.closed


def test_one_failure_decides_at_once() -> None:
    clock = FakeClock()
    woken = FakeWakeups(clock, event_after=0.05)
    look = scripted(Readiness.WAITING, Readiness.WAITING, Readiness.FAILED)
    code, _ = wait_cmd.wait_until_decided(look, lambda: woken, 10, clock)
    assert code == EXIT_PROBLEMS and woken.closed


def test_times_out_at_the_deadline_looking_at_least_every_second() -> None:
    clock = FakeClock()
    woken = FakeWakeups(clock)
    code, _ = wait_cmd.wait_until_decided(scripted(Readiness.WAITING), lambda: woken, 2.5, clock)
    assert code == EXIT_TIMEOUT and woken.closed
    assert woken.timeouts == [1.0, 1.0, 0.5]


def test_the_command_prints_a_line_per_instance_not_ready(settings: Settings) -> None:
    out = io.StringIO()
    lock = StateLock(settings.state_dir)
    lock.acquire("run")
    with lock:
        code = wait_cmd.wait(
            settings,
            ["alpha", "default"],
            0,
            out,
            wakeups=lambda: FakeWakeups(FakeClock()),
        )
    assert code == EXIT_TIMEOUT
    assert out.getvalue().splitlines() == [
        f"alpha: waiting: tgtwatch (pid {os.getpid()}) has not published yet",
        f"default: waiting: tgtwatch (pid {os.getpid()}) has not published yet",
        "tgtwatch: timed out after 0 s",
    ]


def test_the_command_line(settings: Settings, tmp_path: Path) -> None:
    config = tmp_path / "tgtwatch.yaml"
    config.write_text(f"state_dir: {settings.state_dir}\ninstances_dir: {settings.instances_dir}\n")
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["-c", str(config), "wait", "alpha", "--timeout", "5"], out, err) == 1
    assert out.getvalue() == "alpha: failed: no tgtwatch daemon runs (start tgtwatch.service)\n"
    assert not settings.state_dir.exists()  # looking created nothing
    for argv in (["wait"], ["wait", "a/b"], ["wait", "a", "--timeout", "-1"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(["-c", str(config), *argv], out, err)
        assert exited.value.code == EXIT_USAGE


def test_a_publication_is_written_again_only_when_something_in_it_changed(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    log = io.StringIO()

    publisher = publish.Publisher(state_dir, log)
    desired = Desired()
    statuses: list[InstanceStatus] = []
    publisher.write(CycleReport(desired, Observed(), Plan()), statuses, IdleReconciler())
    path = publish.status_path(state_dir)
    first = path.stat().st_ino
    # Another cycle that changed nothing (the same inputs, a new report): not rewritten.
    publisher.write(CycleReport(desired, Observed(), Plan()), statuses, IdleReconciler())
    assert path.stat().st_ino == first
    # A problem appeared: the publication says so.
    problem = Problem(tmp_path / "x.conf", Rule.GRAMMAR, "bad")
    broken = CycleReport(Desired(problems=(problem,)), Observed(), Plan())
    publisher.write(broken, [], IdleReconciler())
    assert path.stat().st_ino != first
    published = publish.read(state_dir)
    assert published is not None and published.problems == (problem,)
    assert log.getvalue() == ""
