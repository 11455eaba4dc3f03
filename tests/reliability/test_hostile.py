"""Hostile input through the whole daemon: every file below is refused with a `reject`
record naming the file and the rule, and nothing runs but the intended tgtd, tgtadm and
tgt-admin with validated arguments — proven by the wrappers' argv log, checked call by call.
"""

from __future__ import annotations

import itertools
import os
import stat
import textwrap
from pathlib import Path

import pytest
from rel_harness import Call, RelWorld, dh

from tgtwatch.config.tgtconf import parse
from tgtwatch.config.trust import TrustedFiles, TrustPolicy

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

# What tgt-admin's /bin/sh would read specially (it builds every tgtadm call as a string).
SHELL_SPECIAL = frozenset("`$;|&<>()\\\"'*?[\n\r")

NOBODY = 65534
IQN_PREFIX = dh.IQN_PREFIX + ":"


def staged(world: RelWorld, name: str, text: str, *, mode: int = 0o644, uid: int = 0) -> Path:
    """Write the file beside the directory with its final owner and mode, then rename it in:
    the daemon never sees it in a state the test did not mean."""
    path = world.staging_dir / name
    path.write_text(text)
    os.chown(path, uid, -1)
    path.chmod(mode)
    path.replace(world.instances_dir / name)
    return world.instances_dir / name


def assert_calls_are_intended(world: RelWorld, configs: set[str]) -> list[Call]:
    """Every tgt program ran with the argv shape tgtwatch builds, on this test's ports,
    with no character a shell would act on: nothing else was run through them."""
    ports = {str(p) for p in world.ports}
    calls = world.calls()
    assert calls, "the wrappers logged nothing"
    for call in calls:
        a = call.args
        for arg in a:
            assert not set(arg) & SHELL_SPECIAL, f"shell-special argument in {call}"
        if call.program == "tgtd":
            assert len(a) == 5 and a[:2] == ("-f", "--iscsi"), str(call)
            assert a[3] == "-C" and a[4] in ports and a[2] == f"portal=127.0.0.1:{a[4]}", str(call)
        elif call.program == "tgt-admin":
            assert a[:2] == ("-C", a[1]) and a[1] in ports, str(call)
            rest = a[2:]
            assert rest[0] in ("-v", "-p"), str(call)
            shapes = (("-e",), ("--update", "ALL"))
            body = rest[1:-2] if rest[-1] != "-f" else rest[1:-3]
            assert body in shapes, str(call)
            config = rest[-1] if rest[-1] != "-f" else rest[-2]
            # tgt-admin is given the snapshot of a checked good file, never a file by name.
            snapshots = {
                str(world.state_dir / "snapshots" / f"{a[1]}-{Path(c).stem}.conf") for c in configs
            }
            assert config in snapshots | {"/dev/null"}, str(call)
        else:
            assert call.program == "tgtadm", str(call)
            assert a[0] == "-C" and a[1] in ports, str(call)
            for flag, value in itertools.pairwise(a):
                if flag == "-T":
                    assert value.startswith(IQN_PREFIX), str(call)
                if flag == "-b":
                    assert Path(value).parent == world.backing_dir, str(call)
    return calls


