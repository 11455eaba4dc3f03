"""The watching layer without inotify: FakeWatcher, classify(), watch points, re-arming."""

from __future__ import annotations

import errno
import os
import queue
import stat
import sys
from collections.abc import Callable, Hashable
from pathlib import Path

import pytest
from fakes import FakeWatcher

from tgtwatch.daemon.debounce import Debouncer, Trigger, TriggerKind
from tgtwatch.daemon.watch import make_watcher
from tgtwatch.daemon.watch_events import (
    FsAction,
    FsEvent,
    Watcher,
    WatcherKind,
    WatcherUnavailable,
    ancestors,
    classify,
    is_ignored_name,
    watch_points,
)
from tgtwatch.daemon.watch_inotify import InotifyWatcher
from tgtwatch.daemon.watch_set import WatchSet

CONF = Path("/etc/mytgt/conf.d")
TGT = Path("/etc/tgt")
DIRS = frozenset({CONF, TGT})
CHAIN = ancestors(DIRS)


def _stat(mode: int, nlink: int) -> os.stat_result:
    return os.stat_result((mode, 1, 1, nlink, 0, 0, 10, 0, 0, 0))


def regular(nlink: int = 1) -> os.stat_result:
    return _stat(stat.S_IFREG | 0o644, nlink)


def lstat_of(result: os.stat_result | None) -> Callable[[Path], os.stat_result]:
    def lstat(_path: Path) -> os.stat_result:
        if result is None:
            raise FileNotFoundError(_path)
        return result

    return lstat


def paths_of(event: FsEvent, lstat: os.stat_result | None = None) -> set[Path | None]:
    result = classify(event, DIRS, CHAIN, lstat=lstat_of(lstat or regular()))
    return {t.path for t in result.triggers}


# --- FakeWatcher --------------------------------------------------------------------------


def test_fake_watcher_replays_scripted_batches() -> None:
    q: queue.Queue[Trigger] = queue.Queue()
    first = (Trigger(TriggerKind.FILE, CONF / "a.conf"), Trigger(TriggerKind.FILE, CONF / "b.conf"))
    second = (Trigger(TriggerKind.OVERFLOW, None, "lost"),)
    fake = FakeWatcher(q, [first, second])
    watcher: Watcher = fake  # satisfies the protocol
    watcher.start([CONF])
    assert fake.started and fake.paths == (CONF,)
    assert fake.remaining == 2
    assert fake.play_next()
    assert [q.get_nowait() for _ in range(2)] == list(first)
    assert q.empty()
    assert fake.play_next()
    assert q.get_nowait() == second[0]
    assert not fake.play_next()
    watcher.set_paths([CONF, TGT])
    assert fake.path_history == [(CONF,), (CONF, TGT)]
    watcher.stop()
    assert fake.stopped


def test_fake_watcher_feeds_a_debouncer_like_the_loop() -> None:
    q: queue.Queue[Trigger] = queue.Queue()
    fake = FakeWatcher(q, [[Trigger(TriggerKind.FILE, CONF / "a.conf")] * 3])
    fake.start([CONF])
    fake.play_next()
    d = Debouncer(0.25)
    while not q.empty():
        d.add(q.get_nowait(), 1.0)
    batch = d.take_batch(1.25)
    assert batch is not None and batch.paths == {CONF / "a.conf"} and batch.count == 3


def test_fake_watcher_start_twice() -> None:
    fake = FakeWatcher(queue.Queue())
    fake.start([])
    with pytest.raises(RuntimeError):
        fake.start([])


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        ".x.conf.swp",
        ".x.conf.swx",
        "x.conf.swp",
        "x.conf~",
        ".hidden.conf",
        ".x.conf.AbC123",  # rsync's temp
        "x.conf.tmp",
        "x.conf.dpkg-new",
        "x.conf.dpkg-old",
        "x.conf.dpkg-dist",
        "x.conf.ucf-dist",
        "x.conf.rpmnew",
        "x.conf.rpmsave",
        "x.conf.orig",
        "#x.conf#",
    ],
)
def test_ignored_names(name: str) -> None:
    assert is_ignored_name(name)


