"""The native engine's reload parses only the targets whose show changed or that the file
changes, and still repairs what was changed by hand on any other target."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from builders import tree_of

from tgtwatch.tgt.engine import RecordFile, load
from tgtwatch.tgt.ipc import Mode, Op, Request
from tgtwatch.tgt.records import InstanceRecord, instance_to_json
from tgtwatch.tgt.show import parse_show_targets, split_show_targets

DATA = Path(__file__).parent / "data" / "tgt"
IQN = "iqn.2026-12.org.tgtwatch.digest"


@dataclass
class FakeTarget:
    name: str
    luns: dict[int, str] = field(default_factory=dict)
    acl: list[str] = field(default_factory=list)
    sessions: int = 0


LUN_ATTRS = "            Online: Yes\n            Removable media: No\n            Readonly: No\n"


@dataclass
class ShowingTgtd:
    """tgtd's control socket for the requests a LUN-and-ACL config sends; `show` in tgtd's
    format. Counts the requests other than show, and how often show was asked."""

    targets: dict[int, FakeTarget] = field(default_factory=dict)
    sent: list[Request] = field(default_factory=list)

    def show(self) -> str:
        out = []
        for tid, t in sorted(self.targets.items()):
            out.append(f"Target {tid}: {t.name}\n    System information:\n        Driver: iscsi\n")
            out.append("        State: ready\n    I_T nexus information:\n")
            for n in range(t.sessions):
                out.append(
                    f"        I_T nexus: {n + 1}\n            Initiator: iqn.x:{n} alias: none\n"
                )
            out.append("    LUN information:\n        LUN: 0\n            Type: controller\n")
            out.append("            Backing store path: None\n" + LUN_ATTRS)
            for number, path in sorted(t.luns.items()):
                out.append(f"        LUN: {number}\n            Type: disk\n")
                out.append(f"            Backing store path: {path}\n" + LUN_ATTRS)
            out.append("    Account information:\n    ACL information:\n")
            out += [f"        {a}\n" for a in t.acl]
        return "".join(out)

    def call(self, request: Request) -> str:
        if request.op is Op.SHOW:
            return self.show()
        self.sent.append(request)
        p = request.payload
        if request.mode is Mode.TARGET and request.op is Op.NEW:
            assert p.targetname is not None
            self.targets[request.tid] = FakeTarget(p.targetname)
        elif request.mode is Mode.TARGET and request.op is Op.DELETE:
            del self.targets[request.tid]
        elif request.mode is Mode.TARGET and request.op is Op.BIND and p.address:
            self.targets[request.tid].acl.append(p.address)
        elif request.mode is Mode.TARGET and request.op is Op.UNBIND and p.address:
            self.targets[request.tid].acl.remove(p.address)
        elif request.mode is Mode.DEVICE and request.op is Op.NEW:
            assert p.path is not None
            self.targets[request.tid].luns[request.lun] = p.path
        elif request.mode is Mode.DEVICE and request.op is Op.DELETE:
            del self.targets[request.tid].luns[request.lun]
        return ""


def config(stores: dict[str, list[str]]) -> str:
    return "".join(
        f"<target {IQN}:{name}>\n"
        + "".join(f"    backing-store {s}\n" for s in paths)
        + "</target>\n"
        for name, paths in stores.items()
    )


def always(_path: str) -> bool:
    return True


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the targets whose show the engine parsed, per call."""
    names: list[str] = []
    real = parse_show_targets

    def counting(text: str) -> tuple[object, ...]:
        found = real(text)
        names.extend(t.name for t in found)
        return found

    monkeypatch.setattr("tgtwatch.tgt.engine.parse_show_targets", counting)
    return names


WORLD = {f"t{i}": [f"/srv/t{i}.img"] for i in range(5)}


def test_one_lun_added_parses_one_target(tmp_path: Path, parsed: list[str]) -> None:
    tgtd, records = ShowingTgtd(), RecordFile(tmp_path / "record.json")
    assert load(tgtd, tree_of(config(WORLD)), records, present=always).ok
    assert load(tgtd, tree_of(config(WORLD)), records, present=always).live == ()
    parsed.clear()

    grown = {**WORLD, "t3": ["/srv/t3.img", "/srv/t3b.img"]}
    report = load(tgtd, tree_of(config(grown)), records, present=always)

    assert report.live == (f"{IQN}:t3 new LUN 2 (/srv/t3b.img)",)
    assert parsed == [f"{IQN}:t3"]
    assert tgtd.targets[4].luns == {1: "/srv/t3.img", 2: "/srv/t3b.img"}


def test_a_login_does_not_make_a_target_parsed(tmp_path: Path, parsed: list[str]) -> None:
    tgtd, records = ShowingTgtd(), RecordFile(tmp_path / "record.json")
    load(tgtd, tree_of(config(WORLD)), records, present=always)
    load(tgtd, tree_of(config(WORLD)), records, present=always)
    tgtd.targets[2].sessions = 1
    parsed.clear()
    assert load(tgtd, tree_of(config(WORLD)), records, present=always).live == ()
    assert parsed == []


