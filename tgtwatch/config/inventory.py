"""Scan tgt_dir and instances_dir into the Desired instance set and the problems found."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from itertools import chain
from operator import attrgetter, itemgetter
from pathlib import Path

from tgtwatch.config import patch, rules
from tgtwatch.config.claims import check_stores
from tgtwatch.config.grammar import DEFAULT_LIMITS, Dialect, Limits
from tgtwatch.config.incremental import InstanceCache, Part, StoreJudge
from tgtwatch.config.instance_file import (
    default_reserved,
    directory_problem,
    engine_supports,
    name_problem,
    read_instance,
    read_settled,
    spec_from,
)
from tgtwatch.config.settings import Settings
from tgtwatch.config.stores import FilesystemProbe, StoreProbe, store_problem
from tgtwatch.config.tgtconf import parse
from tgtwatch.config.trust import TrustedFiles, TrustPolicy
from tgtwatch.config.unseen import unseen_problems
from tgtwatch.model.structs import (
    DEFAULT_NAME,
    Applied,
    Desired,
    InstanceKind,
    InstanceSpec,
    Problem,
    Rule,
)


def settle_conflicts(
    candidates: Sequence[InstanceSpec], reserved: dict[int, str], applied: Applied
) -> tuple[dict[int, InstanceSpec], list[Problem]]:
    """One owner per port: the applied owner keeps it, else the first path in sorted order."""
    by_port: dict[int, list[InstanceSpec]] = {}
    for spec in sorted(candidates, key=lambda s: str(s.config)):
        by_port.setdefault(spec.port, []).append(spec)
    owners: dict[int, InstanceSpec] = {}
    problems: list[Problem] = []
    for port, claimants in sorted(by_port.items()):
        if port in reserved:
            problems.extend(
                Problem(s.config, Rule.CONFLICT, f"port {port} is {reserved[port]}")
                for s in claimants
            )
            continue
        entry = applied.entries.get(port)
        owner = next((s for s in claimants if entry and s.config == entry.config), claimants[0])
        owners[port] = owner
        problems.extend(
            Problem(s.config, Rule.CONFLICT, f"port {port} already used by {owner.config}")
            for s in claimants
            if s is not owner
        )
    return owners, problems


def scan_default(
    settings: Settings, policy: TrustPolicy
) -> tuple[InstanceSpec | None, list[Problem], list[str]]:
    """The distribution's tgtd as tgt_dir/targets.conf configures it."""
    config = settings.default_config
    if not settings.default_instance.manage:
        return None, [], []
    if not settings.tgt_dir.is_dir():
        return None, [], [f"{settings.tgt_dir}: does not exist; no default instance"]
    if not config.exists():
        return None, [], [f"{config}: does not exist; no default instance"]
    parsed = parse(
        config,
        TrustedFiles(settings.tgt_dir, policy),
        dialect=Dialect.DEFAULT,
        limits=settings.limits,
    )
    problems = list(parsed.problems)
    di = settings.default_instance
    for option in parsed.values("control-port"):
        if option.value != str(di.control_port):
            problems.append(
                Problem(
                    option.path,
                    Rule.PORT,
                    f"control-port {option.value} differs from default_instance.control_port "
                    f"{di.control_port} in the settings",
                    option.line,
                )
            )
    if problems:
        return None, problems, []
    spec = spec_from(parsed, DEFAULT_NAME, InstanceKind.DEFAULT, di.portal, di.control_port)
    return spec, [], []


def scan_instances(
    directory: Path,
    policy: TrustPolicy,
    limits: Limits = DEFAULT_LIMITS,
    cache: InstanceCache | None = None,
    changed: Collection[Path] | None = None,
) -> tuple[list[InstanceSpec], list[Problem], list[str]]:
    """Every instance file in the directory, parsed and checked on its own: whatever goes
    wrong with one file (an OSError included) is that file's problem only. With a cache,
    a file is read again only when `changed` names it or a file or include directory it
    depends on (None: every file is read again)."""
    if cache is not None:
        cache.begin(changed)
    try:
        problem = directory_problem(directory, policy)
        names = os.listdir(directory)
    except OSError as exc:
        if cache is not None:
            cache.keep_parts(directory, None)  # the next listing makes every part
        if isinstance(exc, FileNotFoundError):
            return [], [], [f"{directory}: does not exist; no instances from it"]
        return [], [Problem(directory, Rule.DIRECTORY, f"cannot read: {exc.strerror}")], []
    if problem is not None:
        if cache is not None:
            cache.keep_parts(directory, None)
        return [], [problem], []
    source = TrustedFiles(directory, policy)
    candidates = (
        [name for name in sorted(names) if rules.is_candidate(name)]
        if cache is None
        else cache.candidates(directory, names, rules.is_candidate)
    )
    paths = (
        [directory / n for n in candidates] if cache is None else cache.paths(directory, candidates)
    )
    limit = limits.files_per_directory

    def part(count: int, filename: str, path: Path) -> Part:
        if count > limit:
            return (
                (
                    Problem(
                        path,
                        Rule.LIMIT,
                        f"{directory} holds {len(candidates)} instance files, more than the "
                        f"{limit} allowed: this one is not read",
                    ),
                ),
                None,
            )
        why = (
            name_problem(filename) if cache is None else cache.name_problem(filename, name_problem)
        )
        if why is not None:
            return (Problem(path, Rule.NAME, why),), None
        result = None
        if cache is not None:
            unannounced, result = cache.lookup(path, changed)
            if unannounced:
                return None
        if result is None:
            if cache is None:
                result = read_instance(path, source, limits)
            else:
                result, settled = read_settled(path, source, limits)
                kept = None if settled else cache.last(path)
                if kept is not None:
                    # Changed while read: its last reading holds until the change's event
                    # (a reject now would be a false alarm). With none, as read (a refused
                    # file's instance runs on, where a file left out would be drained).
                    return kept.problems, kept.spec
                cache.keep(path, result)
        return result.problems, result.spec

    known = None if cache is None else cache.parts(directory, candidates, limit)
    if known is None:
        pairs = enumerate(zip(candidates, paths, strict=True), start=1)
        parts = {filename: part(count, filename, path) for count, (filename, path) in pairs}
    else:
        parts, redo = known
        for filename in redo:  # within the limit (parts() said so): any place will do
            parts[filename] = part(1, filename, directory / filename)
    # In C (map, filter, chain): 500 files a cycle. A part is None (a file not read yet),
    # or (its problems, its spec or None); a spec is never false.
    made = list(filter(None, map(parts.__getitem__, candidates)))
    problems = list(chain.from_iterable(map(itemgetter(0), made)))
    specs: list[InstanceSpec] = list(filter(None, map(itemgetter(1), made)))
    if cache is not None:
        cache.retain(paths, candidates)
        cache.keep_parts(directory, parts if len(candidates) <= limit else None)
    return specs, problems, []


