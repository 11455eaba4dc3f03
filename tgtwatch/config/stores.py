"""Where a LUN's backing store may live: under an allowed root, root's all the way, no system tree.

A root-owned instance file is still untrusted (platforms render it from tenants' values),
so the path it names must be one only root could have put there: every directory from
`/` down, as written and as resolved, owned by root and writable by no one else (a
sticky directory such as /tmp excepted: there others cannot rename what root owns), and
the store itself root's and not world-writable. Then what is checked is what tgtd opens.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Where storage lives on a Linux host by convention, and device names that stay stable
# (by-id, by-path, LVM's and ZFS's): never /dev/sdX, which can change at boot.
DEFAULT_ROOTS = (
    Path("/srv"),
    Path("/var/lib/tgtwatch"),
    Path("/dev/disk/by-id"),
    Path("/dev/disk/by-path"),
    Path("/dev/mapper"),
    Path("/dev/zvol"),
)
# Never a store, whatever the roots say: configuration, kernel interfaces, boot, programs.
FORBIDDEN = tuple(Path(p) for p in ("/etc", "/proc", "/sys", "/boot", "/usr", "/run"))


@dataclass(frozen=True)
class Node:
    """One existing path on the way to a store, as lstat(2) sees it."""

    path: str
    mode: int
    uid: int


@dataclass(frozen=True)
class StoreFacts:
    """What the filesystem says about a store's path (gathered by a StoreProbe)."""

    written: tuple[Node, ...] = ()  # `/` and every existing prefix of the path as written
    resolved: str = ""  # realpath(3) of it
    chain: tuple[Node, ...] = ()  # the same for the resolved path
    mode: int | None = None  # stat(2) of the store (links followed); None: does not exist
    error: str = ""  # it could not be looked up


class StoreProbe(Protocol):
    def facts(self, path: str) -> StoreFacts: ...


def _under(path: Path, root: Path) -> bool:
    # Lexical, as `path == root or root in path.parents`, without building every parent
    # (this runs for every LUN against every root in every cycle).
    return path.parts[: len(root.parts)] == root.parts


def _nodes(path: str) -> tuple[Node, ...]:
    nodes = []
    prefix = Path("/")
    for part in ("", *Path(path).parts[1:]):
        prefix = prefix / part if part else prefix
        try:
            st = os.lstat(prefix)
        except FileNotFoundError:
            break
        nodes.append(Node(str(prefix), st.st_mode, st.st_uid))
    return tuple(nodes)


class FilesystemProbe:
    """The real filesystem (lstat of each component, realpath, stat)."""

    def facts(self, path: str) -> StoreFacts:
        try:
            resolved = os.path.realpath(path)
            written, chain = _nodes(path), _nodes(resolved)
            try:
                mode: int | None = os.stat(path).st_mode
            except FileNotFoundError:
                mode = None
        except OSError as exc:
            return StoreFacts(error=exc.strerror or str(exc))
        return StoreFacts(written, resolved, chain, mode)


def _node_problem(node: Node, owner_uid: int, last: bool) -> str | None:
    if node.uid != owner_uid:
        return f"{node.path} is owned by uid {node.uid}, not {owner_uid}"
    mode = node.mode
    if stat.S_ISLNK(mode):
        return None  # a link's own mode means nothing; where it leads is checked
    if stat.S_ISDIR(mode) and not last:
        if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
            return f"{node.path} is a directory others may write to (mode {stat.S_IMODE(mode):04o})"
        return None
    if mode & stat.S_IWOTH:
        return f"{node.path} is world-writable"
    return None


def store_problem(
    path: str, facts: StoreFacts, roots: Sequence[Path], owner_uid: int = 0
) -> str | None:
    """Why `path` may not be a backing store, or None. Pure: the facts are given.

    A store that does not exist yet passes (tgt-admin skips it and tgtwatch reports the
    start partial), as long as root alone could create it there.
    """
    written = Path(path)
    if not any(_under(written, root) for root in roots):
        allowed = ", ".join(str(r) for r in roots) or "none"
        return f"{path} is outside the allowed backing-store roots ({allowed})"
    for forbidden in FORBIDDEN:
        if _under(written, forbidden):
            return f"{path} lies under {forbidden}"
        if facts.resolved and _under(Path(facts.resolved), forbidden):
            return f"{path} resolves to {facts.resolved}, under {forbidden}"
    if facts.error:
        return f"{path}: cannot look it up: {facts.error}"
    if facts.mode is not None and not (stat.S_ISREG(facts.mode) or stat.S_ISBLK(facts.mode)):
        return f"{path} is neither a regular file nor a block device"
    for nodes, final in ((facts.written, path), (facts.chain, facts.resolved)):
        for node in nodes:
            why = _node_problem(node, owner_uid, last=node.path == final)
            if why is not None:
                return why if final == path else f"{path} resolves to {final}: {why}"
    return None