@pytest.mark.parametrize("name", ["x.conf", "targets.conf", "x.conf.d", "swp.conf", "4913"])
def test_not_ignored_names(name: str) -> None:
    assert not is_ignored_name(name)


# --- classify -----------------------------------------------------------------------------


def test_close_after_write_triggers() -> None:
    assert paths_of(FsEvent(FsAction.CLOSED_WRITE, CONF / "a.conf")) == {CONF / "a.conf"}


def test_new_regular_file_waits_for_its_close() -> None:
    assert paths_of(FsEvent(FsAction.CREATED, CONF / "a.conf"), regular(1)) == set()


@pytest.mark.parametrize(
    "result",
    [regular(2), _stat(stat.S_IFLNK | 0o777, 1), _stat(stat.S_IFIFO | 0o644, 1)],
    ids=["hard-link", "symlink", "fifo"],
)
def test_creations_nobody_closes_trigger(result: os.stat_result) -> None:
    assert paths_of(FsEvent(FsAction.CREATED, CONF / "a.conf"), result) == {CONF / "a.conf"}


def test_created_directory_in_watched_dir_triggers() -> None:
    event = FsEvent(FsAction.CREATED, CONF / "sub", is_dir=True)
    assert paths_of(event) == {CONF / "sub"}


def test_created_and_gone_waits_for_the_delete() -> None:
    result = classify(FsEvent(FsAction.CREATED, CONF / "a.conf"), DIRS, CHAIN, lstat=lstat_of(None))
    assert result.triggers == ()


def test_vim_rename_to_backup_triggers_on_the_source() -> None:
    event = FsEvent(FsAction.MOVED, CONF / "x.conf", CONF / "x.conf~")
    assert paths_of(event) == {CONF / "x.conf"}


def test_rename_of_temp_into_place_triggers_on_the_dest() -> None:
    event = FsEvent(FsAction.MOVED, CONF / ".x.conf.XyZ", CONF / "x.conf")
    assert paths_of(event) == {CONF / "x.conf"}


def test_unpaired_moves_trigger() -> None:
    assert paths_of(FsEvent(FsAction.MOVED, None, CONF / "x.conf")) == {CONF / "x.conf"}
    assert paths_of(FsEvent(FsAction.MOVED, CONF / "x.conf", None)) == {CONF / "x.conf"}


def test_deletion_triggers() -> None:
    assert paths_of(FsEvent(FsAction.DELETED, TGT / "targets.conf")) == {TGT / "targets.conf"}


@pytest.mark.parametrize("action", list(FsAction))
def test_ignored_names_never_trigger(action: FsAction) -> None:
    for name in (".x.conf.swp", "x.conf~", "x.conf.dpkg-new"):
        assert paths_of(FsEvent(action, CONF / name)) == set()


def test_unrelated_files_in_an_ancestor_never_trigger() -> None:
    assert paths_of(FsEvent(FsAction.CREATED, Path("/etc/passwd+"))) == set()
    assert paths_of(FsEvent(FsAction.MOVED, Path("/etc/passwd+"), Path("/etc/passwd"))) == set()


def test_files_in_subdirectories_never_trigger() -> None:
    assert paths_of(FsEvent(FsAction.CLOSED_WRITE, CONF / "sub" / "a.conf")) == set()


@pytest.mark.parametrize(
    "event",
    [
        FsEvent(FsAction.DELETED, CONF, is_dir=True),
        FsEvent(FsAction.CREATED, CONF, is_dir=True),
        FsEvent(FsAction.MOVED, CONF, Path("/etc/mytgt/conf.d.old"), is_dir=True),
        FsEvent(FsAction.MOVED, Path("/etc/mytgt/new"), CONF, is_dir=True),
        FsEvent(FsAction.DELETED, Path("/etc/mytgt"), is_dir=True),
        FsEvent(FsAction.CREATED, CONF),  # replaced by a symlink: not a directory event
    ],
)
def test_events_on_the_directory_chain_are_structural_and_trigger(event: FsEvent) -> None:
    result = classify(event, DIRS, CHAIN, lstat=lstat_of(regular()))
    assert result.structural
    assert result.triggers


