"""The watcher + debouncer against real inotify: how real tools write files."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import queue
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tgtwatch.daemon.debounce import Batch, Debouncer, Trigger, TriggerKind
from tgtwatch.daemon.watch import make_watcher
from tgtwatch.daemon.watch_events import Watcher, WatcherKind

pytestmark = pytest.mark.integration

DEBOUNCE_S = 0.3
STEP_S = 0.05  # a writer's pause between steps: well inside the debounce
DEADLINE_S = 10.0
QUEUED_EVENTS = Path("/proc/sys/fs/inotify/max_queued_events")

KINDS = [
    pytest.param(WatcherKind.INOTIFY, id="inotify"),
    pytest.param(
        WatcherKind.PYINOTIFY,
        id="pyinotify",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("pyinotify") is None, reason="pyinotify not installed"
        ),
    ),
]


@dataclass
class Rig:
    """A started watcher, its queue and a debouncer, pumped by the test thread."""

    root: Path
    conf: Path
    triggers: queue.Queue[Trigger]
    watcher: Watcher
    debouncer: Debouncer

    def pump(self, until: float) -> Batch | None:
        """Feed triggers until a batch is due (return it) or `until` (monotonic) passes."""
        while True:
            now = time.monotonic()
            batch = self.debouncer.take_batch(now)
            if batch is not None:
                return batch
            deadline = self.debouncer.next_deadline()
            wake = until if deadline is None else min(until, deadline)
            if now >= until:
                return None
            try:
                trigger = self.triggers.get(timeout=max(0.0, wake - now))
            except queue.Empty:
                continue
            self.debouncer.add(trigger, time.monotonic())

    def batch(self, read: Callable[[], object] = lambda: None) -> tuple[Batch, object]:
        """The next batch, and what `read` sees the moment it is taken."""
        batch = self.pump(time.monotonic() + DEADLINE_S)
        assert batch is not None, "no batch before the deadline"
        return batch, read()

    def quiet(self, seconds: float) -> None:
        """Assert no batch becomes due for `seconds` (a wait on the queue, not a sleep)."""
        batch = self.pump(time.monotonic() + seconds)
        assert batch is None, f"unexpected batch {batch}"

    def step(self) -> None:
        """A writer's short pause: no batch may fall due in it."""
        self.quiet(STEP_S)

    def settle(self) -> None:
        """Nothing more comes: no second batch for the same write."""
        # 0.5 s: time for a late second event of the same write (watchdog once held an
        # unpaired IN_MOVED_FROM that long; the readers here do not).
        self.quiet(2 * DEBOUNCE_S + 0.6)


@contextlib.contextmanager
def rig_for(
    kind: WatcherKind, root: Path, conf: Path, debounce_s: float = DEBOUNCE_S
) -> Iterator[Rig]:
    triggers: queue.Queue[Trigger] = queue.Queue()
    watcher = make_watcher(kind, triggers)
    watcher.start([conf])
    try:
        yield Rig(root, conf, triggers, watcher, Debouncer(debounce_s))
    finally:
        watcher.stop()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> WatcherKind:
    k: WatcherKind = request.param
    return k


@pytest.fixture
def rig(kind: WatcherKind, tmp_path: Path) -> Iterator[Rig]:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "x.conf").write_text("v0\n")
    with rig_for(kind, tmp_path, conf) as r:
        yield r


FINAL = "final content\n"


def _assert_one_batch(rig: Rig, target: Path) -> None:
    batch, content = rig.batch(target.read_text)
    assert content == FINAL
    assert target in batch.paths
    assert not batch.resync
    rig.settle()


def test_temp_then_rename_over(rig: Rig) -> None:
    target = rig.conf / "x.conf"
    tmp = rig.conf / ".x.conf.new"
    with tmp.open("w") as f:
        f.write(FINAL[:5])
        f.flush()
        rig.step()
        f.write(FINAL[5:])
    rig.step()
    tmp.rename(target)
    _assert_one_batch(rig, target)


