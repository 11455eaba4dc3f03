"""Settings: every DESIGN.md key with its default, and one-line errors naming file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tgtwatch.config.rules import Portal
from tgtwatch.config.settings import (
    BackendKind,
    DefaultInstanceSettings,
    DrainTimeoutPolicy,
    Settings,
    SettingsError,
    WatcherKind,
    from_mapping,
    load,
)

DEFAULTS = {
    "tgt_dir": Path("/etc/tgt"),
    "instances_dir": Path("/etc/mytgt/conf.d"),
    "backend": BackendKind.AUTO,
    "default_instance": DefaultInstanceSettings(True, Portal("0.0.0.0", 3260), 0),
    "debounce_ms": 250,
    "delete_grace_ms": 1000,
    "drain_timeout_s": 300,
    "on_drain_timeout": DrainTimeoutPolicy.WAIT,
    "resync_interval_s": 300,
    "state_dir": Path("/run/tgtwatch"),
    "watcher": WatcherKind.INOTIFY,
    "audit_log": None,
    "metrics_file": None,
    "tool_timeout_s": 30,
}


def load_text(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "tgtwatch.yaml"
    path.write_text(text)
    return load(path, required=True)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(SettingsError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "tgtwatch.yaml") + ": ")
    return message


def test_every_key_has_its_design_default() -> None:
    settings = Settings()
    assert {key: getattr(settings, key) for key in DEFAULTS} == DEFAULTS
    assert settings.default_config == Path("/etc/tgt/targets.conf")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "{}\n", "null\n"])
def test_empty_file_means_defaults(tmp_path: Path, text: str) -> None:
    assert load_text(tmp_path, text) == Settings()


def test_missing_optional_file_means_defaults(tmp_path: Path) -> None:
    assert load(tmp_path / "nope.yaml", required=False) == Settings()


def test_missing_required_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such settings file"):
        load(tmp_path / "nope.yaml", required=True)


def test_every_key_set(tmp_path: Path) -> None:
    settings = load_text(
        tmp_path,
        """
tgt_dir: /x/tgt
instances_dir: /x/conf.d
backend: systemd
default_instance:
  manage: false
  portal: "[::]:3270"
  control_port: 5
