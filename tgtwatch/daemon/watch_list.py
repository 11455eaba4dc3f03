"""The directories the watcher arms, made again only when a spec that changed has includes."""

from __future__ import annotations

from itertools import chain
from operator import attrgetter
from pathlib import Path

from tgtwatch.model.lineage import changed_since
from tgtwatch.model.structs import Desired, InstanceSpec

_INCLUDES, _PARENT = attrgetter("includes"), attrgetter("parent")
_INCLUDE_DIRS = attrgetter("include_dirs")


def watch_paths(instances_dir: Path, tgt_dir: Path, desired: Desired | None) -> list[Path]:
    """instances_dir, tgt_dir, every directory an include reads from, and where each
    include looks for files (a glob that matches nothing yet hears of its first). Pure."""
    paths = {instances_dir, tgt_dir}
    if desired is not None:  # in C: as a loop, 500 specs cost a new file ~0.25 ms
        specs = desired.instances.values()
        paths.update(map(_PARENT, chain.from_iterable(map(_INCLUDES, specs))))
        paths.update(chain.from_iterable(map(_INCLUDE_DIRS, specs)))
    return sorted(paths)


def _has_includes(spec: InstanceSpec | None) -> bool:
    return spec is not None and bool(spec.includes or spec.include_dirs)


class WatchList:
    """watch_paths() of each cycle's answer. A new file's answer is the last one with a few
    ports changed (its lineage names them): when no spec on them, before or after, has an
    include, the list is the last one, the same object, and no pass over every spec runs
    on the loop's thread beside the start just handed to a lane."""

    def __init__(self) -> None:
        self._last: tuple[Path, Path, Desired, list[Path]] | None = None

    def paths(self, instances_dir: Path, tgt_dir: Path, desired: Desired) -> list[Path]:
        last = self._last
        if last is not None and last[0] == instances_dir and last[1] == tgt_dir:
            old = last[2]
            since = changed_since(desired, old)
            if since is not None and not any(
                _has_includes(state.instances.get(port))
                for state in (old, desired)
                for port in since
            ):
                self._last = (instances_dir, tgt_dir, desired, last[3])
                return last[3]
        paths = watch_paths(instances_dir, tgt_dir, desired)
        self._last = (instances_dir, tgt_dir, desired, paths)
        return paths
