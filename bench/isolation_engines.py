"""Isolation by engine: A's IOPS alone, under 50 other instances' churn applied by a
tgtwatch daemon with the native engine, and under the same churn applied by a second
daemon with `engine: tgt-admin` — interleaved, one run (issue 13's isolation target).

    .venv/bin/python bench/isolation_engines.py [--seconds 15] [--reps 3]

Writes bench/isolation_engines.json. Each churn round: 50 files renamed in (wait for 50
start records), 50 edited to a second LUN (50 reload records), 50 deleted (their tgtds
gone). The native daemon serves A; the tgt-admin daemon serves only its own 50. The
native churn runs twice: as fast as it goes, and paced to tgt-admin's rate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from common import (
    POOL,
    atomic_write,
    bench_world,
    cleanup_all,
    install_signal_cleanup,
    instance_text,
    iqn,
    lists,
    log,
    summary,
    tgtd_pid,
    wait_until,
)
from isolation import CHURN, TgtwatchChurn, _measure

REPO = Path(__file__).resolve().parent.parent
PHASES = ("alone", "native_churn", "native_paced", "tgt_admin_churn")
# tgt-admin's round of 150 changes took ~15-17 s: the paced native churn does the same
# number of changes a second, so the two compare like with like.
PACED_ROUND_S = 15.0


def run(seconds: int, reps: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PHASES}
    POOL.reserve(2 * CHURN + 4)
    with contextlib.ExitStack() as stack:
        native = stack.enter_context(bench_world("iso-native"))
        legacy = stack.enter_context(bench_world("iso-tgtadmin"))
        native.write_settings(engine="native")
        legacy.write_settings(engine="tgt-admin")
        a_port = native.reserve_port()
        native_ports, legacy_ports = POOL.take(CHURN), POOL.take(CHURN)
        native.add_ports(native_ports)
        legacy.add_ports(legacy_ports)
        native.start()
        legacy.start()
        a_back = native.backing("A.img", size=64 << 20)
        atomic_write(native.conf("a"), instance_text("a", a_port, [a_back]), native.staging_dir)
        wait_until(lambda: lists(a_port, iqn("a")), 30, "A listed")
        a_pid = tgtd_pid(a_port)
        url = f"iscsi://127.0.0.1:{a_port}/{iqn('a')}/1"
        churners = {
            "alone": None,
            "native_churn": TgtwatchChurn(native, native_ports),
            "native_paced": TgtwatchChurn(native, native_ports, round_s=PACED_ROUND_S),
            "tgt_admin_churn": TgtwatchChurn(legacy, legacy_ports),
        }
        for rep in range(reps):
            order = PHASES if rep % 2 == 0 else tuple(reversed(PHASES))
            for phase in order:
                got = _measure(url, seconds, native.root, f"{phase}{rep}", churners[phase])
                got["a_pid_unchanged"] = tgtd_pid(a_port) == a_pid
                runs[phase].append(got)
                log(
                    f"rep {rep + 1} {phase}: {got['iops_avg']:.0f} IOPS, errors "
                    f"{got['errors']}, reconnects {got['reconnects']}, churn ops "
                    f"{got['churn_ops']}, A pid same {got['a_pid_unchanged']}"
                )
    out: dict[str, Any] = {"seconds": seconds, "reps": reps, "churn_instances": CHURN}
    for phase, got in runs.items():
        out[phase] = {
            "iops": summary([r["iops_avg"] for r in got]),
            "errors": sum(r["errors"] for r in got),
            "reconnects": sum(r["reconnects"] for r in got),
            "a_pid_unchanged": all(r["a_pid_unchanged"] for r in got),
            "churn_ops_per_s": summary([r["churn_ops"] / r["elapsed_s"] for r in got]),
        }
    # Per rep: the churn phases of one rep ran next to each other.
    for native_phase in ("native_churn", "native_paced"):
        out[f"{native_phase}_over_tgt_admin_per_rep"] = [
            n["iops_avg"] / t["iops_avg"] if t["iops_avg"] else None
            for n, t in zip(runs[native_phase], runs["tgt_admin_churn"], strict=True)
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    install_signal_cleanup()
    try:
        out = run(args.seconds, args.reps)
    finally:
        cleanup_all()
    (REPO / "bench" / "isolation_engines.json").write_text(json.dumps(out, indent=1) + "\n")
    for phase in PHASES:
        p = out[phase]
        print(
            f"{phase}: {p['iops']['median']:.0f} IOPS [{p['iops']['min']:.0f}-"
            f"{p['iops']['max']:.0f}], churn {p['churn_ops_per_s']['median']:.1f} ops/s, "
            f"errors {p['errors']}, reconnects {p['reconnects']}"
        )
    for native_phase in ("native_churn", "native_paced"):
        ratios = out[f"{native_phase}_over_tgt_admin_per_rep"]
        print(f"{native_phase}/tgt-admin per rep:", [f"{r:.2f}" for r in ratios])


if __name__ == "__main__":
    main()
