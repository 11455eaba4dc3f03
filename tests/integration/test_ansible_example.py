"""examples/ansible/site.yml run by ansible-core against two "storage hosts" on this machine.

Each host is an InstanceTree of its own (instances.py: its own settings, instances_dir,
state_dir and ports from 13100-13199, direct backend) with its own `tgtwatch run`; both
are localhost over the local connection. The play renders their files from inventory
data, installs them and waits with `tgtwatch wait`; the host's initiator checks the result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from instances import InstanceTree, iqn, listed_targets, wait_for
from tgt_tree import TGTWATCH

from tgtwatch.tgt import gateway as g

pytestmark = [
    pytest.mark.integration,
    pytest.mark.engine("native", reason="the play, wait and its reasons; not the engine"),
]

REPO = Path(__file__).resolve().parents[2]
PLAY = REPO / "examples/ansible/site.yml"
ANSIBLE = Path(sys.executable).parent / "ansible-playbook"


@pytest.fixture
def hosts(
    tgt_programs: g.TgtPrograms, tmp_path: Path, child_subreaper: None, engine: str
) -> Iterator[dict[str, InstanceTree]]:
    """Two storage hosts, each with its tree and its running daemon."""
    if not ANSIBLE.exists():
        pytest.skip("ansible-core is not installed (pip install -e '.[test]')")
    trees = {
        name: InstanceTree(tmp_path / name, engine=engine) for name in ("storage-a", "storage-b")
    }
    try:
        for tree in trees.values():
            tree.write_settings(debounce_ms=50)
            tree.spawn("run", log_name="daemon.log")
        yield trees
    finally:
        for tree in trees.values():
            tree.cleanup()


def instance(tree: InstanceTree, name: str, port: int, disks: int = 1) -> dict[str, Any]:
    stores = [str(tree.backing(f"{name}-{d}.img")) for d in range(1, disks + 1)]
    return {
        "name": name,
        "port": port,
        "portal_host": "127.0.0.1",
        "targets": [{"iqn": iqn(name), "stores": stores, "initiators": ["127.0.0.1"]}],
    }


def inventory(trees: dict[str, InstanceTree], instances: dict[str, list[dict[str, Any]]]) -> str:
    hosts = {
        name: {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "tgtwatch_bin": str(TGTWATCH),
            "tgtwatch_config": str(tree.settings_path),
            "tgtwatch_conf_d": str(tree.instances_dir),
            "tgtwatch_timeout": 60,
            "tgtwatch_prune": True,
            "tgtwatch_instances": instances[name],
        }
        for name, tree in trees.items()
    }
    return json.dumps({"storage": {"hosts": hosts}})  # JSON is YAML


def play(tmp_path: Path, inventory_text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "inventory.yml"
    path.write_text(inventory_text)
    env = {
        **os.environ,
        "LC_ALL": "C.UTF-8",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"),
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_STDOUT_CALLBACK": "default",
    }
    return subprocess.run(
        [str(ANSIBLE), "-i", str(path), str(PLAY)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP: host -> {ok, changed, failed, ...}."""
    found: dict[str, dict[str, int]] = {}
    for line in output.split("PLAY RECAP", 1)[-1].splitlines():
        host, _, counts = line.partition(" : ")
        if counts:
            pairs = (item.split("=") for item in counts.split())
            found[host.strip()] = {k: int(v) for k, v in pairs}
    return found


def test_the_play_renders_installs_waits_and_initiators_see_it(
    hosts: dict[str, InstanceTree], tmp_path: Path
) -> None:
    a, b = hosts["storage-a"], hosts["storage-b"]
    wanted = {
        "storage-a": [
            instance(a, "tenant1", a.reserve_port()),
            instance(a, "tenant2", a.reserve_port(), 2),
        ],
        "storage-b": [instance(b, "tenant3", b.reserve_port())],
    }
    done = play(tmp_path, inventory(hosts, wanted))
    assert done.returncode == 0, done.stdout + done.stderr
    counts = recap(done.stdout)
    assert counts["storage-a"]["failed"] == counts["storage-b"]["failed"] == 0
    assert (
        counts["storage-a"]["changed"] == counts["storage-b"]["changed"] == 1
    )  # the template task
    # When the play returns, every target answers: no retry, no sleep.
    for name, items in wanted.items():
        for item in items:
            assert listed_targets(item["port"]) == [iqn(item["name"])], (name, item)
            assert f"{item['name']}: ready: port {item['port']}" in done.stdout

    # The same inventory again: nothing changes, and the wait still says ready.
    again = play(tmp_path, inventory(hosts, wanted))
    assert again.returncode == 0, again.stdout
    assert {h: c["changed"] for h, c in recap(again.stdout).items()} == {
        "storage-a": 0,
        "storage-b": 0,
    }

    # tenant2 leaves the inventory: pruned, its port drains and stops; tenant1 untouched.
    pid1 = a.pids()[wanted["storage-a"][0]["port"]]
    gone = wanted["storage-a"].pop()
    pruned = play(tmp_path, inventory(hosts, wanted))
    assert pruned.returncode == 0, pruned.stdout
    wait_for(lambda: gone["port"] not in a.pids(), 30, "tenant2's tgtd to stop")
    assert a.pids()[wanted["storage-a"][0]["port"]] == pid1


def test_a_refused_file_fails_its_host_with_tgtwatchs_reason(
    hosts: dict[str, InstanceTree], tmp_path: Path
) -> None:
    a, b = hosts["storage-a"], hosts["storage-b"]
    bad = instance(a, "relative", a.reserve_port())
    bad["targets"][0]["stores"] = ["relative.img"]  # a relative backing store is refused
    good = instance(b, "fine", b.reserve_port())
    done = play(tmp_path, inventory(hosts, {"storage-a": [bad], "storage-b": [good]}))
    assert done.returncode != 0
    counts = recap(done.stdout)
    assert counts["storage-a"]["failed"] == 1 and counts["storage-b"]["failed"] == 0
    assert "relative: failed: refused: " in done.stdout and "[rule: grammar]" in done.stdout
    assert listed_targets(good["port"]) == [iqn("fine")]
