"""A local user's look-alike `tgtd` on an instance's port: never adopted, never drained.

The look-alike runs as nobody (setpriv) and has everything a scan of /proc by name would
go by: comm `tgtd`, argv `/usr/sbin/tgtd -f --iscsi portal=127.0.0.1:PORT -C PORT`. It is
started before the instance's real tgtd, so it also has the lower pid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from instances import InstanceTree, iqn, listed_targets, process_gone, wait_for

from tgtwatch.backends.tgtd_procs import scan_tgtd

pytestmark = pytest.mark.integration

NOBODY = "65534"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture
def look_alike() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start look-alikes with started.append(...); each is killed (by its pid) at the end."""
    if shutil.which("setpriv") is None or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"setpriv (util-linux) or {SYSTEM_PYTHON} is not installed")
    started: list[subprocess.Popen[bytes]] = []
    home = Path(tempfile.mkdtemp(prefix="fake-tgtd.", dir="/tmp"))
    home.chmod(0o755)
    # comm is the name the binary was run by: a symlink called tgtd to the system's Python
    # (one the user nobody may run).
    (home / "tgtd").symlink_to(os.path.realpath(SYSTEM_PYTHON))
    started.append(home)  # type: ignore[arg-type]  # the first item: where it lives
    try:
        yield started
    finally:
        for proc in started[1:]:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(home, ignore_errors=True)


def spawn_look_alike(started: list[subprocess.Popen[bytes]], port: int) -> subprocess.Popen[bytes]:
    home = Path(str(started[0]))
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    argv += ["bash", "-c", 'exec -a /usr/sbin/tgtd "$0" "$@"', str(home / "tgtd")]
    argv += ["-c", "import time; time.sleep(600)"]
    argv += ["-f", "--iscsi", f"portal=127.0.0.1:{port}", "-C", str(port)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, cwd="/")
    started.append(proc)

    def looks_like_tgtd() -> bool:
        # comm changes at exec a moment before the new cmdline can be read: wait for both.
        comm = Path(f"/proc/{proc.pid}/comm")
        if not comm.exists() or comm.read_text().strip() != "tgtd":
            return False
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        return cmdline[0] == b"/usr/sbin/tgtd" and cmdline[-3:-1] == [b"-C", str(port).encode()]

    wait_for(looks_like_tgtd, 10, "the look-alike to exec")
    return proc


def test_a_look_alike_is_never_adopted_nor_drained(
    tree: InstanceTree, look_alike: list[subprocess.Popen[bytes]]
) -> None:
    port = tree.reserve_port()
    fake = spawn_look_alike(look_alike, port)
    assert fake.pid not in {p.pid for p in scan_tgtd()}

    tree.write_instance("lone", port)
    ran = tree.apply()
    assert ran.code == 0, str(ran)
    assert f"start lone port {port}: ok" in ran.out, str(ran)
    real = tree.pids()[port]
    assert real != fake.pid
    assert listed_targets(port) == [iqn("lone")]
    status = tree.assert_status_matches_tgtd()
    assert status[port]["pid"] == real

    tree.remove_instance("lone")
    ran = tree.apply()
    assert ran.code == 0, str(ran)
    wait_for(lambda: process_gone(real), 15, "the real tgtd to exit")
    assert fake.poll() is None, "the look-alike was signalled"
    assert "T" not in Path(f"/proc/{fake.pid}/stat").read_text().split(")")[1].split()[0]
    assert all(str(fake.pid) not in str(record) for record in tree.audit())

    # No file for the port, nothing applied: still nothing to adopt or drain there.
    ran = tree.apply()
    assert ran.code == 0 and "lone" not in ran.out, str(ran)
    assert tree.status().get(port) is None
    assert fake.poll() is None
