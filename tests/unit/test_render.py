"""The canonical rendering: one spelling of a tree, built from typed values only, that reads
back as the same tree."""

from __future__ import annotations

import dataclasses

from builders import ROOT, MemorySource
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.every_key import every_key_text
from tgtwatch.config.render import render
from tgtwatch.config.tgtconf import parse
from tgtwatch.model.tree import (
    BsOFlag,
    BsType,
    ChapAccount,
    ConfigTree,
    DeviceType,
    Direction,
    Driver,
    IscsiParam,
    IsnsSettings,
    Lun,
    LunParams,
    ModePage,
    StoreKind,
    Target,
    TargetState,
)


def read(text: str, **more: str) -> ConfigTree:
    parsed = parse(ROOT / "t.conf", MemorySource.of({"t.conf": text, **more}))
    assert parsed.problems == (), parsed.problems
    assert parsed.tree is not None
    return parsed.tree


def without_instance_keys(tree: ConfigTree) -> ConfigTree:
    return dataclasses.replace(tree, socket_opts=None, portal_opts=None)


def test_rendering_is_canonical_and_reads_back() -> None:
    text = every_key_text(3263, "iqn.2026-01.x:t", "/srv/a", "/srv/b", "/dev/disk/by-id/c")
    tree = read(text)
    rendered = render(tree)
    assert read(rendered) == without_instance_keys(tree)
    assert render(read(rendered)) == rendered
    # nothing of the file's own spelling survives: no comments, no instance keys, no quotes
    assert "Every key" not in rendered and "SOCKET_OPTS" not in rendered and '"' not in rendered


def test_two_spellings_of_one_config_render_the_same() -> None:
    one = read(
        "# a comment\n<target iqn.2026-01.x:t>\n  backing-store /srv/b\n  backing-store /srv/a\n"
        "  MaxConnections = 2\n  readonly 1\n</target>\n"
    )
    two = read(
        "<target iqn.2026-01.x:t>\n<backing-store /srv/a>\nlun 1\nreadonly 1\n</backing-store>\n"
        '<backing-store /srv/b>\n readonly "1"\n</backing-store>\nMaxConnections 2\n</target>\n',
    )
    assert render(one) == render(two)


def test_includes_are_inlined() -> None:
    tree = read("include t.inc\n", **{"t.inc": "<target iqn.2026-01.x:t>\n</target>\n"})
    assert "include" not in render(tree)
    assert "<target iqn.2026-01.x:t>" in render(tree)


# --- any tree renders and reads back ---------------------------------------------------

_word = st.text(st.sampled_from("abcxyz0189.-"), min_size=1, max_size=8).filter(
    lambda w: not w.startswith(("-", ".")) and ".." not in w
)
_path = st.lists(_word.filter(lambda w: w != "."), min_size=1, max_size=3).map(
    lambda parts: "/srv/" + "/".join(parts)
)
_secret = st.text(st.sampled_from("abcXYZ019._-+@:/"), min_size=12, max_size=20).filter(
    lambda s: not s.startswith("-")
)
_user = st.text(st.sampled_from("abcxyz019._"), min_size=1, max_size=8)
_page = st.builds(
    ModePage,
    st.integers(0, 0x3F).filter(lambda p: p != 8),
    st.integers(0, 255),
    st.lists(st.integers(0, 255), max_size=4).map(tuple),
)
_params = st.builds(
    LunParams,
    scsi_id=st.none() | _word,
    vendor_id=st.none() | st.text(st.sampled_from("ABC019"), min_size=1, max_size=8),
    readonly=st.none() | st.integers(0, 1),
    rotation_rate=st.none() | st.integers(0, 65535),
    thin_provisioning=st.none() | st.integers(0, 1),
)


