"""Executor: one serial lane per port, lanes in parallel, a failed step ends its lane."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import THREAD_TIMEOUT_S

from tgtwatch.backends.base import Outcome, Result
from tgtwatch.daemon.lanes import Executor
from tgtwatch.model.structs import Action, DrainStop, InstanceKind, InstanceSpec, Start

OK = Outcome(Result.OK, "ok")
FAILED = Outcome(Result.FAILED, "no")
DRAINING = Outcome(Result.PARTIAL, "sessions remain", draining=True)


def step(port: int, name: str) -> DrainStop:
    """Any action will do: the executor only hands it to `run`."""
    return DrainStop(port, port, name, Path(f"/x/{name}.conf"))


@pytest.fixture
def executor() -> Iterator[Executor]:
    ex = Executor(max_lanes=4)
    yield ex
    ex.shutdown(wait=True)


class Recorder:
    """A `run` that records calls; per action name, an outcome or a gate to wait on."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.outcomes: dict[str, Outcome] = {}
        self.gates: dict[str, threading.Event] = {}
        self.entered: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.active = 0
        self.max_active_per_port: dict[int, int] = {}
        self._active_port: dict[int, int] = {}

    def gate(self, name: str) -> threading.Event:
        self.entered[name] = threading.Event()
        self.gates[name] = threading.Event()
        return self.gates[name]

    def __call__(self, action: Action) -> Outcome:
        assert isinstance(action, DrainStop)
        with self.lock:
            self.calls.append(action.name)
            n = self._active_port.get(action.port, 0) + 1
            self._active_port[action.port] = n
            self.max_active_per_port[action.port] = max(
                n, self.max_active_per_port.get(action.port, 0)
            )
        if action.name in self.gates:
            self.entered[action.name].set()
            assert self.gates[action.name].wait(THREAD_TIMEOUT_S)
        with self.lock:
            self._active_port[action.port] -= 1
        return self.outcomes.get(action.name, OK)


def test_a_lane_runs_its_steps_in_order(executor: Executor) -> None:
    run = Recorder()
    assert executor.submit(1, [step(1, n) for n in "abcde"], run)
    assert executor.wait(THREAD_TIMEOUT_S)
    assert run.calls == list("abcde")
    assert run.max_active_per_port == {1: 1}
    assert executor.busy() == frozenset()


def test_lanes_run_in_parallel_across_ports(executor: Executor) -> None:
    # Each lane's first step waits for the other lane's: only parallel lanes both finish.
    a_in, b_in = threading.Event(), threading.Event()

    def run(action: Action) -> Outcome:
        mine, other = (a_in, b_in) if action.port == 1 else (b_in, a_in)
        mine.set()
        return OK if other.wait(THREAD_TIMEOUT_S) else FAILED

    results: list[int] = []
    executor.submit(1, [step(1, "a")], run, results.append)
    executor.submit(2, [step(2, "b")], run, results.append)
    assert executor.wait(THREAD_TIMEOUT_S)
    assert sorted(results) == [1, 2]
    assert a_in.is_set() and b_in.is_set()


def test_a_blocked_lane_does_not_hold_another_port(executor: Executor) -> None:
    run = Recorder()
    gate = run.gate("slow")
    done = threading.Event()
    executor.submit(1, [step(1, "slow"), step(1, "after")], run)
    assert run.entered["slow"].wait(THREAD_TIMEOUT_S)
    executor.submit(2, [step(2, "fast")], run, lambda port: done.set())
    assert done.wait(THREAD_TIMEOUT_S)
    assert "fast" in run.calls and "after" not in run.calls
    assert executor.busy() == frozenset({1})
    gate.set()
    assert executor.wait(THREAD_TIMEOUT_S)
    assert run.calls[-1] == "after"


def test_a_port_with_a_lane_takes_no_second_one(executor: Executor) -> None:
    run = Recorder()
    gate = run.gate("first")
    assert executor.submit(1, [step(1, "first")], run)
    assert not executor.submit(1, [step(1, "second")], run)
    assert executor.busy() == frozenset({1})
    gate.set()
    assert executor.wait(THREAD_TIMEOUT_S)
    assert run.calls == ["first"]
    assert executor.submit(1, [step(1, "third")], run)
    assert executor.wait(THREAD_TIMEOUT_S)
    assert run.calls == ["first", "third"]


