"""Both engines run the daemon-level tests: the `engine` fixture, its parametrization, and
the `engine` marker that pins a test to one engine.

Every test that uses a tgtwatch tree (`tree`, `world`: they request `engine`) runs once per
engine, its id ending `[native]` or `[tgt-admin]`; the tree's settings say `engine: ENGINE`.
A test about one engine by nature says so, with the reason, in one line:

    @pytest.mark.engine("tgt-admin", reason="the fault hooks a tgt-admin wrapper")

A test where the engine only loads the targets and the subject is elsewhere (the loop, the
watcher, the state directory...) runs under the default engine only, to keep CI's time:

    @pytest.mark.engine("native", reason="idle cost: no engine runs", cost=True)

TGTWATCH_ALL_ENGINES=1 in the environment runs those `cost=True` tests under both engines
too (a full run); a pin by nature stays. The conftests of tests/integration and
tests/reliability import the fixture and the hook.
"""

from __future__ import annotations

import os

import pytest

ENGINES = ("native", "tgt-admin")
ALL_ENGINES_ENV = "TGTWATCH_ALL_ENGINES"


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
        if marker.kwargs.get("cost") and os.environ.get(ALL_ENGINES_ENV) == "1":
            engines = ENGINES
    metafunc.parametrize("engine", engines, indirect=True, ids=engines)


@pytest.fixture(name="engine")
def engine_fixture(request: pytest.FixtureRequest) -> str:
    """The tree's `engine` setting: "native" or "tgt-admin" (parametrized by the hook)."""
    return str(getattr(request, "param", "native"))


__all__ = ["ALL_ENGINES_ENV", "ENGINES", "engine_fixture", "pytest_generate_tests"]
