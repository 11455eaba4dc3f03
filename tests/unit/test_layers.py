"""The package layout is the architecture: every module sits in a layer the contracts name.

lint-imports (in the test command) enforces the contracts; these tests keep the contracts
honest: no subpackage escapes them, and a planted upward import really breaks them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "tgtwatch"
MAX_MODULE_LINES = 450


def contracts() -> list[dict[str, object]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    found: list[dict[str, object]] = config["contracts"]
    return found


def layered_packages() -> set[str]:
    (layers,) = [c["layers"] for c in contracts() if c["type"] == "layers"]
    assert isinstance(layers, list)
    return {name.strip() for layer in layers for name in str(layer).split("|")}


def test_every_subpackage_is_a_layer() -> None:
    subpackages = {
        f"tgtwatch.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py") if p.parent.is_dir()
    }
    assert subpackages == layered_packages()


def test_no_module_outside_the_layers() -> None:
    top_level = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top_level == ["__init__.py", "__main__.py"]


def test_each_layer_says_what_it_holds_and_may_import() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = init.read_text()
        assert doc.startswith('"""') and "import" in doc.lower(), init


def test_each_module_says_its_role_in_its_first_line() -> None:
    for module in PACKAGE.rglob("*.py"):
        first = module.read_text().splitlines()[0]
        assert first.startswith('"""') and len(first) > 10, module


def test_modules_stay_small() -> None:
    sizes = {
        str(m.relative_to(REPO)): len(m.read_text().splitlines()) for m in PACKAGE.rglob("*.py")
    }
    assert {m: n for m, n in sizes.items() if n > MAX_MODULE_LINES} == {}


@pytest.mark.skipif(
    shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
    reason="import-linter is not installed in this venv",
)
def test_an_upward_import_breaks_the_contracts(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE, tmp_path / "tgtwatch")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    plan = tmp_path / "tgtwatch/model/plan.py"
    plan.write_text(plan.read_text() + "\nfrom tgtwatch.daemon import loop  # noqa\n")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert "tgtwatch.model.plan -> tgtwatch.daemon.loop" in done.stdout


def test_test_modules_have_unique_names() -> None:
    # pytest imports test modules by basename (rootdir-relative without packages): two
    # files of one name in different layers make the whole run fail at collection.
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
