"""What runs against what was applied: drift_of, after_action, and the plan's checks."""

from __future__ import annotations

from dataclasses import replace

from builders import SHA_A, SHA_B, entry_for, running, spec

from tgtwatch.model.drift import Repair, after_action, drift_of, expected_luns
from tgtwatch.model.plan import plan
from tgtwatch.model.structs import (
    Applied,
    Check,
    Desired,
    InstanceKind,
    Observed,
    ObservedTarget,
    Reload,
    TargetSpec,
)

T1 = TargetSpec("iqn.x:t1", 2, "d1")
T2 = TargetSpec("iqn.x:t2", 1, "d2")
S = spec(targets=(T1, T2))


def applied_entry(**changes: object):  # type: ignore[no-untyped-def]
    fields = {"targets": (("iqn.x:t1", "d1"), ("iqn.x:t2", "d2")), **changes}
    return replace(entry_for(S), **fields)


def tgtd(state: str = "ready", **luns: int):  # type: ignore[no-untyped-def]
    targets = tuple(
        ObservedTarget(i, f"iqn.x:{name}", n, 0) for i, (name, n) in enumerate(luns.items(), 1)
    )
    return replace(running(), system_state=state, targets=targets)


def test_as_applied_is_no_drift() -> None:
    drift = drift_of(S, applied_entry(), tgtd(t1=2, t2=1))
    assert not drift and drift.repair is Repair.NONE and str(drift) == ""


def test_offline_is_drift_repaired_by_setting_ready() -> None:
    drift = drift_of(S, applied_entry(), tgtd("offline", t1=2, t2=1))
    assert drift.offline and drift.repair is Repair.READY
    assert str(drift) == "system state offline (new logins refused)"


def test_a_missing_target_or_lun_is_drift_repaired_by_a_reload() -> None:
    drift = drift_of(S, applied_entry(), tgtd(t1=1))
    assert drift.missing == ("iqn.x:t2",)
    assert drift.short == (("iqn.x:t1", 1, 2),)
    assert drift.repair is Repair.RELOAD
    assert drift.targets == ("iqn.x:t2", "iqn.x:t1")
    assert str(drift) == "target iqn.x:t2 missing; iqn.x:t1 has 1 of 2 LUNs"


def test_a_target_running_an_older_config_is_not_counted_for_luns() -> None:
    # t1 pending (its old config, digest d0): its LUNs are not the file's; its name still is.
    old = applied_entry(targets=(("iqn.x:t1", "d0"), ("iqn.x:t2", "d2")))
    assert expected_luns(S, old) == {"iqn.x:t1": None, "iqn.x:t2": 1}
    assert not drift_of(S, old, tgtd(t1=1, t2=1))
    assert drift_of(S, old, tgtd(t2=1)).missing == ("iqn.x:t1",)
    # A target recorded as never applied ("") has no LUN count either.
    unapplied = applied_entry(targets=(("iqn.x:t1", ""), ("iqn.x:t2", "d2")))
    assert expected_luns(S, unapplied)["iqn.x:t1"] is None


def test_without_a_record_of_targets_the_files_own_count_when_it_was_applied() -> None:
    assert expected_luns(S, entry_for(S)) == {"iqn.x:t1": 2, "iqn.x:t2": 1}
    assert expected_luns(S, replace(entry_for(S), sha256=SHA_B)) == {}


def test_after_an_action_every_target_not_pending_must_have_its_luns() -> None:
    assert not after_action(S, (), tgtd(t1=2, t2=1))
    drift = after_action(S, (), tgtd(t1=1, t2=1))
    assert drift.short == (("iqn.x:t1", 1, 2),) and drift.targets == ("iqn.x:t1",)
    assert not after_action(S, ("iqn.x:t1",), tgtd(t1=1, t2=1))  # pending: its old config
    assert after_action(S, (), tgtd(t2=1)).missing == ("iqn.x:t1",)


# --- the plan ----------------------------------------------------------------------------


def plan_for(observed_tgtd, verify=(), e=None):  # type: ignore[no-untyped-def]
    return plan(
        Desired({3261: S}),
        Applied({3261: e or applied_entry()}),
        Observed({3261: observed_tgtd}),
        verify,
    ).actions


def test_a_converged_port_is_checked_only_when_due() -> None:
    scanned = replace(tgtd(), inspected=False, system_state="", targets=())
    assert plan_for(scanned) == ()
    assert plan_for(scanned, verify={3261}) == (Check(S),)


def test_an_inspected_drift_is_a_check_that_says_why() -> None:
    assert plan_for(tgtd("offline", t1=2, t2=1)) == (
        Check(S, "system state offline (new logins refused)"),
    )
    assert plan_for(tgtd(t1=2, t2=1), verify={3261}) == ()  # inspected: known to be fine


def test_pending_is_released_only_on_an_inspected_tgtd() -> None:
    e = applied_entry(pending=("iqn.x:t1",))
    scanned = replace(tgtd(), inspected=False, system_state="", targets=())
    assert plan_for(scanned, e=e) == ()  # a /proc scan counts no sessions
    assert plan_for(scanned, verify={3261}, e=e) == (Check(S),)
    assert plan_for(tgtd(t1=2, t2=1), e=e) == (Reload(S),)


def test_the_default_instance_is_checked_only_for_its_pending_targets() -> None:
    d = spec("default", 3260, SHA_A, kind=InstanceKind.DEFAULT, targets=(T1,))
    offline = replace(tgtd("offline"), port=3260)
    scanned = replace(offline, inspected=False, system_state="")
    e = replace(entry_for(d), targets=(("iqn.x:t1", "d1"),))
    desired = Desired({3260: d})
    assert plan(desired, Applied({3260: e}), Observed({3260: offline}), {3260}).actions == ()
    pending = replace(e, pending=("iqn.x:t1",))
    got = plan(desired, Applied({3260: pending}), Observed({3260: scanned}), {3260}).actions
    assert got == (Check(d),)
