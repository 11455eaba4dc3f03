"""Fixtures for system tests: a booted Debian bookworm with a real systemd, shared per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from container import Container, ContainerError, ensure_rootfs, missing_tools, port_is_free

# The container shares the host's network: every tgtd it runs listens on the host.
# Ours live in 3400-3499 only (others use 3260 and 13000-13999 on the same host).
PORTS = range(3400, 3500)


def system_skip_reason() -> str | None:
    """Why system tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "system tests need root (debootstrap and systemd-nspawn)"
    missing = missing_tools()
    if missing:
        return (
            f"missing host tools: {', '.join(missing)} "
            "(apt-get install debootstrap systemd-container util-linux)"
        )
    return None


@pytest.fixture(scope="session")
def rootfs() -> Path:
    """The cached bookworm tree (built on first use, ~1 min; reused while its stamp matches)."""
    reason = system_skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        root = ensure_rootfs()
    except ContainerError as exc:
        pytest.fail(f"cannot build the system-test rootfs: {exc}")
    return root


@pytest.fixture(scope="session")
def container(rootfs: Path) -> Iterator[Container]:
    """One booted container for the whole session; changes inside vanish at its end."""
    box = Container(rootfs)
    try:
        box.start()
    except ContainerError as exc:
        box.cleanup()
        pytest.fail(f"container did not boot: {exc}")
    try:
        yield box
    finally:
        box.cleanup()


@pytest.fixture
def free_port() -> int:
    """A port in 3400-3499 that nothing listens on right now."""
    for port in PORTS:
        if port_is_free(port):
            return port
    pytest.fail("no free port in 3400-3499")


@pytest.fixture(scope="session")
def iscsi_ls() -> str:
    """The host's libiscsi `iscsi-ls` (the initiator side of the tests)."""
    path = shutil.which("iscsi-ls")
    if path is None:
        pytest.skip("iscsi-ls missing on the host (apt-get install libiscsi-bin)")
    return path
