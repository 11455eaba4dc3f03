"""Names, ignored files, ports and portals: the pure rules of an instance file."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tgtwatch.config.rules import (
    MAX_NAME_LENGTH,
    Portal,
    RuleError,
    is_candidate,
    name_problem,
    parse_port,
    parse_portal,
    resolve_ports,
)


@pytest.mark.parametrize(
    "name",
    ["vol-1", "a", "iqn.2026-11:x", "under_score", "UPPER", "0", "a" * MAX_NAME_LENGTH],
)
def test_allowed_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("a b", "' '"),
        ("x;y", "';'"),
        ("caf\u00e9", "'\u00e9'"),
        ("\u0661", "'\u0661'"),  # a non-ASCII digit
        ("a/b", "'/'"),
        ("a\n", "'\\n'"),  # `$` would match before a trailing newline
        ("$(reboot)", "$"),
        ("@x", "'@'"),
        ("a" * (MAX_NAME_LENGTH + 1), "more than 64"),
        ("default", "reserved"),
        ("", "allow"),
    ],
)
def test_rejected_names(name: str, words: str) -> None:
    problem = name_problem(name)
    assert problem is not None
    assert words in problem


@pytest.mark.parametrize(
    "filename",
    ["vol1.conf", "a b.conf", "x;y.conf", "default.conf", "x.y.conf"],
)
def test_candidates(filename: str) -> None:
    assert is_candidate(filename)


@pytest.mark.parametrize(
    "filename",
    [
        ".hidden.conf",
        ".vol1.conf.swp",
        "vol1.conf~",
        "vol1.conf.swp",
        "vol1.conf.swx",
        "vol1.conf.tmp",
        "vol1.tmp",
        "vol1.conf.dpkg-new",
        "vol1.conf.dpkg-old",
        "vol1.conf.dpkg-dist",
        "vol1.dpkg-new.conf",
        "vol1.conf.rpmnew",
        "vol1.conf.rpmsave",
        "vol1.conf.orig",
        "vol1.cfg",
        "vol1",
        "vol1.CONF",
        ".conf",
    ],
)
def test_ignored_files(filename: str) -> None:
    assert not is_candidate(filename)


@pytest.mark.parametrize(("text", "port"), [("1", 1), ("3260", 3260), ("65535", 65535)])
def test_ports(text: str, port: int) -> None:
    assert parse_port(text, "SOCKET_OPTS") == port


@pytest.mark.parametrize(
    "text", ["0", "65536", "99999", "", "-1", "+1", " 3260", "3260 ", "3260\n", "0x10", "\u0663"]
)
def test_bad_ports(text: str) -> None:
    with pytest.raises(RuleError, match="SOCKET_OPTS"):
        parse_port(text, "SOCKET_OPTS")


@pytest.mark.parametrize(
    ("text", "portal"),
    [
        ("0.0.0.0:3263", Portal("0.0.0.0", 3263)),
        ("192.168.1.10:3261", Portal("192.168.1.10", 3261)),
        ("[::]:3263", Portal("[::]", 3263)),
        ("[::1]:3263", Portal("[::1]", 3263)),
        ("[fe80::1%eth0]:3263", Portal("[fe80::1%eth0]", 3263)),
        ("[::ffff:10.0.0.1]:3263", Portal("[::ffff:10.0.0.1]", 3263)),
        ("localhost:3263", Portal("localhost", 3263)),
        ("iscsi-1.example.com:3263", Portal("iscsi-1.example.com", 3263)),
    ],
)
def test_portals(text: str, portal: Portal) -> None:
    assert parse_portal(text) == portal
    assert str(portal) == text


@pytest.mark.parametrize(
    "text",
    [
        "0.0.0.0:3263 -d 9",
        "0.0.0.0:3263,iser",
        "$(reboot):3260",
        "`reboot`:3260",
        "host;reboot:3260",
        "0.0.0.0:3260\n",
        "host\n:3260",
        "0.0.0.0\n-d 9:3260",
        "[::1%$(reboot)]:3260",
        "[fe80::1%eth0 -d 9]:3260",
        "[::1:3260",
        "::1:3260",
        "[nothex]:3260",
        "256.0.0.1:3260",
        "1.2.3:3260",
        "-host:3260",
        "host-:3260",
        "a..b:3260",
        ":3260",
        "0.0.0.0",
        "0.0.0.0:",
        "0.0.0.0:0",
        "0.0.0.0:65536",
        "h\u00f6st:3260",
        "a" * 64 + ":3260",
    ],
)
def test_bad_portals(text: str) -> None:
    with pytest.raises(RuleError, match="PORTAL_OPTS"):
        parse_portal(text)


def test_socket_opts_alone_listens_everywhere_on_that_port() -> None:
    assert resolve_ports("3263", None) == Portal("0.0.0.0", 3263)


def test_portal_opts_alone_is_enough() -> None:
    assert resolve_ports(None, "10.0.0.1:3264") == Portal("10.0.0.1", 3264)


def test_agreeing_socket_and_portal_opts() -> None:
    assert resolve_ports("3263", "[::]:3263") == Portal("[::]", 3263)


def test_disagreeing_ports() -> None:
    with pytest.raises(RuleError, match="disagree"):
        resolve_ports("3263", "0.0.0.0:3264")


def test_neither_names_a_port() -> None:
    with pytest.raises(RuleError, match="neither"):
        resolve_ports(None, None)


@pytest.mark.parametrize(("socket", "portal"), [("x", None), ("3263", "nope"), ("0", None)])
def test_bad_values_in_resolve(socket: str | None, portal: str | None) -> None:
    with pytest.raises(RuleError):
        resolve_ports(socket, portal)


_UNSAFE = set(" \t\n\r\x0b\x0c;&|$`'\"\\<>(){}*?!#~,=")


@settings(max_examples=120, deadline=None)
@given(
    st.one_of(
        st.text(max_size=30),
        st.text(alphabet=st.sampled_from("[]:.%0123456789abcdef-xyz $;`\n"), max_size=30),
        st.tuples(
            st.sampled_from(["0.0.0.0", "[::1]", "[fe80::1%", "host", "[::", "10.0.0."]),
            st.text(max_size=8),
            st.integers(-5, 70000).map(str),
        ).map(lambda t: f"{t[0]}{t[1]}:{t[2]}"),
    )
)
def test_any_accepted_portal_is_shell_safe(text: str) -> None:
    try:
        portal = parse_portal(text)
    except RuleError:
        return
    rendered = str(portal)
    assert rendered == text
    assert not set(rendered) & _UNSAFE
    assert rendered.isascii()
    assert 1 <= portal.port <= 65535