@st.composite
def _luns(draw: st.DrawFn) -> tuple[Lun, ...]:
    paths = draw(st.lists(_path, unique=True, max_size=4))
    numbers = draw(
        st.lists(st.integers(1, 300), unique=True, min_size=len(paths), max_size=len(paths))
    )
    luns = []
    for path, number in zip(paths, numbers, strict=True):
        pages = draw(st.lists(_page, max_size=2, unique_by=lambda p: (p.page, p.subpage)))
        bs_type = draw(st.none() | st.sampled_from(BsType))
        flags = [(), (BsOFlag.SYNC,), (BsOFlag.SYNC, BsOFlag.DIRECT)]
        if bs_type in (BsType.AIO, BsType.SSC):
            flags = [()]  # the grammar refuses bsoflags on those
        luns.append(
            Lun(
                number=number,
                path=path,
                kind=draw(st.sampled_from(StoreKind)),
                device_type=draw(st.none() | st.sampled_from(DeviceType)),
                bs_type=bs_type,
                bsoflags=draw(st.sampled_from(flags)),
                block_size=draw(st.none() | st.sampled_from([512, 4096])),
                params=draw(_params),
                mode_pages=tuple(pages),
                write_cache=draw(st.booleans()),
                allow_in_use=draw(st.booleans()),
            )
        )
    return tuple(sorted(luns, key=lambda lun: lun.number))


@st.composite
def _targets(draw: st.DrawFn) -> tuple[Target, ...]:
    names = draw(
        st.lists(_word.map(lambda w: f"iqn.2026-01.x:{w.lower()}"), unique=True, max_size=3)
    )
    targets = []
    used_paths: set[str] = set()
    for name in sorted(names):
        luns = tuple(lun for lun in draw(_luns()) if lun.path not in used_paths)
        used_paths |= {lun.path for lun in luns}
        users = draw(st.lists(_user, unique=True, max_size=2))
        targets.append(
            Target(
                name=name,
                luns=luns,
                driver=draw(st.sampled_from(Driver)),
                initiator_addresses=tuple(
                    draw(st.lists(st.sampled_from(["ALL", "10.0.0.0/8", "::1"]), unique=True))
                ),
                incoming=tuple(ChapAccount(f"u{name[-3:]}{u}", draw(_secret)) for u in users),
                outgoing=draw(
                    st.none()
                    | _secret.map(
                        lambda s, n=name: ChapAccount(f"out{n[-3:]}", s, Direction.OUTGOING)
                    )
                ),
                params=tuple(
                    sorted(
                        draw(
                            st.lists(
                                st.sampled_from(
                                    [
                                        IscsiParam("MaxConnections", "2"),
                                        IscsiParam("ImmediateData", "No"),
                                    ]
                                ),
                                unique=True,
                            )
                        ),
                        key=lambda p: p.name,
                    )
                ),
                state=draw(st.none() | st.sampled_from(TargetState)),
            )
        )
    return tuple(targets)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_targets(), st.booleans())
def test_any_tree_renders_and_reads_back_the_same(targets: tuple[Target, ...], isns: bool) -> None:
    users = [a.user for t in targets for a in (*t.incoming, *([t.outgoing] if t.outgoing else []))]
    if len(users) != len(set(users)):
        return  # one secret per user: the grammar refuses a user given twice
    tree = ConfigTree(
        targets=targets,
        isns=IsnsSettings("127.0.0.1", 3205, False, isns) if isns else IsnsSettings(),
    )
    assert read(render(tree)) == tree


def test_a_rendering_without_accounts_holds_no_secret() -> None:
    text = every_key_text(3263, "iqn.2026-01.x:t", "/srv/a", "/srv/b", "/dev/disk/by-id/c")
    tree = read(text)
    bare = render(tree, accounts=False)
    assert all(s not in bare for s in ("discosecret", "tenantsecret", "targetsecret", "user "))
    assert read(bare) == dataclasses.replace(
        without_instance_keys(tree),
        discovery_incoming=None,
        discovery_outgoing=None,
        targets=tuple(dataclasses.replace(t, incoming=(), outgoing=None) for t in tree.targets),
    )
