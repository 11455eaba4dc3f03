"""A scan answered from the last one (config/patch.py) gives what the whole scan gives."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from builders import entry_for, instance_text, settings_under, write
from hypothesis import given
from hypothesis import settings as run_settings
from hypothesis import strategies as st

from tgtwatch.config import patch
from tgtwatch.config.incremental import InstanceCache
from tgtwatch.config.inventory import scan
from tgtwatch.config.settings import Settings
from tgtwatch.config.trust import TrustPolicy
from tgtwatch.model.structs import Applied, Desired

T = "iqn.2026-01.com.example:t"
NAMES = ["a.conf", "b.conf", "c.conf", "d.conf", "a.conf~", ".b.conf.swp", "4913"]


def text(port: int, store: str, target: str) -> str:
    return (
        f'SOCKET_OPTS="{port}"\nPORTAL_OPTS="0.0.0.0:{port}"\n'
        f"<target {T}{target}>\n    backing-store /srv/{store}.img\n</target>\n"
    )


@contextmanager
def tree(manage: bool, default_conf: bool) -> Iterator[Settings]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_under(Path(tmp), manage)
        if default_conf:
            write(settings.default_config, f"<target {T}default>\n</target>\n")
        (settings.instances_dir / "inc").mkdir()  # `include inc/*.inc` matches nothing at first
        yield settings


def applied_as(desired: Desired) -> Applied:
    return Applied({port: entry_for(spec) for port, spec in desired.instances.items()})


# One step: write a file (its port, its store, broken or not, including inc/*.inc or not),
# delete one, write or delete the include, or apply what the last scan asked for (the
# applied owner keeps a contested port).
STEP = st.one_of(
    st.tuples(
        st.just("write"),
        st.sampled_from(NAMES),
        st.sampled_from([3260, 3261, 3262, 3263, 3264]),
        st.sampled_from(["s1", "s2", "s3", "s4"]),
        st.sampled_from(["clean", "broken", "includes"]),
    ),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("include"), st.sampled_from(["s1", "s5", None])),
    st.tuples(st.just("apply")),
)


@run_settings(deadline=None, max_examples=150)
@given(
    manage=st.booleans(),
    default_conf=st.booleans(),
    steps=st.lists(STEP, min_size=1, max_size=12),
)
def test_every_scan_equals_the_whole_scan(
    manage: bool, default_conf: bool, steps: list[tuple[object, ...]]
) -> None:
    policy = TrustPolicy(owner_uid=os.getuid())
    with tree(manage, default_conf) as settings:
        cache = InstanceCache()
        applied = Applied()
        last = scan(settings, applied, policy, cache=cache, changed=None)
        for step in steps:
            changed: set[Path] = set()
            if step[0] == "write":
                _, name, port, store, kind = step
                path = settings.instances_dir / str(name)
                body = text(int(str(port)), str(store), str(name).split(".")[0])
                if kind == "includes":
                    body += "include inc/*.inc\n"
                write(path, "<target broken\n" if kind == "broken" else body)
                changed = {path}
            elif step[0] == "include":
                path = settings.instances_dir / "inc/t.inc"
                if step[1] is None:
                    path.unlink(missing_ok=True)
                else:
                    write(
                        path, f"<target {T}inc>\n    backing-store /srv/{step[1]}.img\n</target>\n"
                    )
                changed = {path}
            elif step[0] == "delete":
                path = settings.instances_dir / str(step[1])
                path.unlink(missing_ok=True)
                changed = {path}
            else:
                applied = applied_as(last)
            last = scan(settings, applied, policy, cache=cache, changed=changed)
            whole = scan(settings, applied, policy)
            assert last == whole
            assert list(last.instances) == list(whole.instances)


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> list[Desired | None]:
    """What each scan's patch path answered (None: it left the scan to the whole passes)."""
    seen: list[Desired | None] = []
    real = patch.patched

    def recording(*args: object, **kwargs: object) -> Desired | None:
        got = real(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(got)
        return got

    monkeypatch.setattr(patch, "patched", recording)
    return seen


def one_file(settings: Settings, policy: TrustPolicy) -> tuple[InstanceCache, Desired]:
    """A cache after a whole scan of the default instance and a.conf."""
    cache = InstanceCache()
    write(settings.default_config, f"<target {T}d>\n</target>\n")
    write(settings.instances_dir / "a.conf", instance_text(3261, f"{T}a"))
    return cache, scan(settings, Applied(), policy, cache=cache)


def test_a_clean_new_file_is_patched_in_and_a_shared_store_goes_the_whole_way(
    settings: Settings, policy: TrustPolicy, answers: list[Desired | None]
) -> None:
    cache, _ = one_file(settings, policy)
    b = write(settings.instances_dir / "b.conf", instance_text(3262, f"{T}b"))
    got = scan(settings, Applied(), policy, cache=cache, changed={b})
    assert answers[-1] is got and list(got.instances) == [3260, 3261, 3262]
    # The same store as a.conf: only the whole passes say who keeps it.
    c = write(settings.instances_dir / "c.conf", text(3263, "ta", "c"))
    got = scan(settings, Applied(), policy, cache=cache, changed={c})
    assert answers[-1] is None and [p.path for p in got.problems] == [c]
    assert got == scan(settings, Applied(), policy)


def test_an_editor_probe_after_a_lane_ended_gives_the_last_answer_itself(
    settings: Settings, policy: TrustPolicy, answers: list[Desired | None]
) -> None:
    # A lane's end made a new applied state: the last answer is not "quiet" (made from
    # another applied state), but nothing it holds changed with it, and no instance file
    # changed: the same object, so every memo downstream holds.
    cache, first = one_file(settings, policy)
    probe = write(settings.instances_dir / "4913", "")  # vim's write probe
    assert scan(settings, applied_as(first), policy, cache=cache, changed={probe}) is first
    assert answers[-1] is first
