"""pytest plugin for the run on Debian 12's own python3 packages: `-p tests.debian_python`.

scripts/test runs the unit tests and a few real-tgtd ones with .venv-debian (Debian's
/usr/bin/python3 with its python3-yaml, python3-watchdog and python3-prometheus-client;
only the test runner from PyPI): what the .deb runs on. This plugin
- refuses to run when those modules do not come from Debian's dist-packages (the run would
  prove nothing about the .deb);
- says which versions it tested, in the header;
- while the watcher cannot be imported on Debian's watchdog (daemon/watch_watchdog.py
  subclasses internals that 2.2.1 lacks; its replacement is under way), does not collect the
  watcher's own tests, expects the in-process `run` to fail (strictly) and skips the tests
  that start a daemon process, with the reason in the summary. Once the watcher imports,
  all of it runs as in .venv.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import pytest

DEBIAN_SITE = "/usr/lib/python3/dist-packages/"
DEBIAN_MODULES = {
    "yaml": "PyYAML",
    "watchdog": "watchdog",
    "prometheus_client": "prometheus_client",
}
# Test files that import the watcher at collection time.
WATCHER_TEST_FILES = ("test_watch_fake.py",)
# Tests that start `tgtwatch run` in-process, by their test function: (name, argv).
RUNS_THE_DAEMON = (("test_commands_that_would_race_a_holder_do_nothing_and_exit_75", ["run"]),)
# Fixtures that start `tgtwatch run` (tests/integration/daemon_harness.py).
DAEMON_FIXTURES = ("world",)
_GAP = pytest.StashKey[str | None]()


def watcher_gap() -> str | None:
    """Why the daemon's watcher cannot be imported here, or None when it can."""
    try:
        importlib.import_module("tgtwatch.daemon.watch")
    except ImportError as exc:
        return f"the watcher does not import on Debian's watchdog: {exc}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    for module in DEBIAN_MODULES:
        where = str(importlib.import_module(module).__file__)
        if not where.startswith(DEBIAN_SITE):
            raise pytest.UsageError(f"{module} comes from {where}, not Debian's {DEBIAN_SITE}")
    config.stash[_GAP] = watcher_gap()


def pytest_report_header(config: pytest.Config) -> list[str]:
    versions = ", ".join(
        f"{dist} {importlib.metadata.version(dist)}" for dist in DEBIAN_MODULES.values()
    )
    lines = [f"Debian's python3 packages: {versions}"]
    gap = config.stash[_GAP]
    if gap:
        lines.append(f"{gap}: the tests that run the daemon are expected to fail")
    return lines


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.stash[_GAP] and collection_path.name in WATCHER_TEST_FILES:
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gap = config.stash[_GAP]
    if not gap:
        return
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in DAEMON_FIXTURES):
            item.add_marker(pytest.mark.skip(reason=gap))
            continue
        callspec = getattr(item, "callspec", None)
        argv = callspec.params.get("argv") if callspec is not None else None
        if (item.originalname, argv) in RUNS_THE_DAEMON:
            item.add_marker(pytest.mark.xfail(reason=gap, strict=True, raises=ImportError))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    gap = terminalreporter.config.stash[_GAP]
    if gap:
        terminalreporter.write_line(
            f"debian_python: {gap}; not collected: {', '.join(WATCHER_TEST_FILES)}"
        )
