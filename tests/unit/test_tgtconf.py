"""Reading a config with its includes into blocks (tgtconf.py): never an exception, every
problem with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import ROOT, MemorySource
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tgtwatch.config.grammar import Limits
from tgtwatch.config.tgtconf import MAX_CONFIG_BYTES, ParsedConfig, looked_in, parse
from tgtwatch.model.structs import Rule, TargetSpec

MAIN = ROOT / "t.conf"
A = "iqn.2026-01.com.example:a"
B = "iqn.2026-01.com.example:b"


def parse_text(text: str | bytes, **more: str | bytes) -> ParsedConfig:
    return parse(MAIN, MemorySource.of({"t.conf": text, **more}))


def shape(parsed: ParsedConfig) -> dict[str, int]:
    assert parsed.problems == (), parsed.problems
    return {t.name: t.luns for t in parsed.targets}


def only_problem(parsed: ParsedConfig) -> tuple[Rule, int | None, str]:
    assert len(parsed.problems) == 1, parsed.problems
    p = parsed.problems[0]
    return p.rule, p.line, p.message


def test_top_level_options_keep_their_line_numbers_and_path() -> None:
    parsed = parse_text('\n# c\nSOCKET_OPTS="3263"\n\nPORTAL_OPTS 0.0.0.0:3263\n')
    assert [(o.key, o.value, o.line, o.path) for o in parsed.options] == [
        ("SOCKET_OPTS", "3263", 3, MAIN),
        ("PORTAL_OPTS", "0.0.0.0:3263", 5, MAIN),
    ]
    assert parsed.values("PORTAL_OPTS")[0].value == "0.0.0.0:3263"


def test_targets_luns_and_merged_duplicates() -> None:
    parsed = parse_text(
        f"""
<target {A}>
    backing-store /srv/a1
    backing-store /srv/a1
    direct-store /dev/disk/by-id/x
</target>
<target {B}>
    <backing-store /srv/c1>
        lun 3
    </backing-store>
</target>
<target {A}>
    backing-store /srv/a2
