"""Our parser against the real thing: Config::General with tgt-admin's options, and tgt-admin.

tgt-admin reads its config with
`ParseConfig(-ConfigFile => F, -UseApacheInclude => 1, -IncludeDirectories => 1,
-IncludeGlob => 1, -MergeDuplicateBlocks => 1)`, run (by tgtwatch) from the config's
directory. For every config here, both must see the same targets (names, distinct LUNs)
and the same top-level SOCKET_OPTS / PORTAL_OPTS.
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

from tgtwatch.config.tgtconf import ParsedConfig, parse
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
if ($@) {
    $out{error} = "$@";
} else {
    $out{options} = {};
    for my $k (qw(SOCKET_OPTS PORTAL_OPTS)) {
        $out{options}{$k} = $conf{$k} if exists $conf{$k};
    }
    $out{targets} = {};
    my $t = $conf{target};
    if (ref $t eq 'HASH') {
        for my $name (keys %$t) {
            my $o = $t->{$name};
            my %luns;
            for my $key ('backing-store', 'direct-store') {
                my $v = ref $o eq 'HASH' ? $o->{$key} : undef;
                next unless defined $v;
                if (ref $v eq 'ARRAY') { $luns{$_} = 1 for @$v }
                elsif (ref $v eq 'HASH') { $luns{$_} = 1 for keys %$v }
                else { $luns{$v} = 1 }
            }
            $out{targets}{$name} = scalar keys %luns;
        }
    }
}
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


def our_view(config: Path) -> ParsedConfig:
    return parse(config, TrustedFiles(config.parent, TrustPolicy(owner_uid=os.getuid())))


def assert_agree(config: Path) -> ParsedConfig:
    theirs = perl_view(config)
    ours = our_view(config)
    assert "error" not in theirs, theirs
    assert ours.problems == (), ours.problems
    assert {t.name: t.luns for t in ours.targets} == theirs["targets"]
    assert {o.key: o.value for o in ours.options if o.key in theirs["options"]} == (
        theirs["options"]
    )
    assert {o.key for o in ours.options} >= set(theirs["options"])
    assert {o.key for o in ours.options if o.key in ("SOCKET_OPTS", "PORTAL_OPTS")} == set(
        theirs["options"]
    )
    # What tgt-admin is given (the flattened snapshot) reads the same to Config::General.
    flat = config.parent / ".flat-snapshot"
    flat.write_text(ours.flat)
    assert perl_view(flat) == theirs, ours.flat
    return ours


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o644)
    return root / "t.conf"


HAND_WRITTEN: list[dict[str, str]] = [
    {"t.conf": 'SOCKET_OPTS="3263"\nPORTAL_OPTS="0.0.0.0:3263"\n<target iqn.a>\n</target>\n'},
    {"t.conf": "SOCKET_OPTS 3263\nPORTAL_OPTS = [::]:3263\n"},
    {"t.conf": "PORTAL_OPTS='0.0.0.0:3263'\n"},
    {"t.conf": 'SOCKET_OPTS="3263" # the port\nPORTAL_OPTS=h\\#x:1 # c\n'},
    {"t.conf": "/* SOCKET_OPTS=1\nPORTAL_OPTS=2 */\nSOCKET_OPTS=3 /* inline */\n"},
    {"t.conf": "  /*\n<target hidden>\n</target>\n  */\n<target shown>\n</target>\n"},
    {"t.conf": "PORTAL_OPTS=0.0.0.0:\\\n   3263\nSOCKET_OPTS=32\\\n  6\\\n  3\n"},
    {
        "t.conf": "<target iqn.a>\n backing-store /a\n backing-store /a\n direct-store /d\n"
        "</target>\n<target iqn.b>\n</target>\n<target iqn.a>\n backing-store /b\n</target>\n"
    },
    {
        "t.conf": '<target "iqn.q">\n <backing-store /x>\n  lun 5\n </backing-store>\n'
        " <backing-store /y>\n </backing-store>\n</target>\n"
    },
    {
        "t.conf": "SOCKET_OPTS=1\ninclude conf.d/*.conf\nInclude extra.inc\n",
        "conf.d/b.conf": "<target b>\nbacking-store /b\n</target>\n",
        "conf.d/a.conf": "<target a>\n</target>\nPORTAL_OPTS=0.0.0.0:1\n",
        "conf.d/.hidden.conf": "<target hidden>\n</target>\n",
        "conf.d/a.conf~": "<target backup>\n</target>\n",
        "extra.inc": "<target e>\nbacking-store /e1\nbacking-store /e2\n</target>\n",
    },
    {
        "t.conf": "INCLUDE dir\ninclude nothing/*.conf\nincludeoptional missing.conf\n",
        "dir/2": "<target two>\n</target>\n",
        "dir/1": "<target one>\nbacking-store /1\n</target>\n",
    },
    {
        "t.conf": "<target t>\n backing-store /a\n include luns.inc\n</target>\n",
        "luns.inc": "backing-store /b\nbacking-store /c\n",
    },
    {"t.conf": "include 'q.inc'\n", "q.inc": '<target q>\nbacking-store "/q 1"\n</target>\n'},
    {
        "t.conf": "include sub/x.inc\n",
        "sub/x.inc": "include sub/y.inc\n",  # relative to the working directory
        "sub/y.inc": "<target y>\n</target>\n",
    },
    {"t.conf": "<target e/>\n<target f>\n<backing-store /x/>\n<backing-store /y />\n</target>\n"},
    {"t.conf": "A=1\r\nSOCKET_OPTS=3263\r\n<target crlf>\r\n</target>\r\n"},
    # (not `<target x  >`: Config::General keeps those spaces in the name, tgtd drops them)
    {"t.conf": "\t<target   iqn.ws>\n\tbacking-store\t/t\n\t</target>\n"},
]


@pytest.mark.parametrize("files", HAND_WRITTEN, ids=lambda f: f["t.conf"][:30])
def test_hand_written_configs_agree(tmp_path: Path, files: dict[str, str]) -> None:
    assert_agree(write_tree(tmp_path, files))


@pytest.mark.parametrize(
    "files",
    [
        {"t.conf": "<target t>\n"},
        {"t.conf": "</target>\n"},
        {"t.conf": "include missing.conf\n"},
        {"t.conf": "<target t>\n<backing-store /srv//>\n</backing-store>\n</target>\n"},
        {
            "t.conf": "<target t>\n backing-store /a\n <backing-store /b>\n </backing-store>\n"
            "</target>\n"
        },
    ],
    ids=["unclosed", "stray-close", "missing-include", "empty-block", "mixed-lun-forms"],
)
def test_what_tgt_admin_refuses_is_a_problem(tmp_path: Path, files: dict[str, str]) -> None:
    config = write_tree(tmp_path, files)
    assert "error" in perl_view(config)
    assert our_view(config).problems


# --- generated configs ------------------------------------------------------------------

_word = st.text(st.sampled_from("abcxyz019.:-_"), min_size=1, max_size=8)
_value = st.text(st.sampled_from("abc019.:[]/-_"), min_size=1, max_size=12)
_ws = st.sampled_from(["", " ", "  ", "\t"])


@st.composite
def option_line(draw: st.DrawFn, key: str) -> str:
    value = draw(_value)
    form = draw(st.sampled_from(['{k}="{v}"', "{k}={v}", "{k} = {v}", "{k} {v}", "{k}\t{v}"]))
    line = form.format(k=key, v=value)
    if draw(st.booleans()):
        line += draw(st.sampled_from([" # note", "\t#x", " /* c */"]))
    if draw(st.booleans()) and " " in line:
        head, tail = line.split(" ", 1)
        line = f"{head} \\\n  {tail}"
    return draw(_ws) + line


@st.composite
def target_block(draw: st.DrawFn, name: str, as_blocks: bool) -> str:
    # (no path ending in `/`: `<backing-store /x/>` is Config::General's empty block)
    luns = draw(st.lists(_word.map(lambda v: "/srv/" + v), max_size=3))
    lines = [f"{draw(_ws)}<target {name}>"]
    for lun in luns:
        key = draw(st.sampled_from(["backing-store", "direct-store"]))
        if as_blocks:
            lines += [f"  <{key} {lun}>", f"  </{key}>"]
        else:
            lines.append(f"  {key} {lun}")
    if draw(st.booleans()):
        lines.append("  initiator-address ALL # who may log in")
    lines.append(f"{draw(_ws)}</target>")
    return "\n".join(lines)


@st.composite
def config_tree(draw: st.DrawFn) -> dict[str, str]:
    chunks: list[str] = []
    for key in ("SOCKET_OPTS", "PORTAL_OPTS"):
        if draw(st.booleans()):
            chunks.append(draw(option_line(key)))
    names = draw(st.lists(st.sampled_from(["iqn.a", "iqn.b", "iqn.c:x", "t-1"]), max_size=5))
    for name in names:
        # one LUN form per target name: Config::General refuses to mix them when merging
        chunks.append(draw(target_block(name, name.startswith("iqn.b"))))
    filler = st.sampled_from(["", "# comment", "/* one */", "/*\n<target no>\n</target>\n*/"])
    for _ in range(draw(st.integers(0, 3))):
        chunks.insert(draw(st.integers(0, len(chunks))), draw(filler))
    files: dict[str, str] = {}
    if draw(st.booleans()) and chunks:
        # move some chunks into included files (options stay in t.conf, as tgtwatch wants)
        cut = draw(st.integers(0, len(chunks) - 1))
        moved, chunks = chunks[cut:], chunks[:cut]
        moved = [c for c in moved if "_OPTS" not in c] or moved
        for i, chunk in enumerate(moved):
            files[f"conf.d/{i:02d}.conf"] = chunk + "\n"
        chunks.append(draw(st.sampled_from(["include conf.d/*.conf", "include conf.d"])))
    files["t.conf"] = "\n".join(chunks) + "\n"
    return files


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(config_tree())
def test_generated_configs_agree(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, str]
) -> None:
    assert_agree(write_tree(tmp_path_factory.mktemp("gen"), files))


# --- real tgt-admin ---------------------------------------------------------------------

_ADDING = re.compile(r"^# Adding target: (\S+)$")
_NEW_LUN = re.compile(r"--op new --mode logicalunit --tid (\d+) --lun (\d+)")
_NEW_TARGET = re.compile(r"--op new --mode target --tid (\d+) -T (\S+)")


def tgt_admin_targets(config: Path) -> dict[str, int]:
    """What `tgt-admin -p -e` (pretend) would create; no tgtd needed, none is touched."""
    done = subprocess.run(
        # a control port no tgtd listens on: pretend mode only prints the tgtadm commands
        ["tgt-admin", "-C", "64999", "-p", "-e", "-c", config.name],
        cwd=config.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    names: dict[str, str] = {}
    luns: dict[str, int] = {}
    for line in done.stdout.splitlines():
        if m := _NEW_TARGET.search(line):
            names[m.group(1)] = m.group(2)
            luns[m.group(2)] = 0
        elif m := _NEW_LUN.search(line):
            luns[names[m.group(1)]] += 1
    return luns


@pytest.mark.skipif(shutil.which("tgt-admin") is None, reason="tgt-admin is not installed")
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
    images = tmp_path / "images"
    images.mkdir()
    # tgt-admin skips LUNs whose backing file is missing: point them at real files
    for path in tree.rglob("*.conf"):
        text = path.read_text().replace("/var/lib/tgtwatch/sample/", f"{images}/")
        path.write_text(text)
        for image in re.findall(rf"{re.escape(str(images))}/\S+", text):
            with open(image, "wb") as out:
                out.truncate(1024 * 1024)
    target = tree / config
    ours = our_view(target)
    assert ours.problems == ()
    assert ours.targets
    assert {t.name: t.luns for t in ours.targets} == tgt_admin_targets(target)
    assert_agree(target)