def test_hostile_files_are_rejected_and_run_nothing(world: RelWorld) -> None:
    good_port = world.reserve_port()
    good = world.write_instance("good", good_port)
    daemon = world.start()
    good_pid = world.pids()[good_port]
    marker = world.root / "PWNED"
    outside = world.root / "outside.conf"
    p = [world.reserve_port() for _ in range(3)]
    valid = world.instance_text("x", p[0])
    outside.write_text(valid)
    (world.instances_dir / "frag").mkdir()
    untrusted_part = world.instances_dir / "frag" / "evil.part"
    untrusted_part.write_text(f"<target {dh.iqn('evil')}>\n</target>\n")
    os.chown(untrusted_part, NOBODY, -1)
    # (file name, rule) -> how it is made
    expected: dict[str, str] = {}

    def hostile(name: str, rule: str, text: str = valid, **how: int) -> None:
        staged(world, name, text, **how)
        expected[name] = rule

    hostile("nobody.conf", "trust", uid=NOBODY)
    hostile("group-writable.conf", "trust", mode=0o664)
    hostile("world-writable.conf", "trust", mode=0o646)
    link = world.instances_dir / "link.conf"
    link.symlink_to(outside)
    expected["link.conf"] = "trust"
    hostile("include-untrusted.conf", "trust", valid + "include frag/evil.part\n")
    hostile("include-escape.conf", "trust", valid + "include ../outside.conf\n")
    hostile("include-absolute.conf", "trust", valid + f"include {outside}\n")
    for name in (
        "a b.conf",
        f"x;touch {marker.name}.conf",
        f"$(touch {marker.name}).conf",
        "`id`.conf",
        "foo@bar.conf",
        "x\nExecStartPre=touch.conf",
        "\u00e9t\u00e9.conf",
        "n" * 65 + ".conf",
        "default.conf",
    ):
        hostile(name, "name")
    for i, (key, value) in enumerate(
        (
            ("PORTAL_OPTS", f"0.0.0.0:{p[1]} -d 9"),
            ("PORTAL_OPTS", f"127.0.0.1:{p[1]}$(touch {marker})"),
            ("SOCKET_OPTS", f"{p[1]} -d 9"),
            ("SOCKET_OPTS", f"$(touch {marker})"),
            ("SOCKET_OPTS", f"`touch {marker}`"),
            ("PORTAL_OPTS", f"127.0.0.1:{p[1]}\\\n-d 9"),
            ("PORTAL_OPTS", f"127.0.0.1:{p[1]};touch {marker}"),
            ("PORTAL_OPTS", f"[::1%$(touch {marker})]:{p[1]}"),
        )
    ):
        hostile(f"opts{i}.conf", "port", f'{key}="{value}"\n')
    injected = {
        "target-name": f"<target iqn.2026-11.x:y;touch {marker}>\n</target>\n",
        "target-name2": f"<target iqn.2026-11.x:$(touch {marker})>\n</target>\n",
        "backing": f"<target {dh.iqn('b')}>\n backing-store /tmp/$(touch {marker})\n</target>\n",
        "option": f"<target {dh.iqn('o')}>\n initiator-address 1.2.3.4`touch {marker}`\n"
        "</target>\n",
        "lun-block": f"<target {dh.iqn('l')}>\n <backing-store /x;touch {marker}>\n"
        " </backing-store>\n</target>\n",
    }
    # A blank in a tag (`;touch /x`, `$(touch /x)`) makes it no block tag at all: syntax.
    rules = {"target-name": "syntax", "target-name2": "syntax", "lun-block": "syntax"}
    for name, body in injected.items():
        hostile(f"{name}.conf", rules.get(name, "grammar"), f'SOCKET_OPTS="{p[2]}"\n{body}')
    big = world.instances_dir / "big.conf"
    with big.open("wb") as f:
        f.truncate(1 << 30)  # 1 GiB, sparse
    expected["big.conf"] = "trust"
    os.mkfifo(world.instances_dir / "fifo.conf")
    expected["fifo.conf"] = "trust"
    os.mknod(world.instances_dir / "zero.conf", 0o644 | stat.S_IFCHR, os.makedev(1, 5))
    expected["zero.conf"] = "trust"

    for name, rule in expected.items():
        path = world.instances_dir / name
        record = daemon.wait_for_record(action="reject", config=path, timeout=30)
        message = record.get("MESSAGE") or ""
        assert f"[rule: {rule}]" in message, (name, message)
        assert str(path) in message, (name, message)

    # Nothing but the good tgtd runs, untouched; nothing injected ran; the daemon is small.
    assert world.pids() == {good_port: good_pid}
    assert not marker.exists() and not (world.instances_dir / "PWNED").exists()
    assert not Path("/PWNED").exists()
    assert dh.rss_kib(daemon.pid) < 200_000, "the 1 GiB file was not read"
    assert daemon.alive()
    assert_calls_are_intended(world, {str(good)})


