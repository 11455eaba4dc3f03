"""Both engines run the daemon-level tests: the `engine` fixture, its parametrization, and
the `engine` marker that pins a test that is about one engine by nature.

Every test that uses a tgtwatch tree (`tree`, `world`: they request `engine`) runs once per
engine, its id ending `[native]` or `[tgt-admin]`; the tree's settings say `engine: ENGINE`.
A test about one engine says so, with the reason, in one line:

    @pytest.mark.engine("tgt-admin", reason="the fault hooks a tgt-admin wrapper")

The conftests of tests/integration and tests/reliability import the fixture and the hook.
"""

from __future__ import annotations

import pytest

ENGINES = ("native", "tgt-admin")


@pytest.hookimpl(trylast=True)  # after the parametrize markers: the engine ends the id
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("engine")
    engines: tuple[str, ...] = ENGINES
    if marker is not None:
        engines = tuple(marker.args)
        if not engines or not set(engines) <= set(ENGINES) or not marker.kwargs.get("reason"):
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: engine marker needs engines from {ENGINES} "
                "and a reason"
            )
    metafunc.parametrize("engine", engines, indirect=True, ids=engines)


@pytest.fixture(name="engine")
def engine_fixture(request: pytest.FixtureRequest) -> str:
    """The tree's `engine` setting: "native" or "tgt-admin" (parametrized by the hook)."""
    return str(getattr(request, "param", "native"))


__all__ = ["ENGINES", "engine_fixture", "pytest_generate_tests"]
