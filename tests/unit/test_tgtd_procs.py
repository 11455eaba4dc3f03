"""Only root's tgtd from the configured binary counts, in a fake /proc.

tests/integration/test_fake_tgtd_real.py runs a look-alike `tgtd` as an unprivileged user
next to tgtwatch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tgtwatch.backends.tgtd_procs import (
    root_uids,
    scan_tgtd,
    trusted_exe,
    trusted_executables,
)
from tgtwatch.tgt.gateway import TgtPrograms

TGTD = "/opt/test/sbin/tgtd"


def fake(
    proc: Path,
    pid: int,
    port: int,
    *,
    uids: str = "0\t0\t0\t0",
    exe: str = TGTD,
    comm: str = "tgtd",
) -> None:
    entry = proc / str(pid)
    entry.mkdir(parents=True)
    argv = [TGTD, "-f", "--iscsi", f"portal=0.0.0.0:{port}", "-C", str(port)]
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (entry / "comm").write_text(f"{comm}\n")
    (entry / "status").write_text(f"Name:\t{comm}\nUmask:\t0022\nUid:\t{uids}\nGid:\t0\t0\t0\t0\n")
    (entry / "exe").symlink_to(exe)


def test_only_root_running_the_configured_binary_counts(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    fake(proc, 10, 3261)
    fake(proc, 11, 3262, uids="1000\t1000\t1000\t1000")  # a local user's look-alike
    fake(proc, 12, 3263, uids="1000\t0\t0\t0")  # set-uid: the real uid is the user's
    fake(proc, 13, 3264, exe="/home/user/tgtd")  # root, but another binary
    fake(proc, 14, 3265, exe=f"{TGTD} (deleted)")  # the binary replaced by an upgrade
    fake(proc, 15, 3266, comm="sleep")
    found = scan_tgtd(proc, {TGTD})
    assert [(p.pid, p.cmdline.control_port) for p in found] == [(10, 3261), (14, 3265)]


def test_a_process_that_vanishes_while_looked_at_is_skipped(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    fake(proc, 10, 3261)
    (proc / "10" / "status").unlink()
    assert scan_tgtd(proc, {TGTD}) == []
    assert scan_tgtd(tmp_path / "no-proc", {TGTD}) == []


def test_uids_and_exe_links() -> None:
    assert root_uids("Name:\ttgtd\nUid:\t0\t0\t0\t0\n")
    assert not root_uids("Uid:\t0\t0\t0\t65534\n")
    assert not root_uids("Name:\ttgtd\n")
    # only a line that starts with "Uid:" counts, not the text in another line
    assert not root_uids("Name:\tx Uid:\t0\t0\t0\t0\nUid:\t1000\t0\t0\t0\n")
    assert not root_uids("Name:\tx Uid:\t0\t0\t0\t0\n")
    assert trusted_exe(f"{TGTD} (deleted)", {TGTD})
    assert not trusted_exe("/tmp/tgtd", {TGTD})
    # unreadable: a root process with capabilities beyond tgtwatch's own (tgtd_procs.py)
    assert trusted_exe(None, {TGTD})


def test_a_wrapper_script_trusts_the_distributions_binary(tmp_path: Path) -> None:
    wrapper = tmp_path / "tgtd"
    wrapper.write_text('#!/bin/sh\nexec /usr/sbin/tgtd "$@"\n')
    wrapper.chmod(0o755)
    trusted = trusted_executables(TgtPrograms(tgtd=str(wrapper)))
    assert str(wrapper) in trusted
    system = shutil.which("tgtd", path="/usr/sbin:/sbin")
    if system is None:
        pytest.skip("no tgtd installed in /usr/sbin or /sbin")
    assert os.path.realpath(system) in trusted
    assert trusted_executables(TgtPrograms(tgtd="/bin/false")) == {os.path.realpath("/bin/false")}