</target>
"""
    )
    assert shape(parsed) == {A: 3, B: 1}
    assert parsed.targets[0].stores == ("/srv/a1", "/srv/a2", "/dev/disk/by-id/x")


def test_explicit_empty_blocks() -> None:
    parsed = parse_text(f"<target {A}/>\n<target {B}>\n  <backing-store /srv/a/>\n</target>\n")
    assert shape(parsed) == {A: 0, B: 1}


# --- includes ---------------------------------------------------------------------------


def test_include_glob_in_sorted_order_skipping_dotfiles_and_non_matches() -> None:
    parsed = parse_text(
        "include conf.d/*.conf\n",
        **{
            "conf.d/b.conf": f"<target {B}>\nbacking-store /srv/b\n</target>\n",
            "conf.d/a.conf": f"<target {A}>\n</target>\n",
            "conf.d/.hidden.conf": "<target iqn.2026-01.x:hidden>\n</target>\n",
            "conf.d/c.conf~": "<target iqn.2026-01.x:backup>\n</target>\n",
        },
    )
    assert shape(parsed) == {A: 0, B: 1}
    assert parsed.files == (MAIN, ROOT / "conf.d/a.conf", ROOT / "conf.d/b.conf")


@pytest.mark.parametrize("line", ["include x.inc", "INCLUDE 'x.inc'", 'Include "x.inc"'])
def test_include_forms(line: str) -> None:
    assert shape(parse_text(line + "\n", **{"x.inc": f"<target {A}>\n</target>\n"})) == {A: 0}


def test_include_a_directory_reads_every_file_in_order() -> None:
    parsed = parse_text(
        "include d\n",
        **{"d/2": f"<target {B}>\n</target>\n", "d/1": f"<target {A}>\n</target>\n"},
    )
    assert parsed.files == (MAIN, ROOT / "d/1", ROOT / "d/2")
    assert shape(parsed) == {A: 0, B: 0}


def test_glob_without_match_is_nothing_and_a_missing_file_a_problem() -> None:
    assert shape(parse_text("include nothing/*.conf\n")) == {}
    rule, line, message = only_problem(parse_text("\ninclude missing.conf\n"))
    assert (rule, line) == (Rule.INCLUDE, 2)
    assert "missing.conf" in message


def test_each_include_says_where_a_new_file_of_it_would_appear() -> None:
    parsed = parse_text(
        "include nothing/*.conf\ninclude d\nincludeoptional missing.conf\ninclude a/x?/b.inc\n"
        "include d\n",
        **{"d/1": f"<target {A}>\n</target>\n"},
    )
    assert parsed.looked_in == (ROOT / "nothing", ROOT / "d", ROOT / "missing.conf", ROOT / "a")
    assert parsed.include_dirs == parsed.looked_in  # none of them a file it read
    assert looked_in(Path("/etc/x/*.inc")) == Path("/etc/x")
    read = parse_text("include x.inc\n", **{"x.inc": f"<target {A}>\n</target>\n"})
    assert read.looked_in == (ROOT / "x.inc",) and read.include_dirs == ()


def test_includeoptional_of_a_missing_file_is_nothing() -> None:
    assert shape(parse_text("IncludeOptional missing.conf\n")) == {}
    parsed = parse_text("includeoptional x.inc\n", **{"x.inc": f"<target {A}>\n</target>\n"})
    assert shape(parsed) == {A: 0}


def test_relative_includes_resolve_against_the_config_directory() -> None:
    source = MemorySource.of(
        {
            "sub/t.conf": "include inc/a.inc\n",
            "sub/inc/a.inc": "include inc/b.inc\n",  # relative to the *config's* directory
            "sub/inc/b.inc": f"<target {B}>\n</target>\n",
        }
    )
    assert shape(parse(ROOT / "sub/t.conf", source)) == {B: 0}
    other = parse(ROOT / "sub/t.conf", source, base_dir=ROOT)
    assert other.problems[0].rule is Rule.INCLUDE


def test_include_inside_a_target_block_adds_to_that_target() -> None:
    parsed = parse_text(
        f"<target {A}>\n  backing-store /srv/a\n  include luns.inc\n</target>\n",
        **{"luns.inc": "backing-store /srv/b\nbacking-store /srv/c\n"},
    )
    assert shape(parsed) == {A: 3}


def test_a_file_included_twice_or_in_a_cycle_is_a_problem_not_a_loop() -> None:
    parsed = parse_text(
        "\ninclude a.inc\n", **{"a.inc": "include b.inc\n", "b.inc": "include t.conf\n"}
    )
    rule, line, message = only_problem(parsed)
    assert (rule, line, parsed.problems[0].path) == (Rule.INCLUDE, 1, ROOT / "b.inc")
    assert "cycle" in message


def test_includes_nested_too_deep_are_a_limit() -> None:
    files = {f"{i}.inc": f"include {i + 1}.inc\n" for i in range(30)}
    parsed = parse_text("include 0.inc\n", **files)
    assert {p.rule for p in parsed.problems} == {Rule.LIMIT}


def test_too_many_included_files_are_a_limit() -> None:
    files = {f"d/{i:03}": "" for i in range(20)}
    parsed = parse(
        MAIN, MemorySource.of({"t.conf": "include d\n", **files}), limits=Limits(files_per_config=5)
    )
    rule, line, message = only_problem(parsed)
    assert (rule, line) == (Rule.LIMIT, 1)
    assert "more than 5 files" in message


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("include " + "a" * 300, "longer than 255"),
        ("include conf.d/[ab].conf", "file name of"),
        ("include conf.d/{a,b}.conf", "file name of"),
        ("include a$(id)", "file name of"),
    ],
)
def test_include_names_outside_their_grammar_are_refused(line: str, words: str) -> None:
    rule, number, message = only_problem(parse_text("\n" + line + "\n"))
    assert (rule, number) == (Rule.SYNTAX, 2)
    assert words in message


def test_a_problem_in_an_included_file_names_that_file() -> None:
    parsed = parse_text("include a.inc\n", **{"a.inc": f"\n<target {A}>\n"})
    assert (parsed.problems[0].path, parsed.problems[0].line) == (ROOT / "a.inc", 2)


def test_an_include_cannot_close_the_including_files_block() -> None:
    parsed = parse_text(
        f"<target {A}>\ninclude a.inc\nbacking-store /srv/x\n</target>\n",
        **{"a.inc": f"<target {B}>\n"},
    )
    # the include's unclosed block is its problem; the includer's lines stay in its target
    assert [(p.path.name, p.line) for p in parsed.problems] == [("a.inc", 1)]


def test_sha256_covers_the_include_closure() -> None:
    files = {"t.conf": "include a.inc\n", "a.inc": 'SOCKET_OPTS="1"\n'}
    first = parse(MAIN, MemorySource.of(files)).sha256
    assert parse(MAIN, MemorySource.of(files)).sha256 == first
    changed = parse(MAIN, MemorySource.of({**files, "a.inc": 'SOCKET_OPTS="2"\n'})).sha256
    assert changed != first


def test_target_specs_carry_a_digest_of_what_is_rendered_for_them() -> None:
    one = parse_text(f"<target {A}>\nbacking-store /srv/a\n</target>\n<target {B}>\n</target>\n")
    two = parse_text(f"<target {A}>\nbacking-store /srv/z\n</target>\n<target {B}>\n</target>\n")
    assert one.targets[0].digest != two.targets[0].digest
    assert one.targets[1].digest == two.targets[1].digest
    assert one.targets[0] == TargetSpec(A, 1)


# --- malformed input: a problem with a line, never an exception -------------------------


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (f"\n<target {A}>\nbacking-store /srv/a\n", 2, "never closed"),
        ("\n\n</target>\n", 3, "closes no open block"),
        (f"<target {A}>\n</foo>\n", 2, "does not close"),
        (f"<target {A}>\n<backing-store /srv/a>\n</target>\n", 3, "does not close"),
        (f"\n<target {A}\n", 2, "malformed block tag"),
    ],
)
def test_malformed_blocks(text: str, line: int, words: str) -> None:
    rule, got_line, message = only_problem(parse_text(text))
    assert (rule, got_line) == (Rule.SYNTAX, line)
    assert words in message


def test_nul_bytes_invalid_utf8_and_big_files() -> None:
    assert only_problem(parse_text(b"\nB=2\x00\xff\n"))[:2] == (Rule.SYNTAX, 2)
    assert only_problem(parse_text(b"\n\nB=\xc3\x28\n"))[:2] == (Rule.SYNTAX, 3)
    big = b"# x\n" * (MAX_CONFIG_BYTES // 4 + 1)
    rule, _, message = only_problem(parse_text(big))
    assert rule is Rule.TRUST and "bytes" in message


def test_an_unreadable_main_file_is_a_problem() -> None:
    parsed = parse(ROOT / "missing.conf", MemorySource())
    assert [p.path for p in parsed.problems] == [ROOT / "missing.conf"]
    assert parsed.targets == () and parsed.tree is None


def test_parse_reads_through_the_source_only() -> None:
    source = MemorySource.of({"t.conf": "include a.inc\n", "a.inc": "\n"})
    parse(MAIN, source)
    assert source.reads == [MAIN, ROOT / "a.inc"]
    assert not Path("/cfg").exists()


# --- properties -------------------------------------------------------------------------

_FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_config_alphabet = st.sampled_from(
    [*"<>/\\#*\"' =\t\n\r", "target", "include", "x.inc", "backing-store", "/*", "*/", A]
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
    assert (parsed.tree is None) == bool(parsed.problems)
    for problem in parsed.problems:
        assert problem.line is None or problem.line >= 1


def test_reading_stops_after_twenty_problems() -> None:
    text = "".join(f"include missing{i}.conf\n" for i in range(1000))
    parsed = parse_text(text)
    assert len(parsed.problems) == 20 and parsed.problems[-1].line == 20
