"""What each instance file gave when last read, so a cycle re-reads only what changed."""

from __future__ import annotations

import os
from bisect import insort
from collections.abc import Callable, Collection, Set
from pathlib import Path

from tgtwatch.config.dependents import CachedProbe, DependentsIndex, FileResult
from tgtwatch.config.passes import Passes
from tgtwatch.config.stores import StoreFacts, StoreProbe
from tgtwatch.model.structs import AppliedEntry, Desired, InstanceSpec, Problem

StoreJudge = Callable[[str, StoreFacts], "str | None"]
# One instance file's part of a scan: its problems and its spec; None: not read yet.
Part = tuple[tuple[Problem, ...], InstanceSpec | None] | None


class InstanceCache:
    """Per instance file path, its last FileResult. Owned by one Reconciler (never shared).

    `changed` names the paths the watcher reported since the last cycle; None means the
    events may be incomplete (start, resync, overflow, SIGHUP): everything is read again.
    """

    def __init__(self) -> None:
        self._results: dict[Path, FileResult] = {}
        # What each backing store's path looked like when last checked, and the stores of
        # the files read again this scan (looked up again: their file changed).
        self._facts: dict[str, StoreFacts] = {}
        self._fresh: set[str] = set()
        self._verdicts: dict[str, str | None] = {}  # store_problem of each store's facts
        # This scan's reported paths and their parents (begin() sets them).
        self._named: frozenset[Path] = frozenset()
        self._named_parents: frozenset[Path] = frozenset()
        # The last scan's answer, what it was made from (settings, applied, policy: by
        # identity) and the directory's instance file names then: a cycle whose events
        # changed nothing returns it as it was (quiet()). None: the next scan is whole.
        self._last: tuple[tuple[object, ...], Desired] | None = None
        self._basis: tuple[object, ...] = ()  # the last answer's settings and policy
        self._names: frozenset[str] = frozenset()
        self._default_deps: tuple[frozenset[Path], frozenset[Path]] = (frozenset(), frozenset())
        self._index = DependentsIndex()  # who depends on each path, kept with _results
        self._touched: set[Path] = set()  # the files this scan's reported paths touch
        self._paths: dict[str, Path] = {}  # instance file name -> its path in _paths_of
        self._paths_of: Path | None = None
        self.passes = Passes()  # the claims and conflicts of each spec left alone
        self._why_names: dict[str, str | None] = {}  # rules.name_problem per file name
        # The last scan's part of each instance file, by name, and the directory read.
        self._parts: dict[str, Part] | None = None
        self._parts_of: Path | None = None
        # The directory's last listing (every name) and its instance file names in order:
        # a listing that differs by a few names costs those names, not a test per name.
        self._listing: tuple[Path, frozenset[str], list[str]] | None = None
        self._went: frozenset[str] | None = None  # names the listing lost (None: unknown)
        self._listing_unretained = False
        self._paths_list: tuple[list[str], list[Path]] | None = None  # paths() last answer
        # Applied entries unseen_problems has nothing to say of, by id (the entry
        # held, so its id is not reused): see unseen.unseen_problems.
        self._quiet_entries: tuple[Path, dict[int, AppliedEntry]] | None = None

    def __len__(self) -> int:
        return len(self._results)

    def reusable(self, path: Path, changed: Collection[Path] | None) -> FileResult | None:
        """The cached result, if no change it depends on was reported since."""
        if changed is None:
            return None
        result = self._results.get(path)
        # As result.touched_by(...), from the index begin() looked in: a set lookup a file.
        if result is None or path in self._touched:
            return None
        return result

    def unannounced(self, path: Path, changed: Collection[Path] | None) -> bool:
        """A file never read whose event has not come: it is still being written (its close
        or its rename into place will name it), so it is not read now — reading it could
        see half a file and reject it for a moment."""
        if changed is None or path in self._results:
            return False
        # The path's few parents looked up in the set begin() made: a burst of thousands of
        # new files made the pairwise test quadratic (10,000 files: minutes of CPU).
        named = self._named
        return path not in named and not any(parent in named for parent in path.parents)

    def last(self, path: Path) -> FileResult | None:
        """The file's last kept result, whatever was reported since."""
        return self._results.get(path)

    def lookup(
        self, path: Path, changed: Collection[Path] | None
    ) -> tuple[bool, FileResult | None]:
        """(unannounced(path), reusable(path)) in one call: 500 files a scan."""
        if changed is None:
            return False, None
        result = self._results.get(path)
        if result is None:
            return self.unannounced(path, changed), None
        return False, None if path in self._touched else result

    def parts(
        self, directory: Path, candidates: list[str], limit: int
    ) -> tuple[dict[str, Part], set[str]] | None:
        """The last scan's part of each instance file still listed, and the names whose
        part is made again: new ones, the reported ones, and those whose files or include
        directories the reports touch (the index). The others are as the last scan made
        them: a scan costs the changed files, not a step per file. None: make every part
        (the first or a whole scan, the directory or one above it reported, over the
        limit: a file's part then depends on its place)."""
        parts, named = self._parts, self._named
        if parts is None or self._parts_of != directory or len(candidates) > limit:
            return None
        if directory in named or any(d in named for d in directory.parents):
            return None
        listed = set(candidates)
        for gone in parts.keys() - listed:
            del parts[gone]
        redo = listed - parts.keys()
        redo |= {p.name for p in named | self._touched if p.parent == directory} & listed
        return parts, redo

    def candidates(
        self, directory: Path, names: list[str], is_candidate: Callable[[str], bool]
    ) -> list[str]:
        """[n for n in sorted(names) if is_candidate(n)] (pure), made from the last listing's
        answer and the names that came or went since. The caller must not change the list."""
        listed = frozenset(names)
        last = self._listing
        # A listing whose scan never reached retain(): what it lost is not known any more.
        stale, self._listing_unretained = self._listing_unretained, True
        if last is None or last[0] != directory:
            found = [n for n in sorted(names) if is_candidate(n)]
            self._went = None
            self._listing = (directory, listed, found)
            return found
        self._went = None if stale else last[1] - listed
        if last[1] == listed:
            return last[2]
        came = {n for n in listed - last[1] if is_candidate(n)}
        found = sorted(came.union(last[2]).intersection(listed))
        self._listing = (directory, listed, found)
        return found

    def quiet_entries(self, directory: Path, entries: int) -> dict[int, AppliedEntry]:
        """The entries unseen_problems found nothing to say of in `directory`, by id."""
        known = self._quiet_entries
        if known is None or known[0] != directory or len(known[1]) > 2 * entries + 64:
            known = self._quiet_entries = (directory, {})  # another directory, or entries long gone
        return known[1]

    def keep_parts(self, directory: Path, parts: dict[str, Part] | None) -> None:
        """This scan's parts, for the next (None: the next makes every part again)."""
        self._parts, self._parts_of = parts, directory

    def name_problem(self, filename: str, judge: Callable[[str], str | None]) -> str | None:
        """judge(filename) (pure), remembered per name."""
        known = self._why_names
        if filename not in known:
            if len(known) > 2 * len(self._results) + 64:
                known.clear()  # names long gone
            known[filename] = judge(filename)
        return known[filename]

    def keep(self, path: Path, result: FileResult) -> None:
        old = self._results.get(path)
        if old is not None:
            self._index.remove(path, old)
        self._results[path] = result
        self._index.add(path, result)
        if result.spec is not None and result.spec.tree is not None:
            self._fresh.update(lun.path for t in result.spec.tree.targets for lun in t.luns)

    def begin(self, changed: Collection[Path] | None) -> None:
        """A new scan; None forgets everything (every file and store is looked at again)."""
        self._named = frozenset(changed or ())
        self._named_parents = frozenset(p.parent for p in self._named)
        self._fresh.clear()
        self._touched = set()
        if changed is None:
            self._results.clear()
            self._index = DependentsIndex()
            self._facts.clear()
            self._verdicts.clear()
            self._last = None
            self._basis = ()
            self._parts = None
            self._listing = None
            self._went, self._listing_unretained = None, False
            self.passes.forget()
        else:
            self._touched = self._index.touched(self._named, self._named_parents)

    def probe(self, inner: StoreProbe) -> StoreProbe:
        """`inner`, but a store of an unchanged file keeps the facts of its last check."""
        return CachedProbe(inner, self._facts, self._fresh, self._verdicts, self.passes.refreshed)

    def judge(self, judge: StoreJudge) -> StoreJudge:
        """`judge`, remembered per store until its facts are looked up again (the roots and
        the owner come from the settings: a change of them is a SIGHUP, a full scan)."""
        verdicts = self._verdicts

        def remembered(path: str, facts: StoreFacts) -> str | None:
            if path not in verdicts:
                verdicts[path] = judge(path, facts)
            return verdicts[path]

        return remembered

    def paths(self, directory: Path, names: list[str]) -> list[Path]:
        """directory / name for each, made once per name (500 files: ~3 ms a scan)."""
        made = self._paths
        if self._paths_of != directory or len(made) > 2 * len(names) + 64:
            made.clear()  # another directory, or names long gone
            self._paths_of = directory
            self._paths_list = None
        last = self._paths_list
        if last is not None and last[0] is names:  # the listing's own list: nothing came
            return last[1]
        for name in set(names).difference(made):  # the names new since: in C, the rest
            made[name] = directory / name
        paths = list(map(made.__getitem__, names))
        self._paths_list = (names, paths)
        return paths

    def retain(self, paths: Collection[Path], names: Collection[str]) -> None:
        """Forget every file no longer listed in the directory (`names`: the paths' names).
        After a listing made from the last one (candidates()), only the names it lost are
        looked at: every file kept was listed last time."""
        went, directory = self._went, self._paths_of
        if went is not None and directory is not None and self._listing_unretained:
            gone: Collection[Path] = [directory / n for n in went]
        else:
            gone = self._results.keys() - set(paths)
        for path in gone:
            result = self._results.pop(path, None)
            if result is not None:
                self._index.remove(path, result)
        self._went, self._listing_unretained = None, False
        self._names = frozenset(names)

    def settle(
        self,
        key: tuple[object, ...],
        desired: Desired,
        default_files: frozenset[Path],
        default_dirs: frozenset[Path],
        basis: tuple[object, ...] = (),
    ) -> None:
        """Remember a whole scan's answer, and what the default instance's part of it read:
        its files, and the directories a new file in would change it (tgt_dir, includes).
        `basis`: what of `key` the answer depends on whatever the files (settings, policy)."""
        self._last = (key, desired)
        self._basis = basis
        self._default_deps = (default_files, default_dirs)

    def _default_named(self) -> bool:
        """A reported path is the default instance's file, or beside one (tgt_dir, includes)."""
        named = self._named
        files, dirs = self._default_deps
        return bool(named & files or named & dirs or self._named_parents & dirs)

    def event_base(
        self, basis: tuple[object, ...], directory: Path
    ) -> tuple[Desired, set[str]] | None:
        """The last answer and the names in `directory` this scan's reports may change
        (reported, or reading a reported path), when the events tell every change: the last
        answer is made from the same settings and policy (by identity), the directory was
        listed whole and kept since, and neither it, a directory above it, nor the default
        instance's files were reported. The listing is then the last one with the reported
        names looked at (a file no event named is as it was; the resync lists again).
        None: list the directory and scan as usual."""
        last, named = self._last, self._named
        listing = self._listing
        if (
            last is None
            or len(basis) != len(self._basis)
            or any(a is not b for a, b in zip(basis, self._basis, strict=True))
            or self._parts is None
            or self._parts_of != directory
            or listing is None
            or listing[0] != directory
            or self._listing_unretained
            or directory in named
            or any(d in named for d in directory.parents)
            or self._default_named()
        ):
            return None
        names = {p.name for p in named if p.parent == directory}
        names.update(p.name for p in self._touched if p.parent == directory)
        return last[1], names

    def spec_of(self, name: str) -> InstanceSpec | None:
        """The spec the last scan's part of this instance file name gave, if any."""
        part = (self._parts or {}).get(name)
        return None if part is None else part[1]

    def came_went(self, present: Set[str], absent: Set[str]) -> tuple[set[str], set[str], int]:
        """Of the names looked at, those new to the last listing and those it loses; and
        how many instance files it held."""
        assert self._listing is not None
        _, listed, files = self._listing
        return set(present - listed), set(absent & listed), len(files)

    def patch(
        self,
        directory: Path,
        key: tuple[object, ...],
        desired: Desired,
        listed: tuple[set[str], set[str]],
        parts: dict[str, InstanceSpec | None],
        found: tuple[set[str], set[str]],
    ) -> None:
        """Keep a scan made from the last one (event_base): `listed` the names that came
        and went in the directory, `found` the instance file names among them, `parts` each
        instance file's new spec (None: gone). Its results were kept as read (keep())."""
        assert self._listing is not None and self._parts is not None
        came, went = listed
        came_files, went_files = found
        _, names, order = self._listing
        if came or went:
            names = names.union(came).difference(went)
        if came_files or went_files:
            order = [n for n in order if n not in went_files] if went_files else list(order)
            for name in came_files:
                insort(order, name)
            self._names = self._names.union(came_files).difference(went_files)
        self._listing = (directory, names, order)
        for name, spec in parts.items():
            if spec is None:
                self._parts.pop(name, None)
                result = self._results.pop(directory / name, None)
                if result is not None:
                    self._index.remove(directory / name, result)
            else:
                self._parts[name] = ((), spec)
        self._last = (key, desired)

    def quiet(
        self,
        key: tuple[object, ...],
        directory: Path,
        read: Callable[[Path], FileResult],
        probe: StoreProbe,
    ) -> Desired | None:
        """The last scan's answer, when this scan (begin()) could not give another: made
        from the same settings, applied state and policy, the directory lists the same
        instance files, and every file the reported paths touch reads as it did, its
        backing stores looking as they did. Costs the reported paths, not the files.
        None: scan as usual."""
        last = self._last
        if (
            last is None
            or len(last[0]) != len(key)
            or any(a is not b for a, b in zip(last[0], key, strict=True))
        ):
            return None
        named = self._named
        if directory in named or any(d in named for d in directory.parents):
            return None  # the directory itself was moved, replaced or re-armed
        if self._default_named():
            return None  # the default instance's files, or a file beside them
        for path in named:
            came_or_went = (path.name in self._names) != os.path.lexists(path)
            if path.parent == directory and path.name.endswith(".conf") and came_or_went:
                return None
        touched = set(self._touched)
        # A reported instance file never read (it was still being written): read it now.
        touched |= {p for p in named if p.parent == directory and p.name.endswith(".conf")}
        for path in touched:
            old = self._results.get(path)
            new = read(path)
            if new != old:
                return None
            tree = new.spec.tree if new.spec is not None else None
            stores = [lun.path for t in tree.targets for lun in t.luns] if tree else []
            if any(probe.facts(store) != self._facts.get(store) for store in stores):
                return None
        return last[1]
