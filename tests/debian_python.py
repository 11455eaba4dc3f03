"""pytest plugin for the run on Debian 12's own python3 packages: `-p tests.debian_python`.

scripts/test runs the unit tests and a few real-tgtd ones with .venv-debian (Debian's
/usr/bin/python3 with its python3-yaml and python3-prometheus-client; only the test runner
from PyPI): what the .deb runs on. This plugin refuses to run when those modules do not
come from Debian's dist-packages (the run would prove nothing about the .deb), and says
which versions it tested, in the header.
"""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest

DEBIAN_SITE = "/usr/lib/python3/dist-packages/"
DEBIAN_MODULES = {
    "yaml": "PyYAML",
    "prometheus_client": "prometheus_client",
}


def pytest_configure(config: pytest.Config) -> None:
    for module in DEBIAN_MODULES:
        where = str(importlib.import_module(module).__file__)
        if not where.startswith(DEBIAN_SITE):
            raise pytest.UsageError(f"{module} comes from {where}, not Debian's {DEBIAN_SITE}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    versions = ", ".join(
        f"{dist} {importlib.metadata.version(dist)}" for dist in DEBIAN_MODULES.values()
    )
    return [f"Debian's python3 packages: {versions}"]