def test_a_hand_change_to_an_untouched_target_is_repaired(
    tmp_path: Path, parsed: list[str]
) -> None:
    tgtd, records = ShowingTgtd(), RecordFile(tmp_path / "record.json")
    load(tgtd, tree_of(config(WORLD)), records, present=always)
    load(tgtd, tree_of(config(WORLD)), records, present=always)
    del tgtd.targets[1].luns[1]  # tgtadm --op delete --mode logicalunit, by hand
    tgtd.targets[5].acl = ["10.0.0.9"]  # an ACL swapped by hand
    parsed.clear()

    grown = {**WORLD, "t3": ["/srv/t3.img", "/srv/t3b.img"]}
    report = load(tgtd, tree_of(config(grown)), records, present=always)

    assert sorted(parsed) == [f"{IQN}:t0", f"{IQN}:t3", f"{IQN}:t4"]
    assert f"{IQN}:t0 new LUN 1 (/srv/t0.img)" in report.live
    assert tgtd.targets[1].luns == {1: "/srv/t0.img"}
    assert tgtd.targets[5].acl == ["ALL"]


def test_a_record_without_digests_parses_every_target(tmp_path: Path, parsed: list[str]) -> None:
    """A record of an older tgtwatch (or a damaged one) holds no digest: all are read."""
    tgtd, records = ShowingTgtd(), RecordFile(tmp_path / "record.json")
    load(tgtd, tree_of(config(WORLD)), records, present=always)
    load(tgtd, tree_of(config(WORLD)), records, present=always)
    text = records.path.read_text().replace('"show_digests"', '"other"')
    records.path.write_text(text)
    parsed.clear()
    assert load(tgtd, tree_of(config(WORLD)), records, present=always).live == ()
    assert len(parsed) == len(WORLD)


def test_blocks_cut_show_where_the_parser_does() -> None:
    for name in ("show_target_sessions.txt", "show_target_idle.txt", "show_target_none.txt"):
        text = (DATA / name).read_text()
        blocks = split_show_targets(text)
        assert [(b.tid, b.name) for b in blocks] == [
            (t.tid, t.name) for t in parse_show_targets(text)
        ]
        assert parse_show_targets("".join(b.text for b in blocks)) == parse_show_targets(text)


def test_the_digest_ignores_sessions_but_not_luns() -> None:
    busy = ShowingTgtd({1: FakeTarget("iqn.x:a", {1: "/a"}, ["ALL"], sessions=2)})
    idle = ShowingTgtd({1: FakeTarget("iqn.x:a", {1: "/a"}, ["ALL"])})
    other = ShowingTgtd({1: FakeTarget("iqn.x:a", {1: "/b"}, ["ALL"])})
    (b,), (i,), (o,) = (split_show_targets(t.show()) for t in (busy, idle, other))
    assert b.digest == i.digest != o.digest


def test_the_record_kept_in_memory_is_the_file_s(tmp_path: Path) -> None:
    """A RecordFile returns the record it last read or wrote while the file is that one,
    and reads any other: another writer's file, a hand edit, a removed file."""
    tgtd, records = ShowingTgtd(), RecordFile(tmp_path / "record.json")
    load(tgtd, tree_of(config(WORLD)), records, present=always)
    saved = records.load()
    assert records.load() is saved  # not read again
    assert len(saved.targets) == len(WORLD)

    other = RecordFile(records.path)  # another process's tgtwatch load, say
    other.save(InstanceRecord())
    assert records.load().targets == {}

    records.save(saved)
    # edited in place (same inode): a new size (the clock tick may be the same)
    records.path.write_text(records.path.read_text().replace(f"{IQN}:t0", f"{IQN}:tXY"))
    assert f"{IQN}:tXY" in records.load().targets

    records.path.unlink()
    assert records.load() == InstanceRecord()


def test_the_file_is_the_record_whatever_was_rendered_before(tmp_path: Path) -> None:
    """Targets' JSON reused from the last save never leaves a stale target in the file."""
    tgtd, records = ShowingTgtd(), RecordFile(tmp_path / "record.json")
    edits = [
        WORLD,
        {**WORLD, "t3": ["/srv/t3.img", "/srv/t3b.img"]},
        {k: v for k, v in WORLD.items() if k != "t1"},
        {**WORLD, "t9": ["/srv/t9.img"]},
    ]
    for stores in edits:
        load(tgtd, tree_of(config(stores)), records, present=always)
        written = json.loads(records.path.read_text())
        assert written == instance_to_json(RecordFile(records.path).load())
        assert sorted(t["name"] for t in written["targets"]) == sorted(f"{IQN}:{n}" for n in stores)
