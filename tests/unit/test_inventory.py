"""Inventory: directories on disk -> Desired instances, problems (one per bad file) and notes."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from builders import entry, instance_text, write

from tgtwatch.config.grammar import Limits
from tgtwatch.config.inventory import scan
from tgtwatch.config.settings import DefaultInstanceSettings, Settings
from tgtwatch.config.trust import TrustPolicy
from tgtwatch.model.structs import (
    DEFAULT_NAME,
    Applied,
    Desired,
    InstanceKind,
    Problem,
    Rule,
    TargetSpec,
)

ROOT_ONLY = pytest.mark.skipif(os.getuid() != 0, reason="chown needs root")


def problems_by_file(desired: Desired) -> dict[str, list[Problem]]:
    found: dict[str, list[Problem]] = {}
    for p in desired.problems:
        found.setdefault(p.path.name, []).append(p)
    return found


def names_by_port(desired: Desired) -> dict[int, str]:
    return {port: s.name for port, s in desired.instances.items()}


@ROOT_ONLY
def test_the_done_when_directory(settings: Settings) -> None:
    d = settings.instances_dir
    write(d / "good1.conf", instance_text(3261, "iqn.2026-01.x:good1"))
    write(d / "good2.conf", instance_text(3262, "iqn.2026-01.x:good2a", "iqn.2026-01.x:good2b"))
    write(d / "twin-a.conf", instance_text(3270, "iqn.2026-01.x:twin-a"))
    write(d / "twin-b.conf", instance_text(3270, "iqn.2026-01.x:twin-b"))
    write(d / "mismatch.conf", 'SOCKET_OPTS="3271"\nPORTAL_OPTS="0.0.0.0:3272"\n')
    write(d / "a b.conf", instance_text(3273))
    write(d / "x;y.conf", instance_text(3274))
    write(d / "world.conf", instance_text(3275), 0o666)
    os.chown(write(d / "nobody.conf", instance_text(3276)), 65534, 65534)
    write(d / "unclosed.conf", 'SOCKET_OPTS="3277"\n<target iqn.2026-01.x:u>\n  backing-store /a\n')
    write(d / "big.conf", os.urandom(5 * 1024 * 1024))
    write(d / ".good1.conf.swp", os.urandom(4096))
    write(d / "good1.conf~", "junk")

    desired = scan(settings, Applied(), TrustPolicy(owner_uid=0))

    assert names_by_port(desired) == {3261: "good1", 3262: "good2", 3270: "twin-a"}
    assert desired.instances[3262].targets == (
        TargetSpec("iqn.2026-01.x:good2a", 1),
        TargetSpec("iqn.2026-01.x:good2b", 1),
    )
    by_file = problems_by_file(desired)
    assert sorted(by_file) == sorted(
        [
            "twin-b.conf",
            "mismatch.conf",
            "a b.conf",
            "x;y.conf",
            "world.conf",
            "nobody.conf",
            "unclosed.conf",
            "big.conf",
        ]
    )
    assert all(len(found) == 1 for found in by_file.values()), by_file
    rules = {name: found[0].rule for name, found in by_file.items()}
    assert rules == {
        "twin-b.conf": Rule.CONFLICT,
        "mismatch.conf": Rule.PORT,
        "a b.conf": Rule.NAME,
        "x;y.conf": Rule.NAME,
        "world.conf": Rule.TRUST,
        "nobody.conf": Rule.TRUST,
        "unclosed.conf": Rule.SYNTAX,
        "big.conf": Rule.TRUST,
    }
    assert by_file["unclosed.conf"][0].line == 2
    twin = by_file["twin-b.conf"][0]
    assert str(d / "twin-a.conf") in twin.message
    for problem in desired.problems:  # `check` prints "PATH: message"
        assert str(problem).startswith(str(problem.path))


def test_a_good_instance_spec(settings: Settings, policy: TrustPolicy) -> None:
    path = write(settings.instances_dir / "vol-1.conf", instance_text(3263, "iqn.2026-01.x:a"))
    desired = scan(settings, Applied(), policy)
    s = desired.instances[3263]
    assert (s.name, s.kind, s.port, s.portal, s.control_port, s.config) == (
        "vol-1",
        InstanceKind.DROPIN,
        3263,
        "0.0.0.0:3263",
        3263,
        path,
    )
    assert len(s.sha256) == 64
    assert desired.problems == ()


@pytest.mark.parametrize(
    ("text", "port", "portal"),
    [
        ('SOCKET_OPTS="3263"\n', 3263, "0.0.0.0:3263"),
        ('PORTAL_OPTS="[::]:3264"\n', 3264, "[::]:3264"),
        ('SOCKET_OPTS=3265\nPORTAL_OPTS="10.1.2.3:3265"\n', 3265, "10.1.2.3:3265"),
    ],
)
def test_either_option_alone_names_the_port(
    settings: Settings, policy: TrustPolicy, text: str, port: int, portal: str
) -> None:
    write(settings.instances_dir / "v.conf", text)
    desired = scan(settings, Applied(), policy)
    assert desired.instances[port].portal == portal


@pytest.mark.parametrize(
    ("text", "words", "line"),
    [
        ("<target iqn.2026-01.x:t>\n</target>\n", "neither", None),
        ('SOCKET_OPTS="3263"\nSOCKET_OPTS="3263"\n', "set 2 times", 2),
        ('SOCKET_OPTS="3263"\ncontrol-port 3263\n', "control-port", 2),
        ('PORTAL_OPTS="0.0.0.0:3263 -d 9"\n', "PORTAL_OPTS", None),
        ('PORTAL_OPTS="$(reboot):3263"\n', "PORTAL_OPTS", None),
        ('SOCKET_OPTS="70000"\n', "outside", None),
    ],
)
def test_port_rules(
    settings: Settings, policy: TrustPolicy, text: str, words: str, line: int | None
) -> None:
    write(settings.instances_dir / "v.conf", text)
    desired = scan(settings, Applied(), policy)
    assert desired.instances == {}
    [problem] = desired.problems
    assert problem.rule is Rule.PORT
    assert words in problem.message
    assert problem.line == line


def test_default_name_is_reserved(settings: Settings, policy: TrustPolicy) -> None:
    write(settings.instances_dir / "default.conf", instance_text(3263))
    [problem] = scan(settings, Applied(), policy).problems
    assert problem.rule is Rule.NAME


def test_applied_owner_keeps_a_contested_port(settings: Settings, policy: TrustPolicy) -> None:
    a = write(settings.instances_dir / "a.conf", instance_text(3263))
    b = write(settings.instances_dir / "b.conf", instance_text(3263))
    first = scan(settings, Applied(), policy)
    assert first.instances[3263].config == a
    applied = Applied({3263: entry("b", 3263, config=b)})
    desired = scan(settings, applied, policy)
    assert desired.instances[3263].config == b
    [problem] = desired.problems
    assert (problem.path, problem.rule) == (a, Rule.CONFLICT)
    assert str(b) in problem.message


@pytest.mark.parametrize(("port", "words"), [(3260, "portal"), (3299, "control port")])
def test_claiming_the_default_instances_ports(
    settings: Settings, policy: TrustPolicy, port: int, words: str
) -> None:
    settings = dataclasses.replace(
        settings, default_instance=DefaultInstanceSettings(control_port=3299)
    )
    path = write(settings.instances_dir / "v.conf", instance_text(port))
    desired = scan(settings, Applied(), policy)
    assert port not in desired.instances
    [problem] = desired.problems
    assert (problem.path, problem.rule) == (path, Rule.CONFLICT)
    assert words in problem.message
    assert str(settings.default_config) in problem.message


def test_missing_directories_are_notes(tmp_path: Path, policy: TrustPolicy) -> None:
    settings = Settings(tgt_dir=tmp_path / "no-tgt", instances_dir=tmp_path / "no-instances")
    desired = scan(settings, Applied(), policy)
    assert desired.instances == {}
    assert desired.problems == ()
    assert len(desired.notes) == 2
    assert any("no-instances" in n and "does not exist" in n for n in desired.notes)


def test_missing_targets_conf_is_a_note(settings: Settings, policy: TrustPolicy) -> None:
    desired = scan(settings, Applied(), policy)
    assert desired.instances == {}
    assert [n for n in desired.notes if "targets.conf" in n]


def test_unsafe_instances_directory(settings: Settings, policy: TrustPolicy) -> None:
    write(settings.instances_dir / "v.conf", instance_text(3263))
    os.chmod(settings.instances_dir, 0o777)
    desired = scan(settings, Applied(), policy)
    assert desired.instances == {}
    [problem] = desired.problems
    assert (problem.path, problem.rule) == (settings.instances_dir, Rule.DIRECTORY)
    assert desired.is_troubled(settings.instances_dir / "v.conf")


def test_default_instance_from_targets_conf(settings: Settings, policy: TrustPolicy) -> None:
    tgt = settings.tgt_dir
    write(tgt / "targets.conf", "default-driver iscsi\ninclude conf.d/*.conf\n")
    write(tgt / "conf.d/a.conf", "<target iqn.2026-01.x:a>\n  backing-store /a\n</target>\n")
    write(tgt / "conf.d/b.conf", "<target iqn.2026-01.x:b>\n</target>\n")
    write(tgt / "conf.d/b.conf.dpkg-old", "<target iqn.2026-01.x:old>\n</target>\n")
    desired = scan(settings, Applied(), policy)
    s = desired.instances[3260]
    assert (s.name, s.kind, s.portal, s.control_port) == (
        DEFAULT_NAME,
        InstanceKind.DEFAULT,
        "0.0.0.0:3260",
        0,
    )
    assert s.targets == (TargetSpec("iqn.2026-01.x:a", 1), TargetSpec("iqn.2026-01.x:b", 0))
    assert s.includes == (tgt / "conf.d/a.conf", tgt / "conf.d/b.conf")


def test_default_instance_not_managed(settings: Settings, policy: TrustPolicy) -> None:
    write(settings.tgt_dir / "targets.conf", "<target t>\n</target>\n")
    unmanaged = dataclasses.replace(
        settings, default_instance=DefaultInstanceSettings(manage=False)
    )
    assert scan(unmanaged, Applied(), policy).instances == {}


@pytest.mark.parametrize(("value", "ok"), [("0", True), ("3299", False)])
def test_default_instance_control_port(
    settings: Settings, policy: TrustPolicy, value: str, ok: bool
) -> None:
    write(settings.tgt_dir / "targets.conf", f"control-port {value}\n")
    desired = scan(settings, Applied(), policy)
    assert (3260 in desired.instances) is ok
    assert bool(desired.problems) is not ok
    if not ok:
        assert desired.problems[0].line == 1


def test_broken_default_instance_is_a_problem(settings: Settings, policy: TrustPolicy) -> None:
    write(settings.tgt_dir / "targets.conf", "include conf.d/*.conf\n")
    write(settings.tgt_dir / "conf.d/x.conf", "<target t>\n", 0o666)
    desired = scan(settings, Applied(), policy)
    assert desired.instances == {}
    [problem] = desired.problems
    assert problem.rule is Rule.TRUST
    assert problem.line == 1


def test_include_outside_the_directory_is_refused(settings: Settings, policy: TrustPolicy) -> None:
    write(settings.tgt_dir / "secret.conf", "<target s>\n</target>\n")
    write(
        settings.instances_dir / "v.conf", instance_text(3263) + "include ../../tgt/secret.conf\n"
    )
    [problem] = scan(settings, Applied(), policy).problems
    assert problem.rule is Rule.TRUST
    assert "outside" in problem.message


def test_a_problem_in_an_included_file_refuses_the_instance_file(
    settings: Settings, policy: TrustPolicy
) -> None:
    v = write(settings.instances_dir / "v.conf", instance_text(3263) + "include inc/luns.inc\n")
    write(settings.instances_dir / "inc/luns.inc", "<target t>\n")
    desired = scan(settings, Applied(), policy)
    [problem] = desired.problems
    assert problem.path == v  # the instance file is what is refused, and what is held
    assert "luns.inc:1" in problem.message
    assert desired.is_troubled(v)


def test_a_refused_files_port_is_not_taken_over(settings: Settings, policy: TrustPolicy) -> None:
    a = write(settings.instances_dir / "a.conf", instance_text(3263) + "<target broken>\n")
    b = write(settings.instances_dir / "b.conf", instance_text(3263))
    applied = Applied({3263: entry("a", 3263, config=a)})
    desired = scan(settings, applied, policy)
    assert 3263 not in desired.instances  # `a` keeps running on its last good config
    assert {(p.path, p.rule) for p in desired.problems} == {
        (a, Rule.SYNTAX),
        (b, Rule.CONFLICT),
    }
    assert str(a) in next(p.message for p in desired.problems if p.path == b)


def test_sha256_follows_includes_and_ignores_touch(settings: Settings, policy: TrustPolicy) -> None:
    write(settings.instances_dir / "v.conf", instance_text(3263) + "include inc/t.inc\n")
    inc = write(settings.instances_dir / "inc/t.inc", "<target iqn.2026-01.x:t>\n</target>\n")

    def digest() -> str:
        return scan(settings, Applied(), policy).instances[3263].sha256

    first = digest()
    os.utime(inc, (1, 1))
    os.utime(settings.instances_dir / "v.conf", (2, 2))
    assert digest() == first
    write(inc, "<target iqn.2026-01.x:t>\n  backing-store /srv/x\n</target>\n")
    second = digest()
    assert second != first
    targets = scan(settings, Applied(), policy).instances[3263].targets
    assert targets == (TargetSpec("iqn.2026-01.x:t", 1),)


def test_subdirectories_and_non_candidates_are_not_instances(
    settings: Settings, policy: TrustPolicy
) -> None:
    write(settings.instances_dir / "sub/v.conf", instance_text(3263))
    write(settings.instances_dir / "v.conf.rpmnew", instance_text(3264))
    write(settings.instances_dir / "v.conf.dpkg-dist", instance_text(3265))
    desired = scan(settings, Applied(), policy)
    assert desired.instances == {}
    assert desired.problems == ()


def test_a_directory_named_x_conf(settings: Settings, policy: TrustPolicy) -> None:
    (settings.instances_dir / "x.conf").mkdir()
    [problem] = scan(settings, Applied(), policy).problems
    assert (problem.path.name, problem.rule) == ("x.conf", Rule.TRUST)


def test_a_fifo_named_x_conf(settings: Settings, policy: TrustPolicy) -> None:
    os.mkfifo(settings.instances_dir / "x.conf", 0o644)
    [problem] = scan(settings, Applied(), policy).problems
    assert (problem.path.name, problem.rule) == ("x.conf", Rule.TRUST)


def test_a_relative_backing_store_is_refused(settings: Settings, policy: TrustPolicy) -> None:
    # tgtd opens backing stores from its own working directory, not the file's: a relative
    # path would serve whatever file happens to sit there.
    text = (
        'SOCKET_OPTS="3263"\n<target iqn.2026-01.x:a>\n    backing-store disks/a.img\n</target>\n'
    )
    path = write(settings.instances_dir / "rel.conf", text)
    desired = scan(settings, Applied(), policy)
    assert desired.instances == {}
    assert [(p.path, p.rule, p.line) for p in desired.problems] == [(path, Rule.GRAMMAR, 3)]
    assert "'disks/a.img' is not an absolute path" in desired.problems[0].message


def test_targets_carry_their_backing_stores(settings: Settings, policy: TrustPolicy) -> None:
    write(
        settings.instances_dir / "a.conf", instance_text(3263, "iqn.2026-01.x:a", "iqn.2026-01.x:b")
    )
    targets = scan(settings, Applied(), policy).instances[3263].targets
    assert [(t.name, t.stores) for t in targets] == [
        ("iqn.2026-01.x:a", ("/srv/a.img",)),
        ("iqn.2026-01.x:b", ("/srv/b.img",)),
    ]


def test_files_beyond_the_directory_limit_are_each_a_problem(
    settings: Settings, policy: TrustPolicy
) -> None:
    for i, name in enumerate(("a", "b", "c")):
        write(
            settings.instances_dir / f"{name}.conf",
            instance_text(3261 + i, f"iqn.2026-01.x:{name}"),
        )
    limited = dataclasses.replace(settings, limits=Limits(files_per_directory=2))
    desired = scan(limited, Applied(), policy)
    assert names_by_port(desired) == {3261: "a", 3262: "b"}
    [problem] = desired.problems
    assert (problem.path.name, problem.rule) == ("c.conf", Rule.LIMIT)
    assert "holds 3 instance files, more than the 2 allowed" in problem.message


def test_a_lookup_error_is_that_files_problem_only(settings: Settings, policy: TrustPolicy) -> None:
    write(settings.instances_dir / "good.conf", instance_text(3261, "iqn.2026-01.x:good"))
    long_dir = "d" * 200 + "/" + "e" * 200  # each part fine, the whole too long for a lookup
    write(settings.instances_dir / "bad.conf", instance_text(3262) + f"include {long_dir}/x\n")
    write(settings.instances_dir / "loop.conf", instance_text(3263) + "include loop.inc\n")
    (settings.instances_dir / "loop.inc").symlink_to("loop.inc")
    desired = scan(settings, Applied(), policy)
    assert names_by_port(desired) == {3261: "good"}
    assert sorted((p.path.name, p.rule) for p in desired.problems) == [
        ("bad.conf", Rule.INCLUDE),
        ("loop.conf", Rule.TRUST),
    ]


def test_stores_outside_the_roots_are_refused(settings: Settings, policy: TrustPolicy) -> None:
    text = (
        instance_text(3261) + "<target iqn.2026-01.x:t>\n backing-store /var/lib/x.img\n</target>\n"
    )
    path = write(settings.instances_dir / "out.conf", text)
    desired = scan(settings, Applied(), policy)
    assert desired.instances == {}
    [problem] = desired.problems
    assert (problem.path, problem.rule, problem.line) == (path, Rule.STORE, 4)
    assert "outside the allowed backing-store roots" in problem.message


# --- a directory that cannot be seen holds what was applied from it -----------------------


def test_a_missing_instances_dir_holds_every_instance_applied_from_it(
    settings: Settings, policy: TrustPolicy
) -> None:
    """Moved away, not mounted, a typo in the setting: nothing was deleted, so nothing
    stops. One problem names the directory; every applied instance from it is troubled."""
    gone = settings.instances_dir.parent / "elsewhere"
    settings.instances_dir.rename(gone)
    applied = Applied(
        {
            3261: entry("a", 3261, config=settings.instances_dir / "a.conf"),
            3262: entry("b", 3262, config=settings.instances_dir / "b.conf"),
        }
    )
    desired = scan(settings, applied, policy)
    [problem] = desired.problems
    assert (problem.path, problem.rule) == (settings.instances_dir, Rule.DIRECTORY)
    assert "does not exist: the 2 instances applied from it are held" in problem.message
    assert desired.is_troubled(settings.instances_dir / "a.conf")
    assert desired.is_troubled(settings.instances_dir / "b.conf")
    # Nothing applied: a missing directory is only a note, as before.
    assert scan(settings, Applied(), policy).problems == ()


def test_an_empty_instances_dir_is_every_file_deleted(
    settings: Settings, policy: TrustPolicy
) -> None:
    applied = Applied({3261: entry("a", 3261, config=settings.instances_dir / "a.conf")})
    desired = scan(settings, applied, policy)
    assert desired.problems == ()
    assert not desired.is_troubled(settings.instances_dir / "a.conf")


def test_a_file_outside_instances_dir_is_held_until_it_is_deleted(
    settings: Settings, policy: TrustPolicy, tmp_path: Path
) -> None:
    """instances_dir changed: an instance applied from the old directory keeps running while
    its file exists there (only deleting a file stops its instance)."""
    old = tmp_path / "old-conf.d"
    old.mkdir()
    write(old / "a.conf", instance_text(3261))
    applied = Applied(
        {
            3261: entry("a", 3261, config=old / "a.conf"),
            3262: entry("b", 3262, config=old / "b.conf"),  # its file is gone: it drains
        }
    )
    desired = scan(settings, applied, policy)
    [problem] = desired.problems
    assert (problem.path, problem.rule) == (old / "a.conf", Rule.DIRECTORY)
    assert f"outside instances_dir {settings.instances_dir}" in problem.message
    assert desired.is_troubled(old / "a.conf")
    assert not desired.is_troubled(old / "b.conf")
    assert 3261 not in desired.instances
    # Its port stays its own: a file in instances_dir claiming it is a conflict.
    write(settings.instances_dir / "c.conf", instance_text(3261))
    desired = scan(settings, applied, policy)
    assert 3261 not in desired.instances
    assert any(p.rule is Rule.CONFLICT for p in desired.problems)
