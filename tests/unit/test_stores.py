"""Backing stores: the allowed roots, the forbidden trees, root's all the way down, and one
instance per store unless `allow-in-use yes`."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest
from builders import entry, spec

from tgtwatch.config.claims import check_stores
from tgtwatch.config.stores import (
    DEFAULT_ROOTS,
    FilesystemProbe,
    Node,
    StoreFacts,
    store_problem,
)
from tgtwatch.model.structs import Applied, InstanceKind, InstanceSpec, Rule
from tgtwatch.model.tree import ConfigTree, Lun, Target

DIR = stat.S_IFDIR | 0o755
STICKY = stat.S_IFDIR | 0o1777
FILE = stat.S_IFREG | 0o644
BLOCK = stat.S_IFBLK | 0o660
LINK = stat.S_IFLNK | 0o777
ROOTS = (Path("/srv"), Path("/dev/disk/by-id"))


def facts(path: str, mode: int | None = FILE, *, resolved: str = "", **owners: int) -> StoreFacts:
    """Facts of a path whose every component is root's 0755 directory, then the store."""

    def nodes(p: str) -> tuple[Node, ...]:
        parts = Path(p).parts
        found = [Node("/", DIR, owners.get("/", 0))]
        for i in range(1, len(parts)):
            sub = str(Path(*parts[: i + 1]))
            last = i == len(parts) - 1
            node_mode = (mode if last else DIR) or DIR
            found.append(Node(sub, node_mode, owners.get(sub, 0)))
        return tuple(found if mode is not None else found[:-1])

    real = resolved or path
    return StoreFacts(nodes(path), real, nodes(real), mode)


@pytest.mark.parametrize(
    ("path", "the_facts"),
    [
        ("/srv/a.img", facts("/srv/a.img")),
        ("/srv/vm/disk.raw", facts("/srv/vm/disk.raw", BLOCK)),
        ("/srv/missing.img", facts("/srv/missing.img", None)),  # tgt-admin skips it
        ("/dev/disk/by-id/wwn-0x5", facts("/dev/disk/by-id/wwn-0x5", LINK, resolved="/dev/sdb")),
    ],
)
def test_allowed(path: str, the_facts: StoreFacts) -> None:
    if path.startswith("/dev/disk"):
        the_facts = dataclasses.replace(the_facts, mode=BLOCK, chain=facts("/dev/sdb", BLOCK).chain)
    assert store_problem(path, the_facts, ROOTS) is None


@pytest.mark.parametrize(
    ("path", "the_facts", "words"),
    [
        ("/var/lib/x.img", facts("/var/lib/x.img"), "outside the allowed backing-store roots"),
        ("/srvx/a", facts("/srvx/a"), "outside"),
        ("/etc/shadow", facts("/etc/shadow"), "outside"),
        ("/srv/shadow", facts("/srv/shadow", resolved="/etc/shadow"), "resolves to /etc/shadow"),
        ("/srv/sda", facts("/srv/sda", resolved="/proc/kcore"), "under /proc"),
        ("/srv/d", facts("/srv/d", DIR), "neither a regular file nor a block device"),
        ("/srv/c", facts("/srv/c", stat.S_IFCHR | 0o600), "neither"),
        ("/srv/f", facts("/srv/f", stat.S_IFIFO | 0o600), "neither"),
        ("/srv/u/a", facts("/srv/u/a", **{"/srv/u": 1000}), "/srv/u is owned by uid 1000"),
        ("/srv/a", facts("/srv/a", **{"/srv/a": 1000}), "/srv/a is owned by uid 1000"),
        ("/srv/w", facts("/srv/w", stat.S_IFREG | 0o666), "world-writable"),
        (
            "/srv/link",
            facts("/srv/link", resolved="/home/u/disk.img", **{"/home/u": 1000}),
            "resolves to /home/u/disk.img: /home/u is owned by uid 1000",
        ),
    ],
)
def test_refused(path: str, the_facts: StoreFacts, words: str) -> None:
    why = store_problem(path, the_facts, ROOTS)
    assert why is not None and words in why, why


def test_a_directory_others_may_write_to_but_a_sticky_one_is_fine() -> None:
    open_dir = facts("/srv/g/a")
    chain = tuple(
        dataclasses.replace(n, mode=stat.S_IFDIR | 0o775) if n.path == "/srv/g" else n
        for n in open_dir.written
    )
    why = store_problem("/srv/g/a", dataclasses.replace(open_dir, written=chain), ROOTS)
    assert why is not None and "others may write to (mode 0775)" in why
    sticky = tuple(
        dataclasses.replace(n, mode=STICKY) if n.path == "/srv/g" else n for n in open_dir.written
    )
    assert store_problem("/srv/g/a", dataclasses.replace(open_dir, written=sticky), ROOTS) is None


