"""A scan answered from the last one, when the events name every change and it is clean."""

from __future__ import annotations

import os

from tgtwatch.config import rules
from tgtwatch.config.incremental import InstanceCache, StoreJudge
from tgtwatch.config.instance_file import (
    default_reserved,
    engine_supports,
    name_problem,
    read_settled,
)
from tgtwatch.config.settings import Settings
from tgtwatch.config.stores import StoreProbe
from tgtwatch.config.trust import TrustedFiles, TrustPolicy
from tgtwatch.config.unseen import unseen_problems
from tgtwatch.model.structs import Applied, Desired, InstanceSpec


def patched(
    settings: Settings,
    applied: Applied,
    policy: TrustPolicy,
    probe: StoreProbe,
    cache: InstanceCache,
    key: tuple[object, ...],
    judge: StoreJudge,
) -> Desired | None:
    """The last answer with the reported files' specs put in place of their last ones,
    when that is what the whole scan gives: the last answer refused nothing, and each
    file read now is clean, loadable by the engine, and alone on its port and on its
    stores. A new file's cycle then costs that file, not a pass over every instance.
    The caller has found the instances directory sound (inventory.directory_problem).
    None: scan whole. A property test holds it equal to the whole scan."""
    directory = settings.instances_dir
    base = cache.event_base((settings, policy), directory)
    if base is None:
        return None
    last, names = base
    if last.problems:
        return None
    present = {name for name in names if os.path.lexists(directory / name)}
    came, went, listed = cache.came_went(present, names - present)
    candidates = {name for name in names if rules.is_candidate(name)}
    came_files, went_files = came & candidates, went & candidates
    if listed + len(came_files) - len(went_files) > settings.limits.files_per_directory:
        return None  # over the limit, a file's part depends on its place
    source = TrustedFiles(directory, policy)
    specs: dict[str, InstanceSpec | None] = dict.fromkeys(went_files)
    for name in sorted(candidates & present):
        if cache.name_problem(name, name_problem) is not None:
            return None
        path = directory / name
        result, settled = read_settled(path, source, settings.limits)
        if not settled or result.spec is None or result.problems:
            return None
        if engine_supports([result.spec], settings.engine)[1]:
            return None
        cache.keep(path, result)
        specs[name] = result.spec
    old = [spec for spec in map(cache.spec_of, specs) if spec is not None]
    instances = dict(last.instances)
    for spec in old:
        if instances.get(spec.port) is not spec:
            return None
        del instances[spec.port]
    new = [spec for spec in specs.values() if spec is not None]
    reserved = default_reserved(settings)
    ordered = True
    for spec in new:
        if spec.port in instances or spec.port in reserved:
            return None
        ordered = ordered and (not instances or spec.port > next(reversed(instances)))
        instances[spec.port] = spec
    quiet = cache.quiet_entries(directory, len(applied.entries))
    if unseen_problems(directory, applied, quiet):
        return None
    if not cache.passes.replace_alone(old, new, cache.probe(probe), cache.judge(judge)):
        return None
    if not specs:
        desired = last  # no instance file changed: the same object, so memos hold
    else:
        if not ordered:
            instances = dict(sorted(instances.items()))
        ports = {spec.port for spec in (*old, *new)}
        lineage = last.lineage.after(last, ports)
        desired = Desired(instances=instances, notes=last.notes, lineage=lineage)
    cache.patch(directory, key, desired, (came, went), specs, (came_files, went_files))
    return desired
