"""The applied-state file: round trip, atomic replace, and forgiving reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from builders import default_spec, entry, entry_for

from tgtwatch.daemon.state import STATE_FILE, StateError, StateFile, from_json, to_json
from tgtwatch.model.structs import Applied, InstanceKind


def sample() -> Applied:
    return Applied(
        {
            3260: entry_for(default_spec()),
            3261: entry("alpha", 3261, pending=("iqn.x:a", "iqn.x:b")),
            3262: entry("beta", 3262),
        }
    )


def test_round_trip(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state")
    state.save(sample())
    assert state.load() == (sample(), None)
    assert state.load()[0].entries[3260].kind is InstanceKind.DEFAULT
    assert to_json(from_json(to_json(sample()))) == to_json(sample())


def test_empty_round_trip(tmp_path: Path) -> None:
    state = StateFile(tmp_path)
    state.save(Applied())
    assert state.load() == (Applied(), None)


def test_missing_file_is_empty_without_a_warning(tmp_path: Path) -> None:
    assert StateFile(tmp_path / "never-made").load() == (Applied(), None)


def test_save_creates_the_directory_and_replaces_atomically(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "a/b")
    state.save(sample())
    first_inode = os.stat(state.path).st_ino
    state.save(Applied({3262: entry("beta", 3262)}))
    assert os.stat(state.path).st_ino != first_inode  # a new file renamed over the old one
    assert sorted(os.listdir(tmp_path / "a/b")) == [STATE_FILE]  # no temp files left
    assert list(state.load()[0].entries) == [3262]


def test_a_failed_save_keeps_the_old_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = StateFile(tmp_path)
    state.save(sample())

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StateError, match="No space left"):
        state.save(Applied())
    assert state.load() == (sample(), None)
    assert sorted(os.listdir(tmp_path)) == [STATE_FILE]


@pytest.mark.parametrize(
    "body",
    [
        "",
        "{not json",
        "[]",
        "null",
        '{"version": 2, "ports": {}}',
        '{"version": 1}',
        '{"version": 1, "ports": []}',
        '{"version": 1, "ports": {"x": {}}}',
        '{"version": 1, "ports": {"3261": {"name": "a"}}}',
        '{"version": 1, "ports": {"3261": 5}}',
        '{"version": 1, "ports": {"3261": {"name": "a", "config": "/a", "sha256": "x",'
        ' "applied_at": "soon"}}}',
        '{"version": 1, "ports": {"3261": {"name": "a", "config": "/a", "sha256": "x",'
        ' "applied_at": 1, "kind": "alien"}}}',
    ],
)
def test_corrupt_file_is_empty_with_a_warning(tmp_path: Path, body: str) -> None:
    (tmp_path / STATE_FILE).write_text(body)
    applied, warning = StateFile(tmp_path).load()
    assert applied == Applied()
    assert warning is not None
    assert str(tmp_path / STATE_FILE) in warning
    assert "\n" not in warning


def test_binary_garbage_is_empty_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"\xff\x00\xfe")
    applied, warning = StateFile(tmp_path).load()
    assert applied == Applied()
    assert warning is not None


def test_unreadable_state_is_empty_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).mkdir()
    applied, warning = StateFile(tmp_path).load()
    assert applied == Applied()
    assert warning is not None and "cannot read" in warning


def test_unwritable_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError) as info:
        StateFile(tmp_path / "file/state").save(sample())
    assert str(tmp_path / "file/state") in str(info.value)
    assert "\n" not in str(info.value)


def test_json_is_readable_by_people(tmp_path: Path) -> None:
    state = StateFile(tmp_path)
    state.save(sample())
    data = json.loads(state.path.read_text())
    assert data["version"] == 1
    assert data["ports"]["3261"]["pending"] == ["iqn.x:a", "iqn.x:b"]
    assert data["ports"]["3260"]["kind"] == "default"
