"""Value grammars: what each key accepts, and that nothing accepted can reach a shell,
tgtadm's option parser or tgtd's comma-separated payload as anything but one value."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tgtwatch.config import keys as k
from tgtwatch.config import values as v
from tgtwatch.model.tree import ChapAccount, Direction, ModePage

# Characters that mean something to /bin/sh, to a glob or to tgtd's payload parser.
SHELL = set("`$;|&<>()\\\"'*?[]{}~!#\n\r\t ")
PAYLOAD = set(",=")
# Keys whose grammar is tgtd's own syntax with `,`, `:` or `=` inside (fixed or typed).
OWN_SYNTAX = {"HeaderDigest", "DataDigest", "params"}


def rendered(value: Any) -> list[str]:
    """The words a parsed value becomes in the rendering."""
    if isinstance(value, ChapAccount):
        return [value.user, value.secret]
    if isinstance(value, tuple):
        return [str(getattr(x, "value", x)) for x in value]
    return [str(getattr(value, "value", value))]


ALL_KEYS = {**k.GLOBAL_KEYS, **k.TARGET_KEYS, **k.LUN_KEYS}
_text = st.text(st.sampled_from(string.printable + "é"), max_size=40) | st.sampled_from(
    ["ALL", "iqn.2026-01.x:y", "/srv/a", "10.0.0.1/24", "On", "Yes", "user secretsecret12"]
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(ALL_KEYS)), _text)
def test_no_accepted_value_can_be_read_as_anything_else(key: str, text: str) -> None:
    try:
        value = ALL_KEYS[key].parse(text)
    except ValueError:
        return
    for word in rendered(value):
        assert word and not word.startswith("-"), (key, text)
        assert not set(word) & SHELL, (key, text)
        if key not in OWN_SYNTAX:
            assert not set(word) & PAYLOAD, (key, text)


@pytest.mark.parametrize(
    "name",
    [
        "iqn.2026-11.org.tgtwatch.sample:alpha-disk1",
        "iqn.2001-04.com.example:storage:diskarrays-sn-a8675309",
        "iqn.2001-04.com.example",
        "eui.02004567A425678D",
        "naa.52004567ba64678d",
        "naa.6001405abcdef0123456789abcdef012",
    ],
)
def test_iscsi_names(name: str) -> None:
    assert v.iscsi_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "iqn.a",
        "iqn.2026-13.x:y",
        "iqn.26-01.x:y",
        "iqn.2026-01.-x:y",
        "iqn.2026-01.x:",
        "iqn.2026-01.x:Y",  # not RFC 3722's normalized (lowercase) form
        "iqn.2026-01.x:y z",
        "iqn.2026-01.x:y;touch",
        "iqn.2026-01.x:y_z",
        "eui.0200",
        "eui.02004567A425678G",
        "naa.123",
        "-T",
        "iqn.2026-01.x:" + "a" * 220,
    ],
)
def test_not_iscsi_names(name: str) -> None:
    with pytest.raises(ValueError):
        v.iscsi_name(name)


@pytest.mark.parametrize(
    "path",
    [
        "/srv/a.img",
        "/dev/disk/by-path/pci-0000:00:1f.2-ata-1",
        "/dev/mapper/vg0-lv--data",
        "/dev/zvol/tank/vol@1",
    ],
)
def test_paths(path: str) -> None:
    assert v.absolute_path(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "srv/a",
        "/srv/../etc/shadow",
        "/srv/./a",
        "/srv//a",
        "/srv/a/",
        "/srv/a b",
        "/srv/-b",
        "/srv/a,path=/etc/shadow",
        "/srv/$(id)",
        "/" + "a" * 256,
    ],
)
def test_not_paths(path: str) -> None:
    with pytest.raises(ValueError):
        v.absolute_path(path)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("ALL", "ALL"),
        ("10.0.0.1", "10.0.0.1"),
        ("10.0.0.0/24", "10.0.0.0/24"),
        ("10.0.0.5/24", "10.0.0.5/24"),
        ("fe80::0001", "fe80::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::]/32", "2001:db8::/32"),
    ],
)
def test_initiator_addresses_in_one_spelling(text: str, canonical: str) -> None:
    assert v.initiator_address(text) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "all",
        "10.0.0.256",
        "010.0.0.1",
        "10.0.0.0/33",
        "10.0.0.0/024",
        "fe80::1%eth0",
        "10.0.0.1 --op delete",
        "host.example",
        "1.2.3.4`id`",
        "::/129",
    ],
)
def test_not_initiator_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        v.initiator_address(text)


def test_chap_accounts() -> None:
    parse = v.chap_account(Direction.OUTGOING)
    assert parse("alice secret-12345") == ChapAccount("alice", "secret-12345", Direction.OUTGOING)
    for bad in (
        "alice",
        "alice  secret-12345",
        "alice secret-12345 x",
        "alice short",
        "-u secret-12345",
        "alice secret,password=x",
        "a\tsecret-12345",
        "alice " + "s" * 256,
        "al=ce secret-12345",
    ):
        with pytest.raises(ValueError) as caught:
            parse(bad)
        assert "secret-12345" not in str(caught.value)


def test_a_secret_never_shows_in_a_repr() -> None:
    assert "hunter2hunter2" not in repr(ChapAccount("u", "hunter2hunter2"))


def test_mode_pages() -> None:
    assert v.mode_page("8:0:2:0x10:255") == ModePage(8, 0, (16, 255))
    assert str(v.mode_page("0x0a:0:1:7")) == "10:0:1:7"
    for bad in (
        "8:0",
        "8:0:2:1",
        "8:0:1:256",
        "64:0:0",
        "8:0:1:-1",
        "8:0:1:1,path=/x",
        "8:0:1:0x",
        "8:0:1: 1",
    ):
        with pytest.raises(ValueError):
            v.mode_page(bad)


def test_numbers_are_plain_ascii_decimals_in_range() -> None:
    parse = v.number(1, 65535)
    assert parse("3260") == 3260
    for bad in ("0", "65536", "+1", "-1", "0x10", "010", " 1", "1.0", "²", ""):
        with pytest.raises(ValueError):
            parse(bad)


def test_block_sizes_and_bsoflags_and_params() -> None:
    assert k.LUN_KEYS["block-size"].parse("4096") == 4096
    with pytest.raises(ValueError):
        k.LUN_KEYS["block-size"].parse("1000")
    assert [f.value for f in k.LUN_KEYS["bsoflags"].parse("sync:direct")] == ["sync", "direct"]
    with pytest.raises(ValueError):
        k.LUN_KEYS["bsoflags"].parse("sync:sync")
    assert k.lun_params("readonly=1,thin_provisioning=1") == (
        ("readonly", 1),
        ("thin_provisioning", 1),
    )
    for bad in ("path=/etc/shadow", "readonly=2", "readonly", "scsi_id=a,b", "mode_page=8:0:0"):
        with pytest.raises(ValueError):
            k.lun_params(bad)
    with pytest.raises(ValueError, match="rbd and glfs"):
        k.LUN_KEYS["bsopts"].parse("conf=/etc/ceph/ceph.conf")
