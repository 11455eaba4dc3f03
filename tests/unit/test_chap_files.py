"""Where accounts wait for a unit's tgtd, what tgt-admin is given, and `tgtwatch accounts`."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import pytest
from builders import instance_text, tree_of, write

from tgtwatch.backends import chap_files, envfile
from tgtwatch.backends.direct import write_snapshot
from tgtwatch.cli import accounts_cmd, render_env
from tgtwatch.config.accounts import account_set
from tgtwatch.config.settings import Settings
from tgtwatch.model.structs import InstanceKind, InstanceSpec
from tgtwatch.tgt.chap import AccountRecord, AccountsApplied

SECRET = "Alice-secret-0193"
CHAP = (
    f"<target iqn.2026-01.com.example:a>\n    incominguser alice {SECRET}\n"
    "    outgoinguser m Mutual-secret-1\n</target>\n"
)


@pytest.fixture
def tree(settings: Settings) -> Settings:
    if os.getuid() != 0:
        pytest.skip("the trust policy wants root-owned files")
    return dataclasses.replace(
        settings, default_instance=dataclasses.replace(settings.default_instance, manage=False)
    )


def test_render_env_keeps_accounts_out_of_the_snapshot(tree: Settings) -> None:
    write(tree.instances_dir / "v.conf", instance_text(3263) + CHAP)
    render_env.write(tree, "v")
    assert SECRET not in envfile.config_path(tree, "v").read_text()
    assert "<target iqn.2026-01.com.example:a>" in envfile.config_path(tree, "v").read_text()
    kept = envfile.accounts_path(tree, "v")
    assert kept.stat().st_mode & 0o777 == 0o600
    assert chap_files.from_json(kept.read_text()) == account_set(tree_of(CHAP))


def test_accounts_removed_from_the_file_are_taken_back_once(tree: Settings) -> None:
    write(tree.instances_dir / "v.conf", instance_text(3263) + CHAP)
    render_env.write(tree, "v")
    write(tree.instances_dir / "v.conf", instance_text(3263, "iqn.2026-01.com.example:a"))
    render_env.write(tree, "v")
    kept = envfile.accounts_path(tree, "v")
    assert chap_files.from_json(kept.read_text()).accounts == ()
    # Nothing was ever given to a tgtd on 3263 (no record): nothing to ask it, file consumed.
    out, err = io.StringIO(), io.StringIO()
    assert accounts_cmd.run(tree, "v", out, err) == 0, err.getvalue()
    assert not kept.exists()
    render_env.write(tree, "v")
    assert not kept.exists()  # and no instance without accounts gets one again


def test_an_account_problem_stops_the_render(tree: Settings) -> None:
    write(
        tree.instances_dir / "v.conf",
        instance_text(3263) + "<target iqn.2026-01.com.example:a>\nincominguser x\n</target>\n",
    )
    with pytest.raises(envfile.EnvFileError, match="incominguser: expected USER SECRET"):
        render_env.write(tree, "v")


def test_the_direct_backends_snapshot_has_no_account(tmp_path: Path) -> None:
    spec = InstanceSpec(
        "v",
        InstanceKind.DROPIN,
        3263,
        "0.0.0.0:3263",
        3263,
        tmp_path / "v.conf",
        "",
        text=CHAP,
        tree=tree_of(CHAP),
    )
    text = write_snapshot(tmp_path / "snapshots", spec).read_text()
    assert (
        SECRET not in text
        and "incominguser" not in text
        and "<target iqn.2026-01.com.example:a>" in text
    )


def test_the_accounts_command_says_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    out, err = io.StringIO(), io.StringIO()
    assert accounts_cmd.run(settings, "v", out, err) == 1
    assert "no env file" in err.getvalue()
    write(envfile.env_path(settings, "v"), "SOCKET_OPTS=3263\nPORTAL_OPTS=0.0.0.0:3263\n")
    assert accounts_cmd.run(settings, "v", out, err) == 0
    assert "v: no CHAP accounts" in out.getvalue()
    write(envfile.accounts_path(settings, "v"), "{not json")
    assert accounts_cmd.run(settings, "v", out, err) == 1
    assert "not an accounts file" in err.getvalue()
    # A tgtd that does not answer: one line, and no record of what it holds.
    monkeypatch.setenv("TGT_IPC_SOCKET", str(tmp_path / "nowhere"))
    write(envfile.accounts_path(settings, "v"), chap_files.to_json(account_set(tree_of(CHAP))))
    record = chap_files.record_path(settings.state_dir, 3263)
    chap_files.write_private(record, AccountRecord.of({"alice": "old"}).to_json())
    err = io.StringIO()
    assert accounts_cmd.run(settings, "v", out, err) == 1
    assert err.getvalue().count("\n") == 1 and "CHAP accounts:" in err.getvalue()
    assert SECRET not in err.getvalue() and not record.exists()


def test_records_are_private_and_junk_is_no_accounts_file(tmp_path: Path) -> None:
    path = chap_files.record_path(tmp_path, 0)
    chap_files.write_private(path, "{}")
    assert path.parent.stat().st_mode & 0o777 == 0o700 and path.stat().st_mode & 0o777 == 0o600
    assert chap_files.load_record(tmp_path, 0) == AccountRecord()
    assert chap_files.load_record(tmp_path, 1) is None
    for junk in (
        "[]",
        '{"accounts": [{"user": 1}], "targets": []}',
        '{"accounts": [], "targets": 3}',
    ):
        with pytest.raises(ValueError, match="not an accounts file"):
            chap_files.from_json(junk)


def test_summary_names_users_never_secrets() -> None:
    changes = tuple(f"bind u{i} to iqn.2026-01.com.example:a" for i in range(6))
    line = chap_files.summary(AccountsApplied(AccountRecord(), changes, 6))
    assert line.startswith(
        "; CHAP: bind u0 to iqn.2026-01.com.example:a, bind u1 to iqn.2026-01.com.example:a, "
    )
    assert line.endswith(", bind u3 to iqn.2026-01.com.example:a and 2 more")
    assert chap_files.summary(None) == ""
