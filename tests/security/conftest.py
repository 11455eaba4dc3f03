"""Security fixtures: the reliability suite's world (argv-logging wrappers around every tgt
program, a real daemon, cleanup of every tgtd it caused) on ports 16000-16199."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[1]
for _dir in (_TESTS, _TESTS / "integration", _TESTS / "reliability"):
    if str(_dir) not in sys.path:
        sys.path.insert(0, str(_dir))

from rel_harness import RelWorld, rel_world  # noqa: E402
from tgtd_harness import iscsi_tools_fixture, tgt_programs_fixture  # noqa: E402, F401

from tgtwatch.tgt import gateway as g  # noqa: E402

SECURITY_PORTS = range(16000, 16200)


class SecWorld(RelWorld):
    PORTS = SECURITY_PORTS


@pytest.fixture
def world(tgt_programs: g.TgtPrograms, iscsi_tools: None, tmp_path: Path) -> Iterator[RelWorld]:
    """A tgtwatch tree with logging wrappers; every daemon and tgtd it caused is stopped."""
    with rel_world(tmp_path, SecWorld) as w:
        yield w
