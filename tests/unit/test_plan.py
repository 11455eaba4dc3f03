"""plan(desired, applied, observed): every combination per port, and idempotence."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path

import pytest
from builders import SHA_A, SHA_B, default_spec, entry, entry_for, running, spec

from tgtwatch.model.plan import pending_released, plan
from tgtwatch.model.structs import (
    Action,
    Applied,
    AppliedEntry,
    Desired,
    DrainStop,
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


def make(
    specs: Mapping[int, InstanceSpec] | None = None,
    entries: Mapping[int, AppliedEntry] | None = None,
    instances: Mapping[int, ObservedInstance] | None = None,
    problems: tuple[Problem, ...] = (),
) -> Plan:
    return plan(
        Desired(dict(specs or {}), problems),
        Applied(dict(entries or {})),
        Observed(dict(instances or {})),
    )


# --- the rules, one by one --------------------------------------------------------------


def test_start_when_not_running() -> None:
    s = spec()
    assert make({3261: s}).actions == (Start(s),)


def test_start_when_applied_but_died() -> None:
    s = spec()
    assert make({3261: s}, {3261: entry_for(s)}).actions == (Start(s),)


def test_nothing_for_an_unchanged_digest() -> None:
    s = spec()
    result = make({3261: s}, {3261: entry_for(s)}, {3261: running()})
    assert result == Plan()


def test_reload_on_a_changed_digest() -> None:
    s = spec(sha256=SHA_B)
    result = make({3261: s}, {3261: entry(sha256=SHA_A)}, {3261: running()})
    assert result.actions == (Reload(s, adopt=False),)


def test_adopt_a_running_tgtd_never_applied() -> None:
    s = spec()
    assert make({3261: s}, {}, {3261: running()}).actions == (Reload(s, adopt=True),)


def test_a_starting_unit_is_left_to_finish() -> None:
    s = spec()
    assert make({3261: s}, {}, {3261: running(starting=True)}).actions == ()


def test_port_change_drains_the_old_port_then_starts_the_new() -> None:
    moved = spec("alpha", 3262)
    result = make({3262: moved}, {3261: entry("alpha", 3261)}, {3261: running(3261)})
    assert result.actions == (
        DrainStop(3261, 3261, "alpha", moved.config),
        Start(moved),
    )


def test_rename_on_the_same_port_drains_then_starts() -> None:
    renamed = spec("beta", 3261)
    old = entry("alpha", 3261)
    result = make({3261: renamed}, {3261: old}, {3261: running(3261)})
    [drain, start] = result.actions
    assert isinstance(drain, DrainStop)
    assert (drain.port, drain.name, drain.config) == (3261, "alpha", old.config)
    assert str(renamed.config) in drain.reason
    assert start == Start(renamed)


def test_rename_of_a_stopped_instance_just_starts() -> None:
    renamed = spec("beta", 3261)
    assert make({3261: renamed}, {3261: entry("alpha")}).actions == (Start(renamed),)


def test_drain_stop_uses_the_observed_control_port() -> None:
    result = make({}, {3261: entry()}, {3261: running(control_port=4000)})
    assert result.actions == (DrainStop(3261, 4000, "alpha", entry().config),)


def test_a_deleted_file_whose_tgtd_is_gone_needs_nothing() -> None:
    assert make({}, {3261: entry()}, {}) == Plan()


def test_a_troubled_file_keeps_its_last_config() -> None:
    e = entry()
    problem = Problem(e.config, Rule.SYNTAX, "broken", 3)
    result = make({}, {3261: e}, {3261: running()}, (problem,))
    assert result.actions == ()
    assert result.held == (e,)


def test_a_troubled_directory_holds_every_file_in_it() -> None:
    e = entry()
    problem = Problem(e.config.parent, Rule.DIRECTORY, "world-writable")
    assert make({}, {3261: e}, {3261: running()}, (problem,)).held == (e,)


def test_a_foreign_tgtd_is_left_alone_and_reported() -> None:
    foreign = running(3300)
    result = make({}, {}, {3300: foreign})
    assert result.actions == ()
    assert result.foreign == (foreign,)


def test_default_instance_reloaded_only_when_it_runs() -> None:
    d = default_spec()
    assert make({3260: d}).actions == ()
    assert make({3260: d}, {3260: entry_for(d)}).actions == ()
    assert make({3260: d}, {}, {3260: running(3260, control_port=0)}).actions == (
        Reload(d, adopt=True),
    )
    changed = default_spec(SHA_B)
    assert make({3260: changed}, {3260: entry_for(d)}, {3260: running(3260)}).actions == (
        Reload(changed),
    )


def test_default_instance_never_drained_when_no_longer_desired() -> None:
    e = entry_for(default_spec())
    result = make({}, {3260: e}, {3260: running(3260)})
    assert result == Plan()


def test_pending_targets_reload_once_their_sessions_end() -> None:
    s = spec()
    e = entry_for(s, pending=("iqn.x:busy",))
    busy = running(sessions={"iqn.x:busy": 2, "iqn.x:other": 0})
    idle = running(sessions={"iqn.x:busy": 0, "iqn.x:other": 5})
    assert make({3261: s}, {3261: e}, {3261: busy}).actions == ()
    assert make({3261: s}, {3261: e}, {3261: idle}).actions == (Reload(s),)
    gone = running(sessions={"iqn.x:other": 1})  # the busy target no longer exists at all
    assert make({3261: s}, {3261: e}, {3261: gone}).actions == (Reload(s),)


def test_pending_released() -> None:
    e = entry(pending=("a", "b"))
    assert not pending_released(entry(), running())
    assert not pending_released(e, running(sessions={"a": 0, "b": 1}))
    assert pending_released(e, running(sessions={"a": 0, "b": 0}))


def test_pending_on_the_default_instance() -> None:
    d = default_spec()
    e = entry_for(d, pending=("t",))
    assert make({3260: d}, {3260: e}, {3260: running(3260, sessions={"t": 1})}).actions == ()
    assert make({3260: d}, {3260: e}, {3260: running(3260, sessions={"t": 0})}).actions == (
        Reload(d),
    )


# --- every combination per port ---------------------------------------------------------

OTHER = Path("/etc/mytgt/conf.d/other.conf")
DESIRED_CHOICES = ["none", "same", "changed", "other-file", "troubled"]
APPLIED_CHOICES = ["none", "applied", "applied-pending"]
OBSERVED_CHOICES = ["none", "idle", "busy", "starting"]
DEFAULT_CHOICES = list(
    itertools.product(["none", "same", "changed"], APPLIED_CHOICES, ["none", "idle", "busy"])
)


def build(
    port: int, kind: InstanceKind, d: str, a: str, o: str
) -> tuple[InstanceSpec | None, AppliedEntry | None, ObservedInstance | None, list[Problem]]:
    name = "default" if kind is InstanceKind.DEFAULT else "alpha"
    base = spec(name, port, SHA_A, kind=kind)
    desired = {
        "none": None,
        "same": base,
        "changed": spec(name, port, SHA_B, kind=kind),
        "other-file": spec("other", port, SHA_A, config=OTHER),
        "troubled": None,
    }[d]
    problems = [Problem(base.config, Rule.SYNTAX, "broken", 1)] if d == "troubled" else []
    applied = {
        "none": None,
        "applied": entry_for(base),
        "applied-pending": entry_for(base, pending=("t",)),
    }[a]
    observed = {
        "none": None,
        "idle": running(port, sessions={"t": 0}),
        "busy": running(port, sessions={"t": 1}),
        "starting": running(port, starting=True),
    }[o]
    return desired, applied, observed, problems


def expected_dropin(
    d: InstanceSpec | None,
    a: AppliedEntry | None,
    o: ObservedInstance | None,
    troubled: bool,
) -> tuple[list[str], bool, bool]:
    """(action kinds, held, foreign) for one drop-in port, straight from DESIGN.md."""
    if d is None:
        if troubled and a is not None:
            return [], True, False
        if a is None:
            return [], False, o is not None
        return (["drain_stop"] if o is not None else []), False, False
    if a is not None and a.config != d.config:
        return (["drain_stop", "start"] if o is not None else ["start"]), False, False
    if o is None:
        return ["start"], False, False
    if o.starting:
        return [], False, False
    if a is None or a.sha256 != d.sha256:
        return ["reload"], False, False
    released = bool(a.pending) and o.sessions == 0
    return (["reload"] if released else []), False, False


def expected_default(
    d: InstanceSpec | None, a: AppliedEntry | None, o: ObservedInstance | None
) -> tuple[list[str], bool]:
    if d is None:
        return [], o is not None and a is None
    if o is None:
        return [], False
    if a is None or a.sha256 != d.sha256 or (a.pending and o.sessions == 0):
        return ["reload"], False
    return [], False


def apply(result: Plan, applied: Applied, observed: Observed) -> tuple[Applied, Observed]:
    """What a perfect executor leaves behind."""
    entries = dict(applied.entries)
    instances = dict(observed.instances)
    for action in result.actions:
        if isinstance(action, DrainStop):
            entries.pop(action.port, None)
            instances.pop(action.port, None)
        elif isinstance(action, Start):
            entries[action.port] = entry_for(action.spec)
            instances[action.port] = running(action.port)
        else:
            entries[action.port] = entry_for(action.spec)
    return Applied(entries), Observed(instances)


def kinds(actions: tuple[Action, ...], port: int) -> list[str]:
    return [a.kind.value for a in actions if a.port == port]


@pytest.mark.parametrize("default_case", DEFAULT_CHOICES, ids="-".join)
def test_every_combination(default_case: tuple[str, str, str]) -> None:
    dd, da, do = build(3260, InstanceKind.DEFAULT, *default_case)[:3]
    for d_choice, a_choice, o_choice in itertools.product(
        DESIRED_CHOICES, APPLIED_CHOICES, OBSERVED_CHOICES
    ):
        d, a, o, problems = build(3261, InstanceKind.DROPIN, d_choice, a_choice, o_choice)
        desired = Desired(
            {p: s for p, s in ((3260, dd), (3261, d)) if s is not None}, tuple(problems)
        )
        applied = Applied({p: e for p, e in ((3260, da), (3261, a)) if e is not None})
        observed = Observed({p: r for p, r in ((3260, do), (3261, o)) if r is not None})
        case = (default_case, d_choice, a_choice, o_choice)

        result = plan(desired, applied, observed)

        want, held, foreign = expected_dropin(d, a, o, bool(problems))
        assert kinds(result.actions, 3261) == want, case
        assert (a in result.held) is held, case
        assert (o in result.foreign) is (foreign and o is not None), case
        want_default, default_foreign = expected_default(dd, da, do)
        assert kinds(result.actions, 3260) == want_default, case
        assert (do in result.foreign) is default_foreign, case
        for action in result.actions:
            if action.port == 3260:
                assert isinstance(action, Reload), case  # the default is only ever reloaded
            if isinstance(action, Reload):
                assert action.adopt is (applied.entries.get(action.port) is None), case

        # idempotent: once a perfect executor applied it, nothing is left to do
        if o is not None and o.starting:
            continue  # the unit must finish starting first
        applied2, observed2 = apply(result, applied, observed)
        again = plan(desired, applied2, observed2)
        assert again.actions == (), case
        assert plan(desired, applied2, observed2) == again  # pure: same answer every time


def test_two_ports_move_and_swap() -> None:
    """alpha moves 3261 -> 3262 while beta moves 3262 -> 3261."""
    alpha = spec("alpha", 3262)
    beta = spec("beta", 3261)
    applied = Applied({3261: entry("alpha", 3261), 3262: entry("beta", 3262)})
    observed = Observed({3261: running(3261), 3262: running(3262)})
    result = plan(Desired({3261: beta, 3262: alpha}), applied, observed)
    assert [(a.kind.value, a.port, a.name) for a in result.actions] == [
        ("drain_stop", 3261, "alpha"),
        ("start", 3261, "beta"),
        ("drain_stop", 3262, "beta"),
        ("start", 3262, "alpha"),
    ]
    applied2, observed2 = apply(result, applied, observed)
    assert plan(Desired({3261: beta, 3262: alpha}), applied2, observed2).actions == ()
