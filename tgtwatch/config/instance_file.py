"""One instance file read and checked on its own: its spec, or the problems that stop it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tgtwatch.config import rules
from tgtwatch.config.dependents import FileResult
from tgtwatch.config.grammar import Limits
from tgtwatch.config.settings import EngineKind, Settings
from tgtwatch.config.tgtconf import ParsedConfig, parse
from tgtwatch.config.trust import TrustedFiles, TrustPolicy
from tgtwatch.model.structs import InstanceKind, InstanceSpec, Problem, Rule
from tgtwatch.model.tree import StoreKind

INSTANCE_KEYS = ("SOCKET_OPTS", "PORTAL_OPTS")


def _single(parsed: ParsedConfig, key: str) -> tuple[str | None, Problem | None]:
    found = parsed.values(key)
    if len(found) > 1:
        lines = ", ".join(str(o.line) for o in found)
        return None, Problem(
            found[1].path,
            Rule.PORT,
            f"{key} is set {len(found)} times (lines {lines})",
            found[1].line,
        )
    return (found[0].value, None) if found else (None, None)


def instance_from(path: Path, parsed: ParsedConfig) -> tuple[InstanceSpec | None, list[Problem]]:
    """The instance an instance file asks for, or the problems that stop it. Pure.

    Every problem names the instance file, also one found in a file it includes: it is
    the instance file that is refused (and whose instance keeps its last good config).
    """
    problems = [
        p if p.path == path else Problem(path, p.rule, f"{p}", None) for p in parsed.problems
    ]
    values: dict[str, str | None] = {}
    for key in INSTANCE_KEYS:
        value, problem = _single(parsed, key)
        values[key] = value
        if problem is not None:
            problems.append(problem)
    if problems:
        return None, problems
    try:
        portal = rules.resolve_ports(values["SOCKET_OPTS"], values["PORTAL_OPTS"])
    except rules.RuleError as exc:
        return None, [Problem(path, Rule.PORT, str(exc))]
    name = path.name[: -len(".conf")]
    return spec_from(parsed, name, InstanceKind.DROPIN, portal, portal.port), []


def spec_from(
    parsed: ParsedConfig, name: str, kind: InstanceKind, portal: rules.Portal, control_port: int
) -> InstanceSpec:
    """The spec of a checked config: where it runs, and what its file and includes say."""
    return InstanceSpec(
        name=name,
        kind=kind,
        port=portal.port,
        portal=str(portal),
        control_port=control_port,
        config=parsed.path,
        sha256=parsed.sha256,
        targets=parsed.targets,
        includes=parsed.files[1:],
        include_dirs=parsed.include_dirs,
        text=parsed.flat,
        tree=parsed.tree,
    )


def directory_problem(path: Path, policy: TrustPolicy) -> Problem | None:
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return Problem(path, Rule.DIRECTORY, "not a directory")
    if st.st_uid != policy.owner_uid:
        return Problem(
            path, Rule.DIRECTORY, f"directory owned by uid {st.st_uid}, not {policy.owner_uid}"
        )
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        return Problem(path, Rule.DIRECTORY, "directory is world-writable")
    return None


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when a file is written, replaced or removed (not a chmod: no event)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def read_instance(path: Path, source: TrustedFiles, limits: Limits) -> FileResult:
    try:
        parsed = parse(path, source, limits=limits)
    except OSError as exc:
        problem = Problem(path, Rule.TRUST, f"cannot read: {exc}")
        return FileResult.of(None, (problem,), frozenset({path}), frozenset())
    spec, found = instance_from(path, parsed)
    files = frozenset({path, *parsed.files})
    # A problem may name a file the parse could not read (a missing include): depend on it.
    files |= {p.path for p in found}
    # A file its includes read changes it; so does one new where they look (a glob that
    # matches nothing yet).
    dirs = frozenset({*(f.parent for f in parsed.files[1:]), *parsed.looked_in})
    return FileResult.of(spec, tuple(found), files, dirs)


def read_settled(path: Path, source: TrustedFiles, limits: Limits) -> tuple[FileResult, bool]:
    """_read_instance, and False when the read found problems and the file was written,
    replaced or removed while it was read: it may have seen half of an edit (the old file
    naming an include the edit already deleted), and the edit's own event, still to come,
    has the file read again."""
    before = _identity(path)
    result = read_instance(path, source, limits)
    settled = not result.problems or (before is not None and _identity(path) == before)
    return result, settled


def name_problem(filename: str) -> str | None:
    return rules.name_problem(filename[: -len(".conf")])


def engine_supports(
    specs: list[InstanceSpec], engine: EngineKind
) -> tuple[list[InstanceSpec], list[Problem]]:
    """Instance files the engine can load, and a problem for each it cannot. Pure.

    The native engine does not do direct-store: tgt-admin fills such a LUN's SCSI identity
    from the device itself (sg_inq, sg_readcap), which tgtwatch does not reproduce.
    """
    if engine is not EngineKind.NATIVE:
        return specs, []
    kept: list[InstanceSpec] = []
    problems: list[Problem] = []
    for spec in specs:
        direct = [
            lun
            for target in (spec.tree.targets if spec.tree else ())
            for lun in target.luns
            if lun.kind is StoreKind.DIRECT
        ]
        if direct:
            problems.append(
                Problem(
                    spec.config,
                    Rule.GRAMMAR,
                    f"direct-store {direct[0].path}: needs `engine: tgt-admin` (the native "
                    "engine does not read a device's SCSI identity)",
                    direct[0].line or None,
                )
            )
        else:
            kept.append(spec)
    return kept, problems


def default_reserved(settings: Settings) -> dict[int, str]:
    """The ports no instance file may claim, with why: the default instance's portal and
    control port (reserved whether or not tgtwatch manages that instance)."""
    di, config = settings.default_instance, settings.default_config
    reserved = {di.portal.port: f"the default instance's portal ({config})"}
    if di.control_port:
        reserved[di.control_port] = f"the default instance's control port ({config})"
    return reserved
