"""The native engine on a real tgtd with a logged-in initiator doing I/O.

What tgtd takes live reaches the busy target at once and the initiator sees no error;
what would harm it (a store replaced, a LUN removed) waits until its session ends.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import wait_for
from tgt_tree import run_tool
from tgtd_harness import Initiator, RunningTgtd, SessionHolder

from tgtwatch.config.tgtconf import parse
from tgtwatch.config.trust import TrustedFiles, TrustPolicy
from tgtwatch.model.tree import ConfigTree
from tgtwatch.tgt.engine import RecordFile, load
from tgtwatch.tgt.ipc_client import TgtdSocket

pytestmark = pytest.mark.integration

IQN = "iqn.2026-12.org.tgtwatch.live:vol"


def tree_of(tmp_path: Path, text: str) -> ConfigTree:
    config = tmp_path / "live.conf"
    config.write_text(text)
    parsed = parse(config, TrustedFiles(config.parent, TrustPolicy(owner_uid=os.getuid())))
    assert parsed.tree is not None, parsed.problems
    return parsed.tree


def target(*stores: Path, extra: str = "") -> str:
    body = "".join(f"    backing-store {s}\n" for s in stores)
    return f"<target {IQN}>\n{body}{extra}</target>\n"


def io_errors(initiator: Initiator) -> list[str]:
    text = initiator.log_path.read_text(errors="replace").replace("\r", "\n")
    return [line for line in text.splitlines() if "fail" in line.lower() or "error" in line.lower()]


def luns_seen(tgtd: RunningTgtd) -> list[int]:
    """LUN numbers an initiator finds with REPORT LUNS (iscsi-ls -s lists them)."""
    done = run_tool(["iscsi-ls", "-s", tgtd.url()])
    assert done.returncode == 0, done.stdout + done.stderr
    return sorted(
        int(line.split()[0].removeprefix("Lun:"))
        for line in done.stdout.splitlines()
        if line.startswith("Lun:")
    )


def test_live_lun_add_while_an_initiator_does_io(
    tgtd: RunningTgtd,
    make_backing_file: Callable[..., Path],
    session_holder: SessionHolder,
    tmp_path: Path,
) -> None:
    one, two = make_backing_file("one.img"), make_backing_file("two.img")
    records = RecordFile(tmp_path / "record.json")
    client = TgtdSocket(tgtd.port)
    first = load(client, tree_of(tmp_path, target(one)), records)
    assert first.ok and first.live, first
    initiator = session_holder.hold(tgtd, IQN, lun=1)
    tid_before = tgtd.control.target_details()[0].tid

    added = load(client, tree_of(tmp_path, target(one, two)), records)

    assert added.ok and not added.waiting, added
    assert added.live == (f"{IQN} new LUN 2 ({two})",)
    (info,) = tgtd.control.target_details()
    assert [lun.number for lun in info.data_luns] == [1, 2]
    assert info.tid == tid_before and len(info.nexuses) == 1  # same target, same session
    assert luns_seen(tgtd) == [0, 1, 2]
    wait_for(lambda: initiator.progress() >= 2, 20, "I/O to go on after the change")
    assert io_errors(initiator) == []


def test_a_replaced_store_waits_for_the_session_to_end(
    tgtd: RunningTgtd,
    make_backing_file: Callable[..., Path],
    session_holder: SessionHolder,
    tmp_path: Path,
) -> None:
    one, other = make_backing_file("one.img"), make_backing_file("other.img")
    records = RecordFile(tmp_path / "record.json")
    client = TgtdSocket(tgtd.port)
    assert load(client, tree_of(tmp_path, target(one)), records).ok
    initiator = session_holder.hold(tgtd, IQN, lun=1)

    replaced = load(
        client, tree_of(tmp_path, target(other, extra="    initiator-address 127.0.0.1\n")), records
    )

    assert replaced.ok and replaced.busy == (IQN,), replaced
    assert replaced.waiting == (f"{IQN} delete LUN 1", f"{IQN} new LUN 1 ({other})")
    assert replaced.live == (f"{IQN} bind address 127.0.0.1", f"{IQN} unbind address ALL")
    (info,) = tgtd.control.target_details()
    assert info.data_luns[0].backing_store == str(one)  # the session's data is untouched
    wait_for(lambda: initiator.progress() >= 2, 20, "I/O to go on")
    assert io_errors(initiator) == []

    session_holder.stop_all()
    wait_for(lambda: not tgtd.control.target_details()[0].nexuses, 20, "the session to end")
    later = load(
        client, tree_of(tmp_path, target(other, extra="    initiator-address 127.0.0.1\n")), records
    )
    assert later.ok and not later.waiting, later
    assert tgtd.control.target_details()[0].data_luns[0].backing_store == str(other)


def test_a_lost_record_is_rebuilt_from_tgtd(
    tgtd: RunningTgtd, make_backing_file: Callable[..., Path], tmp_path: Path
) -> None:
    one = make_backing_file("one.img")
    records = RecordFile(tmp_path / "record.json")
    client = TgtdSocket(tgtd.port)
    assert load(client, tree_of(tmp_path, target(one)), records).ok
    records.remove()
    again = load(client, tree_of(tmp_path, target(one)), records)
    assert again.ok and again.live == (), again  # nothing made twice
    subprocess.run(
        [
            "tgtadm",
            "-C",
            str(tgtd.port),
            "--op",
            "delete",
            "--mode",
            "logicalunit",
            "--tid",
            "1",
            "--lun",
            "1",
        ],
        check=True,
        timeout=30,
    )
    repaired = load(client, tree_of(tmp_path, target(one)), records)
    assert repaired.live == (f"{IQN} new LUN 1 ({one})",)
