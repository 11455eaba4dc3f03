"""Reliability fixtures: real daemons and tgtds on ports 15000-15999, always cleaned up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rel_harness import RelWorld, rel_world

# after rel_harness (it puts tests/integration on sys.path): each test under both engines
from engines import engine_fixture, pytest_generate_tests  # noqa: F401, E402
from tgtd_harness import iscsi_tools_fixture, tgt_programs_fixture  # noqa: F401

from tgtwatch.tgt import gateway as g


@pytest.fixture
def world(
    tgt_programs: g.TgtPrograms, iscsi_tools: None, tmp_path: Path, engine: str
) -> Iterator[RelWorld]:
    """A tgtwatch tree with logging wrappers, loading with `engine`; every daemon and tgtd
    it caused is stopped."""
    with rel_world(tmp_path, engine=engine) as w:
        yield w