# --- watch points -------------------------------------------------------------------------


def test_watch_points_existing_dir_and_its_parent() -> None:
    existing = {Path("/"), Path("/etc"), TGT, TGT / "conf.d"}
    points = watch_points([TGT, TGT / "conf.d"], isdir=lambda p: p in existing)
    # /etc/tgt is both a watched dir and the parent of another: contents win.
    assert points == {TGT: True, TGT / "conf.d": True, Path("/etc"): False}


def test_watch_points_missing_dir_from_nearest_ancestor() -> None:
    existing = {Path("/"), Path("/etc")}
    assert watch_points([CONF], isdir=lambda p: p in existing) == {Path("/etc"): False}


def test_watch_points_root() -> None:
    assert watch_points([Path("/")], isdir=lambda p: True) == {Path("/"): True}


# --- re-arming, with a fake backend ---------------------------------------------------------


class FakeBackend:
    """Arms by recording; fails with a chosen errno for chosen paths."""

    def __init__(self) -> None:
        self.armed: dict[int, tuple[Path, bool]] = {}
        self.fail: dict[Path, int] = {}
        self.calls = 0
        self._next = 0

    def arm(self, path: Path, *, contents: bool) -> Hashable:
        self.calls += 1
        if path in self.fail:
            raise OSError(self.fail[path], os.strerror(self.fail[path]))
        self._next += 1
        self.armed[self._next] = (path, contents)
        return self._next

    def disarm(self, handle: Hashable) -> None:
        assert isinstance(handle, int)
        self.armed.pop(handle, None)

    def alive(self, handle: Hashable) -> bool:
        return handle in self.armed

    def points(self) -> dict[Path, bool]:
        return dict(self.armed.values())


def drain(q: queue.Queue[Trigger]) -> list[Trigger]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def test_missing_dir_is_armed_from_ancestor_and_rearmed_when_created(tmp_path: Path) -> None:
    backend, q = FakeBackend(), queue.Queue[Trigger]()
    ws = WatchSet(backend, q)
    conf = tmp_path / "a" / "conf.d"
    ws.set_paths([conf])
    ws.announce()
    assert backend.points() == {tmp_path: False}
    conf.mkdir(parents=True)
    ws.on_event(FsEvent(FsAction.CREATED, tmp_path / "a", is_dir=True))
    assert backend.points() == {conf: True, tmp_path / "a": False}
    # A directory that appears is looked at once: files may have landed before the watch.
    assert Trigger(TriggerKind.FILE, conf, "watching directory") in drain(q)


def test_deleted_dir_is_rearmed_from_parent_even_if_back_already(tmp_path: Path) -> None:
    backend, q = FakeBackend(), queue.Queue[Trigger]()
    ws = WatchSet(backend, q)
    conf = tmp_path / "conf.d"
    conf.mkdir()
    ws.set_paths([conf])
    ws.announce()
    first = {h for h, (p, _) in backend.armed.items() if p == conf}
    # Deleted and re-created before the event is handled: same name, maybe same inode.
    ws.on_event(FsEvent(FsAction.DELETED, conf, is_dir=True))
    again = {h for h, (p, _) in backend.armed.items() if p == conf}
    assert again and not again & first


def test_kernel_dropped_watch_is_rearmed(tmp_path: Path) -> None:
    backend, q = FakeBackend(), queue.Queue[Trigger]()
    ws = WatchSet(backend, q)
    conf = tmp_path / "conf.d"
    conf.mkdir()
    ws.set_paths([conf])
    (handle,) = [h for h, (p, _) in backend.armed.items() if p == conf]
    backend.armed.pop(handle)  # IN_IGNORED
    ws.on_watch_gone(handle)
    assert conf in backend.points()


def test_set_paths_revalidates_a_replaced_directory(tmp_path: Path) -> None:
    backend, q = FakeBackend(), queue.Queue[Trigger]()
    ws = WatchSet(backend, q)
    conf = tmp_path / "conf.d"
    conf.mkdir()
    ws.set_paths([conf])
    ws.announce()
    conf.rename(tmp_path / "old")  # no event reached us (IN_MOVE_SELF is not watched)
    conf.mkdir()
    drain(q)
    ws.set_paths([conf])
    kinds = {(t.path, t.detail) for t in drain(q)}
    assert (conf, "watching directory") in kinds


