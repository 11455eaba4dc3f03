"""tgtwatch's own inotify edge without the kernel: event parsing, what each event means,
and that no watchdog internals (nor the package) are used any more."""

from __future__ import annotations

import ast
import struct
import tomllib
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tgtwatch.daemon.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_IGNORED,
    IN_ISDIR,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    RawEvent,
    parse_events,
)
from tgtwatch.daemon.watch_events import FsAction, FsEvent
from tgtwatch.daemon.watch_inotify import fs_events

REPO = Path(__file__).resolve().parents[2]
D = Path("/etc/mytgt/conf.d")


def encode(event: RawEvent, pad: int) -> bytes:
    name = event.name + b"\0" * pad if event.name or pad else b""
    return struct.pack("iIII", event.wd, event.mask, event.cookie, len(name)) + name


events_st = st.builds(
    RawEvent,
    wd=st.integers(-1, 2**31 - 1),
    mask=st.integers(0, 2**32 - 1),
    cookie=st.integers(0, 2**32 - 1),
    name=st.binary(max_size=255).map(lambda b: b.replace(b"\0", b"")),
)


@given(st.lists(st.tuples(events_st, st.integers(1, 16)), max_size=20))
def test_parse_events_reads_back_what_the_kernel_writes(batch: list[tuple[RawEvent, int]]) -> None:
    data = b"".join(encode(e, pad) for e, pad in batch)
    assert parse_events(data) == [e for e, _ in batch]


def test_an_overflow_has_no_watch_and_no_name() -> None:
    data = struct.pack("iIII", -1, IN_Q_OVERFLOW, 0, 0)
    assert parse_events(data) == [RawEvent(-1, IN_Q_OVERFLOW, 0, b"")]


def test_what_each_event_means() -> None:
    def one(mask: int, name: bytes = b"x.conf") -> list[FsEvent]:
        return fs_events(RawEvent(1, mask, 0, name), D)

    assert one(IN_CLOSE_WRITE) == [FsEvent(FsAction.CLOSED_WRITE, D / "x.conf")]
    assert one(IN_CREATE) == [FsEvent(FsAction.CREATED, D / "x.conf")]
    assert one(IN_CREATE | IN_ISDIR, b"sub") == [FsEvent(FsAction.CREATED, D / "sub", is_dir=True)]
    assert one(IN_DELETE) == [FsEvent(FsAction.DELETED, D / "x.conf")]
    assert one(IN_MOVED_FROM) == [FsEvent(FsAction.MOVED, D / "x.conf", None)]
    assert one(IN_MOVED_TO) == [FsEvent(FsAction.MOVED, None, D / "x.conf")]
    assert one(IN_IGNORED, b"") == []  # on the directory itself: the watch is gone
    # A name that is not UTF-8 stays a path (surrogate escapes), never an exception.
    assert one(IN_DELETE, b"\xff.conf") == [FsEvent(FsAction.DELETED, D / "\udcff.conf")]


def test_no_watchdog_anywhere() -> None:
    """watch.py subclassed watchdog's private InotifyFD/InotifyObserver, and allowed any
    watchdog >= 7.1: an upgrade could silently lose overflow detection, or crash, and
    Debian 12's python3-watchdog (2.2) has other internals. tgtwatch reads inotify itself."""
    imports: list[str] = []
    for module in (REPO / "tgtwatch").rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imports += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                imports.append(node.module)
    assert not [name for name in imports if name.split(".")[0] == "watchdog"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("watchdog")]
