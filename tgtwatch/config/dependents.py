"""What reading an instance file depends on: the paths it read, who reads each path, and
each backing store's facts as last looked at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tgtwatch.config.stores import StoreFacts, StoreProbe
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
    above: frozenset[Path] = frozenset()  # every directory above a file it read

    @classmethod
    def of(
        cls,
        spec: InstanceSpec | None,
        problems: tuple[Problem, ...],
        files: frozenset[Path],
        include_dirs: frozenset[Path],
    ) -> FileResult:
        above = frozenset(d for f in files for d in f.parents)
        return cls(spec, problems, files, include_dirs, above)

    def touched_by(self, named: frozenset[Path], parents: frozenset[Path]) -> bool:
        """A file it read, a file in a directory it includes from, or a directory above
        any of them (moved, re-armed after a gap) was reported. `parents` are the reported
        paths' parents: set intersections keep a burst of thousands of events linear."""
        return bool(
            self.files & named
            or self.include_dirs & named
            or self.include_dirs & parents
            or self.above & named
        )


class CachedProbe:
    """A store probe that keeps each store's facts until a file naming it is read again."""

    def __init__(
        self,
        inner: StoreProbe,
        facts: dict[str, StoreFacts],
        fresh: set[str],
        verdicts: dict[str, str | None],
        refreshed: set[str],
    ) -> None:
        self._inner, self._facts, self._fresh, self._verdicts = inner, facts, fresh, verdicts
        self._refreshed = refreshed

    def facts(self, path: str) -> StoreFacts:
        known = self._facts.get(path)
        if known is None or path in self._fresh:
            known = self._facts[path] = self._inner.facts(path)
            self._verdicts.pop(path, None)
            self._refreshed.add(path)
            self._fresh.discard(path)  # once per scan, even if two files name it
        return known


class DependentsIndex:
    """Per path, the instance files whose result depends on it (FileResult.touched_by,
    turned round: a cycle looks up the paths it was told of, not every file). Kept as
    results are kept and forgotten: a new file costs its own paths, not every file's."""

    def __init__(self) -> None:
        self.by_file: dict[Path, set[Path]] = {}
        self.by_dir: dict[Path, set[Path]] = {}
        self.by_above: dict[Path, set[Path]] = {}

    def _tables(
        self, result: FileResult
    ) -> tuple[tuple[dict[Path, set[Path]], frozenset[Path]], ...]:
        return (
            (self.by_file, result.files),
            (self.by_dir, result.include_dirs),
            (self.by_above, result.above),
        )

    def add(self, path: Path, result: FileResult) -> None:
        for table, keys in self._tables(result):
            for key in keys:
                table.setdefault(key, set()).add(path)

    def remove(self, path: Path, result: FileResult) -> None:
        for table, keys in self._tables(result):
            for key in keys:
                dependents = table.get(key)
                if dependents is not None:
                    dependents.discard(path)
                    if not dependents:
                        del table[key]

    def touched(self, named: frozenset[Path], parents: frozenset[Path]) -> set[Path]:
        found: set[Path] = set()
        for path in named:
            found |= self.by_file.get(path, set())
            found |= self.by_dir.get(path, set())
            found |= self.by_above.get(path, set())
        for parent in parents:
            found |= self.by_dir.get(parent, set())
        return found
