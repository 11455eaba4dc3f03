"""The man pages: checked against the code, then rendered to roff with docutils' manpage writer.

    python3 man/pages.py OUTDIR      # check, then write OUTDIR/tgtwatch.8 and the two .5 pages

The package build runs this (debian/rules); tests/unit/test_man_pages.py runs the same
check. A setting (with its default), an instance-file key, a refused key, a rule, a
command or an exit code that the pages do not document fails both, and so does a page
documenting one the code does not have. The keys come from the grammar's own table.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PAGES = ("tgtwatch.8", "tgtwatch.yaml.5", "tgtwatch-instance.5")


def instance_keys() -> tuple[str, ...]:
    """Every key an instance file may hold: the grammar's own table (config/keys.py), and
    `include`, which the lexer reads as Config::General does."""
    from tgtwatch.config import keys  # noqa: PLC0415

    tables = (keys.INSTANCE_KEYS, keys.GLOBAL_KEYS, keys.TARGET_KEYS, keys.LUN_KEYS)
    return (*dict.fromkeys(k for table in tables for k in table), "include")


def refused_keys() -> set[str]:
    """tgt-admin's keys that tgtwatch refuses, each with its reason in the grammar."""
    from tgtwatch.config import keys  # noqa: PLC0415

    return set(keys.REFUSED) | {"control-port"}  # control-port: SOCKET_OPTS sets it


def rules() -> set[str]:
    from tgtwatch.model.structs import Rule  # noqa: PLC0415

    return {r.value for r in Rule}


_TERM = re.compile(r"^``([^`]+)``")
_TITLE_RULE = re.compile(r"^=+$")


def source(page: str, root: Path = HERE) -> str:
    return (root / f"{page}.rst").read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    """The body of the section with this title (up to the next section)."""
    lines = text.splitlines()
    body: list[str] = []
    inside = False
    for i, line in enumerate(lines):
        is_title = i + 1 < len(lines) and _TITLE_RULE.match(lines[i + 1]) and line.strip()
        if is_title:
            if inside:
                break
            inside = line.strip() == title
            continue
        if inside and not _TITLE_RULE.match(line):
            body.append(line)
    if not inside:
        raise ValueError(f"no section {title!r}")
    return "\n".join(body)


def terms(body: str) -> dict[str, str]:
    """Each documented term (a line starting with ``TERM``) and its indented definition."""
    found: dict[str, str] = {}
    current: str | None = None
    for line in body.splitlines():
        match = _TERM.match(line)
        if match:
            current = match.group(1)
            found[current] = ""
        elif current is not None and line.startswith("    "):
            found[current] += " " + line.strip()
        elif line.strip():
            current = None
    return found


def _default_text(value: Any) -> str:
    """A default as the YAML an operator would write."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return ", ".join(_default_text(v) for v in value)
    return str(value)


def settings_defaults() -> dict[str, str]:
    """Every settings key (nested ones dotted) and its default, from the Settings dataclass."""
    from tgtwatch.config.rules import Portal  # noqa: PLC0415
    from tgtwatch.config.settings import Settings  # noqa: PLC0415

    def walk(obj: Any, prefix: str) -> Iterator[tuple[str, str]]:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            # A nested mapping of settings (default_instance:, limits:), not a value (Portal).
            if dataclasses.is_dataclass(value) and not isinstance(value, Portal | type):
                yield from walk(value, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", _default_text(value)

    return dict(walk(Settings(), ""))


def commands() -> set[str]:
    import argparse  # noqa: PLC0415

    from tgtwatch.cli.main import build_parser  # noqa: PLC0415

    parser = build_parser()
    for action in parser._actions:  # argparse offers no public way to list subcommands
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("tgtwatch has no subcommands")


def exit_codes() -> set[str]:
    from tgtwatch.cli import exits  # noqa: PLC0415

    codes = {str(v) for k, v in vars(exits).items() if k.startswith("EXIT_")}
    return codes | {"130"}  # main_entry's KeyboardInterrupt


def _compare(what: str, documented: set[str], real: set[str]) -> list[str]:
    problems = [f"{what} {k!r} is not documented" for k in sorted(real - documented)]
    problems += [
        f"{what} {k!r} is documented but does not exist" for k in sorted(documented - real)
    ]
    return problems


def _exit_terms(body: str) -> set[str]:
    return {line.strip() for line in body.splitlines() if re.fullmatch(r"\d+", line.strip())}


def check(root: Path = HERE) -> list[str]:
    """What the pages under `root` get wrong about the code; [] when they are true to it."""
    problems: list[str] = []
    settings_doc = terms(section(source("tgtwatch.yaml.5", root), "SETTINGS"))
    defaults = settings_defaults()
    problems += _compare("tgtwatch.yaml(5): setting", set(settings_doc), set(defaults))
    for key, default in defaults.items():
        text = settings_doc.get(key)
        if text is not None and f"Default: ``{default}``" not in text:
            problems.append(f"tgtwatch.yaml(5): setting {key!r} does not say Default: {default}")
    instance_page = source("tgtwatch-instance.5", root)
    keys_doc = terms(section(instance_page, "KEYS"))
    problems += _compare("tgtwatch-instance(5): key", set(keys_doc), set(instance_keys()))
    refused_doc = terms(section(instance_page, "REFUSED KEYS"))
    problems += _compare("tgtwatch-instance(5): refused key", set(refused_doc), refused_keys())
    rules_doc = terms(section(instance_page, "RULES"))
    problems += _compare("tgtwatch-instance(5): rule", set(rules_doc), rules())
    page = source("tgtwatch.8", root)
    commands_doc = terms(section(page, "COMMANDS"))
    problems += _compare("tgtwatch(8): command", set(commands_doc), commands())
    problems += _compare(
        "tgtwatch(8): exit status", _exit_terms(section(page, "EXIT STATUS")), exit_codes()
    )
    return problems


def render(page: str, version: str, root: Path = HERE) -> str:
    """The page as roff; a docutils warning (a malformed page) is an error."""
    from docutils.core import publish_string  # noqa: PLC0415
    from docutils.utils import SystemMessage  # noqa: PLC0415

    text = source(page, root).replace("@VERSION@", version)
    try:
        with warnings.catch_warnings():
            # docutils >= 0.22 deprecates writer_name=; 0.19 (Debian 12) has nothing else.
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            out = publish_string(
                text,
                source_path=str(root / f"{page}.rst"),
                writer_name="manpage",
                settings_overrides={
                    "halt_level": 2,
                    "report_level": 2,
                    "output_encoding": "utf-8",
                },
            )
    except SystemMessage as exc:
        raise SystemExit(f"man page {page} is malformed: {exc}") from None
    return out.decode("utf-8") if isinstance(out, bytes) else str(out)


def build(outdir: Path, root: Path = HERE) -> list[Path]:
    from tgtwatch import __version__  # noqa: PLC0415

    problems = check(root)
    if problems:
        raise SystemExit("man pages out of date with the code:\n  " + "\n  ".join(problems))
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for page in PAGES:
        path = outdir / page
        path.write_text(render(page, __version__, root), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} OUTDIR")
    for path in build(Path(sys.argv[1])):
        print(f"wrote {path}")
