"""WatchList: the watcher's directories, made again only when a changed spec has includes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from builders import spec
from hypothesis import given, settings
from hypothesis import strategies as st

from tgtwatch.daemon.watch_list import WatchList, watch_paths
from tgtwatch.model.lineage import NO_LINEAGE
from tgtwatch.model.structs import Desired

INSTANCES, TGT = Path("/etc/mytgt/conf.d"), Path("/etc/tgt")
PORTS = (3261, 3262, 3263)
# Per port: no include, an include read from luns.d, a glob looking in an empty glob.d.
SPECS = {
    p: (
        spec(f"i{p}", p),
        replace(spec(f"i{p}", p), includes=(INSTANCES / f"luns{p}.d/a.inc",)),
        replace(spec(f"i{p}", p), include_dirs=(INSTANCES / f"glob{p}.d",)),
    )
    for p in PORTS
}


def test_a_new_file_without_includes_keeps_the_very_list() -> None:
    watch = WatchList()
    first = Desired({3261: SPECS[3261][0]})
    paths = watch.paths(INSTANCES, TGT, first)
    assert paths == [INSTANCES, TGT]
    second = Desired(
        {**first.instances, 3262: SPECS[3262][0]}, lineage=first.lineage.after(first, [3262])
    )
    assert watch.paths(INSTANCES, TGT, second) is paths
    third = Desired(
        {**second.instances, 3263: SPECS[3263][2]}, lineage=second.lineage.after(second, [3263])
    )
    assert watch.paths(INSTANCES, TGT, third) == [INSTANCES, INSTANCES / "glob3263.d", TGT]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(PORTS), st.integers(-1, 2), st.booleans(), st.booleans()),
        min_size=1,
        max_size=20,
    )
)
def test_every_list_equals_watch_paths(steps: list[tuple[int, int, bool, bool]]) -> None:
    watch = WatchList()
    chosen: dict[int, int] = {}
    last: Desired | None = None
    kept: list[Desired] = []  # every state alive: a lineage names them weakly
    for port, choice, derived, moved in steps:
        if choice < 0:
            chosen.pop(port, None)
        else:
            chosen[port] = choice
        instances = {p: SPECS[p][c] for p, c in sorted(chosen.items())}
        lineage = last.lineage.after(last, [port]) if last is not None and derived else NO_LINEAGE
        desired = Desired(instances, lineage=lineage)
        kept.append(desired)
        instances_dir = INSTANCES.parent / "other" if moved else INSTANCES  # a SIGHUP
        assert watch.paths(instances_dir, TGT, desired) == watch_paths(instances_dir, TGT, desired)
        last = desired
