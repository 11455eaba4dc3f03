"""Collecting exited tgtd children: each exit costs its own collection, a live child none.

Real child processes (`true`, `sleep`); each waits for its exit with waitid(WNOWAIT),
which leaves it to be collected by the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from tgtwatch.backends.children import reap


class Counted:
    """A child whose polls are counted; `collects` False: poll() as when another thread
    already waits on it (it does not collect)."""

    def __init__(self, argv: list[str], collects: bool = True) -> None:
        self.proc = subprocess.Popen(argv)
        self.collects = collects
        self.polls = 0

    def poll(self) -> int | None:
        self.polls += 1
        return self.proc.poll() if self.collects else None

    def exited(self) -> Counted:
        os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)  # not collected
        return self


@pytest.fixture
def spawn() -> Iterator[list[Counted]]:
    made: list[Counted] = []
    yield made
    for child in made:
        child.proc.kill()
        child.proc.wait()


def child(made: list[Counted], argv: list[str], collects: bool = True) -> Counted:
    made.append(Counted(argv, collects))
    return made[-1]


def test_only_the_exited_child_is_polled_and_collected() -> None:
    # In a process of its own: no other child of it may exit meanwhile.
    script = textwrap.dedent(
        """
        import json, sys
        sys.path[:0] = [sys.argv[1]]
        from test_children import Counted
        from tgtwatch.backends.children import reap
        reap({})  # no child at all: nothing to do
        live = Counted(["sleep", "30"])
        done = Counted(["true"]).exited()
        children = {c.proc.pid: c for c in (live, done)}
        reap(children)
        reap(children)  # none exited since: no poll at all
        print(json.dumps([list(children), live.proc.pid, live.polls, done.polls]))
        live.proc.kill()
        live.proc.wait()
        """
    )
    here = os.path.dirname(__file__)
    out = subprocess.run(
        [sys.executable, "-c", script, here], capture_output=True, text=True, check=True
    )
    left, live_pid, live_polls, done_polls = json.loads(out.stdout)
    assert left == [live_pid]
    assert (live_polls, done_polls) == (0, 1)


def test_an_exited_child_not_ours_makes_it_poll_every_child(spawn: list[Counted]) -> None:
    foreign = child(spawn, ["true"]).exited()  # a lane's tool, collected by its thread
    done = child(spawn, ["true"]).exited()
    live = child(spawn, ["sleep", "30"])
    children = {c.proc.pid: c for c in (done, live)}
    reap(children)
    assert list(children) == [live.proc.pid]
    assert live.polls == 1  # the shortcut ended: every child polled, once
    # The foreign child is left to its owner, still waiting to be collected.
    assert os.waitid(os.P_PID, foreign.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)


def test_a_child_another_thread_waits_on_ends_the_shortcut(spawn: list[Counted]) -> None:
    waited = child(spawn, ["true"], collects=False).exited()
    children = {waited.proc.pid: waited}
    reap(children)  # returns: the same exited pid is not asked about forever
    assert list(children) == [waited.proc.pid]
    assert waited.polls == 2  # its own poll, then the poll of every child
    waited.collects = True
    reap(children)
    assert children == {}
