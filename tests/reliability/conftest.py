"""Reliability fixtures: real daemons and tgtds on ports 15000-15999, always cleaned up."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from rel_harness import RelWorld, rel_world

from tgtwatch import gateway as g


@pytest.fixture(scope="session")
def tgt_programs() -> g.TgtPrograms:
    if os.geteuid() != 0:
        pytest.skip("reliability tests run real tgtds: they need root")
    programs = g.TgtPrograms()
    for path in (programs.tgtd, programs.tgtadm, programs.tgt_admin):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            pytest.skip(f"{Path(path).name} is not installed")
    return programs


@pytest.fixture(scope="session")
def iscsi_tools() -> None:
    for name in ("iscsi-ls", "iscsi-inq", "iscsi-perf"):
        if shutil.which(name) is None:
            pytest.skip(f"{name} (libiscsi-bin) is not installed")


@pytest.fixture
def world(tgt_programs: g.TgtPrograms, iscsi_tools: None, tmp_path: Path) -> Iterator[RelWorld]:
    """A tgtwatch tree with logging wrappers; every daemon and tgtd it caused is stopped."""
    with rel_world(tmp_path) as w:
        yield w