def _judge(settings: Settings, policy: TrustPolicy) -> StoreJudge:
    roots, owner = settings.backing_store_roots, policy.owner_uid
    return lambda path, facts: store_problem(path, facts, roots, owner)


def scan(
    settings: Settings,
    applied: Applied,
    policy: TrustPolicy | None = None,
    probe: StoreProbe | None = None,
    cache: InstanceCache | None = None,
    changed: Collection[Path] | None = None,
) -> Desired:
    """What the files on disk ask for now. Reads files (and stats backing stores);
    everything else is pure. With a cache, only the instance files `changed` touches are
    read again (scan_instances)."""
    policy = policy or TrustPolicy()
    probe = probe or FilesystemProbe()
    key = (settings, applied, policy)
    if cache is not None and changed is not None:
        cache.begin(changed)
        source = TrustedFiles(settings.instances_dir, policy)
        try:
            sound = directory_problem(settings.instances_dir, policy) is None
            same = sound and cache.quiet(
                key,
                settings.instances_dir,
                lambda path: read_instance(path, source, settings.limits),
                probe,
            )
            if same:
                return same
            # The directory is sound (checked once): the last answer, patched, may do.
            patched = sound and patch.patched(
                settings, applied, policy, probe, cache, key, _judge(settings, policy)
            )
            if patched:
                return patched
        except OSError:
            pass  # the whole scan below says what cannot be read
    default, problems, notes = scan_default(settings, policy)
    default_read = {settings.default_config, settings.tgt_dir, *(p.path for p in problems)}
    if default is not None:
        default_read |= set(default.includes)
    specs, found, more_notes = scan_instances(
        settings.instances_dir, policy, settings.limits, cache, changed
    )
    problems += found
    if cache is None:
        specs, unsupported = engine_supports(specs, settings.engine)
    else:
        specs, unsupported = cache.passes.supported(specs, settings.engine, engine_supports)
    problems += unsupported
    problems += unseen_problems(
        settings.instances_dir,
        applied,
        None
        if cache is None
        else cache.quiet_entries(settings.instances_dir, len(applied.entries)),
    )
    notes += more_notes
    reserved = default_reserved(settings)
    # A refused file's instance keeps running on its last good config: its port stays its.
    refused = Desired(problems=tuple(problems))
    for port, entry in sorted(applied.entries.items()) if problems else ():
        if entry.kind is InstanceKind.DROPIN and refused.is_troubled(entry.config):
            reserved.setdefault(
                port, f"held by {entry.config}, refused and running on its last good config"
            )
    if cache is None:
        owners, conflicts = settle_conflicts(specs, reserved, applied)
        wanted = [*([default] if default is not None else []), *owners.values()]
        usable, unusable = check_stores(
            wanted, applied, probe, settings.backing_store_roots, policy.owner_uid
        )
    else:
        usable, conflicts, unusable = cache.passes.settle_and_check(
            specs,
            default,
            reserved,
            applied,
            cache.probe(probe),
            cache.judge(_judge(settings, policy)),
            settle_conflicts,
        )
    port_of = attrgetter("port")
    by_port = sorted(usable, key=port_of)  # in C: every spec, every cycle
    desired = Desired(
        instances=dict(zip(map(port_of, by_port), by_port, strict=True)),
        problems=tuple(problems + conflicts + unusable),
        notes=tuple(notes),
    )
    if cache is not None:
        dirs = {settings.tgt_dir, *(p.parent for p in default_read - {settings.tgt_dir})}
        dirs |= set(default.include_dirs if default is not None else ())
        basis = (settings, policy)
        cache.settle(key, desired, frozenset(default_read), frozenset(dirs), basis)
    return desired
