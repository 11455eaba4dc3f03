"""Builders shared by the unit tests (a uniquely named module: every tests/ dir has a conftest)."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tgtwatch.config.settings import DefaultInstanceSettings, Settings
from tgtwatch.config.tgtconf import SourceError, parse
from tgtwatch.config.trust import TrustPolicy
from tgtwatch.model.structs import (
    DEFAULT_NAME,
    AppliedEntry,
    InstanceKind,
    InstanceSpec,
    ObservedInstance,
    ObservedTarget,
    TargetSpec,
)
from tgtwatch.model.tree import ConfigTree

ROOT = Path("/cfg")


@dataclass
class MemorySource:
    """A FileSource over a dict of path -> bytes; directories are implied by the paths."""

    files: dict[Path, bytes] = field(default_factory=dict)
    reads: list[Path] = field(default_factory=list)

    @classmethod
    def of(cls, files: Mapping[str, str | bytes]) -> MemorySource:
        return cls(
            {
                ROOT / path: data if isinstance(data, bytes) else data.encode()
                for path, data in files.items()
            }
        )

    def read(self, path: Path) -> bytes:
        self.reads.append(path)
        try:
            return self.files[path]
        except KeyError:
            raise SourceError("no such file") from None

    def _is_dir(self, path: Path) -> bool:
        return any(path in f.parents for f in self.files)

    def expand(self, pattern: Path) -> list[Path]:
        text = str(pattern)
        if any(c in text for c in "*?["):
            return sorted(
                (
                    f
                    for f in self.files
                    if f.parent == pattern.parent
                    and not f.name.startswith(".")
                    and fnmatch.fnmatchcase(f.name, pattern.name)
                ),
                key=str,
            )
        if self._is_dir(pattern):
            return sorted((f for f in self.files if f.parent == pattern), key=str)
        return [pattern] if pattern in self.files else []


SHA_A = "a" * 64
SHA_B = "b" * 64


def spec(
    name: str = "alpha",
    port: int = 3261,
    sha256: str = SHA_A,
    *,
    kind: InstanceKind = InstanceKind.DROPIN,
    config: Path | None = None,
    targets: tuple[TargetSpec, ...] = (),
) -> InstanceSpec:
    if config is None:
        config = (
            Path("/etc/tgt/targets.conf")
            if kind is InstanceKind.DEFAULT
            else Path(f"/etc/mytgt/conf.d/{name}.conf")
        )
    return InstanceSpec(
        name=name,
        kind=kind,
        port=port,
        portal=f"0.0.0.0:{port}",
        control_port=0 if kind is InstanceKind.DEFAULT else port,
        config=config,
        sha256=sha256,
        targets=targets,
    )


def default_spec(sha256: str = SHA_A) -> InstanceSpec:
    return spec(DEFAULT_NAME, 3260, sha256, kind=InstanceKind.DEFAULT)


def entry_for(s: InstanceSpec, pending: tuple[str, ...] = ()) -> AppliedEntry:
    """The applied record of exactly this spec."""
    return AppliedEntry(
        name=s.name,
        port=s.port,
        config=s.config,
        sha256=s.sha256,
        applied_at=1.0,
        pending=pending,
        kind=s.kind,
    )


def entry(
    name: str = "alpha",
    port: int = 3261,
    sha256: str = SHA_A,
    *,
    pending: tuple[str, ...] = (),
    kind: InstanceKind = InstanceKind.DROPIN,
    config: Path | None = None,
) -> AppliedEntry:
    return entry_for(spec(name, port, sha256, kind=kind, config=config), pending)


def running(
    port: int = 3261,
    *,
    sessions: Mapping[str, int] | None = None,
    control_port: int | None = None,
    starting: bool = False,
    pid: int = 1000,
) -> ObservedInstance:
    targets = tuple(
        ObservedTarget(tid, name, 1, count)
        for tid, (name, count) in enumerate((sessions or {}).items(), start=1)
    )
    return ObservedInstance(
        port=port,
        control_port=port if control_port is None else control_port,
        pid=pid,
        system_state="ready",
        targets=targets,
        starting=starting,
        inspected=True,
    )


def write(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    os.chmod(path, mode)
    return path


def instance_text(port: int, *targets: str, portal_host: str = "0.0.0.0") -> str:
    body = f'SOCKET_OPTS="{port}"\nPORTAL_OPTS="{portal_host}:{port}"\n'
    for target in targets:  # each target its own store: no two instances share one
        body += (
            f"<target {target}>\n    backing-store /srv/{target.split(':')[-1]}.img\n</target>\n"
        )
    return body


@pytest.fixture
def policy() -> TrustPolicy:
    return TrustPolicy(owner_uid=os.getuid())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on an empty tree under tmp_path (directories made, nothing in them)."""
    return settings_under(tmp_path)


def settings_under(root: Path, manage: bool = True) -> Settings:
    """Settings on an empty tree under `root` (directories made, nothing in them)."""
    tgt_dir = root / "etc/tgt"
    instances = root / "etc/mytgt/conf.d"
    tgt_dir.mkdir(parents=True)
    instances.mkdir(parents=True)
    for d in (tgt_dir, instances, tgt_dir.parent, instances.parent):
        os.chmod(d, 0o755)
    return Settings(
        tgt_dir=tgt_dir,
        instances_dir=instances,
        state_dir=root / "state",
        default_instance=DefaultInstanceSettings(manage=manage),
        # Drains start at once here: the drain tests are about the drain; the delete
        # grace has its own tests (test_grace.py, test_reconcile_grace.py).
        delete_grace_ms=0,
    )


def tree_of(text: str) -> ConfigTree:
    """The checked tree of one instance file's text (the grammar must accept it)."""
    parsed = parse(ROOT / "t.conf", MemorySource.of({"t.conf": text}))
    assert parsed.problems == (), parsed.problems
    assert parsed.tree is not None
    return parsed.tree
