"""One writer per state_dir: the lock names its holder, and run/apply/drain respect it."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tgtwatch.cli.exits import EXIT_BUSY
from tgtwatch.cli.main import main
from tgtwatch.daemon.lock import Holder, LockBusy, StateLock, parse_holder


@given(st.text(max_size=300))
def test_any_lock_file_text_parses_to_a_holder(text: str) -> None:
    holder = parse_holder(text)
    assert holder.pid is None or holder.pid >= 0
    assert str(holder).startswith("tgtwatch ")


def test_the_holder_line_round_trips() -> None:
    assert parse_holder("4242 run\n") == Holder(4242, "run")
    assert str(parse_holder("4242 apply\n")) == "tgtwatch apply (pid 4242)"
    assert parse_holder("") == Holder(None, "?")


def test_a_second_writer_is_refused_and_told_who_holds_it(tmp_path: Path) -> None:
    first, second = StateLock(tmp_path / "state"), StateLock(tmp_path / "state")
    assert first.holder() is None
    first.acquire("run")
    with pytest.raises(LockBusy) as busy:
        second.acquire("apply")
    assert busy.value.holder == Holder(os.getpid(), "run")
    assert str(busy.value) == f"{tmp_path}/state/lock: held by tgtwatch run (pid {os.getpid()})"
    assert second.holder() == Holder(os.getpid(), "run")
    first.release()
    assert second.holder() is None
    second.acquire("apply")  # free again
    second.release()


def test_a_waiting_writer_gets_the_lock_when_it_is_released(tmp_path: Path) -> None:
    held = StateLock(tmp_path)
    held.acquire("apply")
    got = threading.Event()
    waiter = StateLock(tmp_path)

    def wait_for_it() -> None:
        waiter.acquire("run", wait=True)
        got.set()

    thread = threading.Thread(target=wait_for_it)
    thread.start()
    assert StateLock(tmp_path).holder() == Holder(os.getpid(), "apply")
    held.release()
    assert got.wait(10)
    thread.join(10)
    assert StateLock(tmp_path).holder() == Holder(os.getpid(), "run")
    waiter.release()


def settings_file(tmp_path: Path) -> Path:
    (tmp_path / "conf.d").mkdir()
    config = tmp_path / "tgtwatch.yaml"
    config.write_text(
        f"tgt_dir: {tmp_path}/tgt\ninstances_dir: {tmp_path}/conf.d\n"
        f"state_dir: {tmp_path}/state\nbackend: direct\n"
    )
    return config


@pytest.mark.parametrize(
    ("holder", "argv", "words"),
    [
        ("run", ["apply"], "manages this host and applies every change itself; nothing applied"),
        ("apply", ["apply"], "holds the lock; nothing applied, or try again"),
        ("run", ["drain", "--port", "3261"], "port 3261 not drained: delete its file instead"),
        ("run", ["run"], "a daemon already runs; not starting another"),
    ],
)
def test_commands_that_would_race_a_holder_do_nothing_and_exit_75(
    tmp_path: Path, holder: str, argv: list[str], words: str
) -> None:
    config = settings_file(tmp_path)
    lock = StateLock(tmp_path / "state")
    lock.acquire(holder)
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(["-c", str(config), *argv], out, err)
    finally:
        lock.release()
    assert code == EXIT_BUSY
    assert words in err.getvalue()
    assert f"tgtwatch {holder} (pid {os.getpid()})" in err.getvalue()
    assert len(err.getvalue().splitlines()) == 1 and out.getvalue() == ""
