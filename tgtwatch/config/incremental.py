"""What each instance file gave when last read, so a cycle re-reads only what changed."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from tgtwatch.model.structs import InstanceSpec, Problem


@dataclass(frozen=True)
class FileResult:
    """One instance file read and checked on its own: its spec or its problems, and what
    it depends on (every file it read, and the directories its includes come from: a
    wildcard include gains a file there without any file it read changing)."""

    spec: InstanceSpec | None
    problems: tuple[Problem, ...]
    files: frozenset[Path]
    include_dirs: frozenset[Path]

    def touched_by(self, changed: Collection[Path]) -> bool:
        """A file it read, a file in a directory it includes from, or a directory above
        any of them (moved, re-armed after a gap) was reported."""
        return any(
            p in self.files
            or p in self.include_dirs
            or p.parent in self.include_dirs
            or any(p in f.parents for f in self.files)
            for p in changed
        )


class InstanceCache:
    """Per instance file path, its last FileResult. Owned by one Reconciler (never shared).

    `changed` names the paths the watcher reported since the last cycle; None means the
    events may be incomplete (start, resync, overflow, SIGHUP): everything is read again.
    """

    def __init__(self) -> None:
        self._results: dict[Path, FileResult] = {}

    def __len__(self) -> int:
        return len(self._results)

    def reusable(self, path: Path, changed: Collection[Path] | None) -> FileResult | None:
        """The cached result, if no change it depends on was reported since."""
        if changed is None:
            return None
        result = self._results.get(path)
        if result is None or result.touched_by(changed):
            return None
        return result

    def unannounced(self, path: Path, changed: Collection[Path] | None) -> bool:
        """A file never read whose event has not come: it is still being written (its close
        or its rename into place will name it), so it is not read now — reading it could
        see half a file and reject it for a moment."""
        if changed is None or path in self._results:
            return False
        return not any(p == path or p in path.parents for p in changed)

    def keep(self, path: Path, result: FileResult) -> None:
        self._results[path] = result

    def retain(self, paths: Collection[Path]) -> None:
        """Forget every file no longer listed in the directory."""
        for gone in self._results.keys() - set(paths):
            del self._results[gone]

    def clear(self) -> None:
        self._results.clear()
