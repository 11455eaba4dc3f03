"""The hostile corpus (corpus.py), root-owned and 0644 each, refused by `check`, by
`render-env` and by the running daemon with `PATH:LINE: message [rule: ...]`; nothing any
of them asks for runs, and the instance that runs beside them keeps its pid and targets."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from corpus import CASES, Case
from rel_harness import Call, RelWorld, dh

from tgtwatch.cli import main as cli

pytestmark = [pytest.mark.integration, pytest.mark.security]

# What a shell, tgtadm's option parser or tgtd's payload would read specially.
SPECIAL = set("`$;|&<>()\\\"'*?[]{}~!#, \n\r\t")


def test_the_corpus_has_every_class() -> None:
    assert len(CASES) >= 30
    assert {c.rule for c in CASES} == {
        "syntax",
        "grammar",
        "store",
        "port",
        "trust",
        "include",
        "limit",
    }
    assert len({c.name for c in CASES}) == len(CASES)


def materialize(world: RelWorld, good_store: Path) -> dict[str, tuple[Path, Case]]:
    """Every case as a root-owned 0644 file in the instances directory, on its own port."""
    canary = world.root / "CANARY"
    made: dict[str, tuple[Path, Case]] = {}
    for case in CASES:
        fields = {
            "port": world.reserve_port(),
            "canary": canary,
            "backing": world.backing_dir,
            "good": good_store,
            "iqn": dh.IQN_PREFIX,
        }
        if isinstance(case.text, bytes):
            data = case.text.decode("latin-1").format(**fields).encode("latin-1")
        else:
            data = case.text.format(**fields).encode()
        if case.prepare is not None:
            case.prepare(world.backing_dir)
        staged = world.staging_dir / f"{case.name}.conf"
        staged.write_bytes(data)
        os.chown(staged, 0, 0)
        staged.chmod(0o644)
        path = world.instances_dir / staged.name
        staged.replace(path)
        made[case.name] = (path, case)
    return made


def said(path: Path, case: Case) -> re.Pattern[str]:
    """`PATH:LINE: message [rule: RULE]` (no LINE for a whole-file problem)."""
    where = re.escape(str(path)) + (f":{case.line}" if case.line is not None else "")
    return re.compile(rf"{where}: \S.* \[rule: {case.rule}\]")


def in_process(world: RelWorld, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["-c", str(world.settings_path), *args], out, err)
    return code, out.getvalue(), err.getvalue()


def assert_nothing_ran(world: RelWorld) -> None:
    assert not (world.root / "CANARY").exists(), "an injection ran"
    assert not Path("/CANARY").exists() and not (world.instances_dir / "CANARY").exists()


def test_check_refuses_each_file_with_its_line_and_rule(world: RelWorld) -> None:
    good = world.write_instance("good", world.reserve_port())
    made = materialize(world, world.backing("good-1.img"))
    code, out, err = in_process(world, "check")
    assert code == 1, err
    lines = out.splitlines()
    for name, (path, case) in made.items():
        mine = [
            line for line in lines if line.startswith(f"{path}:") or line.startswith(f"{path} ")
        ]
        assert mine, f"{name}: no problem reported\n{out}"
        assert said(path, case).fullmatch(mine[0]), (name, mine[0], case.why)
    assert not any(line.startswith(str(good)) for line in lines), out
    assert f"1 instances (good:{world.ports[0]})" in err
    assert_nothing_ran(world)


def test_render_env_refuses_each_file_and_writes_nothing(world: RelWorld) -> None:
    world.write_instance("good", world.reserve_port())
    made = materialize(world, world.backing("good-1.img"))
    for name, (path, case) in made.items():
        code, _, err = in_process(world, "render-env", "--instance", name)
        assert code == 1, (name, err)
        assert err.startswith("tgtwatch: "), err
        assert said(path, case).search(err), (name, err)
        assert not (world.state_dir / "env" / f"{name}.env").exists()
        assert not (world.state_dir / "env" / f"{name}.conf").exists()
    assert_nothing_ran(world)


def test_the_daemon_rejects_each_file_and_harms_nothing(world: RelWorld) -> None:
    port = world.reserve_port()
    good = world.write_instance("good", port)
    daemon = world.start()
    daemon.wait_for_record(action="start", instance="good", timeout=60)
    pid, targets = world.pids()[port], world.targets_on(port)
    made = materialize(world, world.backing("good-1.img"))
    for name, (path, case) in made.items():
        record = daemon.wait_for_record(action="reject", config=path, timeout=60)
        message = record.get("MESSAGE") or ""
        assert said(path, case).search(message), (name, message)
    assert world.pids() == {port: pid}
    assert world.targets_on(port) == targets
    assert daemon.alive()
    assert_nothing_ran(world)
    assert_only_the_good_instance_ran(world, good, port)


def assert_only_the_good_instance_ran(world: RelWorld, good: Path, port: int) -> None:
    """Every tgt program ran for the good instance only, in the shapes tgtwatch builds, with
    no argument a shell or tgtd's payload would split."""
    calls: list[Call] = world.calls()
    assert calls
    snapshot = str(world.state_dir / "snapshots" / f"{port}-{good.stem}.conf")
    for call in calls:
        a = call.args
        assert a[a.index("-C") + 1] == str(port), str(call)
        for arg in a:
            if arg.startswith(("portal=", "--params", "-b", "/")):
                continue
            assert not set(arg) & SPECIAL, str(call)
        if call.program == "tgt-admin":
            assert a[-1] in (snapshot, "/dev/null") or a[-2] == snapshot, str(call)
        if "-b" in a:
            assert a[a.index("-b") + 1] == str(world.backing("good-1.img")), str(call)
