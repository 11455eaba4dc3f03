"""instance_states() and status_line(): every state of the contract from its combination."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pytest
from builders import SHA_A, SHA_B, default_spec, entry, entry_for, running, spec

from tgtwatch.model.status import InstanceStatus, instance_states, status_line
from tgtwatch.model.structs import (
    Applied,
    AppliedEntry,
    Desired,
    InstanceSpec,
    InstanceState,
    Observed,
    ObservedInstance,
    Problem,
    Rule,
)

CONF = Path("/etc/mytgt/conf.d")


def states(
    specs: Mapping[int, InstanceSpec] | None = None,
    entries: Mapping[int, AppliedEntry] | None = None,
    instances: Mapping[int, ObservedInstance] | None = None,
    failures: Mapping[int, str] | None = None,
    problems: tuple[Problem, ...] = (),
) -> dict[int, InstanceStatus]:
    result = instance_states(
        Desired(dict(specs or {}), problems),
        Applied(dict(entries or {})),
        Observed(dict(instances or {})),
        dict(failures or {}),
    )
    assert [s.port for s in result] == sorted(s.port for s in result)
    return {s.port: s for s in result}


def offline(port: int = 3261, **kw: object) -> ObservedInstance:
    return dataclasses.replace(running(port, **kw), system_state="offline")  # type: ignore[arg-type]


S = spec()


@pytest.mark.parametrize(
    ("specs", "entries", "instances", "failures", "expected"),
    [
        # running: wanted, applied, up
        ({3261: S}, {3261: entry_for(S)}, {3261: running()}, {}, InstanceState.RUNNING),
        # running on an older digest while the reload is planned: still running
        ({3261: S}, {3261: entry(sha256=SHA_B)}, {3261: running()}, {}, InstanceState.RUNNING),
        # starting: the unit is activating
        ({3261: S}, {}, {3261: running(starting=True)}, {}, InstanceState.STARTING),
        # starting: tgtd up, offline, its config not applied yet
        ({3261: S}, {}, {3261: offline()}, {}, InstanceState.STARTING),
        ({3261: S}, {3261: entry(sha256=SHA_B)}, {3261: offline()}, {}, InstanceState.STARTING),
        # draining: applied, up, no file wants it
        ({}, {3261: entry_for(S)}, {3261: offline(sessions={"t": 1})}, {}, InstanceState.DRAINING),
        ({}, {3261: entry_for(S)}, {3261: running()}, {}, InstanceState.DRAINING),
        # stopped: wanted, nothing runs, no failure
        ({3261: S}, {}, {}, {}, InstanceState.STOPPED),
        ({3261: S}, {3261: entry_for(S)}, {}, {}, InstanceState.STOPPED),
        # failed: wanted, nothing runs, its start keeps failing
        ({3261: S}, {}, {}, {3261: "start failed: boom"}, InstanceState.FAILED),
        # pending: up, some targets wait for their sessions to end
        (
            {3261: S},
            {3261: entry_for(S, pending=("t",))},
            {3261: running(sessions={"t": 1})},
            {},
            InstanceState.PENDING,
        ),
    ],
)
def test_each_state_from_its_combination(
    specs: Mapping[int, InstanceSpec],
    entries: Mapping[int, AppliedEntry],
    instances: Mapping[int, ObservedInstance],
    failures: Mapping[int, str],
    expected: InstanceState,
) -> None:
    got = states(specs, entries, instances, failures)[3261]
    assert got.state is expected
    assert got.managed


def test_every_contract_state_is_reachable() -> None:
    assert {s.value for s in InstanceState} == {
        "running",
        "starting",
        "draining",
        "stopped",
        "failed",
        "pending",
    }


def test_a_running_instance_reports_pid_targets_sessions() -> None:
    got = states(
        {3261: S}, {3261: entry_for(S)}, {3261: running(sessions={"a": 2, "b": 1}, pid=77)}
    )[3261]
    assert (got.name, got.port, got.config, got.pid) == ("alpha", 3261, str(S.config), 77)
    assert (got.targets, got.sessions, got.message, got.pending) == (("a", "b"), 3, "", ())
    assert got.to_json() == {
        "name": "alpha",
        "port": 3261,
        "config": str(S.config),
        "state": "running",
        "pid": 77,
        "targets": ["a", "b"],
        "sessions": 3,
        "managed": True,
        "message": "",
        "pending": [],
    }


def test_pending_names_its_targets() -> None:
    got = states(
        {3261: S}, {3261: entry_for(S, pending=("t1", "t2"))}, {3261: running(sessions={"t1": 1})}
    )[3261]
    assert got.pending == ("t1", "t2")
    assert got.message == "in use, waiting to apply: t1, t2"
    assert got.to_json()["pending"] == ["t1", "t2"]


def test_a_failed_start_says_why() -> None:
    got = states({3261: S}, {}, {}, {3261: "start failed: port in use"})[3261]
    assert (got.pid, got.targets, got.sessions) == (None, (), 0)
    assert got.message == "start failed: port in use"


def test_a_crash_looping_but_running_tgtd_is_running_with_the_message() -> None:
    got = states({3261: S}, {3261: entry_for(S)}, {3261: running()}, {3261: "tgtd keeps dying"})[
        3261
    ]
    assert (got.state, got.message) == (InstanceState.RUNNING, "tgtd keeps dying")


def test_a_foreign_tgtd_is_reported_unmanaged() -> None:
    got = states({}, {}, {3299: running(3299, pid=5)})[3299]
    assert (got.name, got.state, got.managed, got.pid) == (
        "port-3299",
        InstanceState.RUNNING,
        False,
        5,
    )
    assert got.to_json()["managed"] is False


def test_an_entry_nothing_wants_and_nothing_runs_is_gone() -> None:
    assert states({}, {3261: entry_for(S)}, {}) == {}


def test_a_held_instance_keeps_running_on_its_last_config() -> None:
    problem = Problem(S.config, Rule.TRUST, "world writable")
    got = states({}, {3261: entry_for(S)}, {3261: running()}, problems=(problem,))[3261]
    assert (got.state, got.name, got.config) == (InstanceState.RUNNING, "alpha", str(S.config))


def test_a_held_instance_that_died_is_reported_stopped() -> None:
    problem = Problem(S.config, Rule.TRUST, "world writable")
    got = states({}, {3261: entry_for(S)}, {}, problems=(problem,))[3261]
    assert got.state is InstanceState.STOPPED
    assert "refused" in got.message


def test_the_default_instance_is_never_draining() -> None:
    d = default_spec()
    got = states({3260: d}, {}, {3260: running(3260, control_port=0)})[3260]
    assert (got.name, got.state, got.managed) == ("default", InstanceState.RUNNING, True)
    stopped = states({3260: d}, {3260: entry_for(d)}, {})[3260]
    assert stopped.state is InstanceState.STOPPED


def test_the_default_instance_with_a_new_digest_is_running() -> None:
    d = default_spec(SHA_B)
    got = states({3260: d}, {3260: entry_for(default_spec(SHA_A))}, {3260: running(3260)})
    assert got[3260].state is InstanceState.RUNNING


# --- status_line ------------------------------------------------------------------------


def _st(state: InstanceState, port: int, managed: bool = True) -> InstanceStatus:
    return InstanceStatus(f"i{port}", port, "", state, None, (), 0, managed)


def test_status_line_counts_in_contract_order_and_names_the_first_problem() -> None:
    statuses = [
        _st(InstanceState.DRAINING, 1),
        _st(InstanceState.RUNNING, 2),
        _st(InstanceState.RUNNING, 3),
        _st(InstanceState.RUNNING, 4),
        _st(InstanceState.RUNNING, 5, managed=False),  # foreign: not ours to count
    ]
    problem = Problem(CONF / "x.conf", Rule.CONFLICT, "port 3263 already used by y.conf")
    assert (
        status_line(statuses, (problem,))
        == "3 running, 1 draining, 1 problem (x.conf: port 3263 already used by y.conf)"
    )


def test_status_line_every_state_and_several_problems() -> None:
    statuses = [_st(state, i) for i, state in enumerate(reversed(list(InstanceState)))]
    problems = (
        Problem(CONF / "a.conf", Rule.PORT, "no port", line=3),
        Problem(CONF / "b.conf", Rule.NAME, "bad name"),
    )
    assert status_line(statuses, problems) == (
        "1 running, 1 starting, 1 draining, 1 stopped, 1 failed, 1 pending, "
        "2 problems (a.conf: no port)"
    )


def test_status_line_with_nothing() -> None:
    assert status_line([], ()) == "no instances"
    problem = Problem(CONF / "x.conf", Rule.SYNTAX, "unclosed <target>")
    assert status_line([], (problem,)) == "no instances, 1 problem (x.conf: unclosed <target>)"
    assert status_line([_st(InstanceState.RUNNING, 1, managed=False)], ()) == "no instances"


def test_status_line_says_last_that_the_state_was_not_saved() -> None:
    error = "/run/tgtwatch/applied.json: cannot write the state: Read-only file system"
    assert status_line([_st(InstanceState.RUNNING, 1)], (), error) == (
        f"1 running, state not saved ({error})"
    )
