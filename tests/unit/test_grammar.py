"""The closed grammar: every key, where it may be, its value, and the typed tree it builds
(LUN numbering and precedence as tgt-admin's, ambiguities refused)."""

from __future__ import annotations

import pytest
from builders import ROOT, MemorySource

from tests.every_key import DOCUMENTED, NOT_USED, every_key_text, keys_used
from tgtwatch.config.grammar import Dialect, Limits
from tgtwatch.config.tgtconf import ParsedConfig, parse
from tgtwatch.model.structs import Rule
from tgtwatch.model.tree import (
    WRITE_CACHE_OFF,
    BsOFlag,
    BsType,
    ChapAccount,
    ConfigTree,
    DeviceType,
    Direction,
    Driver,
    IscsiParam,
    ModePage,
    StoreKind,
    Target,
    TargetState,
)

T = "iqn.2026-01.com.example:t"


def parse_text(text: str, dialect: Dialect = Dialect.INSTANCE, **limits: int) -> ParsedConfig:
    return parse(
        ROOT / "t.conf",
        MemorySource.of({"t.conf": text}),
        dialect=dialect,
        limits=Limits(**limits),
    )


def tree(text: str) -> ConfigTree:
    parsed = parse_text(text)
    assert parsed.problems == (), parsed.problems
    assert parsed.tree is not None
    return parsed.tree


def target(body: str) -> Target:
    (found,) = tree(f"<target {T}>\n{body}\n</target>\n").targets
    return found


def problems(text: str, **limits: int) -> list[tuple[Rule, int | None, str]]:
    parsed = parse_text(text, **limits)
    assert parsed.tree is None
    return [(p.rule, p.line, p.message) for p in parsed.problems]


def in_target(body: str) -> list[tuple[Rule, int | None, str]]:
    return problems(f"<target {T}>\n{body}\n</target>\n")


# --- the whole key list -----------------------------------------------------------------


def test_the_every_key_file_uses_every_documented_key_and_reads_fully() -> None:
    assert keys_used() | NOT_USED >= DOCUMENTED
    text = every_key_text(3263, T, "/srv/a.img", "/srv/b.img", "/dev/disk/by-id/c")
    built = tree(text)
    assert built.isns.server_port == 3205 and built.isns.enabled is False
    assert built.discovery_incoming == ChapAccount("disco-in", "discosecret-12")
    assert built.discovery_outgoing == ChapAccount(
        "disco-out", "discosecret-34", Direction.OUTGOING
    )
    (t,) = built.targets
    assert (t.tid, t.driver, t.state) == (7, Driver.ISCSI, TargetState.READY)
    assert len(t.params) == 19 and [p.name for p in t.params] == sorted(p.name for p in t.params)
    assert t.initiator_addresses == ("127.0.0.1", "10.0.0.0/8")
    assert [(lun.number, lun.path, lun.kind) for lun in t.luns] == [
        (1, "/srv/a.img", StoreKind.BACKING),
        (2, "/dev/disk/by-id/c", StoreKind.DIRECT),
        (5, "/srv/b.img", StoreKind.BACKING),
    ]
    first, _, fifth = t.luns
    # the target's settings are every LUN's defaults; a LUN's own win
    assert (first.bs_type, first.params.scsi_id, first.params.rotation_rate) == (
        BsType.RDWR,
        "tw-every-key",
        1,
    )
    assert (fifth.bs_type, fifth.params.scsi_id, fifth.block_size) == (
        BsType.AIO,
        "tw-every-key-5",
        512,
    )
    assert (fifth.params.thin_provisioning, fifth.params.rotation_rate) == (1, 1)
    assert fifth.mode_pages == (
        ModePage(10, 0, (2, 0, 0, 0, 0, 0, 0, 0, 2, 0)),
        first.mode_pages[0],
    )
    assert (first.write_cache, fifth.write_cache) == (True, False)
    assert first.bsoflags == (BsOFlag.SYNC,) and first.device_type is DeviceType.DISK
    assert fifth.bsoflags == ()


def test_accounts_are_typed_for_the_tgt_layer() -> None:
    t = target(
        "incominguser u1 secretsecret1\nincominguser u2 secretsecret2\n"
        "outgoinguser o1 secretsecret3"
    )
    assert t.incoming == (ChapAccount("u1", "secretsecret1"), ChapAccount("u2", "secretsecret2"))
    assert t.outgoing == ChapAccount("o1", "secretsecret3", Direction.OUTGOING)
    assert "secret" not in repr(t.incoming).replace("ChapAccount", "")


