"""Our reader against the real thing: Perl's Config::General with tgt-admin's options, and
tgt-admin itself.

tgt-admin reads its config with
`ParseConfig(-ConfigFile => F, -UseApacheInclude => 1, -IncludeDirectories => 1,
-IncludeGlob => 1, -MergeDuplicateBlocks => 1)`, run (by tgtwatch) from the config's
directory. For every config here:
- when our reader accepts it, Config::General reads exactly the same hash (every key,
  value, block and name), and accepts it;
- when Config::General refuses it, so does tgtwatch (reader or grammar);
- `tgt-admin -p` (pretend: prints the tgtadm commands it would run) on our canonical
  rendering prints the same commands as on the original file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.every_key import every_key_text
from tgtwatch.config.grammar import Dialect
from tgtwatch.config.raw import Block
from tgtwatch.config.tgtconf import ParsedConfig, parse, read
from tgtwatch.config.trust import TrustedFiles, TrustPolicy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

PERL_DUMP = r"""
use strict;
use warnings;
use Config::General qw(ParseConfig);
use JSON::PP;
my $file = shift;
my %out = (warnings => []);
local $SIG{__WARN__} = sub { push @{$out{warnings}}, $_[0] };
my %conf = eval {
    ParseConfig(-ConfigFile => $file, -UseApacheInclude => 1, -IncludeDirectories => 1,
                -IncludeGlob => 1, -MergeDuplicateBlocks => 1);
};
if ($@) { $out{error} = "$@"; } else { $out{config} = \%conf; }
print JSON::PP->new->canonical->allow_nonref->encode(\%out);
"""


def _perl_ready() -> bool:
    if shutil.which("perl") is None:
        return False
    done = subprocess.run(
        ["perl", "-MConfig::General", "-MJSON::PP", "-e", "1"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    return done.returncode == 0


if not _perl_ready():
    pytest.skip("perl with Config::General and JSON::PP is missing", allow_module_level=True)


def perl_view(config: Path) -> dict[str, Any]:
    done = subprocess.run(
        ["perl", "-e", PERL_DUMP, config.name],
        cwd=config.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def as_perl_hash(block: Block) -> dict[str, Any]:
    """Our blocks as Config::General's hash: a repeated key becomes a list, named blocks
    of one kind a hash of names, duplicates merged (-MergeDuplicateBlocks)."""
    found: dict[str, Any] = {}
    for option in block.options:
        if option.key in found:
            old = found[option.key]
            found[option.key] = (
                [*old, option.value] if isinstance(old, list) else [old, option.value]
            )
        else:
            found[option.key] = option.value
    for child in block.blocks:
        if not isinstance(found.get(child.kind, {}), dict):
            raise ValueError(f"<{child.kind}> is also an option")  # Config::General croaks
        inner = as_perl_hash(child)
        if child.name is None:
            found[child.kind] = _merge(found.get(child.kind, {}), inner)
        else:
            named = found.setdefault(child.kind, {})
            named[child.name] = _merge(named.get(child.name, {}), inner)
    return found


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _merge(merged[key], value)
        else:
            left = merged[key] if isinstance(merged[key], list) else [merged[key]]
            merged[key] = left + (value if isinstance(value, list) else [value])
    return merged


def ours(config: Path) -> tuple[dict[str, Any] | None, ParsedConfig]:
    source = TrustedFiles(config.parent, TrustPolicy(owner_uid=os.getuid()))
    reading = read(config, source)
    parsed = parse(config, source)
    try:
        view = None if reading.problems else as_perl_hash(reading.root)
    except ValueError:
        view = None
    return view, parsed


def assert_agree(config: Path) -> None:
    """Whatever we read, Config::General reads the same; whatever it refuses, we refuse."""
    theirs = perl_view(config)
    mine, parsed = ours(config)
    if "error" in theirs:
        assert parsed.problems, f"Config::General refuses it, we accept it: {theirs['error']}"
        return
    if mine is not None:
        assert mine == theirs["config"], (config.read_text(), theirs)


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o644)
    return root / "t.conf"


A = "iqn.2026-01.com.example:a"
B = "iqn.2026-01.com.example:b"
HAND_WRITTEN: list[dict[str, str]] = [
    {"t.conf": f'SOCKET_OPTS="3263"\nPORTAL_OPTS="0.0.0.0:3263"\n<target {A}>\n</target>\n'},
    {"t.conf": "SOCKET_OPTS 3263\nPORTAL_OPTS = [::]:3263\n"},
    {"t.conf": "PORTAL_OPTS='0.0.0.0:3263'\nA=\nB\nC=0\nD=\"\"\n"},
    {"t.conf": 'SOCKET_OPTS="3263" # the port\nPORTAL_OPTS=h#x:1 # c\n'},
    {"t.conf": "/* SOCKET_OPTS=1\nPORTAL_OPTS=2 */\nSOCKET_OPTS=3 /* inline */\n/*/\n"},
    {"t.conf": f"  /*\n<target {B}>\n</target>\n  */\n<target {A}>\n</target>\n"},
    {"t.conf": f"# quiet */ <target {A}>\n</target>\n"},
    {"t.conf": "PORTAL_OPTS=0.0.0.0:\\\n   3263\nSOCKET_OPTS=32\\\n  6\\\n  3\n"},
    {"t.conf": "A=x\\\n/* c */\nB=2\nC=y\\\n/*\nz\n*/ D=4\n\\\ninclude e.inc\n", "e.inc": "E=5\n"},
    {
        "t.conf": f"<target {A}>\n backing-store /srv/a\n backing-store /srv/a\n"
        f" direct-store /srv/d\n</target>\n<target {B}>\n</target>\n<target {A}>\n"
        " backing-store /srv/b\n MaxConnections 1\n</target>\n"
    },
    {
        "t.conf": f"<target {A}>\n <backing-store /srv/x>\n  lun 5\n </backing-store>\n"
        " <backing-store /srv/y>\n </backing-store>\n</target>\n"
    },
    {
        "t.conf": "SOCKET_OPTS=1\ninclude conf.d/*.conf\nInclude extra.inc\n",
        "conf.d/b.conf": f"<target {B}>\nbacking-store /srv/b\n</target>\n",
        "conf.d/a.conf": f"<target {A}>\n</target>\nPORTAL_OPTS=0.0.0.0:1\n",
        "conf.d/.hidden.conf": "<target iqn.2026-01.x:hidden>\n</target>\n",
        "conf.d/a.conf~": "<target iqn.2026-01.x:backup>\n</target>\n",
        "extra.inc": "<target iqn.2026-01.x:e>\nbacking-store /e1\nbacking-store /e2\n</target>\n",
    },
    {
        "t.conf": "INCLUDE dir\ninclude nothing/*.conf\nincludeoptional missing.conf\n"
        "IncludeOptional 'opt.inc'\n",
        "opt.inc": "O=1\n",
        "dir/2": f"<target {B}>\n</target>\n",
        "dir/1": f"<target {A}>\nbacking-store /srv/1\n</target>\n",
    },
    {"t.conf": f"<target {A}>\n include luns.inc\n</target>\n", "luns.inc": "backing-store /b\n"},
    {"t.conf": "include 'q.inc'\n", "q.inc": f'<target {A}>\nbacking-store "/srv/q"\n</target>\n'},
    {"t.conf": 'include"q.inc"\n', "q.inc": "Q=1\n"},
    {"t.conf": "include sub/x.inc\n", "sub/x.inc": "include sub/y.inc\n", "sub/y.inc": "Y=1\n"},
    {"t.conf": f"<target {A}/>\n<target {B}>\n<backing-store /x/>\n</target>\n"},
    {"t.conf": f"A=1\r\nSOCKET_OPTS=3263\r\n<target {A}>\r\n</target>\r\n"},
    {"t.conf": f"\t<target   {A}>\n\tbacking-store\t/t\n\t</target>\n"},
    {"t.conf": 'key a b   c\nkey2 = a = b\nkey3="a b"\nkey4 "a\nkey5 a"\n'},
]


@pytest.mark.parametrize("files", HAND_WRITTEN, ids=lambda f: f["t.conf"][:30])
def test_hand_written_configs_read_the_same(tmp_path: Path, files: dict[str, str]) -> None:
    config = write_tree(tmp_path, files)
    mine, _ = ours(config)
    assert mine is not None, "we should read this one"
    assert_agree(config)


@pytest.mark.parametrize(
    "files",
    [
        {"t.conf": f"<target {A}>\n"},
        {"t.conf": "</target>\n"},
        {"t.conf": "include missing.conf\n"},
        {"t.conf": f"<target {A}>\n<backing-store /srv//>\n</backing-store>\n</target>\n"},
        {
            "t.conf": f"<target {A}>\n backing-store /a\n <backing-store /b>\n"
            " </backing-store>\n</target>\n"
        },
    ],
    ids=["unclosed", "stray-close", "missing-include", "empty-block", "mixed-lun-forms"],
)
def test_what_config_general_refuses_we_refuse(tmp_path: Path, files: dict[str, str]) -> None:
    config = write_tree(tmp_path, files)
    assert "error" in perl_view(config)
    assert ours(config)[1].problems


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (f'<"target" {A}>\n</target>\n', "a quoted block kind"),
        (f'<"target {A}">\n</target>\n', "a quoted whole tag: one key, no name"),
        ("key <<EOT\n<target iqn.2026-01.x:hidden>\n</target>\nEOT\n", "a here-document"),
        (f"<target \\\n {A}>\n</target>\n", "a continuation into a tag"),
        (f"<target {A}/> \n", "an empty block with a blank after it"),
        (f"<target {A} >\n</target>\n", "a blank in the name"),
        ("A=x \\# y\n", "an escape"),
    ],
)
def test_what_it_reads_differently_we_refuse(tmp_path: Path, text: str, why: str) -> None:
    config = write_tree(tmp_path, {"t.conf": text})
    mine, parsed = ours(config)
    assert mine is None and parsed.problems, why


# --- generated configs ------------------------------------------------------------------

_ws = st.sampled_from(["", " ", "  ", "\t"])
_key = st.sampled_from(["SOCKET_OPTS", "PORTAL_OPTS", "MaxConnections", "k-1", "iSNS"])
_value = st.text(st.sampled_from('abc019.:[]/-_ "#*<>=\\'), min_size=0, max_size=10)


@st.composite
def option_line(draw: st.DrawFn) -> str:
    key, value = draw(_key), draw(_value)
    form = draw(
        st.sampled_from(['{k}="{v}"', "{k}={v}", "{k} = {v}", "{k} {v}", "{k}\t{v}", "{k}"])
    )
    line = draw(_ws) + form.format(k=key, v=value)
    tail = draw(st.sampled_from(["", " # note", "\t#x", " /* c */", " ", "\r", " \\"]))
    return line + tail


@st.composite
def target_block(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from([A, B, "iqn.2026-01.x:c"]))
    tag = draw(
        st.sampled_from(
            [
                "<target {n}>",
                "<target  {n}>",
                '<target "{n}">',
                '<"target" {n}>',
                "<target {n} >",
                "< target {n}>",
                "<target\t{n}>",
            ]
        )
    )
    lines = [draw(_ws) + tag.format(n=name)]
    as_blocks = name == B
    for lun in draw(st.lists(st.sampled_from(["/srv/a", "/srv/b", "/srv/c/"]), max_size=3)):
        key = draw(st.sampled_from(["backing-store", "direct-store"]))
        if as_blocks:
            inner = draw(st.sampled_from(["", "  lun 3", "  readonly 1"]))
            lines += [f"  <{key} {lun}>", inner, f"  </{key}>"]
        else:
            lines.append(f"  {key} {lun}")
    lines += draw(st.lists(option_line(), max_size=2))
    lines.append(draw(_ws) + draw(st.sampled_from(["</target>", "</target >", "</ target>"])))
    return "\n".join(lines)


_filler = st.sampled_from(
    [
        "",
        "# comment",
        "/* one */",
        "/*\n<target iqn.2026-01.x:no>\n</target>\n*/",
        "# a */ b=1",
        "k <<EOT\nx\nEOT",
        "k=v \\\n  w",
        "\\",
        "<x/>",
        "include conf.d/*.conf",
    ]
)


@st.composite
def config_tree(draw: st.DrawFn) -> dict[str, str]:
    chunks = draw(st.lists(option_line(), max_size=3))
    chunks += draw(st.lists(target_block(), max_size=4))
    for _ in range(draw(st.integers(0, 3))):
        chunks.insert(draw(st.integers(0, len(chunks))), draw(_filler))
    files = {"conf.d/00.conf": "Z=1\n"}
    if draw(st.booleans()) and chunks:
        cut = draw(st.integers(0, len(chunks) - 1))
        moved, chunks = chunks[cut:], chunks[:cut]
        for i, chunk in enumerate(moved):
            files[f"conf.d/{i + 1:02d}.conf"] = chunk + "\n"
        chunks.append(draw(st.sampled_from(["include conf.d/*.conf", "include conf.d"])))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    files["t.conf"] = newline.join(chunks) + newline
    return files


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(config_tree())
def test_generated_configs_read_the_same_or_are_refused(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, str]
) -> None:
    assert_agree(write_tree(tmp_path_factory.mktemp("gen"), files))


# --- real tgt-admin: the rendering makes the same tgtadm calls as the file ---------------


def tgt_admin_commands(config: Path) -> list[str]:
    """What `tgt-admin -p -e` (pretend) would run, sorted (tgt-admin walks Perl hashes for
    some per-LUN settings, in no fixed order); no tgtd needed, none is touched."""
    done = subprocess.run(
        # a control port no tgtd listens on: pretend mode only prints the tgtadm commands
        ["tgt-admin", "-C", "64999", "-p", "-e", "-c", config.name],
        cwd=config.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return sorted(line for line in done.stdout.splitlines() if line.startswith("tgtadm"))


def assert_same_calls(config: Path, dialect: Dialect = Dialect.INSTANCE) -> list[str]:
    parsed = parse(
        config, TrustedFiles(config.parent, TrustPolicy(owner_uid=os.getuid())), dialect=dialect
    )
    assert parsed.problems == (), parsed.problems
    rendering = config.parent / ".rendering.conf"
    rendering.write_text(parsed.flat)
    expected = tgt_admin_commands(config)
    assert tgt_admin_commands(rendering) == expected
    return expected


def images(root: Path, text: str) -> None:
    for image in re.findall(rf"{re.escape(str(root))}/[^\s>]+", text):
        with open(image, "ab") as out:
            out.truncate(1 << 20)


needs_tgt_admin = pytest.mark.skipif(shutil.which("tgt-admin") is None, reason="no tgt-admin")


@needs_tgt_admin
@pytest.mark.parametrize(
    "config",
    [
        "etc/mytgt/conf.d/alpha.conf",
        "etc/mytgt/conf.d/beta.conf",
        "etc/mytgt/conf.d/gamma.conf",
        "etc/tgt/targets.conf",
    ],
)
def test_tgt_admin_on_the_sample_conf(tmp_path: Path, config: str) -> None:
    tree = tmp_path / "sample"
    shutil.copytree(REPO / "sample-conf", tree)
    store = tmp_path / "images"
    store.mkdir()
    # tgt-admin skips LUNs whose backing file is missing: point them at real files
    for path in tree.rglob("*.conf"):
        text = path.read_text().replace("/var/lib/tgtwatch/sample/", f"{store}/")
        path.write_text(text)
        images(store, text)
    dialect = Dialect.DEFAULT if config.startswith("etc/tgt") else Dialect.INSTANCE
    calls = assert_same_calls(tree / config, dialect)
    assert any("--mode logicalunit" in call for call in calls)
    assert_agree(tree / config)


@needs_tgt_admin
def test_tgt_admin_on_the_every_key_file(tmp_path: Path) -> None:
    stores = [tmp_path / name for name in ("a.img", "b.img", "c.img")]
    text = every_key_text(3263, A, *(str(s) for s in stores))
    images(tmp_path, text)
    config = write_tree(tmp_path / "conf", {"t.conf": text})
    calls = assert_same_calls(config)
    assert "--lun 5" in " ".join(calls) and '--params "thin_provisioning=1"' in " ".join(calls)
    assert_agree(config)


@needs_tgt_admin
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(st.sampled_from(["d10", "d2", "d1", "x"]), max_size=4, unique=True),
    st.lists(st.sampled_from(["d3", "e"]), max_size=2, unique=True),
    st.lists(st.integers(1, 4), max_size=2),
    st.sampled_from(["", "readonly 1", "write-cache off", "mode_page 10:0:1:1", "bs-type aio"]),
)
def test_tgt_admin_numbers_luns_as_the_rendering_says(
    tmp_path_factory: pytest.TempPathFactory,
    backing: list[str],
    direct: list[str],
    explicit: list[int],
    setting: str,
) -> None:
    root = tmp_path_factory.mktemp("luns")
    lines = [f"<target {A}>", setting]
    for i, name in enumerate(backing):
        lines.append(f"<backing-store {root}/{name}>")
        if i < len(explicit) and explicit[i] not in explicit[:i]:
            lines.append(f"lun {explicit[i]}")
        lines.append("</backing-store>")
    lines += [f"direct-store {root}/{name}" for name in direct]
    lines.append("</target>")
    text = "\n".join(lines) + "\n"
    images(root, text)
    assert_same_calls(write_tree(root, {"t.conf": text}))
