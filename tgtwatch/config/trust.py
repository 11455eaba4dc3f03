"""Read config files only when root could have written them: the sudoers.d rule for drop-ins."""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from tgtwatch.config.tgtconf import MAX_CONFIG_BYTES, SourceError
from tgtwatch.model.structs import Rule


@dataclass(frozen=True)
class TrustPolicy:
    """Who may own a config file. Tests run unprivileged trees with their own uid."""

    owner_uid: int = 0
    max_bytes: int = MAX_CONFIG_BYTES


def check_stat(st: os.stat_result, policy: TrustPolicy) -> str | None:
    """Why a file with this stat may not be used, or None. Pure."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != policy.owner_uid:
        return f"owned by uid {st.st_uid}, not {policy.owner_uid}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"group- or world-writable (mode {stat.S_IMODE(st.st_mode):04o})"
    if st.st_size > policy.max_bytes:
        return f"file is {st.st_size} bytes, more than the {policy.max_bytes} allowed"
    return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True)
class TrustedFiles:
    """A FileSource confined to one directory tree, checking every file it hands out."""

    root: Path
    policy: TrustPolicy = TrustPolicy()

    def _resolve(self, path: Path) -> Path:
        try:
            real = Path(os.path.realpath(path))
            root = Path(os.path.realpath(self.root))
        except OSError as exc:  # a loop, a name too long: this file's problem alone
            raise SourceError(f"cannot resolve: {exc.strerror}", Rule.TRUST) from None
        if not _inside(real, root):
            raise SourceError(f"{path} resolves to {real}, outside {self.root}", Rule.TRUST)
        return real

    def read(self, path: Path) -> bytes:
        real = self._resolve(path)
        try:
            # Refuse FIFOs and device nodes before open(): opening one can block or act.
            if not stat.S_ISREG(os.stat(real).st_mode):
                raise SourceError("not a regular file", Rule.TRUST)
            # O_NOFOLLOW on the resolved path and fstat on the open descriptor: what is
            # checked is what is read, even if the name is swapped in between.
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SourceError("no such file", Rule.INCLUDE) from None
        except OSError as exc:
            raise SourceError(f"cannot open: {exc.strerror}", Rule.TRUST) from None
        try:
            why = check_stat(os.fstat(fd), self.policy)
            if why is not None:
                raise SourceError(why, Rule.TRUST)
            chunks: list[bytes] = []
            size = 0
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > self.policy.max_bytes:
                    raise SourceError(
                        f"file grew past the {self.policy.max_bytes} bytes allowed", Rule.TRUST
                    )
            return b"".join(chunks)
        finally:
            os.close(fd)

    def expand(self, pattern: Path) -> list[Path]:
        try:
            return self._expand(pattern)
        except OSError as exc:  # ENAMETOOLONG, ELOOP, EACCES...: a problem of this include
            raise SourceError(f"cannot look it up: {exc.strerror}", Rule.INCLUDE) from None

    def _expand(self, pattern: Path) -> list[Path]:
        # Confined before any lookup: a name outside the tree is refused even if missing.
        self._resolve(pattern)
        text = str(pattern)
        if any(c in text for c in "*?["):
            # glob.glob, not Path.glob: like Perl's bsd_glob, `*` skips dotfiles. Sorted as
            # strings (bsd_glob sorts whole paths bytewise), not by path components.
            matches = sorted(glob.glob(text))
            return [Path(m) for m in matches if not os.path.isdir(m)]
        if os.path.isdir(pattern):
            return sorted((p for p in pattern.iterdir() if not os.path.isdir(p)), key=str)
        return [pattern] if os.path.lexists(pattern) else []