# --- LUN numbering: tgt-admin's ----------------------------------------------------------


def test_luns_numbered_as_tgt_admin_does() -> None:
    t = target("backing-store /srv/d10\nbacking-store /srv/d2\ndirect-store /dev/disk/by-id/a\n")
    # string order, not file order; backing-store before direct-store
    assert [(lun.number, lun.path) for lun in t.luns] == [
        (1, "/srv/d10"),
        (2, "/srv/d2"),
        (3, "/dev/disk/by-id/a"),
    ]
    t = target(
        "<backing-store /srv/a>\n</backing-store>\n<backing-store /srv/b>\nlun 1\n"
        "</backing-store>\n<backing-store /srv/c>\nlun 3\n</backing-store>\n"
    )
    assert [(lun.number, lun.path) for lun in t.luns] == [
        (1, "/srv/b"),
        (2, "/srv/a"),
        (3, "/srv/c"),
    ]


def test_duplicate_lun_paths_count_once_and_merged_targets_add_up() -> None:
    built = tree(
        f"<target {T}>\nbacking-store /srv/a\nbacking-store /srv/a\n</target>\n"
        f"<target {T}>\nbacking-store /srv/b\n</target>\n"
    )
    assert [lun.path for lun in built.targets[0].luns] == ["/srv/a", "/srv/b"]


# --- what is refused ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("maxconnections 4", "unknown key 'maxconnections' (did you mean MaxConnections?)"),
        ("frobnicate yes", "unknown key 'frobnicate'"),
        ("path /etc/shadow", "path is not accepted"),
        ("ignore-errors yes", "ignore-errors is not accepted"),
        ("RedirectCallback /bin/sh", "a program tgtd would run"),
        ("lun 3", "not accepted at this level"),
        ("block-size 512", "not accepted at this level"),
        ("MaxConnections 4\nMaxConnections 5", "MaxConnections is set 2 times (lines 2, 3)"),
        ("outgoinguser a secretsecret1\noutgoinguser b secretsecret2", "set 2 times"),
        ("MaxConnections", "missing value"),
        ('MaxConnections ""', "missing value"),
        ("MaxConnections 0", "outside 1-65535"),
        ("HeaderDigest crc32c", "is not one of"),
        ("initiator-address 10.0.0.1 --op delete --mode target --force -C 0", "CIDR"),
        ("initiator-address 10.0.0.1\ninitiator-address 10.0.0.1", "given twice"),
        ("incominguser u secretsecret1\nincominguser u secretsecret1", "given twice"),
        ("backing-store /srv/a\n<backing-store /srv/b>\n</backing-store>", "both as a line"),
        (
            "<backing-store /srv/a>\nlun 1\n</backing-store>\n<backing-store /srv/b>\nlun 1\n"
            "</backing-store>",
            "lun 1 is given to two stores",
        ),
        ("<backing-store /srv/a>\nMaxConnections 1\n</backing-store>", "not accepted at this"),
        (
            "<backing-store /srv/a>\n<backing-store /srv/b>\n</backing-store>\n</backing-store>",
            "inside <backing-store>",
        ),
        ("<lun /srv/a>\n</lun>", "unknown block <lun>"),
        ("<backing-store>\n</backing-store>", "without a path"),
        ("<backing-store relative/a>\n</backing-store>", "not an absolute path"),
        ("write-cache off\nmode_page 8:0:1:0\nbacking-store /srv/a", "caching page"),
        ("readonly 1\nparams readonly=0\nbacking-store /srv/a", "readonly is set twice"),
        (
            "<backing-store /srv/a>\nparams readonly=1\n</backing-store>\nparams readonly=0",
            "set twice",
        ),
        ("bsopts conf=/etc/ceph/ceph.conf", "rbd and glfs"),
        ("bs-type rbd", "is not one of"),
        ("bs-type aio\nbsoflags sync\nbacking-store /srv/a", "the aio store takes none"),
        ("device-type pt", "is not one of"),
    ],
)
def test_target_level_refusals(body: str, words: str) -> None:
    found = in_target(body)
    assert any(words in message for _, _, message in found), found
    assert all(rule is Rule.GRAMMAR for rule, _, _ in found), found


def test_every_problem_of_a_file_is_reported_with_its_line() -> None:
    found = in_target("frobnicate 1\nMaxConnections 0\nbacking-store /srv/a b")
    assert [line for _, line, _ in found] == [2, 3, 4]


