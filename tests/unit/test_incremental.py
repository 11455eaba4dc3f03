"""Incremental inventory: a scan re-reads only the instance files its changes touch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from builders import instance_text, write
from hypothesis import given
from hypothesis import strategies as st

from tgtwatch.config import instance_file, rules
from tgtwatch.config.incremental import InstanceCache
from tgtwatch.config.inventory import scan, scan_instances
from tgtwatch.config.settings import Settings
from tgtwatch.config.trust import TrustPolicy
from tgtwatch.model.structs import Applied, Desired, InstanceSpec, Rule

T = "iqn.2026-01.com.example:t"


def ports(desired: Desired) -> dict[int, str]:
    return {port: spec.name for port, spec in desired.instances.items()}


def test_an_unnamed_file_is_not_read_again_and_a_named_one_is(
    settings: Settings, policy: TrustPolicy
) -> None:
    cache = InstanceCache()
    a = write(settings.instances_dir / "a.conf", instance_text(3261, f"{T}a"))
    write(settings.instances_dir / "b.conf", instance_text(3262, f"{T}b"))
    assert ports(scan(settings, Applied(), policy, cache=cache)) == {3261: "a", 3262: "b"}
    assert len(cache) == 2
    # Rewritten, but no event named it yet (its close is on the way): the last reading holds.
    write(a, instance_text(3263, f"{T}a"))
    assert ports(scan(settings, Applied(), policy, cache=cache, changed=set())) == {
        3261: "a",
        3262: "b",
    }
    # Its close names it: read again, the other file is not.
    got = scan(settings, Applied(), policy, cache=cache, changed={a})
    assert ports(got) == {3263: "a", 3262: "b"}


def test_none_reads_everything_again(settings: Settings, policy: TrustPolicy) -> None:
    cache = InstanceCache()
    a = write(settings.instances_dir / "a.conf", instance_text(3261, f"{T}a"))
    scan(settings, Applied(), policy, cache=cache)
    write(a, instance_text(3263, f"{T}a"))
    assert ports(scan(settings, Applied(), policy, cache=cache, changed=None)) == {3263: "a"}


def test_an_include_change_reads_its_instance_again(
    settings: Settings, policy: TrustPolicy
) -> None:
    cache = InstanceCache()
    write(settings.instances_dir / "v.conf", instance_text(3263) + "include inc/*.inc\n")
    inc = write(settings.instances_dir / "inc/t.inc", f"<target {T}1>\n</target>\n")
    first = scan(settings, Applied(), policy, cache=cache).instances[3263]
    write(inc, f"<target {T}2>\n</target>\n")
    same = scan(settings, Applied(), policy, cache=cache, changed=set()).instances[3263]
    assert same.sha256 == first.sha256
    changed = scan(settings, Applied(), policy, cache=cache, changed={inc}).instances[3263]
    assert [t.name for t in changed.targets] == [f"{T}2"]
    # A new file the wildcard now matches: its directory is a dependency.
    new = write(settings.instances_dir / "inc/u.inc", f"<target {T}3>\n</target>\n")
    more = scan(settings, Applied(), policy, cache=cache, changed={new}).instances[3263]
    assert sorted(t.name for t in more.targets) == [f"{T}2", f"{T}3"]


def test_a_new_file_waits_for_its_event_and_a_deleted_one_goes_with_its_own(
    settings: Settings, policy: TrustPolicy
) -> None:
    cache = InstanceCache()
    a = write(settings.instances_dir / "a.conf", instance_text(3261, f"{T}a"))
    scan(settings, Applied(), policy, cache=cache)
    # Half written, no close yet: not read, so never rejected for a moment.
    half = write(settings.instances_dir / "b.conf", 'SOCKET_OPTS="32')
    got = scan(settings, Applied(), policy, cache=cache, changed={Path("/elsewhere")})
    assert ports(got) == {3261: "a"} and got.problems == ()
    write(half, instance_text(3262, f"{T}b"))
    got = scan(settings, Applied(), policy, cache=cache, changed={half})
    assert ports(got) == {3261: "a", 3262: "b"}
    a.unlink()
    assert ports(scan(settings, Applied(), policy, cache=cache, changed={a})) == {3262: "b"}
    assert len(cache) == 1


def test_a_file_gone_without_an_event_stays_until_the_directory_is_listed_whole(
    settings: Settings, policy: TrustPolicy
) -> None:
    # The events tell what came and went (a delete always has one; a lost event is an
    # overflow, and the rescan after it lists the directory): a cycle for another file
    # does not list the directory, and only deleting a file stops its instance.
    cache = InstanceCache()
    a = write(settings.instances_dir / "a.conf", instance_text(3261, f"{T}a"))
    scan(settings, Applied(), policy, cache=cache)
    a.unlink()
    b = write(settings.instances_dir / "b.conf", instance_text(3262, f"{T}b"))
    assert ports(scan(settings, Applied(), policy, cache=cache, changed={b})) == {
        3261: "a",
        3262: "b",
    }
    assert ports(scan(settings, Applied(), policy, cache=cache, changed=None)) == {3262: "b"}


def test_a_directory_event_reads_everything_below_it(
    settings: Settings, policy: TrustPolicy
) -> None:
    cache = InstanceCache()
    a = write(settings.instances_dir / "a.conf", instance_text(3261, f"{T}a"))
    scan(settings, Applied(), policy, cache=cache)
    write(a, instance_text(3263, f"{T}a"))
    got = scan(settings, Applied(), policy, cache=cache, changed={settings.instances_dir})
    assert ports(got) == {3263: "a"}


def test_a_problem_is_kept_until_the_file_changes(settings: Settings, policy: TrustPolicy) -> None:
    cache = InstanceCache()
    bad = write(settings.instances_dir / "bad.conf", "SOCKET_OPTS=\n")
    first = scan(settings, Applied(), policy, cache=cache)
    assert [p.path for p in first.problems] == [bad]
    again = scan(settings, Applied(), policy, cache=cache, changed=set())
    assert again.problems == first.problems
    write(bad, instance_text(3261, f"{T}x"))
    fixed = scan(settings, Applied(), policy, cache=cache, changed={bad})
    assert fixed.problems == () and ports(fixed) == {3261: "bad"}


# ---- a cycle whose events changed nothing: the last answer, as it was (quiet) ----------


def test_a_same_content_rewrite_gives_the_last_desired_itself(
    settings: Settings, policy: TrustPolicy
) -> None:
    cache = InstanceCache()
    a = write(settings.instances_dir / "a.conf", instance_text(3261, f"{T}a"))
    write(settings.instances_dir / "b.conf", instance_text(3262, f"{T}b"))
    applied = Applied()
    first = scan(settings, applied, policy, cache=cache)
    write(a, instance_text(3261, f"{T}a"))
    assert scan(settings, applied, policy, cache=cache, changed={a}) is first
    assert scan(settings, applied, policy, cache=cache, changed=set()) is first
    # Another applied state, or a full scan: made again (and equal).
    assert scan(settings, Applied(), policy, cache=cache, changed={a}) == first
    assert scan(settings, applied, policy, cache=cache, changed=None) is not first


def test_a_changed_file_a_new_one_or_a_gone_one_is_never_quiet(
    settings: Settings, policy: TrustPolicy
) -> None:
    cache = InstanceCache()
    applied = Applied()
    a = write(settings.instances_dir / "a.conf", instance_text(3261, f"{T}a"))
    first = scan(settings, applied, policy, cache=cache)
    write(a, instance_text(3263, f"{T}a"))
    moved = scan(settings, applied, policy, cache=cache, changed={a})
    assert ports(moved) == {3263: "a"}
    b = write(settings.instances_dir / "b.conf", instance_text(3262, f"{T}b"))
    assert ports(scan(settings, applied, policy, cache=cache, changed={b})) == {
        3263: "a",
        3262: "b",
    }
    b.unlink()
    assert ports(scan(settings, applied, policy, cache=cache, changed={b})) == {3263: "a"}
    assert first is not moved


def test_a_backing_store_that_changed_under_a_rewritten_file_is_looked_at_again(
    tmp_path: Path, settings: Settings, policy: TrustPolicy
) -> None:
    backing = tmp_path / "backing"
    backing.mkdir(mode=0o755)
    store = backing / "a.img"
    store.write_bytes(b"\0" * 512)
    settings = replace(settings, backing_store_roots=(backing,))
    text = f'SOCKET_OPTS="3261"\nPORTAL_OPTS="0.0.0.0:3261"\n<target {T}a>\n'
    a = write(settings.instances_dir / "a.conf", f"{text}    backing-store {store}\n</target>\n")
    cache = InstanceCache()
    first = scan(settings, Applied(), policy, cache=cache)
    assert ports(first) == {3261: "a"} and not first.problems
    store.unlink()
    store.symlink_to("/etc/passwd")  # the same path, now a link out of the roots
    write(a, a.read_text())
    again = scan(settings, Applied(), policy, cache=cache, changed={a})
    assert again == scan(settings, Applied(), policy)  # as a full scan sees it
    assert again.problems and 3261 not in again.instances


def test_an_event_in_the_default_instance_tree_is_never_quiet(
    settings: Settings, policy: TrustPolicy
) -> None:
    cache = InstanceCache()
    applied = Applied()
    first = scan(settings, applied, policy, cache=cache)
    assert first.instances == {}
    conf = write(
        settings.default_config, f"<target {T}d>\n    backing-store /srv/d.img\n</target>\n"
    )
    got = scan(settings, applied, policy, cache=cache, changed={conf})
    assert got is not first and got.instances, got
    assert got == scan(settings, applied, policy)


@given(
    st.lists(
        st.sets(st.sampled_from(["a.conf", "b.conf", ".c.conf", "d.conf~", "e.txt", "f.conf"])),
        min_size=1,
        max_size=8,
    )
)
def test_candidates_from_the_last_listing_equal_the_whole_filter(listings: list[set[str]]) -> None:
    cache = InstanceCache()
    directory = Path("/d")
    for names in listings:
        found = cache.candidates(directory, list(names), rules.is_candidate)
        assert found == [n for n in sorted(names) if rules.is_candidate(n)]


def test_a_file_gone_from_the_listing_is_forgotten_and_one_back_read_again(
    settings: Settings, policy: TrustPolicy
) -> None:
    # The listing is made from the last one and the names that came or went: the cache
    # forgets exactly the files the directory lost, and a file back is read as new.
    cache = InstanceCache()
    files = {
        n: write(settings.instances_dir / f"{n}.conf", instance_text(3260 + i, f"{T}{n}"))
        for i, n in enumerate("abc", start=1)
    }
    scan(settings, Applied(), policy, cache=cache)
    files["b"].unlink()
    assert ports(scan(settings, Applied(), policy, cache=cache, changed={files["b"]})) == {
        3261: "a",
        3263: "c",
    }
    assert len(cache) == 2
    write(files["b"], instance_text(3264, f"{T}b"))
    got = scan(settings, Applied(), policy, cache=cache, changed={files["b"]})
    assert ports(got) == {3261: "a", 3264: "b", 3263: "c"}
    assert len(cache) == 3


# ---- a file that changes while it is read --------------------------------------------------


def _two_files(settings: Settings) -> tuple[Path, Path, Path, Path]:
    """two.conf naming two.d/v1.inc; v2.inc and the next two.conf (naming it) staged."""
    d = settings.instances_dir
    v1 = write(d / "two.d/v1.inc", f"<target {T}1>\n</target>\n")
    conf = write(d / "two.conf", instance_text(3261) + "include two.d/v1.inc\n")
    v2 = write(d / "two.d/v2.inc", f"<target {T}2>\n</target>\n")
    staged = write(d / ".two.conf.tmp", instance_text(3261) + "include two.d/v2.inc\n")
    return conf, v1, v2, staged


def _targets(specs: list[InstanceSpec]) -> list[list[str]]:
    return [[t.name for t in spec.targets] for spec in specs]


def _edit_lands_in_the_next_read(
    monkeypatch: pytest.MonkeyPatch, conf: Path, v1: Path, staged: Path
) -> None:
    """The next parse (once) sees README's two-file change land inside it: the old include
    goes before the old file's include is read, the new file is in place when it ends."""
    real_parse = instance_file.parse

    def edit_lands_mid_read(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(instance_file, "parse", real_parse)
        v1.unlink()
        parsed = real_parse(*args, **kwargs)
        staged.rename(conf)
        return parsed

    monkeypatch.setattr(instance_file, "parse", edit_lands_mid_read)


def test_a_file_replaced_while_read_keeps_its_last_reading_until_its_event(
    settings: Settings, policy: TrustPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's two-file change lands between the read of two.conf and of its include: the
    read sees the old file naming an include already deleted. Not a reject: the rename's
    event, still to come, has the file read again."""
    cache = InstanceCache()
    conf, v1, v2, staged = _two_files(settings)
    directory = settings.instances_dir
    assert _targets(scan_instances(directory, policy, cache=cache)[0]) == [[f"{T}1"]]
    real_parse = instance_file.parse
    _edit_lands_in_the_next_read(monkeypatch, conf, v1, staged)
    # v2.inc's close comes first: two.conf includes from two.d, so it is read again.
    specs, problems, _ = scan_instances(directory, policy, cache=cache, changed={v2})
    assert problems == [] and _targets(specs) == [[f"{T}1"]]
    assert instance_file.parse is real_parse
    specs, problems, _ = scan_instances(directory, policy, cache=cache, changed={conf, v1})
    assert problems == [] and _targets(specs) == [[f"{T}2"]]


def test_a_file_that_held_still_while_read_has_its_problem_reported(
    settings: Settings, policy: TrustPolicy
) -> None:
    cache = InstanceCache()
    conf, v1, _, _ = _two_files(settings)
    scan_instances(settings.instances_dir, policy, cache=cache)
    v1.unlink()
    specs, problems, _ = scan_instances(settings.instances_dir, policy, cache=cache, changed={v1})
    assert specs == [] and [(p.path, p.rule) for p in problems] == [(conf, Rule.INCLUDE)]
    assert "v1.inc: no such file" in problems[0].message


def test_a_file_never_read_and_replaced_while_read_is_judged_as_read(
    settings: Settings, policy: TrustPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No earlier reading to keep (the daemon's first scan): its problem stands, since a
    refused file's instance runs on where a file left out would be drained; its event has
    it read again."""
    cache = InstanceCache()
    conf, v1, _, staged = _two_files(settings)
    _edit_lands_in_the_next_read(monkeypatch, conf, v1, staged)
    specs, problems, _ = scan_instances(settings.instances_dir, policy, cache=cache)
    assert specs == [] and [(p.path, p.rule) for p in problems] == [(conf, Rule.INCLUDE)]
    specs, problems, _ = scan_instances(settings.instances_dir, policy, cache=cache, changed={conf})
    assert problems == [] and _targets(specs) == [[f"{T}2"]]


@pytest.mark.parametrize("made", ["empty", "missing"])
def test_a_wildcard_include_that_matched_nothing_is_read_again_for_its_first_file(
    settings: Settings, policy: TrustPolicy, made: str
) -> None:
    cache = InstanceCache()
    incdir = settings.instances_dir / "inc"
    if made == "empty":
        incdir.mkdir()
    write(settings.instances_dir / "v.conf", instance_text(3263) + "include inc/*.inc\n")
    first = scan(settings, Applied(), policy, cache=cache)
    assert first.instances[3263].targets == ()
    assert first.instances[3263].include_dirs == (incdir,)
    inc = write(incdir / "t.inc", f"<target {T}1>\n</target>\n")
    got = scan(settings, Applied(), policy, cache=cache, changed={inc})
    assert [t.name for t in got.instances[3263].targets] == [f"{T}1"]


def test_the_default_instance_hears_of_the_first_file_its_glob_include_matches(
    settings: Settings, policy: TrustPolicy
) -> None:
    # Debian's targets.conf: `include /etc/tgt/conf.d/*.conf`, conf.d empty at first.
    confd = settings.tgt_dir / "conf.d"
    confd.mkdir()
    write(settings.default_config, f"include {confd}/*.conf\n")
    cache = InstanceCache()
    first = scan(settings, Applied(), policy, cache=cache)
    assert first.instances[3260].targets == ()
    new = write(confd / "t.conf", f"<target {T}d>\n</target>\n")
    got = scan(settings, Applied(), policy, cache=cache, changed={new})
    assert [t.name for t in got.instances[3260].targets] == [f"{T}d"]
