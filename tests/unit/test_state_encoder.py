"""The state file made per changed port: always the very bytes of the whole encoding."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tgtwatch.daemon.keyed import Changes
from tgtwatch.daemon.state import StateEncoder, StateFile, StateWriter, encode, from_json
from tgtwatch.model.structs import Applied, AppliedEntry, InstanceKind

PORTS = st.sampled_from([3260, 3261, 3262, 9, 10, 100, 13000])  # "10" sorts before "9"
TEXT = st.text(max_size=8)  # unicode, quotes, newlines: json escapes them
ENTRIES = st.builds(
    AppliedEntry,
    name=TEXT,
    port=PORTS,
    config=TEXT.map(lambda t: Path("/etc/mytgt/conf.d") / f"{t}.conf"),
    sha256=st.sampled_from(["a" * 64, "b" * 64]),
    applied_at=st.floats(allow_nan=False, allow_infinity=False),
    pending=st.lists(TEXT, max_size=2).map(tuple),
    kind=st.sampled_from(InstanceKind),
    targets=st.dictionaries(TEXT, TEXT, max_size=2).map(lambda d: tuple(sorted(d.items()))),
)
STEPS = st.one_of(
    st.tuples(st.just("set"), PORTS, ENTRIES),
    st.tuples(st.just("copy"), PORTS, st.none()),  # an equal entry, another object
    st.tuples(st.just("drop"), PORTS, st.none()),
    st.tuples(st.just("fail"), PORTS, TEXT),
    st.tuples(st.just("recover"), PORTS, st.none()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(STEPS, min_size=1, max_size=30))
def test_the_encoder_always_writes_the_whole_encoding(steps: list[tuple[str, int, object]]) -> None:
    encoder = StateEncoder()
    entries: dict[int, AppliedEntry] = {}
    failed: dict[int, str] = {}
    for verb, port, value in steps:
        if verb == "set":
            assert isinstance(value, AppliedEntry)
            entries[port] = dataclasses.replace(value, port=port)
        elif verb == "copy" and port in entries:
            entries[port] = dataclasses.replace(entries[port])
        elif verb == "drop":
            entries.pop(port, None)
        elif verb == "fail":
            assert isinstance(value, str)
            failed[port] = value
        elif verb == "recover":
            failed.pop(port, None)
        applied = Applied(dict(entries))  # a new Applied per step, as a lane's end makes
        body = encoder.encode(applied, failed)
        assert body == encode(applied, failed)
        assert from_json(json.loads(body)) == applied


def test_changes_name_the_keys_added_removed_or_replaced() -> None:
    entries = {p: AppliedEntry(f"i{p}", p, Path(f"/c/i{p}.conf"), "a", 1.0) for p in range(5)}
    tracker = Changes(by_identity=True)
    assert tracker.changed(entries) == set(range(5))
    assert tracker.changed(dict(entries)) == set()  # the same objects in a new mapping
    moved = {**entries, 2: dataclasses.replace(entries[2]), 7: entries[0]}  # 2: equal, new
    del moved[4]
    assert tracker.changed(moved) == {2, 4, 7}
    by_value = Changes(by_identity=False)
    assert by_value.changed({1: "x", 2: "y"}) == {1, 2}
    assert by_value.changed({1: "x", 2: "y" + ""}) == set()
    assert by_value.changed({1: "z"}) == {1, 2}
    by_value.forget()
    assert by_value.changed({1: "z"}) == {1}


def test_the_writer_marks_again_when_the_file_cannot_be_written(tmp_path: Path) -> None:
    writer = StateWriter(StateFile(tmp_path))
    applied = Applied({3261: AppliedEntry("a", 3261, Path("/c/a.conf"), "a", 1.0)})
    assert writer.write(applied, {3262: "start failed"}) is None
    assert writer.file.load() == (applied, None)
    assert writer.file.load_failed() == {3262: "start failed"}
    writer.file.path.unlink()
    writer.file.path.mkdir()  # a directory in its place: the rename fails
    error = writer.write(Applied(), {})
    assert error is not None and "cannot write the state" in error
    assert writer.take()  # tried again at the next call
    writer.file.path.rmdir()
    assert writer.write(applied, {}) is None  # its parts were kept: the same bytes as whole
    assert writer.file.path.read_bytes() == encode(applied, {})