debounce_ms: 0
delete_grace_ms: 0
drain_timeout_s: 1.5
on_drain_timeout: force
resync_interval_s: 60
state_dir: /x/state
watcher: pyinotify
audit_log: /x/audit.jsonl
metrics_file: /x/tgtwatch.prom
tool_timeout_s: 120
""",
    )
    assert settings == Settings(
        tgt_dir=Path("/x/tgt"),
        instances_dir=Path("/x/conf.d"),
        backend=BackendKind.SYSTEMD,
        default_instance=DefaultInstanceSettings(False, Portal("[::]", 3270), 5),
        debounce_ms=0,
        delete_grace_ms=0,
        drain_timeout_s=1.5,
        on_drain_timeout=DrainTimeoutPolicy.FORCE,
        resync_interval_s=60.0,
        state_dir=Path("/x/state"),
        watcher=WatcherKind.PYINOTIFY,
        audit_log=Path("/x/audit.jsonl"),
        metrics_file=Path("/x/tgtwatch.prom"),
        tool_timeout_s=120.0,
    )


def test_partial_default_instance_keeps_other_defaults(tmp_path: Path) -> None:
    settings = load_text(tmp_path, "default_instance:\n  manage: false\n")
    assert settings.default_instance == DefaultInstanceSettings(manage=False)


def test_relative_paths_resolve_against_the_settings_directory(tmp_path: Path) -> None:
    settings = load_text(
        tmp_path,
        "tgt_dir: etc/tgt\ninstances_dir: ../up\nstate_dir: st\n"
        "audit_log: a.jsonl\nmetrics_file: m.prom\n",
    )
    assert settings.tgt_dir == tmp_path / "etc/tgt"
    assert settings.instances_dir == tmp_path / "../up"
    assert settings.state_dir == tmp_path / "st"
    assert settings.audit_log == tmp_path / "a.jsonl"
    assert settings.metrics_file == tmp_path / "m.prom"
    assert settings.default_config == tmp_path / "etc/tgt/targets.conf"


def test_relative_settings_path_still_resolves_absolutely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "s.yaml").write_text("tgt_dir: etc/tgt\n")
    monkeypatch.chdir(tmp_path)
    assert load(Path("s.yaml"), required=True).tgt_dir == tmp_path / "etc/tgt"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("tgt_dir: 5\n", "tgt_dir"),
        ("tgt_dir: ''\n", "tgt_dir"),
        ("instances_dir: [a]\n", "instances_dir"),
        ("backend: docker\n", "backend"),
        ("backend: 1\n", "backend"),
        ("default_instance: 3\n", "default_instance"),
        ("default_instance: [a]\n", "default_instance"),
        ("default_instance:\n  manage: yes please\n", "default_instance.manage"),
        ("default_instance:\n  manage: 1\n", "default_instance.manage"),
        ("default_instance:\n  portal: 3260\n", "default_instance.portal"),
        ("default_instance:\n  portal: '0.0.0.0:3260 -d 9'\n", "default_instance.portal"),
        ("default_instance:\n  control_port: -1\n", "default_instance.control_port"),
        ("default_instance:\n  control_port: 65536\n", "default_instance.control_port"),
        ("default_instance:\n  control_port: '0'\n", "default_instance.control_port"),
        ("default_instance:\n  colour: red\n", "default_instance.colour"),
        ("debounce_ms: -1\n", "debounce_ms"),
        ("debounce_ms: 1.5\n", "debounce_ms"),
        ("debounce_ms: true\n", "debounce_ms"),
        ("debounce_ms: 600000\n", "debounce_ms"),
        ("delete_grace_ms: -1\n", "delete_grace_ms"),
        ("delete_grace_ms: 0.5\n", "delete_grace_ms"),
        ("delete_grace_ms: 600001\n", "delete_grace_ms"),
        ("drain_timeout_s: -1\n", "drain_timeout_s"),
        ("drain_timeout_s: soon\n", "drain_timeout_s"),
        ("drain_timeout_s: false\n", "drain_timeout_s"),
        ("on_drain_timeout: kill\n", "on_drain_timeout"),
        ("resync_interval_s: 0\n", "resync_interval_s"),
        ("state_dir: {a: 1}\n", "state_dir"),
        ("watcher: inotifywait\n", "watcher"),
        ("audit_log: 7\n", "audit_log"),
        ("metrics_file: [x]\n", "metrics_file"),
        ("tool_timeout_s: 0.5\n", "tool_timeout_s"),
        ("tool_timeout_s: long\n", "tool_timeout_s"),
        ("colour: red\n", "colour"),
        ("tgt-dir: /etc/tgt\n", "tgt-dir"),
        ("1: one\nx: two\n", "1"),  # a non-string key, mixed with a string one
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    message = error_of(tmp_path, text)
    assert f": {key}: " in message


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    assert "known: audit_log, backend" in error_of(tmp_path, "colour: red\n")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    assert "expected a mapping" in error_of(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "line"),
    [("tgt_dir: /x\nbackend: [unclosed\n", 3), ("a: b\n  c: d\n", 2), ("x: 'open\n", 2)],
)
def test_invalid_yaml_is_one_line_with_the_line_number(
    tmp_path: Path, text: str, line: int
) -> None:
    message = error_of(tmp_path, text)
    assert "not valid YAML" in message
    assert f"(line {line})" in message


def test_unreadable_settings(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(SettingsError, match="cannot read"):
        load(tmp_path / "dir.yaml", required=True)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SettingsError, match="cannot read"):
        load(tmp_path / "bin.yaml", required=True)


def test_from_mapping_directly() -> None:
    data: dict[str, Any] = {"backend": "direct", "default_instance": {}}
    settings = from_mapping(data, Path("/etc/tgtwatch/tgtwatch.yaml"))
    assert settings.backend is BackendKind.DIRECT
    assert settings.default_instance == DefaultInstanceSettings()
