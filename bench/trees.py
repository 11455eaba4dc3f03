"""Two trees side by side: another commit's code unpacked beside this checkout, and a
harness run in a process of its own with one tree first on its path."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def head() -> str:
    """This checkout's short commit."""
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@contextlib.contextmanager
def unpacked(rev: str, paths: Sequence[str]) -> Iterator[Path]:
    """`paths` of commit `rev`, unpacked in a temporary directory for the block's length."""
    with tempfile.TemporaryDirectory(prefix="tgtwatch-before-") as before:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, *paths], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", before], input=archive, check=True)
        yield Path(before)


def parser(description: str | None, before: str = "a9a4f7f") -> argparse.ArgumentParser:
    """The options of a side-by-side bench: sizes, reps, the tree to compare with, and the
    hidden --child that runs the harness in one tree (run_child)."""
    made = argparse.ArgumentParser(description=description)
    made.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 500])
    made.add_argument("--reps", type=int, default=30)
    made.add_argument("--before", default=before, help="the tree to compare with")
    made.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return made


def run_child(script: str, args: Sequence[str], path: Sequence[Path]) -> Any:
    """`script --child ARGS` with `path` first on PYTHONPATH; what it printed, as JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path))}
    argv = [sys.executable, script, "--child", *args]
    out = subprocess.run(argv, env=env, check=True, capture_output=True)
    return json.loads(out.stdout)


def write_results(name: str, reps: int, runs: Any) -> None:
    """bench/NAME, stamped with the time of the measurement."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = {"measured": stamp, "reps": reps, "runs": runs}
    (REPO / "bench" / name).write_text(json.dumps(body, indent=1) + "\n")
