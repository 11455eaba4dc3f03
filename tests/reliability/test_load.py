"""Load: 1,000 file changes a second over 100 files for 30 s. The loop stays responsive
(WATCHDOG=1 keeps its period), the host converges to the last version of every file soon
after the storm, and the daemon's RSS returns to about its idle size.

10 of the files are live instances (each change flips their target set, so each cycle that
sees a change reloads them); 90 are refused files (no port), rescanned on every cycle.
The writer, a process of its own, paces itself against the monotonic clock to hold the
rate: that is load generation, not synchronisation. The tree is on a tmpfs: on ext4 a rename
over an existing file starts that file's writeback (auto_da_alloc), 0.2-0.3 ms of the writer's
time per change here, so on a slower disk the writer, not the daemon, fell short of the rate
(a CI run wrote 24,940 changes of 30,000).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rel_harness import RelWorld, dh, mounted, rel_world

from tgtwatch.tgt import gateway as g

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

LIVE = 10
FILES = 100
RATE = 1000  # changes a second
STORM_S = float(os.environ.get("TGTWATCH_STORM_S", "30"))
WATCHDOG_USEC = 2_000_000
# RSS may stay above idle by what the storm leaves in CPython's allocator (arenas freed only
# when wholly empty) and the lane threads' stacks: 24 MiB, or 30 % of idle if that is more.
RSS_SLACK_KIB = 24 * 1024
RSS_SLACK_RATIO = 0.30


# The writer: each change writes NAME.conf beside the directory, then renames it in (one
# atomic event), alternating each file's two versions; prints how many it wrote.
STORM = """
import json, os, sys, time
spec, staging, instances = sys.argv[1:]
job = json.load(open(spec))
texts, rate, seconds = job["texts"], job["rate"], job["seconds"]
names = sorted(texts)
n, started = 0, time.monotonic()
while (now := time.monotonic()) - started < seconds:
    while n < int((now - started) * rate):
        name = names[n % len(names)]
        staged, final = f"{staging}/{name}.conf", f"{instances}/{name}.conf"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, texts[name][(n // len(names)) % 2].encode())
        os.close(fd)
        os.rename(staged, final)
        n += 1
    time.sleep(0.001)
print(n)
"""


@pytest.fixture
def ram_world(
    tgt_programs: g.TgtPrograms, iscsi_tools: None, tmp_path: Path, engine: str
) -> Iterator[RelWorld]:
    """The reliability world, on a tmpfs of its own (unmounted once everything stopped)."""
    ram = tmp_path / "ram"
    ram.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "mode=0755", "tgtwatch-storm", str(ram)]
    with mounted(mount, ram), rel_world(ram, engine=engine) as world:
        yield world


def versions(world: RelWorld, i: int, port: int) -> tuple[str, str]:
    name = f"live{i:02}"
    one = {dh.iqn(name, 1): [world.backing(f"{name}-1.img")]}
    two = {**one, dh.iqn(name, 2): [world.backing(f"{name}-2.img")]}
    return world.instance_text(name, port, one), world.instance_text(name, port, two)


@pytest.mark.engine("native", cost=True, reason="the loop under a storm")
def test_change_storm(ram_world: RelWorld) -> None:
    world = ram_world
    ports = [world.reserve_port() for _ in range(LIVE)]
    texts = {f"live{i:02}": versions(world, i, p) for i, p in enumerate(ports)}
    refused = {f"noport{i:02}": ("# v0\n", "# v1\n") for i in range(FILES - LIVE)}
    texts.update(refused)
    for name, (first, _) in texts.items():
        world.move_in(name, first)
    daemon = world.start(env={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
    idle = dh.rss_kib(daemon.pid)
    spec = world.root / "storm.json"
    spec.write_text(json.dumps({"texts": texts, "rate": RATE, "seconds": STORM_S}))
    storm_from = time.monotonic()
    # Its own process: in this one, the threads that collect the daemon's journal records
    # and notifications (hundreds a second here) would take the writer's interpreter lock.
    storm = subprocess.run(
        [sys.executable, "-c", STORM, str(spec), str(world.staging_dir), str(world.instances_dir)],
        capture_output=True,
        text=True,
        timeout=STORM_S + 30,
        check=True,
    )
    written = int(storm.stdout)
    storm_to = time.monotonic()
    assert written >= RATE * STORM_S * 0.9, f"wrote only {written} changes"
    assert daemon.alive(), daemon.log()

    # Responsive: no gap between watchdog pings reached the watchdog timeout.
    pings = [d.at for d in daemon.notes("WATCHDOG") if storm_from <= d.at <= storm_to]
    gaps = [b - a for a, b in zip([storm_from, *pings], [*pings, storm_to], strict=True)]
    assert max(gaps) < WATCHDOG_USEC / 1e6, f"watchdog gap {max(gaps):.2f} s"

    # Converged: the daemon applied the last version of every live file (its state file
    # holds each file's digest). That each tgtd *serves* it is not guaranteed yet: see
    # test_file_changed_during_its_reload_is_reloaded_again.
    def applied_last_version() -> bool:
        entries = json.loads((world.state_dir / "applied.json").read_text())["ports"]
        return all(
            entries.get(str(port), {}).get("sha256") == dh.config_digest(world.conf(f"live{i:02}"))
            for i, port in enumerate(ports)
        )

    dh.wait_for(applied_last_version, 20, "the last version of every file applied")
    took = time.monotonic() - storm_to
    print(f"converged {took:.2f} s after the storm; {written} changes written")
    # One debounce window (0.1 s) plus the actions: up to 10 reloads on 8 lanes, and a cycle
    # already under way when the storm ended (its reloads finish first).
    assert took < 10, took

    # RSS back to about idle once the storm's garbage is gone.
    def rss_settled() -> bool:
        return dh.rss_kib(daemon.pid) <= idle + max(RSS_SLACK_KIB, idle * RSS_SLACK_RATIO)

    dh.wait_for(rss_settled, 30, f"RSS back near idle {idle} KiB")
    print(f"RSS idle {idle} KiB, after {dh.rss_kib(daemon.pid)} KiB")
    assert daemon.alive()
    assert os.path.exists(world.state_dir / "applied.json")


@pytest.mark.engine("tgt-admin", reason="the hook that rewrites the file runs before tgt-admin")
def test_file_changed_during_its_reload_is_reloaded_again(world: RelWorld) -> None:
    port = world.reserve_port()
    v1, v2 = versions(world, 0, port)
    world.move_in("live00", v1)
    daemon = world.start()
    staged = world.staging_dir / "v1"
    staged.write_text(v1)
    # While the reload to v2 runs, the file goes back to v1 for a moment, then to v2 again.
    hook = world.faults_dir / "tgt-admin.before"
    conf = world.conf("live00")
    hook.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            case "$*" in *"--update ALL -c "*)
                cp {conf} {staged}.v2; mv -f {staged} {conf}; rm -f $0;;
            esac
            """
        )
    )
    hook.chmod(0o755)
    world.move_in("live00", v2)
    daemon.wait_for_record(action="reload", instance="live00", timeout=30)
    (world.staging_dir / "v1.v2").replace(conf)  # v2 again, as the last write

    def serves_v2() -> bool:
        return world.targets_on(port)[0] == [f"{dh.iqn('live00', k)}/1" for k in (1, 2)]

    dh.wait_for(serves_v2, 10, "the tgtd to serve the file's last version")