def test_vim_save_by_rename(rig: Rig) -> None:
    target = rig.conf / "x.conf"
    swp, swx = rig.conf / ".x.conf.swp", rig.conf / ".x.conf.swx"
    swx.write_bytes(b"probe")  # vim probes the directory with .swx, then uses .swp
    swx.unlink()
    swp.write_bytes(b"swap")
    rig.quiet(2 * DEBOUNCE_S)  # editing: swap files alone are no reason to look
    target.rename(rig.conf / "x.conf~")  # :w with backupcopy=no
    rig.step()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, FINAL[:5].encode())
    rig.step()
    os.write(fd, FINAL[5:].encode())
    os.close(fd)
    rig.step()
    (rig.conf / "x.conf~").unlink()
    swp.unlink()
    _assert_one_batch(rig, target)


def test_sed_in_place(rig: Rig) -> None:
    target = rig.conf / "x.conf"
    subprocess.run(["sed", "-i", f"s/v0/{FINAL.strip()}/", str(target)], check=True)
    _assert_one_batch(rig, target)


def test_cp_over_existing(rig: Rig) -> None:
    source = rig.root / "src.conf"
    source.write_text(FINAL)
    target = rig.conf / "x.conf"
    subprocess.run(["cp", str(source), str(target)], check=True)
    _assert_one_batch(rig, target)


def test_cp_new_file(rig: Rig) -> None:
    source = rig.root / "src.conf"
    source.write_text(FINAL)
    target = rig.conf / "new.conf"
    subprocess.run(["cp", str(source), str(target)], check=True)
    _assert_one_batch(rig, target)


def test_install_mode_644(rig: Rig) -> None:
    source = rig.root / "src.conf"
    source.write_text(FINAL)
    target = rig.conf / "x.conf"
    subprocess.run(["install", "-m", "644", str(source), str(target)], check=True)
    _assert_one_batch(rig, target)


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync not installed")
def test_rsync(rig: Rig) -> None:
    source = rig.root / "src.conf"
    source.write_text(FINAL)
    target = rig.conf / "x.conf"
    subprocess.run(["rsync", str(source), str(target)], check=True)
    _assert_one_batch(rig, target)


def test_dpkg_new_then_rename(rig: Rig) -> None:
    target = rig.conf / "x.conf"
    new = rig.conf / "x.conf.dpkg-new"
    new.write_text(FINAL[:5])
    rig.step()
    with new.open("a") as f:
        f.write(FINAL[5:])
    rig.quiet(2 * DEBOUNCE_S)  # the .dpkg-new alone is no reason to look
    new.rename(target)
    _assert_one_batch(rig, target)


def test_delete_and_move_out(rig: Rig) -> None:
    (rig.conf / "x.conf").rename(rig.root / "away.conf")
    batch, _ = rig.batch()
    assert rig.conf / "x.conf" in batch.paths
    rig.settle()
    (rig.root / "away.conf").rename(rig.conf / "y.conf")
    batch, _ = rig.batch()
    assert rig.conf / "y.conf" in batch.paths
    (rig.conf / "y.conf").unlink()
    batch, _ = rig.batch()
    assert rig.conf / "y.conf" in batch.paths


def test_hard_link_and_symlink_trigger_without_close(rig: Rig) -> None:
    source = rig.root / "src.conf"
    source.write_text(FINAL)
    os.link(source, rig.conf / "h.conf")
    batch, _ = rig.batch()
    assert rig.conf / "h.conf" in batch.paths
    (rig.conf / "s.conf").symlink_to(source)
    batch, _ = rig.batch()
    assert rig.conf / "s.conf" in batch.paths


def _half_then_rest(rig: Rig, target: Path, flags: int) -> None:
    fd = os.open(target, flags, 0o644)
    try:
        os.write(fd, FINAL[:5].encode())
        # Open and paused for 6 debounce periods: plain modifications never trigger.
        rig.quiet(6 * rig.debouncer.debounce_s)
        os.write(fd, FINAL[5:].encode())
    finally:
        os.close(fd)
    batch, content = rig.batch(target.read_text)
    assert content == FINAL
    assert target in batch.paths


@pytest.mark.parametrize("new", [False, True], ids=["existing", "new"])
def test_writer_holding_file_open_gives_no_batch_until_close(
    kind: WatcherKind, tmp_path: Path, new: bool
) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    target = conf / "x.conf"
    if not new:
        target.write_text("v0\n")
    with rig_for(kind, tmp_path, conf, debounce_s=0.05) as rig:
        _half_then_rest(rig, target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)


