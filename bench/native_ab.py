"""The one-LUN reload of a 200-target instance, this checkout against another (the code
before a change), side by side: processes of each alternate (as root, after setup):

    .venv/bin/python bench/native_ab.py --base /path/to/other/checkout [--rounds 3 --runs 5]

Each process runs native.py's big_reload (engine native) from its own checkout, with
DirectBackend.reload wrapped to take the grow reload's wall and CPU time the same way in
both. Writes bench/native_ab.json; prints medians [min-max].
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Run inside the child, with the checkout first on sys.path (before the venv's editable
# install of this checkout).
CHILD = """
import json, sys, time
root, runs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path[:0] = [root, root + "/bench"]
import tgtwatch
assert tgtwatch.__file__.startswith(root), tgtwatch.__file__
import native
from common import POOL, cleanup_all
from tgtwatch.config.settings import EngineKind
calls = []
real = native.DirectBackend.reload
def timed(self, spec):
    wall, cpu = time.monotonic(), time.process_time()
    try:
        return real(self, spec)
    finally:
        calls.append((time.monotonic() - wall, time.process_time() - cpu))
native.DirectBackend.reload = timed
POOL.reserve(4)
try:
    result = native.big_reload(EngineKind.NATIVE, 200, runs)
finally:
    cleanup_all()
grow = calls[0::2]  # big_reload reloads twice a run: the LUN added, then taken away
result["reload_wall"] = [g[0] for g in grow]
result["reload_cpu"] = [g[1] for g in grow]
with open(out, "w") as f:
    json.dump(result, f)
"""

KEYS = {"values": "to iscsi-inq", "reload_wall": "reload call", "reload_cpu": "its CPU"}


def stats(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, type=Path, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    checkouts = {"base": args.base.resolve(), "this": HERE.parent}
    found: dict[str, dict[str, list[float]]] = {w: {k: [] for k in KEYS} for w in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            for which, root in checkouts.items():
                out = Path(tmp) / f"{which}-{n}.json"
                argv = [sys.executable, "-c", CHILD, str(root), str(args.runs), str(out)]
                subprocess.run(argv, check=True, cwd=tmp, timeout=900)
                got = json.loads(out.read_text())
                for key in KEYS:
                    found[which][key] += got[key]
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **{
            f"{w}_commit": subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                check=False,
                capture_output=True,
                text=True,
            ).stdout.strip()
            for w, root in checkouts.items()
        },
        **{w: {k: stats(v) for k, v in d.items()} for w, d in found.items()},
    }
    (HERE / "native_ab.json").write_text(json.dumps(results, indent=1) + "\n")
    for which in checkouts:
        line = ", ".join(
            f"{label} {s['median'] * 1000:.1f} ms [{s['min'] * 1000:.1f}-{s['max'] * 1000:.1f}]"
            for key, label in KEYS.items()
            for s in [results[which][key]]
        )
        print(f"{which}: {line} (n={results[which]['values']['n']})")


if __name__ == "__main__":
    main()
