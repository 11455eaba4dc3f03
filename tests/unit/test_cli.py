"""The command line: check and plan on the sample and on a bad tree; exit codes; no tracebacks."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from builders import instance_text, write

from tgtwatch import __version__
from tgtwatch.cli import main as cli
from tgtwatch.cli.exits import EXIT_INTERNAL, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE
from tgtwatch.cli.main import main
from tgtwatch.model.structs import Observed

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample-conf"
# The sample and the bad tree are trusted only when root owns them, as in production.
ROOT_ONLY = pytest.mark.skipif(os.getuid() != 0, reason="trust policy wants root-owned files")


class NothingRuns:
    """The backend boundary faked: no tgtd runs (unit tests must not see the host's)."""

    def observe(self, detail: object = None, pids: object = None) -> Observed:
        return Observed()


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err, backend_factory=lambda _settings: NothingRuns())
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A copy of sample-conf with its own state_dir, so no state elsewhere changes the plan."""
    tree = tmp_path / "sample"
    shutil.copytree(SAMPLE, tree)
    config = tree / "tgtwatch.yaml"
    text = config.read_text().replace("/run/tgtwatch-sample", str(tmp_path / "state"))
    config.write_text(text)
    return config


@pytest.fixture
def bad(tmp_path: Path) -> tuple[Path, Path]:
    conf_d = tmp_path / "bad/conf.d"
    write(conf_d / "good.conf", instance_text(3261, "iqn.2026-01.x:good"))
    write(conf_d / "twin.conf", instance_text(3261))
    write(conf_d / "mismatch.conf", 'SOCKET_OPTS="3262"\nPORTAL_OPTS="0.0.0.0:3263"\n')
    write(conf_d / "a b.conf", instance_text(3264))
    write(conf_d / "world.conf", instance_text(3265), 0o666)
    write(conf_d / "unclosed.conf", 'SOCKET_OPTS="3266"\n<target t>\n')
    write(conf_d / ".good.conf.swp", b"\0\1\2")
    config = write(
        tmp_path / "bad/tgtwatch.yaml",
        f"tgt_dir: tgt\ninstances_dir: conf.d\nstate_dir: {tmp_path}/state\n",
    )
    return config, conf_d


@ROOT_ONLY
def test_check_on_the_sample(sample: Path) -> None:
    code, out, err = run("-c", str(sample), "check")
    assert code == EXIT_OK
    assert out == ""
    assert "3 instances (alpha:3261, beta:3262, gamma:3263), 0 problems" in err


@ROOT_ONLY
def test_check_on_the_shipped_sample_path() -> None:
    code, _, _ = run("--config", str(SAMPLE / "tgtwatch.yaml"), "check")
    assert code == EXIT_OK


@ROOT_ONLY
def test_check_on_a_bad_directory(bad: tuple[Path, Path]) -> None:
    config, conf_d = bad
    code, out, err = run("-c", str(config), "check")
    assert code == EXIT_PROBLEMS
    lines = out.splitlines()
    notes = [line for line in lines if "does not exist" in line]
    problems = [line for line in lines if line not in notes]
    assert len(notes) == 1  # no tgt dir: a note, not a problem
    bad_files = ["twin.conf", "mismatch.conf", "a b.conf", "world.conf", "unclosed.conf"]
    assert sorted(line.split(":")[0] for line in problems) == sorted(
        str(conf_d / name) for name in bad_files
    )
    assert any(line.startswith(f"{conf_d / 'unclosed.conf'}:2: ") for line in problems)
    assert "1 instances (good:3261), 5 problems" in err


@ROOT_ONLY
def test_plan_json_on_the_sample(sample: Path) -> None:
    code, out, _ = run("-c", str(sample), "plan", "--json")
    assert code == EXIT_OK
    body = json.loads(out)
    conf_d = sample.parent / "etc/mytgt/conf.d"
    starts = [(a["action"], a["name"], a["port"], a["config"]) for a in body["actions"]]
    assert starts == [
        ("start", "alpha", 3261, str(conf_d / "alpha.conf")),
        ("start", "beta", 3262, str(conf_d / "beta.conf")),
        ("start", "gamma", 3263, str(conf_d / "gamma.conf")),
    ]
    for action in body["actions"]:
        assert len(action["sha256"]) == 64
        int(action["sha256"], 16)
        assert action["portal"] == f"0.0.0.0:{action['port']}"
    gamma = body["actions"][2]
    assert [t["luns"] for t in gamma["targets"]] == [1, 2]
    assert (body["problems"], body["held"], body["foreign"]) == ([], [], [])


@ROOT_ONLY
def test_plan_text_on_the_sample(sample: Path) -> None:
    code, out, _ = run("-c", str(sample), "plan")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert [line.split()[:4] for line in lines] == [
        ["start", "alpha", "port", "3261"],
        ["start", "beta", "port", "3262"],
        ["start", "gamma", "port", "3263"],
    ]


@ROOT_ONLY
def test_plan_with_problems_exits_1_and_lists_them(bad: tuple[Path, Path]) -> None:
    config, _ = bad
    code, out, _ = run("-c", str(config), "plan", "--json")
    assert code == EXIT_PROBLEMS
    body = json.loads(out)
    assert [a["name"] for a in body["actions"]] == ["good"]
    assert len(body["problems"]) == 5
    assert {p["rule"] for p in body["problems"]} == {"conflict", "port", "name", "trust", "syntax"}
    code, out, _ = run("-c", str(config), "plan")
    assert out.count("\nproblem ") == 5


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("backend: docker\n", "backend: expected auto | systemd | direct"),
        ("nonsense: 1\n", "nonsense: unknown key"),
        ("a: [\n", "not valid YAML (line 2)"),
    ],
)
def test_bad_settings_exit_2_with_one_line(tmp_path: Path, text: str, words: str) -> None:
    config = write(tmp_path / "s.yaml", text)
    code, out, err = run("-c", str(config), "check")
    assert code == EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"tgtwatch: {config}: ")
    assert words in err


def test_a_missing_explicit_settings_file_is_usage(tmp_path: Path) -> None:
    code, _, err = run("-c", str(tmp_path / "nope.yaml"), "plan")
    assert code == EXIT_USAGE
    assert "no such settings file" in err


def test_bad_settings_through_the_console_script_has_no_traceback(tmp_path: Path) -> None:
    config = write(tmp_path / "s.yaml", "debounce_ms: lots\n")
    done = subprocess.run(
        [sys.executable, "-m", "tgtwatch", "-c", str(config), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_USAGE
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert "debounce_ms" in done.stderr


@pytest.mark.parametrize("argv", [["frobnicate"], [], ["plan", "--bogus"], ["-c"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == EXIT_USAGE
    assert "usage: tgtwatch" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tgtwatch {__version__}"


def test_internal_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom() -> int:
        raise RuntimeError("kaput")

    monkeypatch.setattr(cli, "main", boom)
    with pytest.raises(SystemExit) as info:
        cli.main_entry()
    assert info.value.code == EXIT_INTERNAL
    assert capsys.readouterr().err == "tgtwatch: internal error: RuntimeError: kaput\n"
