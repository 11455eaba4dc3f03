"""The tgt config parser: Config::General's syntax as tgt-admin uses it, never an exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import ROOT, MemorySource
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tgtwatch.config.tgtconf import MAX_CONFIG_BYTES, ParsedConfig, parse, render
from tgtwatch.model.structs import Rule, TargetSpec

MAIN = ROOT / "t.conf"


def parse_text(text: str | bytes, **more: str | bytes) -> ParsedConfig:
    return parse(MAIN, MemorySource.of({"t.conf": text, **more}))


def values(parsed: ParsedConfig) -> dict[str, str]:
    return {o.key: o.value for o in parsed.options}


def only_problem(parsed: ParsedConfig) -> tuple[Rule, int | None, str]:
    assert len(parsed.problems) == 1, parsed.problems
    p = parsed.problems[0]
    return p.rule, p.line, p.message


# --- top-level options -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [
        ('SOCKET_OPTS="3263"', "SOCKET_OPTS", "3263"),
        ("SOCKET_OPTS=3263", "SOCKET_OPTS", "3263"),
        ("SOCKET_OPTS = 3263", "SOCKET_OPTS", "3263"),
        ('SOCKET_OPTS = "3263"', "SOCKET_OPTS", "3263"),
        ("default-driver iscsi", "default-driver", "iscsi"),
        ("default-driver   iscsi  ", "default-driver", "iscsi"),
        ("  indented value", "indented", "value"),
        ("key a b c", "key", "a b c"),
        ("key a=b", "key", "a=b"),
        ("key=a b", "key", "a b"),
        ("PORTAL_OPTS='0.0.0.0:3263'", "PORTAL_OPTS", "'0.0.0.0:3263'"),  # single quotes kept
        ('A="x"y"', "A", 'x"y'),
        ('A="', "A", ""),
        ("A=", "A", ""),
        ("lonely", "lonely", ""),
    ],
)
def test_option_line_forms(line: str, key: str, value: str) -> None:
    parsed = parse_text(line + "\n")
    assert parsed.problems == ()
    assert values(parsed) == {key: value}


def test_options_keep_their_line_numbers_and_path() -> None:
    parsed = parse_text("\n# c\nA=1\n\nB 2\n")
    assert [(o.key, o.line, o.path) for o in parsed.options] == [("A", 3, MAIN), ("B", 5, MAIN)]
    assert parsed.values("B")[0].value == "2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# all comment\nA=1\n", {"A": "1"}),
        ("A=1 # trailing\n", {"A": "1"}),
        ('A="1" # trailing\n', {"A": "1"}),
        ("A=1# glued\n", {"A": "1"}),
        ("A=x \\# y\n", {"A": "x # y"}),
        ('A="x \\# y"\n', {"A": "x # y"}),
        ("   # indented comment\nB=2\n", {"B": "2"}),
        ("/* c comment */\nA=1\n", {"A": "1"}),
        ("A=1 /* inline */\n", {"A": "1"}),
        ("/*\nA=1\nB=2\n*/\nC=3\n", {"C": "3"}),
        ("/* start\nA=1\n end */ D=4\n", {"D": "4"}),
        ("/* one line */ E=5\n", {"E": "5"}),
        # `/*` inside a value is no comment (Config::General only starts one at line start)
        ("A=conf.d/*.conf\nB=2\n", {"A": "conf.d/*.conf", "B": "2"}),
    ],
)
def test_comments(text: str, expected: dict[str, str]) -> None:
    parsed = parse_text(text)
    assert parsed.problems == ()
    assert values(parsed) == expected


def test_line_continuations() -> None:
    parsed = parse_text("A=one \\\n   two \\\n   three\nB=2\n")
    assert values(parsed) == {"A": "one two three", "B": "2"}
    assert [o.line for o in parsed.options] == [1, 4]


def test_continuation_at_end_of_file_and_escaped_backslash() -> None:
    assert values(parse_text("A=x \\")) == {"A": "x"}
    # `\\` at the end is an escaped backslash, not a continuation
    assert values(parse_text("A=x\\\\\nB=2\n")) == {"A": "x\\\\", "B": "2"}


def test_crlf_lines_and_only_newline_ends_a_line() -> None:
    assert values(parse_text("A=1\r\nB=2\r\n")) == {"A": "1", "B": "2"}
    # a form feed is not a line break for Perl: the line numbers stay the file's
    parsed = parse_text("A=1\x0cX\n<target t>\n</target\n")
    assert parsed.problems[0].line == 3


# --- targets and LUNs ------------------------------------------------------------------


def test_target_blocks_and_lun_counting() -> None:
    parsed = parse_text(
        """
