"""`tgtwatch accounts --instance NAME`: bind NAME's CHAP accounts in its unit's tgtd."""

from __future__ import annotations

from typing import TextIO

from tgtwatch.backends import chap_files, envfile
from tgtwatch.cli.exits import EXIT_OK, EXIT_PROBLEMS
from tgtwatch.config.settings import Settings
from tgtwatch.tgt.chap import AccountError


def run(settings: Settings, name: str, out: TextIO, err: TextIO) -> int:
    """tgtd@NAME.service runs this after tgt-admin, while tgtd is offline: the accounts go
    over the control socket, from the root-only file render-env wrote, never in an argv."""
    path = envfile.accounts_path(settings, name)
    port = envfile.written_port(settings, name)
    if port is None:
        print(
            f"tgtwatch: {name}: no env file; run `tgtwatch render-env --instance {name}`", file=err
        )
        return EXIT_PROBLEMS
    try:
        desired = chap_files.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"{name}: no CHAP accounts", file=out)
        return EXIT_OK
    except (OSError, ValueError) as exc:
        print(f"tgtwatch: {path}: {exc}", file=err)
        return EXIT_PROBLEMS
    try:
        applied = chap_files.apply(settings.state_dir, port, desired, settings.tool_timeout_s)
    except AccountError as exc:
        print(f"tgtwatch: {name}: {exc}", file=err)
        return EXIT_PROBLEMS
    if not desired.accounts:
        path.unlink(missing_ok=True)  # taken back from tgtd: nothing left to give
    changes = len(applied.changes) if applied else 0
    print(
        f"{name}: {len(desired.accounts)} CHAP bindings on control port {port}, {changes} changes",
        file=out,
    )
    return EXIT_OK