@pytest.mark.parametrize("ending", [FAILED, DRAINING])
def test_a_failed_or_still_draining_step_ends_its_lane(executor: Executor, ending: Outcome) -> None:
    run = Recorder()
    run.outcomes["b"] = ending
    done: list[int] = []
    executor.submit(1, [step(1, "a"), step(1, "b"), step(1, "c")], run, done.append)
    assert executor.wait(THREAD_TIMEOUT_S)
    assert run.calls == ["a", "b"]
    assert done == [1]
    assert executor.busy() == frozenset()


def test_partial_without_draining_goes_on(executor: Executor) -> None:
    run = Recorder()
    run.outcomes["a"] = Outcome(Result.PARTIAL, "pending targets")
    executor.submit(1, [step(1, "a"), step(1, "b")], run)
    assert executor.wait(THREAD_TIMEOUT_S)
    assert run.calls == ["a", "b"]


def test_done_is_called_after_the_port_is_free(executor: Executor) -> None:
    seen: list[frozenset[int]] = []
    executor.submit(1, [step(1, "a")], Recorder(), lambda port: seen.append(executor.busy()))
    assert executor.wait(THREAD_TIMEOUT_S)
    assert seen == [frozenset()]


def test_wait_covers_a_done_callback_still_running(executor: Executor) -> None:
    # The port is free before `done` runs (above); wait() still waits for the callback:
    # a caller that waits for the lanes then reads what `done` recorded.
    entered, release = threading.Event(), threading.Event()

    def done(port: int) -> None:
        entered.set()
        release.wait(THREAD_TIMEOUT_S)

    executor.submit(1, [step(1, "a")], Recorder(), done)
    assert entered.wait(THREAD_TIMEOUT_S)
    assert executor.busy() == frozenset()
    assert not executor.wait(0.05)
    release.set()
    assert executor.wait(THREAD_TIMEOUT_S)


def test_a_lane_that_raises_ends_and_frees_its_port(executor: Executor) -> None:
    def run(action: Action) -> Outcome:
        raise RuntimeError("bug")

    done: list[int] = []
    executor.submit(1, [step(1, "a"), step(1, "b")], run, done.append)
    assert executor.wait(THREAD_TIMEOUT_S)
    assert done == [1]
    assert executor.busy() == frozenset()


def test_wait_times_out_on_a_blocked_lane(executor: Executor) -> None:
    run = Recorder()
    gate = run.gate("slow")
    executor.submit(1, [step(1, "slow")], run)
    executor.submit(2, [step(2, "slow2")], run)
    assert run.entered["slow"].wait(THREAD_TIMEOUT_S)
    assert executor.wait(0.01) is False
    gate.set()
    assert executor.wait(THREAD_TIMEOUT_S) is True


def test_wait_with_nothing_under_way_returns_at_once(executor: Executor) -> None:
    assert executor.wait(0) is True
    assert executor.busy() == frozenset()


def test_drains_hold_no_lane_slot() -> None:
    # One slot for starts and reloads; three drains stuck waiting for sessions must not
    # keep a start on a fourth port from running.
    executor = Executor(max_lanes=1)
    try:
        run = Recorder()
        gates = [run.gate(f"drain{port}") for port in (1, 2, 3)]
        for port in (1, 2, 3):
            executor.submit(port, [step(port, f"drain{port}")], run)
        for port in (1, 2, 3):
            assert run.entered[f"drain{port}"].wait(THREAD_TIMEOUT_S)
        started = threading.Event()

        def start(action: Action) -> Outcome:
            started.set()
            return OK

        spec = InstanceSpec("d", InstanceKind.DROPIN, 4, "0.0.0.0:4", 4, Path("/x/d.conf"), "")
        executor.submit(4, [Start(spec)], start)
        assert started.wait(THREAD_TIMEOUT_S)
        for gate in gates:
            gate.set()
        assert executor.wait(THREAD_TIMEOUT_S)
    finally:
        executor.shutdown(wait=True)


def test_starts_share_the_lane_slots() -> None:
    executor = Executor(max_lanes=1)
    try:
        active, most = 0, 0
        lock = threading.Lock()
        first_in, release = threading.Event(), threading.Event()

        def start(action: Action) -> Outcome:
            nonlocal active, most
            with lock:
                active += 1
                most = max(most, active)
            first_in.set()
            release.wait(THREAD_TIMEOUT_S)
            with lock:
                active -= 1
            return OK

        for port in (1, 2):
            spec = InstanceSpec("s", InstanceKind.DROPIN, port, "0.0.0.0:1", port, Path("/x"), "")
            executor.submit(port, [Start(spec)], start)
        assert first_in.wait(THREAD_TIMEOUT_S)
        release.set()
        assert executor.wait(THREAD_TIMEOUT_S)
        assert most == 1
    finally:
        executor.shutdown(wait=True)
