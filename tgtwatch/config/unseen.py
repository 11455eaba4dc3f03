"""Applied instances whose file the instances directory no longer shows: held as they run."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from tgtwatch.model.structs import Applied, AppliedEntry, InstanceKind, Problem, Rule


def is_below(path: Path, directory: Path) -> bool:
    """`directory in path.parents`, lexical as it is, on the paths' strings (pathlib caches
    them): building every parent of 500 applied paths cost ~1 ms of CPU a cycle."""
    text, prefix = str(path), str(directory).rstrip("/") + "/"
    return len(text) > len(prefix) and text.startswith(prefix)


def unseen_problems(
    directory: Path, applied: Applied, quiet: dict[int, AppliedEntry] | None = None
) -> list[Problem]:
    """Applied instances whose file tgtwatch cannot see deleted: they are held as they run.

    Only deleting a file stops its instance. A missing instances_dir (moved away, its
    filesystem not mounted, a typo in the setting) deletes nothing: every instance applied
    from it keeps running, and this says so. A file outside instances_dir (the setting
    changed) keeps its instance until it is deleted or moved in.
    `quiet`: the entries already found to have nothing to say here (inside `directory`,
    or not a drop-in), by id, kept by the caller for this directory: a cycle then tests
    the entries that changed, and finds them by set arithmetic on ids (in C). A kept id is
    the same entry: the memo holds it, so its id cannot be reused.
    """
    values = applied.entries.values()
    if quiet is None:
        todo: Collection[AppliedEntry] = values
    else:
        by_id = dict(zip(map(id, values), values, strict=True))
        todo = [by_id[key] for key in by_id.keys() - quiet.keys()]
    outside: set[int] = set()
    for entry in todo:
        if entry.kind is not InstanceKind.DROPIN or is_below(entry.config, directory):
            if quiet is not None:
                quiet[id(entry)] = entry
            continue
        outside.add(id(entry))
    problems: list[Problem] = []
    if not os.path.lexists(directory):
        count = sum(1 for e in values if e.kind is InstanceKind.DROPIN)
        if not count:
            return []
        problems.append(
            Problem(
                directory,
                Rule.DIRECTORY,
                f"does not exist: the {count} instances applied from it are held as they "
                "run (only deleting a file stops its instance; an empty directory retires them)",
            )
        )
    for entry in [e for e in values if id(e) in outside] if outside else ():
        folder = entry.config.parent
        gone = not os.path.lexists(entry.config) and os.access(folder, os.R_OK | os.X_OK)
        if not gone:
            problems.append(
                Problem(
                    entry.config,
                    Rule.DIRECTORY,
                    f"outside instances_dir {directory}: its instance is held as it runs "
                    f"(move the file into {directory}, or delete it to stop the instance)",
                )
            )
    return problems
