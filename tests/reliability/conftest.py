"""Reliability fixtures: real daemons and tgtds on ports 15000-15999, always cleaned up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# engine_fixture and the hook (tests/integration/engines.py): each test under both engines
from rel_harness import (  # noqa: F401
    RelWorld,
    engine_fixture,
    pytest_generate_tests,
    rel_world,
)
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