def test_watch_limit_is_one_error_trigger_not_a_crash_nor_a_storm(tmp_path: Path) -> None:
    backend, q = FakeBackend(), queue.Queue[Trigger]()
    conf = tmp_path / "conf.d"
    conf.mkdir()
    backend.fail[conf] = errno.ENOSPC
    ws = WatchSet(backend, q)
    ws.set_paths([conf])
    ws.set_paths([conf])  # the loop calls again after the ERROR cycle
    errors = [t for t in drain(q) if t.kind is TriggerKind.ERROR]
    assert len(errors) == 1
    assert errors[0].path == conf
    assert "No space left" in errors[0].detail or "ENOSPC" in errors[0].detail
    assert backend.points() == {tmp_path: False}  # the parent is still watched
    del backend.fail[conf]
    ws.set_paths([conf])
    assert backend.points()[conf] is True


def test_directory_vanishing_while_armed_is_retried(tmp_path: Path) -> None:
    backend, q = FakeBackend(), queue.Queue[Trigger]()
    conf = tmp_path / "conf.d"
    conf.mkdir()
    backend.fail[conf] = errno.ENOENT
    ws = WatchSet(backend, q)
    ws.set_paths([conf])
    # Gave up after a few rounds (the fake keeps saying ENOENT) and said so.
    assert [t.kind for t in drain(q)] == [TriggerKind.ERROR]
    assert backend.calls < 50


def test_close_disarms_everything(tmp_path: Path) -> None:
    backend = FakeBackend()
    ws = WatchSet(backend, queue.Queue())
    (tmp_path / "c").mkdir()
    ws.set_paths([tmp_path / "c"])
    assert backend.armed
    ws.close()
    assert not backend.armed


# --- factory ------------------------------------------------------------------------------


def test_make_watcher_default_is_the_own_inotify_reader() -> None:
    assert isinstance(make_watcher("inotify", queue.Queue()), InotifyWatcher)
    # `watchdog` from an older settings file: the same reader (no watchdog package now).
    assert isinstance(make_watcher(WatcherKind.WATCHDOG, queue.Queue()), InotifyWatcher)


def test_make_watcher_unknown() -> None:
    with pytest.raises(WatcherUnavailable, match="unknown watcher"):
        make_watcher("fanotify", queue.Queue())


def test_pyinotify_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyinotify", None)  # import fails as on Python 3.12+
    with pytest.raises(WatcherUnavailable, match=r"pyinotify.*3\.12"):
        make_watcher("pyinotify", queue.Queue())


def test_stopping_an_unstarted_watcher_is_harmless() -> None:
    InotifyWatcher(queue.Queue()).stop()


def kinds_of(event: FsEvent) -> dict[Path | None, TriggerKind]:
    return {t.path: t.kind for t in classify(event, frozenset({CONF, TGT}), frozenset()).triggers}


def test_a_delete_or_move_away_is_gone_and_anything_else_a_file_event() -> None:
    """GONE never starts a cycle at once (debounce.py): the rewrite that follows joins it."""
    assert kinds_of(FsEvent(FsAction.DELETED, CONF / "x.conf")) == {
        CONF / "x.conf": TriggerKind.GONE
    }
    moved = FsEvent(FsAction.MOVED, CONF / "x.conf", CONF / "y.conf")
    assert kinds_of(moved) == {CONF / "x.conf": TriggerKind.GONE, CONF / "y.conf": TriggerKind.FILE}
    away = FsEvent(FsAction.MOVED, CONF / "x.conf", None)
    assert kinds_of(away) == {CONF / "x.conf": TriggerKind.GONE}
    closed = FsEvent(FsAction.CLOSED_WRITE, CONF / "x.conf")
    assert kinds_of(closed) == {CONF / "x.conf": TriggerKind.FILE}
    # A watched directory itself going is structure, not a file's delete.
    assert kinds_of(FsEvent(FsAction.DELETED, CONF, is_dir=True)) == {CONF: TriggerKind.FILE}