<target iqn.a>
    backing-store /a1
    backing-store /a2
    direct-store /dev/sdx
    initiator-address ALL
</target>
<target iqn.b>
</target>
<target "iqn.c">
    <backing-store /c1>
        lun 3
    </backing-store>
    <backing-store /c2>
    </backing-store>
</target>
"""
    )
    assert parsed.problems == ()
    assert parsed.targets == (
        TargetSpec("iqn.a", 3),
        TargetSpec("iqn.b", 0),
        TargetSpec("iqn.c", 2),
    )


def test_duplicate_luns_count_once_and_duplicate_targets_merge() -> None:
    parsed = parse_text(
        """
<target iqn.a>
    backing-store /a1
    backing-store /a1
</target>
<target iqn.b>
    backing-store /b1
</target>
<target iqn.a>
    backing-store /a1
    backing-store /a2
</target>
"""
    )
    assert parsed.problems == ()
    assert parsed.targets == (TargetSpec("iqn.a", 2), TargetSpec("iqn.b", 1))


def test_lun_given_as_line_and_as_block_is_a_problem() -> None:
    parsed = parse_text(
        "<target t>\n backing-store /a\n <backing-store /b>\n </backing-store>\n</target>\n"
    )
    rule, line, message = only_problem(parsed)
    assert (rule, line) == (Rule.SYNTAX, 1)
    assert "both as a line and as a block" in message


def test_target_without_a_name_is_a_problem() -> None:
    rule, line, _ = only_problem(parse_text("A=1\n<target>\n</target>\n"))
    assert (rule, line) == (Rule.SYNTAX, 2)


def test_explicit_empty_blocks() -> None:
    parsed = parse_text("<target e/>\n<target f>\n  <backing-store /a/>\n</target>\n")
    assert parsed.problems == ()
    assert parsed.targets == (TargetSpec("e", 0), TargetSpec("f", 1))


def test_other_blocks_are_not_targets() -> None:
    parsed = parse_text("<Target t>\n</Target>\n<foo x>\nbacking-store /a\n</foo>\n")
    assert parsed.problems == ()
    assert parsed.targets == ()


def test_control_port_is_a_plain_option() -> None:
    parsed = parse_text("control-port 3270\n<target t>\n</target>\n")
    assert parsed.values("control-port")[0].value == "3270"


# --- includes ---------------------------------------------------------------------------


def test_include_glob_in_sorted_order_skipping_dotfiles_and_non_matches() -> None:
    parsed = parse_text(
        "include conf.d/*.conf\n",
        **{
            "conf.d/b.conf": "<target b>\nbacking-store /b\n</target>\n",
            "conf.d/a.conf": "<target a>\n</target>\n",
            "conf.d/.hidden.conf": "<target hidden>\n</target>\n",
            "conf.d/c.conf~": "<target backup>\n</target>\n",
        },
    )
    assert parsed.problems == ()
    assert parsed.targets == (TargetSpec("a", 0), TargetSpec("b", 1))
    assert parsed.files == (MAIN, ROOT / "conf.d/a.conf", ROOT / "conf.d/b.conf")


@pytest.mark.parametrize("keyword", ["include", "Include", "INCLUDE"])
def test_include_keyword_is_case_insensitive(keyword: str) -> None:
    parsed = parse_text(f"{keyword} x.inc\n", **{"x.inc": "<target x>\n</target>\n"})
    assert parsed.targets == (TargetSpec("x", 0),)


@pytest.mark.parametrize("quoted", ['"x.inc"', "'x.inc'"])
def test_include_strips_either_quote(quoted: str) -> None:
    parsed = parse_text(f"include {quoted}\n", **{"x.inc": "<target x>\n</target>\n"})
    assert parsed.problems == ()
    assert parsed.targets == (TargetSpec("x", 0),)


def test_include_a_directory_reads_every_file_in_order() -> None:
    parsed = parse_text(
        "include d\n", **{"d/2": "<target two>\n</target>\n", "d/1": "<target one>\n</target>\n"}
    )
    assert parsed.files == (MAIN, ROOT / "d/1", ROOT / "d/2")
    assert {t.name for t in parsed.targets} == {"one", "two"}


def test_glob_without_match_is_silently_nothing() -> None:
    parsed = parse_text("include nothing/*.conf\nA=1\n")
    assert parsed.problems == ()
    assert values(parsed) == {"A": "1"}


def test_missing_plain_include_is_a_problem_with_its_line() -> None:
    rule, line, message = only_problem(parse_text("A=1\ninclude missing.conf\n"))
    assert (rule, line) == (Rule.INCLUDE, 2)
    assert "missing.conf" in message


def test_includeoptional_of_a_missing_file_is_nothing() -> None:
    assert parse_text("IncludeOptional missing.conf\n").problems == ()
    parsed = parse_text("includeoptional x.inc\n", **{"x.inc": "<target x>\n</target>\n"})
    assert parsed.targets == (TargetSpec("x", 0),)


def test_relative_includes_resolve_against_the_config_directory() -> None:
    source = MemorySource.of(
        {
            "sub/t.conf": "include inc/a.inc\n",
            "sub/inc/a.inc": "include inc/b.inc\n",  # relative to the *config's* directory
            "sub/inc/b.inc": "<target b>\n</target>\n",
        }
    )
    parsed = parse(ROOT / "sub/t.conf", source)
    assert parsed.problems == ()
    assert parsed.targets == (TargetSpec("b", 0),)
    other = parse(ROOT / "sub/t.conf", source, base_dir=ROOT)
    assert other.problems[0].rule is Rule.INCLUDE


def test_absolute_include() -> None:
    parsed = parse_text(f"include {ROOT}/abs.inc\n", **{"abs.inc": "A=1\n"})
    assert values(parsed) == {"A": "1"}


def test_include_inside_a_target_block_adds_to_that_target() -> None:
    parsed = parse_text(
        "<target t>\n  backing-store /a\n  include luns.inc\n</target>\n",
        **{"luns.inc": "backing-store /b\nbacking-store /c\n"},
    )
    assert parsed.problems == ()
    assert parsed.targets == (TargetSpec("t", 3),)


def test_a_file_included_twice_or_in_a_cycle_is_a_problem_not_a_loop() -> None:
    parsed = parse_text(
        "A=1\ninclude a.inc\n", **{"a.inc": "include b.inc\n", "b.inc": "include t.conf\n"}
    )
    rule, line, message = only_problem(parsed)
    assert (rule, line) == (Rule.INCLUDE, 1)
    assert parsed.problems[0].path == ROOT / "b.inc"
    assert "cycle" in message


def test_a_problem_in_an_included_file_names_that_file() -> None:
    parsed = parse_text("include a.inc\n", **{"a.inc": "\n<target x>\n"})
    assert parsed.problems[0].path == ROOT / "a.inc"
    assert parsed.problems[0].line == 2


def test_an_include_cannot_close_the_including_files_block() -> None:
    parsed = parse_text(
        "<target t>\ninclude a.inc\nbacking-store /x\n</target>\n",
        **{"a.inc": "<target inner>\n"},
    )
    # the include's unclosed block is its problem; the includer's lines stay in `t`
    assert [(p.path.name, p.line) for p in parsed.problems] == [("a.inc", 1)]
    assert TargetSpec("t", 1) in parsed.targets


def test_sha256_covers_the_include_closure() -> None:
    files = {"t.conf": "include a.inc\n", "a.inc": "A=1\n"}
    first = parse(MAIN, MemorySource.of(files)).sha256
    assert parse(MAIN, MemorySource.of(files)).sha256 == first
    changed = parse(MAIN, MemorySource.of({**files, "a.inc": "A=2\n"})).sha256
    assert changed != first


# --- malformed input: a problem with a line, never an exception -------------------------


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("A=1\n<target t>\nbacking-store /a\n", 2, "never closed"),
        ("A=1\n\n</target>\n", 3, "closes no open block"),
        ("<target t>\n</foo>\n", 2, "does not close"),
        ("<target t>\n<backing-store /a>\n</target>\n</target>\n", 3, "does not close"),
        ("A=1\n<target t\n", 2, "malformed block tag"),
    ],
)
def test_malformed_blocks(text: str, line: int, words: str) -> None:
    rule, got_line, message = only_problem(parse_text(text))
    assert rule is Rule.SYNTAX
    assert got_line == line
    assert words in message


def test_nul_bytes_and_binary_junk() -> None:
    rule, line, message = only_problem(parse_text(b"A=1\nB=2\x00\xff\xfe junk\n"))
    assert (rule, line) == (Rule.SYNTAX, 2)
    assert "NUL" in message


def test_invalid_utf8() -> None:
    rule, line, message = only_problem(parse_text(b"A=1\n\nB=\xc3\x28\n"))
    assert (rule, line) == (Rule.SYNTAX, 3)
    assert "UTF-8" in message


def test_a_10_mb_input_is_refused_without_parsing() -> None:
    big = b"A=1\n" * (10 * 1024 * 1024 // 4)
    assert len(big) > MAX_CONFIG_BYTES
    rule, _, message = only_problem(parse_text(big))
    assert rule is Rule.TRUST
    assert "bytes" in message


def test_an_unreadable_main_file_is_a_problem() -> None:
    parsed = parse(ROOT / "missing.conf", MemorySource())
    assert [p.path for p in parsed.problems] == [ROOT / "missing.conf"]
    assert parsed.targets == ()


def test_include_without_a_file() -> None:
    rule, line, _ = only_problem(parse_text('A=1\ninclude ""\n'))
    assert (rule, line) == (Rule.SYNTAX, 2)


# --- properties -------------------------------------------------------------------------

_FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_config_alphabet = st.sampled_from(
    [*"<>/\\#*\"' =\t\n\r", "target", "include", "x.inc", "backing-store", "/*", "*/"]
)


@_FAST
@given(st.binary(max_size=400))
def test_parse_never_raises_on_bytes(data: bytes) -> None:
    parsed = parse_text(data, **{"x.inc": data})
    assert all(p.path for p in parsed.problems)


@_FAST
@given(st.lists(_config_alphabet | st.text(max_size=5), max_size=60).map("".join))
def test_parse_never_raises_on_config_like_text(text: str) -> None:
    parsed = parse_text(text, **{"x.inc": text})
    for problem in parsed.problems:
        assert problem.line is None or problem.line >= 1


_word = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789.:-_"), min_size=1, max_size=12
)
_path = _word.map(lambda w: f"/srv/{w}")


@_FAST
@given(
    st.lists(st.tuples(st.sampled_from(["SOCKET_OPTS", "PORTAL_OPTS", "x-y"]), _word), max_size=3),
    st.dictionaries(_word, st.lists(_path, max_size=4), max_size=5),
)
def test_render_parses_back(options: list[tuple[str, str]], targets: dict[str, list[str]]) -> None:
    parsed = parse_text(render(options, targets))
    assert parsed.problems == ()
    assert [(o.key, o.value) for o in parsed.options] == options
    assert parsed.targets == tuple(
        TargetSpec(name, len(set(luns))) for name, luns in sorted(targets.items())
    )


def test_parse_reads_through_the_source_only() -> None:
    source = MemorySource.of({"t.conf": "include a.inc\n", "a.inc": "A=1\n"})
    parse(MAIN, source)
    assert source.reads == [MAIN, ROOT / "a.inc"]
    assert not Path("/cfg").exists()
