"""The tgt output parsers against real captured outputs, and against junk."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tgtwatch.model.structs import ObservedTarget
from tgtwatch.tgt.admin_output import (
    AdminProblemKind,
    BusyTarget,
    error_summary,
    parse_admin_output,
    redact_secrets,
)
from tgtwatch.tgt.cmdline import parse_tgtd_cmdline
from tgtwatch.tgt.show import (
    Lun,
    Nexus,
    Portal,
    SystemState,
    observed_targets,
    parse_show_accounts,
    parse_show_params,
    parse_show_portals,
    parse_show_system,
    parse_show_targets,
)

DATA = Path(__file__).parent / "data" / "tgt"
VOL1 = "iqn.2026-11.com.example:vol1"
VOL2 = "iqn.2026-11.com.example:vol2"


def data(name: str) -> str:
    return (DATA / name).read_text()


# --- show --mode target --------------------------------------------------------------


def test_idle_targets() -> None:
    targets = parse_show_targets(data("show_target_idle.txt"))
    assert [(t.tid, t.name, t.state) for t in targets] == [(1, VOL1, "ready"), (2, VOL2, "ready")]
    vol1, vol2 = targets
    assert vol1.nexuses == ()
    assert vol1.acl == ("ALL",)
    assert vol1.luns[0] == Lun(0, "controller", None)
    assert vol1.luns[1] == Lun(1, "disk", "/tmp/tgtexp/cap/a.img")
    assert [lun.number for lun in vol2.data_luns] == [1, 2]
    assert vol2.acl == ("127.0.0.1", "10.0.0.0/24")
    assert vol2.accounts == ("alice",)
    assert observed_targets(data("show_target_idle.txt")) == (
        ObservedTarget(tid=1, name=VOL1, luns=1, sessions=0),
        ObservedTarget(tid=2, name=VOL2, luns=2, sessions=0),
    )


def test_targets_with_sessions() -> None:
    vol1, vol2 = parse_show_targets(data("show_target_sessions.txt"))
    assert vol1.nexuses == (
        Nexus(1, "iqn.2026-11.test:perf1", None, ("127.0.0.1",), (0,)),
        Nexus(2, "iqn.2026-11.test:perf2", None, ("127.0.0.1",), (0,)),
    )
    assert vol1.initiator_addresses == ("127.0.0.1",)
    assert vol1.observed().sessions == 2
    assert vol2.observed().sessions == 0


def test_sessions_survive_system_offline() -> None:
    vol1, _ = parse_show_targets(data("show_target_sessions_offline.txt"))
    assert len(vol1.nexuses) == 2
    assert vol1.state == "ready"  # the system goes offline, never the target


def test_no_targets() -> None:
    assert parse_show_targets(data("show_target_none.txt")) == ()
    assert parse_show_targets("") == ()


def test_alias_and_several_connections() -> None:
    text = (
        "Target 7: iqn.x:y\n"
        "    I_T nexus information:\n"
        "        I_T nexus: 9\n"
        "            Initiator: iqn.i:1 alias: host1\n"
        "            Connection: 0\n"
        "                IP Address: 10.0.0.1\n"
        "            Connection: 1\n"
        "                IP Address: 10.0.0.2\n"
    )
    (target,) = parse_show_targets(text)
    assert target.nexuses == (Nexus(9, "iqn.i:1", "host1", ("10.0.0.1", "10.0.0.2"), (0, 1)),)


# --- show --mode sys / portal --------------------------------------------------------


def test_system_ready() -> None:
    info = parse_show_system(data("show_sys_ready.txt"))
    assert info.state is SystemState.READY
    assert info.raw_state == "ready"
    assert info.debug is False
    assert info.lld_state("iscsi") == "ready"
    assert "rdwr" in info.backing_stores
    assert "aio" in info.backing_stores
    assert "disk" in info.device_types


def test_system_offline() -> None:
    assert parse_show_system(data("show_sys_offline.txt")).state is SystemState.OFFLINE


def test_system_discovery_accounts_are_not_device_types() -> None:
    info = parse_show_system(data("show_sys_accounts.txt"))
    assert info.accounts == ("disc", "out1 (outgoing)")
    assert info.device_types[-1] == "passthrough"
    assert parse_show_system(data("show_sys_ready.txt")).accounts == ()


def test_target_params() -> None:
    params = parse_show_params(data("show_target_tid.txt"))
    assert params["MaxRecvDataSegmentLength"] == "8192" and params["nop_interval"] == "0"
    assert params["HeaderDigest"] == "None" and len(params) == 26
    assert parse_show_params("junk\n=x\n") == {}


def test_account_list() -> None:
    assert parse_show_accounts(data("show_account.txt")) == ("out1", "disc")
    assert parse_show_accounts("") == ()


def test_system_unknown_state() -> None:
    info = parse_show_system("System:\n    State: sleepy\n")
    assert info.state is None
    assert info.raw_state == ""


def test_portals() -> None:
    assert parse_show_portals(data("show_portal.txt")) == (Portal("127.0.0.1", 13010, 1),)
    # tgtd could not bind 127.0.0.1:13020 (in use): it fell back to its defaults
    assert parse_show_portals(data("show_portal_fallback.txt")) == (
        Portal("::", 3260, 1),
        Portal("0.0.0.0", 3260, 1),
    )
    assert [p.address for p in parse_show_portals(data("show_portal_fallback.txt"))] == [
        "[::]:3260",
        "0.0.0.0:3260",
    ]


# --- tgt-admin -v --------------------------------------------------------------------


def test_execute_clean() -> None:
    report = parse_admin_output(data("admin_execute.txt"))
    assert report.ok
    assert report.added == (VOL1, VOL2)
    assert report.busy == ()


def test_update_unchanged_idle_recreates_every_target() -> None:
    # why a reload must never run for an unchanged file: tgt-admin deletes and re-adds
    report = parse_admin_output(data("admin_update_unchanged_idle.txt"))
    assert report.ok
    assert report.removed == (VOL1, VOL2)
    assert report.added == (VOL1, VOL2)


@pytest.mark.parametrize(
    "name", ["admin_update_busy_unchanged.txt", "admin_update_busy_changed.txt"]
)
def test_update_busy(name: str) -> None:
    report = parse_admin_output(data(name))
    assert report.ok
    assert report.busy == (BusyTarget(1, VOL1, "updated"),)
    assert report.busy_names == (VOL1,)
    assert report.removed == (VOL2,)
    assert report.added == (VOL2,)


def test_execute_leaves_busy_target_and_skips_device() -> None:
    report = parse_admin_output(data("admin_execute_other_busy.txt"))
    assert report.busy == (BusyTarget(1, VOL1, "deleted"),)
    assert [p.kind for p in report.problems] == [AdminProblemKind.DEVICE_SKIPPED]
    assert not report.ok


def test_missing_backing_store_is_a_problem_despite_exit_0() -> None:
    report = parse_admin_output(data("admin_missing_backing.txt"))
    assert [p.kind for p in report.problems] == [AdminProblemKind.DEVICE_SKIPPED]
    assert "missing.img" in report.problems[0].message
    assert report.problems[0].message.endswith("missing.img: it does not exist")


def test_remove_busy_and_forced() -> None:
    busy = parse_admin_output(data("admin_remove_busy.txt"))
    assert busy.busy_names == (VOL1,)
    forced = parse_admin_output(data("admin_remove_force.txt"))
    assert forced.busy == ()
    assert forced.removed == (VOL1,)


def test_tgtadm_failure() -> None:
    report = parse_admin_output(data("admin_tgtadm_error.txt"))
    kinds = [p.kind for p in report.problems]
    assert kinds == [AdminProblemKind.TGTADM_ERROR, AdminProblemKind.TGTADM_FAILED]
    assert report.problems[1].message.endswith("exited with code 22")
    assert "--bstype nosuch" in report.problems[1].message


def test_multiple_control_port() -> None:
    report = parse_admin_output(data("admin_multiple_control_port.txt"))
    assert [p.kind for p in report.problems] == [AdminProblemKind.CONFIG, AdminProblemKind.CONFIG]
    assert report.problems[0].message == "Multiple control-port definitions are not allowed!"


def test_pretend_is_clean() -> None:
    report = parse_admin_output(data("admin_pretend.txt"))
    assert report.ok
    assert report.added == (VOL1, VOL2)


# --- summaries and redaction -----------------------------------------------------------


def test_error_summary_is_one_line() -> None:
    summary = error_summary(data("admin_tgtadm_error.txt"))
    assert "\n" not in summary
    assert "tgtadm: invalid request" in summary
    not_connected = error_summary(data("tgtadm_not_connected.txt"))
    assert "Transport endpoint is not connected" in not_connected
    assert error_summary("") == ""
    assert len(error_summary("x" * 1000)) <= 300


def test_redact_secrets() -> None:
    text = data("admin_execute.txt")
    assert "secretsecret12" in text
    redacted = redact_secrets(text)
    assert "secretsecret12" not in redacted
    assert "--user=alice --password=***" in redacted


# --- /proc/PID/cmdline -----------------------------------------------------------------


def test_cmdline_real() -> None:
    parsed = parse_tgtd_cmdline((DATA / "cmdline_tgtd_portal_C.bin").read_bytes())
    assert parsed is not None
    assert (parsed.control_port, parsed.host, parsed.port) == (13010, "127.0.0.1", 13010)
    assert parsed.portal == "127.0.0.1:13010"
    assert parsed.foreground


@pytest.mark.parametrize(
    ("argv", "control_port", "portal"),
    [
        (["/usr/sbin/tgtd", "-f"], 0, "0.0.0.0:3260"),
        (["tgtd"], 0, "0.0.0.0:3260"),
        (
            ["tgtd", "--control-port", "3263", "--iscsi", "portal=0.0.0.0:3263"],
            3263,
            "0.0.0.0:3263",
        ),
        (["tgtd", "--control-port=7"], 7, "0.0.0.0:3260"),
        (["tgtd", "-C5", "--iscsi", "portal=10.1.1.1"], 5, "10.1.1.1:3260"),
        (["tgtd", "--iscsi", "nop_interval=5,portal=[::1]:3300"], 0, "[::1]:3300"),
        (["tgtd", "--iscsi", "portal=[fe80::1]"], 0, "[fe80::1]:3260"),
    ],
)
def test_cmdline_variants(argv: list[str], control_port: int, portal: str) -> None:
    parsed = parse_tgtd_cmdline(b"\0".join(a.encode() for a in argv) + b"\0")
    assert parsed is not None
    assert parsed.control_port == control_port
    assert parsed.portal == portal


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\0",
        b"/usr/bin/python3\0tgtd\0",
        b"tgtadm\0-C\x001\0",
        b"tgtd\0-C\0",
        b"tgtd\0-C\0nope\0",
        b"tgtd\0-C\x0099999\0",
        # digits to str.isdigit(), not to int(): a local process must not break observe()
        "tgtd\0-C\0²\0".encode(),
    ],
)
def test_cmdline_not_a_usable_tgtd(raw: bytes) -> None:
    assert parse_tgtd_cmdline(raw) is None


@pytest.mark.parametrize("portal", ["h:²", "[::1]:٣"])
def test_a_portal_port_in_other_digits_is_no_port(portal: str) -> None:
    parsed = parse_tgtd_cmdline(f"tgtd\0-C\x001\0--iscsi\0portal={portal}\0".encode())
    assert parsed is not None and parsed.port == 3260


# --- never raise on junk ---------------------------------------------------------------

_tgt_words = st.sampled_from(
    [
        "Target 1: iqn.a:b",
        "Target x: y",
        "    I_T nexus information:",
        "        I_T nexus: 3",
        "        I_T nexus: z",
        "            Initiator: iqn.i alias: none",
        "                IP Address: 1.2.3.4",
        "    LUN information:",
        "        LUN: 0",
        "        LUN: 99999999999999999999",
        "            Type: controller",
        "            Backing store path: None",
        "    ACL information:",
        "System:",
        "    State: ready",
        "LLDs:",
        "    iscsi: ready",
        "Portal: 1.2.3.4:3260,1",
        "Command:",
        "exited with code: 22.",
        "# Target with tid 1 (x) is in use, it won't be updated.",
        "tgtadm: invalid request",
        "",
    ]
)
_junk = st.one_of(st.text(), st.lists(_tgt_words | st.text(max_size=20)).map("\n".join))


@given(_junk)
def test_text_parsers_never_raise(text: str) -> None:
    parse_show_targets(text)
    observed_targets(text)
    parse_show_system(text)
    parse_show_portals(text)
    parse_admin_output(text)
    assert "\n" not in error_summary(text)
    redact_secrets(text)


@given(st.binary())
def test_cmdline_parser_never_raises(raw: bytes) -> None:
    parse_tgtd_cmdline(raw)


@given(
    st.lists(
        st.sampled_from(["tgtd", "-C", "--iscsi", "portal=", "1", ":", "-f", "x", "²", "[::1]"])
        | st.text(max_size=8)
    )
)
def test_cmdline_parser_never_raises_on_tgtd_like(words: list[str]) -> None:
    parse_tgtd_cmdline(b"\0".join(w.encode() for w in ["tgtd", *words]))


def test_lun_attributes_accounts_and_acls() -> None:
    (target,) = parse_show_targets(data("show_target_accounts_acls.txt"))
    lun1 = target.luns[1]
    assert lun1.attribute("Size") == "67 MB"
    assert lun1.attribute("Block size") == "512"
    assert lun1.attribute("Readonly") == "No"
    assert lun1.attribute("Backing store type") == "rdwr"
    assert lun1.attribute("SCSI SN") == "beaf11"
    assert lun1.attribute("Backing store flags") == ""
    assert lun1.attribute("nonexistent") is None
    assert target.accounts == ("u1", "o1 (outgoing)")
    assert target.acl == ("10.0.0.0/24", "iqn.1993-08.org.debian:01:abc")
