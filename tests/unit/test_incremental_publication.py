"""Statuses, status.json and the pids watched, made per changed port: always what the
whole pass makes.

Random sequences of adds, changes (to another value, or to an equal copy), and removals
of specs, applied entries, running tgtds, failures, wrong tgtds, refused files, busy
lanes, deferrals and planned starts; after each step the daemon's incremental answers
must equal instance_states() and the whole publication, byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from builders import entry, running, spec
from hypothesis import given, settings
from hypothesis import strategies as st

from tgtwatch.daemon.looks import managed_pids
from tgtwatch.daemon.outcomes import CycleReport
from tgtwatch.daemon.publish import PublicationEncoder, snapshot
from tgtwatch.daemon.statuses import Statuses
from tgtwatch.daemon.watched import WatchedPids
from tgtwatch.model.status import instance_states, state_counts
from tgtwatch.model.structs import (
    Action,
    Applied,
    AppliedEntry,
    Desired,
    InstanceKind,
    InstanceSpec,
    Observed,
    ObservedInstance,
    Plan,
    Problem,
    Reload,
    Rule,
    Start,
)

PORTS = st.sampled_from([3260, 3261, 3262, 3263])
NAMES = st.sampled_from(["a", "b"])
SHAS = st.sampled_from(["a" * 64, "b" * 64])
VERBS = st.sampled_from(
    [
        "spec",
        "unspec",
        "entry",
        "unentry",
        "run",
        "stop",
        "copy",
        "fail",
        "recover",
        "wrong",
        "right",
        "refuse",
        "accept",
        "busy",
        "idle",
        "defer",
        "undefer",
        "start",
        "reload",
        "noplan",
    ]
)
STEPS = st.tuples(VERBS, PORTS, NAMES, SHAS, st.booleans())


class World:
    """What the daemon's parts hold, changed one step at a time."""

    def __init__(self) -> None:
        self.specs: dict[int, InstanceSpec] = {}
        self.entries: dict[int, AppliedEntry] = {}
        self.running: dict[int, ObservedInstance] = {}
        self.failures: dict[int, str] = {}
        self.wrong: dict[int, str] = {}
        self.problems: tuple[Problem, ...] = ()
        self.busy: frozenset[int] = frozenset()
        self.deferred: dict[int, str] = {}
        self.actions: tuple[Action, ...] = ()

    def step(self, verb: str, port: int, name: str, sha: str, flag: bool) -> None:
        kind = InstanceKind.DEFAULT if flag and port == 3260 else InstanceKind.DROPIN
        if verb == "spec":
            self.specs[port] = spec(name, port, sha, kind=kind)
        elif verb == "entry":
            self.entries[port] = entry(name, port, sha, pending=("t1",) if flag else ())
        elif verb == "run":  # a pid per port (a tgtd serves one), or none (not up yet)
            up = running(port, sessions={"t1": 1} if flag else {}, starting=flag, pid=port)
            self.running[port] = dataclasses.replace(up, pid=None) if name == "b" else up
        elif verb == "copy":  # equal values, other objects (a rescan's answer)
            for table in (self.specs, self.entries, self.running):
                if port in table:
                    table[port] = dataclasses.replace(table[port])  # type: ignore[type-var]
        elif verb in ("unspec", "unentry", "stop"):
            table = {"unspec": self.specs, "unentry": self.entries, "stop": self.running}[verb]
            table.pop(port, None)
        elif verb in ("fail", "wrong", "defer"):
            table = {"fail": self.failures, "wrong": self.wrong, "defer": self.deferred}[verb]
            table[port] = f"{verb} {name}"
        elif verb in ("recover", "right", "undefer"):
            table = {"recover": self.failures, "right": self.wrong, "undefer": self.deferred}
            table[verb].pop(port, None)
        elif verb == "refuse":
            path = Path(f"/etc/mytgt/conf.d/{name}.conf")
            self.problems = (Problem(path if flag else path.parent, Rule.SYNTAX, "bad"),)
        elif verb == "accept":
            self.problems = ()
        elif verb == "busy":
            self.busy = self.busy | {port}
        elif verb == "idle":
            self.busy = self.busy - {port}
        elif verb in ("start", "reload") and port in self.specs:
            action = Start(self.specs[port]) if verb == "start" else Reload(self.specs[port])
            self.actions = (*self.actions, action)
        elif verb == "noplan":
            self.actions = ()


@settings(max_examples=300, deadline=None)
@given(st.lists(STEPS, min_size=1, max_size=40))
def test_incremental_statuses_and_publication_equal_the_whole_pass(
    steps: list[tuple[str, int, str, str, bool]],
) -> None:
    world = World()
    book, encoder, watched = Statuses(), PublicationEncoder(), WatchedPids()
    attempts: dict[int, str] = {3263: "c" * 64}  # read back from this pid's last file
    whole_attempts = dict(attempts)
    for n, step in enumerate(steps):
        world.step(*step)
        # New mappings per step, as each cycle and lane's end makes them.
        desired = Desired(dict(world.specs), world.problems)
        applied, observed = Applied(dict(world.entries)), Observed(dict(world.running))
        failures, wrong = dict(world.failures), dict(world.wrong)
        statuses = book(desired, applied, observed, failures, wrong)
        whole = instance_states(desired, applied, observed, failures, wrong)
        assert statuses == whole
        assert book.counts() == state_counts(whole)
        pids = watched(observed, desired, applied)
        assert pids == observed.ports_of(managed_pids(observed, desired, set(applied.entries)))

        report = CycleReport(desired, observed, Plan(world.actions), dict(world.deferred))
        args = (report, statuses, applied, world.busy, failures)
        body, attempts = encoder.encode(*args, attempts, pid=7, now=1000.0 + n / 3)
        published = snapshot(*args, whole_attempts, pid=7, now=1000.0 + n / 3)
        assert body == json.dumps(published.to_json(), separators=(",", ":")).encode()
        whole_attempts = {i.port: i.attempt_sha256 for i in published.instances}
        assert attempts == whole_attempts


def test_statuses_return_the_same_list_while_nothing_changed() -> None:
    book = Statuses()
    desired = Desired({3261: spec("a", 3261)})
    applied, observed = Applied({3261: entry("a", 3261)}), Observed({3261: running(3261)})
    first = book(desired, applied, observed, {})
    # New mappings of the same objects, and equal messages: the very same list.
    again = book(Desired(dict(desired.instances)), Applied(dict(applied.entries)), observed, {}, {})
    assert again is first
    changed = book(desired, applied, observed, {3261: "start failed: boom"})
    assert changed is not first and changed[0].message == "start failed: boom"


def test_the_pids_watched_are_the_same_dict_while_nothing_changed() -> None:
    watched = WatchedPids()
    desired = Desired({3261: spec("a", 3261)})
    applied, observed = Applied({3261: entry("a", 3261)}), Observed({3261: running(3261)})
    first = watched(observed, desired, applied)
    assert first == {1000: 3261}
    # Another tgtd object on the port with the same pid: the same answer, the same dict
    # (the loop hands the waiter a new set of pidfds only when the dict is another).
    again = watched(Observed({3261: running(3261, starting=True)}), desired, applied)
    assert again is first
    moved = watched(Observed({3261: running(3261, pid=2000)}), desired, applied)
    assert moved == {2000: 3261} and first == {1000: 3261}  # the old answer is not changed
