"""Saves by real tools against a real daemon: one action each, no transient reject, no drain.

Each test runs `.venv/bin/tgtwatch run` (daemon_harness.py) on real tgtds and checks with a
real initiator. The tools are the real programs (vim in ex mode, sed, cp, install, tee,
rsync) or, where the writer is a library (Ansible's copy module, dpkg), the same system
calls in the same order. Every wait is on a condition with a deadline; the fixed windows
(a writer's pause, the delete grace running out) *measure* a behaviour, they never
synchronise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_harness import (
    Daemon,
    DaemonWorld,
    config_digest,
    iqn,
    lun_answers,
    world_fixture,  # noqa: F401  (the `world` fixture)
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.engine("native", cost=True, reason="what a save is: the watcher, the grace"),
]

GRACE_S = 1.0  # the default delete_grace_ms
TOOL_TIMEOUT_S = 30


def run(argv: list[str], **kwargs: object) -> None:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False, **kwargs
    )  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}\n{done.stderr}"


def actions_of(daemon: Daemon, name: str) -> list[str]:
    return [r.action for r in daemon.records(instance=name)]


def barrier(world: DaemonWorld, daemon: Daemon, name: str) -> None:
    """Drop another instance and wait for its start: every event before it was handled."""
    world.write_instance(name, world.reserve_port())
    daemon.wait_for_record(action="start", instance=name)


def pause(seconds: float) -> None:
    threading.Event().wait(seconds)


# ---------------------------------------------------------------------------
# the delete grace


def test_delete_then_recreate_never_drains_and_a_delete_that_stays_does(
    world: DaemonWorld,
) -> None:
    port = world.reserve_port()
    path = world.write_instance("phoenix", port)
    text = path.read_text()
    daemon = world.start()
    pid = world.pids()[port]

    path.unlink()
    # The gap a slow writer leaves (3x the test debounce: the delete's cycle has run).
    pause(0.3)
    world.move_in("phoenix", text)
    # Let the grace run out: a drain held for the delete would start now.
    pause(GRACE_S + 0.2)
    barrier(world, daemon, "phoenix-barrier")
    assert actions_of(daemon, "phoenix") == ["start"]
    assert world.pids()[port] == pid
    assert lun_answers(port, iqn("phoenix"), 1)

    # A delete that stays: drained, and only once the grace is over.
    deleted = time.monotonic()
    path.unlink()
    stop = daemon.wait_for_record(action="stop", instance="phoenix")
    assert stop.fields["TGTWATCH_RESULT"] == "ok", stop.fields
    assert stop.at - deleted >= GRACE_S
    assert actions_of(daemon, "phoenix") == ["start", "stop"]


# ---------------------------------------------------------------------------
# real tools


def one_lun(world: DaemonWorld, port: int) -> str:
    return world.instance_text("tools", port, {iqn("tools"): [world.backing("tools-1.img")]})


def two_luns(world: DaemonWorld, port: int) -> str:
    stores = [world.backing("tools-1.img"), world.backing("tools-2.img")]
    return world.instance_text("tools", port, {iqn("tools"): stores})


def vim(backupcopy: str) -> Callable[[Path, Path], None]:
    def save(path: Path, source: Path) -> None:
        # Edit the buffer the way a person would (add or drop the second LUN), then `:wq`:
        # the write makes the backup (and, for auto, its 4913 probe) as interactive vim does.
        if "tools-2.img" in source.read_text():
            edit = ["g/tools-1\\.img/t.|s/tools-1/tools-2/"]
        else:
            edit = ["g/tools-2\\.img/d"]
        argv = ["vim", "-u", "NONE", "-i", "NONE", "-N", "-es"]
        argv += ["-c", f"set backupcopy={backupcopy} writebackup nobackup"]
        for command in [*edit, "wq"]:
            argv += ["-c", command]
        run([*argv, str(path)])

    return save


def sed_in_place(path: Path, source: Path) -> None:
    # GNU sed -i writes a temporary sedXXXXXX beside the file and renames it over.
    script = f"1{{r {source}\n}};d"
    run(["sed", "-i", "-e", script, str(path)])


def cp_over(path: Path, source: Path) -> None:
    run(["cp", str(source), str(path)])


def install_m(path: Path, source: Path) -> None:
    # GNU install unlinks the destination, creates it anew, then sets the mode.
    run(["install", "-m", "0644", str(source), str(path)])


def tee(path: Path, source: Path) -> None:
    with source.open("rb") as f:
        run(["tee", str(path)], stdin=f)


def rsync(path: Path, source: Path) -> None:
    # rsync writes .NAME.XXXXXX beside the file and renames it over; -I: never skip.
    run(["rsync", "-I", str(source), str(path)])


def temp_and_rename(path: Path, source: Path) -> None:
    """Ansible's copy module: a hidden temp file in the same directory, fsync, rename."""
    tmp = path.with_name(f".ansible_tmp{os.getpid()}{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, source.read_bytes())
        os.fsync(fd)
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def dpkg_new(path: Path, source: Path) -> None:
    """dpkg: the new file is unpacked as NAME.dpkg-new, then renamed into place."""
    new = path.with_name(path.name + ".dpkg-new")
    shutil.copyfile(source, new)
    new.chmod(0o644)
    os.rename(new, path)


TOOLS: list[tuple[str, Callable[[Path, Path], None]]] = [
    ("vim backupcopy=yes", vim("yes")),
    ("vim backupcopy=auto", vim("auto")),
    ("vim backupcopy=no", vim("no")),
    ("sed -i", sed_in_place),
    ("cp", cp_over),
    ("install -m", install_m),
    ("tee", tee),
    ("rsync", rsync),
    ("temp file and rename", temp_and_rename),
    ("dpkg .dpkg-new", dpkg_new),
]


def test_each_tool_save_is_one_reload_with_no_reject_and_no_drain(world: DaemonWorld) -> None:
    assert shutil.which("vim") and shutil.which("rsync"), "scripts/setup installs vim-tiny, rsync"
    port = world.reserve_port()
    path = world.move_in("tools", one_lun(world, port))
    daemon = world.start()
    pid = world.pids()[port]
    texts = (two_luns(world, port), one_lun(world, port))
    for n, (tool, save) in enumerate(TOOLS, start=1):
        text = texts[(n - 1) % 2]
        source = world.staging_dir / f"source-{n}.conf"
        source.write_text(text)
        save(path, source)
        assert path.read_text() == text, tool
        reload = daemon.wait_for_record(action="reload", instance="tools", count=n)
        assert reload.fields["TGTWATCH_RESULT"] == "ok", (tool, reload.fields)
        assert reload.fields["TGTWATCH_SHA256"] == config_digest(path), tool
        assert lun_answers(port, iqn("tools"), 2) == (n % 2 == 1), tool
    # Past the delete grace (vim's rename and install's unlink held a drain), then a barrier.
    pause(GRACE_S + 0.2)
    barrier(world, daemon, "tools-barrier")
    rejects = [r.fields.get("MESSAGE") for r in daemon.records(action="reject")]
    assert rejects == []
    assert actions_of(daemon, "tools") == ["start"] + ["reload"] * len(TOOLS)
    assert world.pids()[port] == pid


def test_two_files_changed_the_documented_way_is_one_reload(world: DaemonWorld) -> None:
    """README: write the new include under a new name, rename the instance file that
    names it into place, then delete the old include."""
    port = world.reserve_port()
    incdir = world.instances_dir / "two.d"
    incdir.mkdir(mode=0o755)

    def include_text(luns: int) -> str:
        stores = "".join(
            f"    backing-store {world.backing(f'two-{i}.img')}\n" for i in range(1, luns + 1)
        )
        return f"<target {iqn('two')}>\n{stores}    initiator-address ALL\n</target>\n"

    def instance_text(include: str) -> str:
        return f'SOCKET_OPTS="{port}"\nPORTAL_OPTS="127.0.0.1:{port}"\ninclude two.d/{include}\n'

    (incdir / "v1.inc").write_text(include_text(1))
    world.move_in("two", instance_text("v1.inc"))
    daemon = world.start()
    pid = world.pids()[port]

    (incdir / "v2.inc").write_text(include_text(2))
    temp_and_rename(world.conf("two"), _staged(world, instance_text("v2.inc")))
    (incdir / "v1.inc").unlink()
    reload = daemon.wait_for_record(action="reload", instance="two")
    assert reload.fields["TGTWATCH_RESULT"] == "ok", reload.fields
    assert lun_answers(port, iqn("two"), 2)
    barrier(world, daemon, "two-barrier")
    assert actions_of(daemon, "two") == ["start", "reload"]
    assert daemon.records(action="reject") == []
    assert world.pids()[port] == pid


def test_a_wildcard_include_that_matched_nothing_hears_of_its_first_file(
    world: DaemonWorld,
) -> None:
    """`include glob.d/*.inc` matching no file yet: the first file landing there is read at
    once (its directory is watched and the instance depends on it), not at the resync."""
    port = world.reserve_port()
    incdir = world.instances_dir / "glob.d"
    incdir.mkdir(mode=0o755)
    world.move_in(
        "glob", f'SOCKET_OPTS="{port}"\nPORTAL_OPTS="127.0.0.1:{port}"\ninclude glob.d/*.inc\n'
    )
    daemon = world.start()
    staged = world.staging_dir / "t.inc"
    staged.write_text(
        f"<target {iqn('glob')}>\n    backing-store {world.backing('glob.img')}\n"
        "    initiator-address ALL\n</target>\n"
    )
    staged.replace(incdir / "t.inc")
    # The resync is 300 s away (the default): a reload within the wait is the event's.
    reload = daemon.wait_for_record(action="reload", instance="glob", timeout=30)
    assert reload.fields["TGTWATCH_RESULT"] == "ok", reload.fields
    assert lun_answers(port, iqn("glob"), 1)


def _staged(world: DaemonWorld, text: str) -> Path:
    source = world.staging_dir / "staged.conf"
    source.write_text(text)
    return source
