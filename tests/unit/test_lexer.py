"""The lexer: Config::General's line handling replayed exactly, or the line refused."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tgtwatch.config.lexer import EOF_SEPARATOR, LexError, Line, LineKind, lex


def lines(text: str) -> list[tuple[str, str, str | None]]:
    return [(line.kind.value, line.key, line.value) for line in lex(text)]


def options(text: str) -> dict[str, str | None]:
    found = list(lex(text))
    assert all(line.kind is LineKind.OPTION for line in found), found
    return {line.key: line.value for line in found}


def refused(text: str) -> LexError:
    with pytest.raises(LexError) as caught:
        list(lex(text))
    return caught.value


# --- the key/value split: Perl's split /\s*=\s*|\s+/, $_, 2 --------------------------


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [
        ('SOCKET_OPTS="3263"', "SOCKET_OPTS", "3263"),
        ("SOCKET_OPTS=3263", "SOCKET_OPTS", "3263"),
        ("SOCKET_OPTS = 3263", "SOCKET_OPTS", "3263"),
        ('SOCKET_OPTS = "3263"', "SOCKET_OPTS", "3263"),
        ("default-driver   iscsi  ", "default-driver", "iscsi"),
        ("  indented value", "indented", "value"),
        ("key a b c", "key", "a b c"),
        ("key a=b", "key", "a=b"),  # the first separator is the blank
        ("key=a b", "key", "a b"),
        ("key\t=\tv", "key", "v"),
        ("PORTAL_OPTS='0.0.0.0:3263'", "PORTAL_OPTS", "'0.0.0.0:3263'"),  # single quotes kept
        ('A="x"y"', "A", 'x"y'),
        ('A="', "A", ""),
        ('A=""', "A", ""),
        ("A=", "A", ""),
        ("A=0", "A", "0"),
        ("lonely", "lonely", None),
    ],
)
def test_option_line_forms(line: str, key: str, value: str | None) -> None:
    assert options(line + "\n") == {key: value}


def test_lines_keep_their_numbers() -> None:
    found = list(lex("\n# c\nA=1\n\nB 2\n"))
    assert [(line.key, line.number) for line in found] == [("A", 3), ("B", 5)]


# --- comments: C comments first, then `#`, in Config::General's order ---------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# all comment\nA=1\n", {"A": "1"}),
        ("A=1 # trailing\n", {"A": "1"}),
        ('A="1" # trailing\n', {"A": "1"}),
        ("A=1# glued\n", {"A": "1"}),
        ('A="x # y"\n', {"A": '"x'}),  # `#` starts a comment even inside quotes
        ("   # indented comment\nB=2\n", {"B": "2"}),
        ("/* c comment */\nA=1\n", {"A": "1"}),
        ("A=1 /* inline */\n", {"A": "1"}),
        ("/*\nA=1\nB=2\n*/\nC=3\n", {"C": "3"}),
        ("/* start\nA=1\n end */ D=4\n", {"D": "4"}),
        ("/* one line */ E=5\n", {"E": "5"}),
        # `/*` inside a value is no comment (only at a line's start, or closed on the line)
        ("A=conf.d/*.conf\nB=2\n", {"A": "conf.d/*.conf", "B": "2"}),
        ("A=1 /* a */ b /* c */\n", {"A": "1"}),  # from the first /* to the last */
        ("/*/\nA=1\n", {"/*/": None, "A": "1"}),  # opens and closes: the line itself stays
        ("# see /* x\nA=1\n", {"A": "1"}),
        ("/* a\n/* b */\nA=1\n*/\nB=2\n", {"B": "2"}),
        ("A=1 # 中文 comment é\n", {"A": "1"}),  # any UTF-8 inside a comment
    ],
)
def test_comments(text: str, expected: dict[str, str | None]) -> None:
    assert options(text) == expected


def test_a_comment_end_in_a_hash_comment_reveals_the_rest_as_config_lines() -> None:
    # Config::General strips C comments before `#` ones: what follows `*/` is read. So do we.
    assert lines("# harmless */ <target iqn.2026-01.x:y>\n</target>\n") == [
        ("open", "target", "iqn.2026-01.x:y"),
        ("close", "target", None),
    ]


# --- continuations ----------------------------------------------------------------------


def test_line_continuations_join_with_leading_blanks_dropped() -> None:
    found = list(lex("A=one \\\n   two \\\n   three\nB=2\n"))
    assert [(line.key, line.value, line.number) for line in found] == [
        ("A", "one two three", 1),
        ("B", "2", 4),
    ]


def test_a_comment_line_ends_a_continuation_and_a_c_comment_does_not() -> None:
    assert options("A=x\\\n# c\nB=2\n") == {"A": "x", "B": "2"}
    assert options("A=x\\\n/* c */\nB=2\n") == {"A": "x", "B": "2"}
    assert options("A=x\\\n/*\n c\n*/ B=2\n") == {"A": "xB=2"}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("A=x \\", "ends inside a continued line"),  # Config::General drops it silently
        ("A=x \\\n", "ends inside a continued line"),
        ("<target \\\n  iqn.2026-01.x:y>\n", "becomes a block tag"),
        ("A=1\\\n<target iqn.2026-01.x:y/>\n", "ends in a block tag"),
        ("A=x\\\\\n", "backslash"),  # an escaped backslash: no continuation, an escape
        ("A=x \\# y\n", "backslash"),
        ("A=x\\\r\nB=1\n", "backslash"),  # CR after the backslash: no continuation either
    ],
)
def test_continuations_it_cannot_read_the_same_are_refused(text: str, words: str) -> None:
    assert words in str(refused(text))


def test_an_include_reached_by_continuation_is_an_option_as_for_config_general() -> None:
    assert lines("A=\\\ninclude x.inc\n") == [("option", "A", "include x.inc")]
    # an empty continued line is false to Perl: the next line reads as usual
    assert lines("\\\ninclude x.inc\n") == [("include", "include", "x.inc")]
    assert "just 0" in str(refused("0\\\nA=1\n"))


# --- block tags -------------------------------------------------------------------------


def test_block_tags() -> None:
    assert lines("<target iqn.2026-01.x:a>\n\t<backing-store /srv/a>\n</backing-store>\n") == [
        ("open", "target", "iqn.2026-01.x:a"),
        ("open", "backing-store", "/srv/a"),
        ("close", "backing-store", None),
    ]
    assert lines("<target   iqn.2026-01.x:a>\n<target>\n") == [
        ("open", "target", "iqn.2026-01.x:a"),
        ("open", "target", None),
    ]


def test_explicit_empty_blocks_in_their_plain_form() -> None:
    assert lines("<target iqn.2026-01.x:e/>\n  <backing-store /srv/a/>\n") == [
        ("open", "target", "iqn.2026-01.x:e"),
        ("close", "target", None),
        ("open", "backing-store", "/srv/a"),
        ("close", "backing-store", None),
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('<"target" iqn.2026-01.x:a>\n', "quoted block tag"),
        ('<"target iqn.2026-01.x:a">\n', "quoted block tag"),
        ('<target "iqn.2026-01.x:a">\n', "quoted block tag"),
        ("<target iqn.2026-01.x:a >\n", "before '>'"),  # the blank would be in the name
        ("< target iqn.2026-01.x:a>\n", "after '<'"),
        ("<target a b>\n", "malformed"),
        ("<target a>b>\n", "malformed"),
        ("</ target>\n", "after '<'"),
        ("</target x>\n", "malformed"),
        ("<target t\n", "malformed"),
        ("<>\n", "malformed"),
        ("</>\n", "malformed"),
        ("<target iqn.2026-01.x:e/> \n", "not plain"),  # Config::General keeps the `/`
        ("<target iqn.2026-01.x:e/>\r\n", "not plain"),
        ("x <target iqn.2026-01.x:e/>\n", "not plain"),  # it would close the open block
        ("key <<EOT\n<target iqn.2026-01.x:hidden>\nEOT\n", "here-document"),
        ("key = <<EOT\nx\nEOT\n", "here-document"),
        ("A=<<\n", "here-document"),
        (f"A={EOF_SEPARATOR}\n", "here-document separator"),
    ],
)
def test_tags_and_heredocs_it_cannot_read_the_same_are_refused(text: str, words: str) -> None:
    assert words in str(refused(text))


# --- includes: the two -UseApacheInclude patterns ----------------------------------------


@pytest.mark.parametrize(
    ("line", "keyword", "path"),
    [
        ("include x.inc", "include", "x.inc"),
        ("Include x.inc", "include", "x.inc"),
        ("INCLUDE   x.inc  ", "include", "x.inc"),
        ('include "x.inc"', "include", "x.inc"),
        ("include 'x.inc'", "include", "x.inc"),
        ('include"x.inc"', "include", "x.inc"),
        ("includeoptional x.inc", "includeoptional", "x.inc"),
        ("IncludeOptional 'x.inc'", "includeoptional", "x.inc"),
        ("include optional", "include", "optional"),
        # trailing blanks after a quote: the quoted pattern fails, the plain one keeps quotes
        ('include "x.inc" ', "include", '"x.inc"'),
        ("include = x.inc", "include", "= x.inc"),
    ],
)
def test_include_forms(line: str, keyword: str, path: str) -> None:
    assert lines(line + "\n") == [("include", keyword, path)]


def test_lines_that_only_look_like_includes_are_options() -> None:
    assert options("includex y\ninclude=x\n") == {"includex": "y", "include": "x"}


@pytest.mark.parametrize("line", ["include 0", 'include ""', "include ''"])
def test_includes_config_general_reads_as_false_are_refused(line: str) -> None:
    assert "usable file name" in str(refused(line + "\n"))


# --- bytes ------------------------------------------------------------------------------


def test_crlf_lines() -> None:
    assert options("A=1\r\nB=2\r\n") == {"A": "1", "B": "2"}
    assert "carriage return" in str(refused("A=1\rB=2\n"))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("A=1\nB=\x0c2\n", 2),
        ("A=é\n", 1),
        ("A=1\n\x1b[31m\n", 2),
        ("\ufeffA=1\n", 1),
    ],
)
def test_unprintable_bytes_outside_comments_are_refused(text: str, line: int) -> None:
    assert refused(text).number == line


# --- properties -------------------------------------------------------------------------

_alphabet = st.sampled_from(
    [*"<>/\\#*\"' =\t\n\r", "target", "include", "x.inc", "<<", "/*", "*/", "a", "1"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_alphabet | st.text(max_size=4), max_size=80).map("".join))
def test_lex_returns_lines_or_one_lex_error(text: str) -> None:
    try:
        found: list[Line] = list(lex(text))
    except LexError as exc:
        assert exc.number >= 1
        return
    for line in found:
        assert line.number >= 1
        assert "\\" not in line.text and "<<" not in line.text