def test_a_secret_given_two_values_is_refused_without_showing_either() -> None:
    found = problems(
        "incomingdiscoveryuser u secretsecret1\n"
        f"<target {T}>\nincominguser u secretsecret2\n</target>\n"
    )
    assert found == [(Rule.GRAMMAR, 3, "CHAP user u is given two different secrets")]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("<target iqn.a>\n</target>\n", "target name"),
        (f"<target {T};touch x>\n</target>\n", "malformed"),
        ("<target>\n</target>\n", "without a name"),
        ("<Target x>\n</Target>\n", "unknown block <Target>"),
        (
            f"<target {T}>\ncontroller_tid 3\n</target>\n<target {T}x>\ncontroller_tid 3\n"
            "</target>\n",
            "controller_tid 3 is also",
        ),
        ("iSNSServerIP 127.0.0.1;touch x\n", "not an IPv4 or IPv6"),
        ("iSNS on\n", "is not one of On | Off"),
        ("incomingdiscoveryuser u\n", "USER SECRET"),
        ("default-driver iser\ndefault-driver iscsi\n", "set 2 times"),
        ("backing-store /srv/a\n", "not accepted at this level"),
    ],
)
def test_top_level_refusals(text: str, words: str) -> None:
    found = problems(text)
    assert any(words in message for _, _, message in found), found


def test_dialects() -> None:
    assert problems("control-port 3263\n") == [
        (Rule.PORT, 1, "control-port is not allowed in an instance file: SOCKET_OPTS sets it")
    ]
    default = parse_text("control-port 0\ndefault-driver iscsi\n", Dialect.DEFAULT)
    assert default.problems == () and default.tree is not None
    assert default.tree.control_port == 0
    refused = parse_text('SOCKET_OPTS="3263"\n', Dialect.DEFAULT)
    assert "belongs in an instance file" in refused.problems[0].message


def test_default_driver_is_each_targets_unless_it_names_its_own() -> None:
    built = tree(
        f"default-driver iser\n<target {T}>\n</target>\n<target {T}2>\ndriver iscsi\n</target>\n"
    )
    assert [t.driver for t in built.targets] == [Driver.ISER, Driver.ISCSI]


def test_params_and_mode_pages_resolve_per_lun() -> None:
    t = target(
        "mode_page 8:0:1:1\nmode_page 10:0:1:1\nparams rotation_rate=7200\n"
        "<backing-store /srv/a>\nmode_page 10:0:1:2\nparams thin_provisioning=1,readonly=1\n"
        "</backing-store>"
    )
    (lun,) = t.luns
    # per LUN first, then the target's; a later page with the same code replaces an earlier
    assert lun.mode_pages == (ModePage(8, 0, (1,)), ModePage(10, 0, (1,)))
    assert (lun.params.rotation_rate, lun.params.thin_provisioning, lun.params.readonly) == (
        7200,
        1,
        1,
    )


def test_write_cache_off_is_a_flag_the_tgt_layer_turns_into_the_caching_page() -> None:
    (lun,) = target("write-cache off\nbacking-store /srv/a").luns
    assert lun.write_cache is False and lun.mode_pages == ()
    assert WRITE_CACHE_OFF.page == 8


def test_iscsi_params_sorted_as_tgt_admin_applies_them() -> None:
    t = target("MaxConnections 2\nHeaderDigest CRC32C\nstate offline")
    assert t.params == (IscsiParam("HeaderDigest", "CRC32C"), IscsiParam("MaxConnections", "2"))
    assert t.state is TargetState.OFFLINE


# --- limits -----------------------------------------------------------------------------


def test_targets_and_luns_per_file_are_limited() -> None:
    text = "".join(f"<target {T}{i}>\nbacking-store /srv/{i}\n</target>\n" for i in range(5))
    assert problems(text, targets_per_file=4) == [
        (Rule.LIMIT, None, "5 targets, more than the 4 allowed in one file")
    ]
    assert problems(text, luns_per_file=4) == [
        (Rule.LIMIT, None, "5 LUNs, more than the 4 allowed in one file")
    ]
    assert parse_text(text, targets_per_file=5, luns_per_file=5).problems == ()


def test_a_file_full_of_problems_reports_twenty() -> None:
    found = in_target("\n".join(f"frobnicate{i} 1" for i in range(100)))
    assert len(found) == 20
    assert found[-1][2] == "... and 81 more problems in this file"