def test_an_error_looking_it_up_is_a_refusal() -> None:
    why = store_problem("/srv/loop", StoreFacts(error="Too many levels of symbolic links"), ROOTS)
    assert why is not None and "cannot look it up" in why


def test_the_default_roots_are_storage_places_only() -> None:
    assert Path("/srv") in DEFAULT_ROOTS and Path("/dev/mapper") in DEFAULT_ROOTS
    assert not any(root == Path("/dev") or Path("/dev/sda") == root for root in DEFAULT_ROOTS)


def test_the_filesystem_probe(tmp_path: Path) -> None:
    store = tmp_path / "a.img"
    store.write_bytes(b"")
    link = tmp_path / "link"
    link.symlink_to(store)
    found = FilesystemProbe().facts(str(link))
    assert found.resolved == str(store)
    assert found.mode is not None and stat.S_ISREG(found.mode)
    assert [n.path for n in found.written][-1] == str(link)
    assert stat.S_ISLNK(found.written[-1].mode)
    assert found.chain[-1].path == str(store)
    me = os.getuid()
    assert store_problem(str(link), found, (tmp_path,), owner_uid=me) is None
    missing = FilesystemProbe().facts(str(tmp_path / "none" / "x"))
    assert missing.mode is None and missing.written[-1].path == str(tmp_path)
    looping = tmp_path / "loop"
    looping.symlink_to(looping)
    assert FilesystemProbe().facts(str(looping)).error


# --- one store, one instance ---------------------------------------------------------------


class Probe:
    """Every store exists, root's; `links` maps a path to where it resolves."""

    def __init__(self, links: dict[str, str] | None = None) -> None:
        self.links = links or {}

    def facts(self, path: str) -> StoreFacts:
        return facts(path, resolved=self.links.get(path, path))


def with_luns(
    name: str, port: int, *luns: tuple[str, bool], kind: InstanceKind = InstanceKind.DROPIN
) -> InstanceSpec:
    target = Target(
        f"iqn.2026-01.x:{name}",
        tuple(Lun(i + 1, path, allow_in_use=share) for i, (path, share) in enumerate(luns)),
    )
    base = spec(name, port, kind=kind)
    return dataclasses.replace(base, tree=ConfigTree(targets=(target,)))


def test_a_store_already_exported_is_refused_to_the_newcomer() -> None:
    a = with_luns("a", 3261, ("/srv/x", False))
    b = with_luns("b", 3262, ("/srv/x", False))
    usable, problems = check_stores([b, a], Applied(), Probe(), ROOTS)
    assert [s.name for s in usable] == ["a"]
    [problem] = problems
    assert (problem.path, problem.rule) == (b.config, Rule.STORE)
    assert "/srv/x is already exported by a target iqn.2026-01.x:a LUN 1" in problem.message


def test_the_applied_and_unchanged_owner_keeps_it_and_links_count() -> None:
    z = with_luns("z", 3261, ("/srv/x", False))  # sorts last, but runs unchanged
    a = with_luns("a", 3262, ("/srv/link", False))
    applied = Applied({3261: entry("z", 3261, config=z.config, sha256=z.sha256)})
    usable, problems = check_stores([a, z], applied, Probe({"/srv/link": "/srv/x"}), ROOTS)
    assert [s.name for s in usable] == ["z"]
    assert [p.path for p in problems] == [a.config]


def test_allow_in_use_shares_and_says_so() -> None:
    a = with_luns("a", 3261, ("/srv/x", False))
    b = with_luns("b", 3262, ("/srv/x", True))
    usable, problems = check_stores([a, b], Applied(), Probe(), ROOTS)
    assert problems == []
    shared = {s.name: s.notes for s in usable}
    assert shared == {
        "a": (),
        "b": ("/srv/x shared with a target iqn.2026-01.x:a LUN 1 (allow-in-use yes)",),
    }


def test_one_file_naming_a_store_twice() -> None:
    a = with_luns("a", 3261, ("/srv/x", False), ("/srv/x", False))
    usable, problems = check_stores([a], Applied(), Probe(), ROOTS)
    assert usable == [] and "already exported by a target" in problems[0].message


def test_the_default_instance_is_not_held_to_the_roots_but_keeps_its_stores() -> None:
    default = with_luns("default", 3260, ("/dev/sdb", False), kind=InstanceKind.DEFAULT)
    b = with_luns("b", 3262, ("/srv/sdb", False))
    usable, problems = check_stores([b, default], Applied(), Probe({"/srv/sdb": "/dev/sdb"}), ROOTS)
    assert [s.name for s in usable] == ["default"]
    assert "already exported by default" in problems[0].message
