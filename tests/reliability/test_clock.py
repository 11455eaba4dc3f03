"""The clock jumping. The real clock of a shared host cannot be changed safely, so:

- the loop's timers (resync, debounce, watchdog, retry backoff) read only the monotonic
  clock, which never jumps; the wall clock is used for timestamps only. Proven here with the
  daemon loop on fakes whose *wall* clock jumps a day back and a year forward between every
  read: the cycles and the watchdog pings come exactly as with a steady wall clock;
- no module that decides *when* reads the wall clock (a source check).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_UNIT = Path(__file__).resolve().parents[1] / "unit"
sys.path.insert(0, str(_UNIT))

from test_daemon_loop import Rig  # noqa: E402

from tgtwatch.config.settings import DefaultInstanceSettings, Settings  # noqa: E402

pytestmark = pytest.mark.reliability
PACKAGE = Path(__file__).resolve().parents[2] / "tgtwatch"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    tgt_dir, instances = tmp_path / "etc/tgt", tmp_path / "etc/mytgt/conf.d"
    for d in (tgt_dir, instances):
        d.mkdir(parents=True)
        d.chmod(0o755)
    for d in (tgt_dir.parent, instances.parent):
        d.chmod(0o755)
    return Settings(
        tgt_dir=tgt_dir,
        instances_dir=instances,
        state_dir=tmp_path / "state",
        default_instance=DefaultInstanceSettings(manage=True),
    )


class JumpyWall:
    """A wall clock that jumps: a day back, a year forward, alternately, at every read."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return 1_700_000_000.0 + (-86_400.0 if self.reads % 2 else 365 * 86_400.0)


@pytest.fixture
def rigs(settings: Settings) -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()


def run_hour(settings: Settings, rigs: list[Rig], wall: JumpyWall | None) -> Rig:
    rig = Rig(settings, stop_at=3599.0, resync_interval_s=300.0, watchdog=15.0)
    rigs.append(rig)
    if wall is not None:
        rig.daemon.wall_clock = wall
        rig.rec.wall_clock = wall
    rig.host.write("alpha", 3261)
    assert rig.run() == 0
    return rig


def test_wall_clock_jumps_change_no_timer(settings: Settings, rigs: list[Rig]) -> None:
    steady = run_hour(settings, rigs, None)
    wall = JumpyWall()
    jumpy = run_hour(settings, rigs, wall)
    assert wall.reads > 0, "the wall clock was read (timestamps) and jumped"
    assert jumpy.cycles_since_start() == steady.cycles_since_start()
    assert jumpy.cycles_since_start() == [300.0 * i for i in range(12)]
    assert len(jumpy.messages("WATCHDOG=1")) == len(steady.messages("WATCHDOG=1"))


def _is_time_time(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and (node.func.value.id, node.func.attr) == ("time", "time")
    )


def test_timers_never_read_the_wall_clock() -> None:
    """time.time() is called only as a record's timestamp (`ts=time.time()`); otherwise the
    wall clock is passed in as `wall_clock`/`clock=time.time` for timestamps only."""
    for source in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(source.read_text())
        stamps = {
            id(k.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            for k in node.keywords
            if k.arg == "ts"
        }
        for node in ast.walk(tree):
            if _is_time_time(node) and id(node) not in stamps:
                raise AssertionError(f"{source.name}:{node.lineno}: time.time() read")