def test_watched_dir_removed_and_recreated(rig: Rig) -> None:
    shutil.rmtree(rig.conf)
    batch, _ = rig.batch()
    assert rig.conf in batch.paths
    rig.conf.mkdir()
    batch, _ = rig.batch()
    assert rig.conf in batch.paths
    rig.settle()
    (rig.conf / "z.conf").write_text(FINAL)
    batch, _ = rig.batch()
    assert rig.conf / "z.conf" in batch.paths


def test_watched_dir_moved_away_and_replaced(rig: Rig) -> None:
    rig.conf.rename(rig.root / "conf.d.old")
    rig.conf.mkdir()
    rig.batch()
    rig.settle()
    (rig.root / "conf.d.old" / "x.conf").write_text("old tree: no longer watched\n")
    rig.quiet(2 * DEBOUNCE_S)
    (rig.conf / "z.conf").write_text(FINAL)
    batch, _ = rig.batch()
    assert rig.conf / "z.conf" in batch.paths


def test_missing_dir_is_watched_once_created(kind: WatcherKind, tmp_path: Path) -> None:
    conf = tmp_path / "a" / "b" / "conf.d"
    with rig_for(kind, tmp_path, conf) as rig:
        conf.mkdir(parents=True)
        batch, _ = rig.batch()
        assert batch.paths & {tmp_path / "a", conf}
        rig.settle()
        (conf / "x.conf").write_text(FINAL)
        batch, content = rig.batch((conf / "x.conf").read_text)
        assert conf / "x.conf" in batch.paths
        assert content == FINAL


def test_files_landing_with_the_dir_are_not_missed(kind: WatcherKind, tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    with rig_for(kind, tmp_path, conf) as rig:
        staging = tmp_path / "staging"
        staging.mkdir()
        (staging / "x.conf").write_text(FINAL)
        staging.rename(conf)  # the whole directory appears at once, files included
        batch, _ = rig.batch()
        assert conf in batch.paths


def test_set_paths_moves_the_watches(rig: Rig) -> None:
    other = rig.root / "other"
    other.mkdir()
    rig.watcher.set_paths([other])
    rig.batch()  # a newly watched directory is looked at once
    rig.settle()
    (rig.conf / "x.conf").write_text("no longer watched\n")
    rig.quiet(2 * DEBOUNCE_S)
    (other / "o.conf").write_text(FINAL)
    batch, _ = rig.batch()
    assert other / "o.conf" in batch.paths


@pytest.fixture
def low_queue_limit() -> Iterator[Callable[[], None]]:
    """Make the next inotify instance overflow after 8 events; yields the restorer."""
    if os.geteuid() != 0 or not os.access(QUEUED_EVENTS, os.W_OK):
        pytest.skip("lowering fs.inotify.max_queued_events needs root")
    saved = QUEUED_EVENTS.read_text()

    def restore() -> None:
        QUEUED_EVENTS.write_text(saved)

    QUEUED_EVENTS.write_text("8\n")
    try:
        yield restore
    finally:
        restore()


def test_overflow_gives_overflow_trigger(
    kind: WatcherKind, tmp_path: Path, low_queue_limit: Callable[[], None]
) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    triggers: queue.Queue[Trigger] = queue.Queue()
    watcher = make_watcher(kind, triggers)
    try:
        watcher.start([conf])  # the limit is taken when the inotify instance is made
    finally:
        # The sysctl is host-wide: keep the window as small as possible.
        low_queue_limit()
    try:
        deadline = time.monotonic() + DEADLINE_S
        seen: set[TriggerKind] = set()
        i = 0
        while TriggerKind.OVERFLOW not in seen and time.monotonic() < deadline:
            for _ in range(200):  # faster than any reader drains 8 slots
                (conf / f"f{i}.conf").write_text("x")
                i += 1
            with contextlib.suppress(queue.Empty):
                while True:
                    seen.add(triggers.get(timeout=0.01).kind)
        assert TriggerKind.OVERFLOW in seen
        debouncer = Debouncer(DEBOUNCE_S)
        now = time.monotonic()
        debouncer.add(Trigger(TriggerKind.OVERFLOW), now)
        batch = debouncer.take_batch(now)
        assert batch is not None and batch.resync
    finally:
        watcher.stop()
