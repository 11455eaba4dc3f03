"""Integration fixtures: real tgtd processes on test ports 13000-13099, always cleaned up.

The classes behind them live in tgtd_harness.py: import them from there, never from
`conftest` (pytest keeps one module named conftest at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# the `engine` fixture and the hook that runs each tree's test under both engines
from engines import engine_fixture, pytest_generate_tests  # noqa: F401

# tgtwatch-on-real-tgtd fixtures (ports 13100-13199): tree, initiators, child_subreaper
from instances import child_subreaper, initiators, tree  # noqa: F401
from tgtd_harness import (  # noqa: F401
    RunningTgtd,
    SessionHolder,
    TgtdFactory,
    iscsi_tools_fixture,
    tgt_programs_fixture,
)

from tgtwatch.tgt import gateway as g


@pytest.fixture
def tgtd_factory(tgt_programs: g.TgtPrograms, tmp_path: Path) -> Iterator[TgtdFactory]:
    workdir = tmp_path / "tgtd"
    workdir.mkdir()
    factory = TgtdFactory(tgt_programs, workdir)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def tgtd(tgtd_factory: TgtdFactory) -> RunningTgtd:
    """One running tgtd on a free test port, answering on its control socket."""
    return tgtd_factory.start()


@pytest.fixture
def make_backing_file(tmp_path: Path) -> Callable[..., Path]:
    """Creates sparse backing files in tmp_path: make_backing_file("a.img", size=16 MiB).

    Asking again for an existing name returns it untouched.
    """

    def make(name: str = "disk.img", size: int = 16 << 20) -> Path:
        path = tmp_path / "backing" / name
        path.parent.mkdir(exist_ok=True)
        # an existing file may be a LUN in use: truncating it would fail the initiator's reads
        with path.open("ab") as f:
            if f.tell() == 0:
                f.truncate(size)
        return path

    return make


@pytest.fixture
def backing_file(make_backing_file: Callable[..., Path]) -> Path:
    """One 16 MiB sparse backing file."""
    return make_backing_file()


@pytest.fixture
def session_holder(iscsi_tools: None, tmp_path: Path) -> Iterator[SessionHolder]:
    """session_holder.hold(tgtd, iqn, lun=1): an initiator logged in until the test ends."""
    holder = SessionHolder(tmp_path)
    try:
        yield holder
    finally:
        holder.stop_all()
