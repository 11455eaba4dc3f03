"""The man pages stay true to the code: every setting (with its default), every instance-file
key, every command and every exit code is documented, and nothing that does not exist is.

The package build runs the same check (man/pages.py) before it renders the pages.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from man import pages
from tgtwatch.config import keys


@pytest.fixture
def man_copy(tmp_path: Path) -> Path:
    """The page sources, copied: a test edits them to prove the check notices."""
    root = tmp_path / "man"
    shutil.copytree(pages.HERE, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return root


def drop_term(root: Path, page: str, term: str) -> None:
    """Remove one documented term (its line and its indented definition)."""
    path = root / f"{page}.rst"
    out: list[str] = []
    skipping = False
    for line in path.read_text().splitlines():
        if line.startswith(f"``{term}``"):
            skipping = True
            continue
        if skipping and (line.startswith("    ") or not line.strip()):
            continue
        skipping = False
        out.append(line)
    path.write_text("\n".join(out) + "\n")


def test_the_pages_document_the_code_as_it_is() -> None:
    assert pages.check() == []


def test_the_check_covers_every_list() -> None:
    # Not vacuous: each list the check compares is the code's own, and not empty.
    defaults = pages.settings_defaults()
    assert {"debounce_ms", "default_instance.manage", "limits.luns_per_file"} <= set(defaults)
    assert defaults["backing_store_roots"].startswith("/srv, ")
    assert {"run", "wait", "drain", "install-units"} <= pages.commands()
    assert {"0", "1", "2", "70", "75", "124"} <= pages.exit_codes()
    # The grammar's own tables, every one of them.
    for table in (keys.INSTANCE_KEYS, keys.GLOBAL_KEYS, keys.TARGET_KEYS, keys.LUN_KEYS):
        assert set(table) <= set(pages.instance_keys())
    assert set(keys.REFUSED) < pages.refused_keys()
    assert {"grammar", "store", "limit"} <= pages.rules()


@pytest.mark.parametrize(
    ("page", "term", "problem"),
    [
        ("tgtwatch.yaml.5", "debounce_ms", "setting 'debounce_ms' is not documented"),
        (
            "tgtwatch.yaml.5",
            "default_instance.control_port",
            "setting 'default_instance.control_port' is not documented",
        ),
        ("tgtwatch-instance.5", "initiator-name", "key 'initiator-name' is not documented"),
        ("tgtwatch-instance.5", "path", "refused key 'path' is not documented"),
        ("tgtwatch-instance.5", "store", "rule 'store' is not documented"),
        ("tgtwatch.yaml.5", "limits.luns_per_file", "'limits.luns_per_file' is not documented"),
        ("tgtwatch.8", "wait", "command 'wait' is not documented"),
    ],
)
def test_an_undocumented_setting_key_or_command_fails(
    man_copy: Path, page: str, term: str, problem: str
) -> None:
    drop_term(man_copy, page, term)
    assert [p for p in pages.check(man_copy) if problem in p] != [], pages.check(man_copy)


def test_a_new_instance_key_without_a_page_entry_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    grammar = pages.instance_keys()
    monkeypatch.setattr(pages, "instance_keys", lambda: (*grammar, "new-key"))
    assert pages.check() == ["tgtwatch-instance(5): key 'new-key' is not documented"]


def test_a_documented_thing_that_does_not_exist_fails(man_copy: Path) -> None:
    path = man_copy / "tgtwatch.yaml.5.rst"
    text = path.read_text().replace(
        "``tgt_dir`` *PATH*", "``gone`` *X*\n    Gone. Default: ``1``.\n\n``tgt_dir`` *PATH*"
    )
    path.write_text(text)
    assert pages.check(man_copy) == [
        "tgtwatch.yaml(5): setting 'gone' is documented but does not exist"
    ]


def test_a_wrong_default_fails(man_copy: Path) -> None:
    path = man_copy / "tgtwatch.yaml.5.rst"
    text, count = re.subn(r"Default:(\s+)``250``", r"Default:\1``200``", path.read_text())
    assert count == 1
    path.write_text(text)
    assert pages.check(man_copy) == [
        "tgtwatch.yaml(5): setting 'debounce_ms' does not say Default: 250"
    ]


def test_an_exit_code_must_be_documented(man_copy: Path) -> None:
    path = man_copy / "tgtwatch.8.rst"
    path.write_text(path.read_text().replace("\n124\n", "\n"))
    assert pages.check(man_copy) == ["tgtwatch(8): exit status '124' is not documented"]


@pytest.mark.parametrize("page", pages.PAGES)
def test_each_page_renders_to_roff_without_a_warning(page: str) -> None:
    pytest.importorskip("docutils")
    roff = pages.render(page, "9.9")
    name, section = page.rsplit(".", 1)
    assert roff.splitlines()[0].startswith('.\\" Man page generated from reStructuredText')
    (title,) = [line for line in roff.splitlines() if line.startswith(".TH ")]
    # docutils 0.19 (Debian 12) writes `.TH "NAME" 8`, newer ones `.TH "name" "8"`.
    assert title.upper().startswith(f'.TH "{name.upper()}" ')
    assert title.replace('"', "").split()[2] == section and "tgtwatch 9.9" in title


def test_a_malformed_page_fails_the_build(man_copy: Path) -> None:
    pytest.importorskip("docutils")
    path = man_copy / "tgtwatch.8.rst"
    path.write_text(
        path.read_text().replace(
            "COMMANDS\n========\n", "COMMANDS\n========\n\n.. no-such-directive::\n"
        )
    )
    with pytest.raises(SystemExit, match=r"man page tgtwatch\.8 is malformed"):
        pages.render("tgtwatch.8", "9.9", man_copy)