@pytest.mark.engine("native", cost=True, reason="check-time rejects, at scale")
def test_ten_thousand_files(world: RelWorld) -> None:
    """10,000 files claiming one port: one tgtd, 9,999 conflict rejects, a live daemon."""
    port = world.reserve_port()
    daemon = world.start()
    text = world.instance_text("many", port)
    for i in range(10_000):
        staged_path = world.staging_dir / f"f{i:05}.conf"
        staged_path.write_text(text)
    for i in range(10_000):
        name = f"f{i:05}.conf"
        (world.staging_dir / name).replace(world.instances_dir / name)
    owner = world.conf("f00000")
    daemon.wait_for_record(action="start", config=owner, timeout=120)
    last = world.conf("f09999")
    record = daemon.wait_for_record(action="reject", config=last, timeout=120)
    assert "[rule: conflict]" in (record.get("MESSAGE") or "")
    assert len(daemon.records(action="reject")) == 9_999
    assert len(world.tgtds_on(port)) == 1
    # Still responsive: removing them all drains the one tgtd.
    for i in range(10_000):
        world.conf(f"f{i:05}").unlink()

    # A cycle may run while the files are being removed: a claimant still there then takes
    # the port over (a start), and is drained once its file is gone too.
    def drained() -> bool:
        return world.status() == {} and world.tgtds_on(port) == []

    dh.wait_for(drained, 120, f"nothing left on {port}")

    def on_port() -> list[str]:
        return [r.action for r in daemon.records(port=port) if r.action in ("start", "stop")]

    # The lane writes its stop record once tgtd has exited: a moment after it is gone.
    dh.wait_for(lambda: on_port()[-1] == "stop", 10, f"the stop record of port {port}")
    assert on_port().count("start") == on_port().count("stop"), on_port()
    assert_calls_are_intended(world, {str(owner)})


@pytest.mark.engine("tgt-admin", reason="the swap hooks tgt-admin; native reads no file by name")
def test_file_replaced_between_check_and_use(world: RelWorld) -> None:
    port = world.reserve_port()
    marker = world.root / "PWNED"
    evil = world.staging_dir / "evil"
    evil.write_text(
        world.instance_text("swap", port)
        + f"<target {dh.iqn('evil')};touch${{IFS}}{marker}>\n</target>\n"
    )
    # Just before tgt-admin reads its config, someone renames another over the instance
    # file: tgt-admin reads the snapshot of what was checked, so the swap changes nothing
    # it runs (the swapped-in file is then checked and refused on its own).
    hook = world.faults_dir / "tgt-admin.before"
    hook.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            case "$*" in *" -e -c "*) mv -f {evil} {world.conf("swap")};; esac
            """
        )
    )
    hook.chmod(0o755)
    world.write_instance("swap", port)
    daemon = world.start(wait_ready=False)
    daemon.wait_for_record(action="start", instance="swap", timeout=60)
    hook.unlink()
    assert not marker.exists(), "tgt-admin ran a shell command from an unchecked file"
    assert world.targets_on(port)[0] == [f"{dh.iqn('swap')}/1"]


def test_shell_special_values_are_refused_by_the_parser(tmp_path: Path) -> None:
    """The pure side of the injection cases: each value tgt-admin's shell would read."""
    uid = os.getuid()
    for value in ("$(id)", "`id`", "a;b", "a|b", "a&b", "a>b", "a\\b", "a'b", "x*", "(x)"):
        path = tmp_path / "t.conf"
        path.write_text(f"<target iqn.2026-11.x:y>\n backing-store /d/{value}\n</target>\n")
        parsed = parse(path, TrustedFiles(tmp_path, TrustPolicy(owner_uid=uid)))
        # a backslash is no value at all for tgtwatch: it refuses Config::General's escapes
        rule = "syntax" if "\\" in value else "grammar"
        assert [p.rule.value for p in parsed.problems] == [rule], (value, parsed.problems)
    path = tmp_path / "ok.conf"
    path.write_text(
        "<target iqn.2026-11.x:y>\n backing-store /d/disk-1.img\n"
        " initiator-address 10.0.0.0/24\n incominguser user secret-123456\n</target>\n"
    )
    assert parse(path, TrustedFiles(tmp_path, TrustPolicy(owner_uid=uid))).problems == ()
