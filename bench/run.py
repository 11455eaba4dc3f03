#!/usr/bin/env python3
# ruff: noqa: PLC0415
# ruff: noqa: E501
"""tgtwatch benchmarks: `sudo .venv/bin/python bench/run.py [--quick] [--only SECTION ...]`.

Runs every section (see bench/README.md), prints ONE table of ratios, writes
bench/results.json (raw figures; --out to change) and PNG plots (if matplotlib is there).
Ports 14000-14999 only. Every tgtd the bench causes is stopped at the end, also on error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
from common import DEBOUNCE_MS, POOL, log  # noqa: E402

SECTIONS = ("lifecycle", "systemd", "scale", "isolation")

FULL = {
    "lifecycle": {"runs": 20, "recovery_runs": 10},
    "systemd": {"runs": 20},
    "scale": {
        "sizes": [10, 100, 500],
        "reps": {10: 3, 100: 3, 500: 1},
        "drop_n": 200,
        "drop_reps": 2,
        "idle_s": 60.0,
        "idle_n": 100,
    },
    "isolation": {"seconds": 15, "reps": 3},
}
QUICK = {
    "lifecycle": {"runs": 5, "recovery_runs": 3},
    "systemd": {"runs": 2},
    "scale": {
        "sizes": [10, 50],
        "reps": {10: 1, 50: 1},
        "drop_n": 40,
        "drop_reps": 1,
        "idle_s": 8.0,
        "idle_n": 50,
    },
    "isolation": {"seconds": 4, "reps": 1},
}


def machine() -> dict[str, Any]:
    def sh(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""

    return {
        "nproc": os.cpu_count(),
        "free_h": sh("free", "-h"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tgt": sh("dpkg-query", "-W", "-f", "${Version}", "tgt"),
        "libiscsi_bin": sh("dpkg-query", "-W", "-f", "${Version}", "libiscsi-bin"),
        "loadavg_start": Path("/proc/loadavg").read_text().strip(),
        "git": sh("git", "-C", str(HERE.parent), "describe", "--always", "--dirty"),
    }


# --------------------------------------------------------------------------- the table


def _med(s: dict[str, Any] | None) -> float | None:
    return None if not s or not s.get("n") else s["median"]


def _rng_ms(s: dict[str, Any]) -> str:
    return common.fmt_ms(s)


def table(res: dict[str, Any]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    deb = DEBOUNCE_MS / 1000

    def row(metric: str, ours: str, ref: str, ratio: str, target: str, ok: bool | None) -> None:
        verdict = "-" if ok is None else ("met" if ok else "MISSED")
        rows.append(
            {
                "metric": metric,
                "tgtwatch": ours,
                "reference": ref,
                "ratio": ratio,
                "target": target,
                "verdict": verdict,
            }
        )

    life = res.get("lifecycle")
    if life:
        for k, label in (
            ("provision", "provision (rename→iscsi-ls)"),
            ("reload", "reload (+LUN→iscsi-inq)"),
            ("drain", "drain-and-stop (rm→refused)"),
        ):
            tw, fl = life["tgtwatch"][k], life["floor"][k]
            budget = fl["median"] + deb + 0.05
            row(
                f"{label}, direct",
                _rng_ms(tw),
                "floor " + _rng_ms(fl),
                f"{tw['median'] / fl['median']:.2f}x floor",
                f"≤ floor+300 ms = {budget * 1000:.0f} ms",
                tw["median"] <= budget,
            )
        rec = life["recovery"]
        tw, fl = rec["tgtwatch"], rec["floor"]
        budget = fl["median"] + 0.1
        row(
            "recovery (kill -9→iscsi-ls)",
            _rng_ms(tw),
            "by hand " + _rng_ms(fl),
            f"{tw['median'] / fl['median']:.2f}x floor",
            f"≤ floor+100 ms = {budget * 1000:.0f} ms",
            tw["median"] <= budget,
        )
    sd = res.get("systemd")
    if sd and sd.get("original"):
        orig = sd["original"]["provision"]
        if life:
            tw = life["tgtwatch"]["provision"]
            row(
                "provision, direct vs original unit",
                _rng_ms(tw),
                "original " + _rng_ms(orig),
                f"{orig['median'] / tw['median']:.1f}x faster",
                "≥ 10x faster",
                orig["median"] / tw["median"] >= 10,
            )
        sb = sd["systemd"]["provision"]
        row(
            "provision, systemd backend vs original unit",
            _rng_ms(sb),
            "original " + _rng_ms(orig),
            f"{orig['median'] / sb['median']:.1f}x faster",
            "≥ 10x faster",
            orig["median"] / sb["median"] >= 10,
        )
        hand = sd.get("unit_by_hand", {}).get("provision")
        if hand:
            budget = hand["median"] + deb + 0.05
            row(
                "provision, systemd backend vs tgtd@ by hand",
                _rng_ms(sb),
                "systemctl start " + _rng_ms(hand),
                f"{sb['median'] / hand['median']:.2f}x floor",
                f"≤ floor+300 ms = {budget * 1000:.0f} ms",
                sb["median"] <= budget,
            )
            bare = sd["unsandboxed_by_hand"]["provision"]
            row(
                "  the same unit without its sandbox, by hand",
                _rng_ms(bare),
                "tgtd@ by hand " + _rng_ms(hand),
                f"sandbox +{(hand['median'] - bare['median']) * 1000:.0f} ms",
                "(info)",
                None,
            )
        if life:
            fl = life["floor"]["provision"]
            budget = fl["median"] + deb + 0.05
            row(
                "provision, systemd backend vs bare floor",
                _rng_ms(sb),
                "floor " + _rng_ms(fl),
                f"{sb['median'] / fl['median']:.2f}x floor",
                f"≤ {budget * 1000:.0f} ms (no systemd, no sandbox)",
                sb["median"] <= budget,
            )
        # The original unit's ExecReload / ExecStop are the by-hand steps under systemd
        # (`tgt-admin --update ALL`; offline, remove targets, delete system): their floor.
        for k in ("reload", "drain"):
            s, o = sd["systemd"][k], sd["original"][k]
            budget = o["median"] + deb + 0.05
            row(
                f"{k}, systemd backend vs original unit",
                _rng_ms(s),
                "original " + _rng_ms(o),
                f"{s['median'] / o['median']:.2f}x original",
                f"≤ floor+300 ms = {budget * 1000:.0f} ms",
                s["median"] <= budget,
            )
    sc = res.get("scale")
    if sc:
        for n, d in sc["start"].items():
            tw, fl = d["tgtwatch_ready_s"], d["floor_s"]
            ratio = tw["median"] / fl["median"]
            row(
                f"start with {n} files → READY=1",
                f"{tw['median']:.2f} s [{tw['min']:.2f}-{tw['max']:.2f}]",
                f"floor {fl['median']:.2f} s [{fl['min']:.2f}-{fl['max']:.2f}]",
                f"{ratio:.2f}x floor",
                "≤ 1.3x floor at 500" if n == "500" else "(info)",
                ratio <= 1.3 if n == "500" else None,
            )
            hwm = d["hwm_kib"]["max"] / 1024
            row(
                f"daemon peak RSS (VmHWM), {n} instances",
                f"{hwm:.1f} MiB",
                f"{d['threads']['max']:.0f} threads",
                "-",
                "< 60 MB at 500" if n == "500" else "(info)",
                hwm * 1.048576 < 60 if n == "500" else None,
            )
        sizes = sorted(int(n) for n in sc["start"])
        if len(sizes) >= 2:
            a, b = sizes[0], sizes[-1]
            ha = sc["start"][str(a)]["hwm_kib"]["max"]
            hb = sc["start"][str(b)]["hwm_kib"]["max"]
            per = (hb - ha) / (b - a)
            mid = sizes[len(sizes) // 2]
            hm = sc["start"][str(mid)]["hwm_kib"]["max"]
            lin = ha + per * (mid - a)
            row(
                f"RSS growth {a}→{b} instances",
                f"{per:.1f} KiB/instance",
                f"at {mid}: {hm / 1024:.1f} MiB vs linear {lin / 1024:.1f}",
                "-",
                "≤ linear",
                hm <= lin * 1.05 + 1024,
            )
        dr = sc["drop"]
        tw, fl = dr["tgtwatch_s"], dr["floor_s"]
        row(
            f"{dr['n']} files dropped at once → all answer",
            f"{tw['median']:.2f} s",
            f"floor {fl['median']:.2f} s",
            f"{tw['median'] / fl['median']:.2f}x floor",
            "(info)",
            None,
        )
        idle = sc.get("idle")
        if idle:
            frac = idle["core_fraction"]
            row(
                f"idle, {idle['instances']} instances, {idle['seconds']:.0f} s",
                f"{idle['cpu_s'] + idle['children_cpu_s']:.2f} CPU s = {frac * 100:.3f} % core",
                f"{idle['voluntary_ctxt']} vol / {idle['involuntary_ctxt']} invol ctxt sw",
                "-",
                "< 0.1 % of a core",
                frac < 0.001,
            )
    iso = res.get("isolation")
    if iso:
        tw, hc, al = iso["tgtwatch_churn"], iso["hand_churn"], iso["alone"]
        ratio = tw["iops"]["median"] / hc["iops"]["median"]
        clean = tw["errors"] == 0 and tw["reconnects"] == 0 and tw["nonzero_exits"] == 0
        row(
            "A's IOPS under 50-instance churn",
            f"{tw['iops']['median']:.0f} [{tw['iops']['min']:.0f}-{tw['iops']['max']:.0f}]",
            f"by hand {hc['iops']['median']:.0f} [{hc['iops']['min']:.0f}-{hc['iops']['max']:.0f}]; "
            f"alone {al['iops']['median']:.0f}",
            f"{ratio:.2f}x by-hand",
            "≥ 0.95x by-hand",
            ratio >= 0.95,
        )
        row(
            "A under tgtwatch churn: errors/reconnects/pid",
            f"{tw['errors']}/{tw['reconnects']}/{'same' if tw['a_pid_unchanged'] else 'CHANGED'}",
            f"by hand {hc['errors']}/{hc['reconnects']}",
            "-",
            "0/0/same",
            clean and tw["a_pid_unchanged"],
        )
        single = iso.get("single", {})
        for k, v in single.items():
            row(
                f"single tgtd: A {k}",
                f"{v['iops_avg']:.0f} IOPS",
                f"exit {v['exit']}{' (hung, killed)' if v.get('hung') else ''}, "
                f"errors {v['errors']}, slow {v['stall_s']} s, silent {v.get('missing_s', 0)} s, "
                f"{v['churn_ops'] / v['elapsed_s']:.1f} changes/s",
                "-",
                "(info)",
                None,
            )
    return rows


def print_table(rows: list[dict[str, str]]) -> None:
    cols = ["metric", "tgtwatch", "reference", "ratio", "target", "verdict"]
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    line = " | ".join(c.ljust(width[c]) for c in cols)
    print(line)
    print("-+-".join("-" * width[c] for c in cols))
    for r in rows:
        print(" | ".join(r[c].ljust(width[c]) for c in cols))


# --------------------------------------------------------------------------- plots


def plots(res: dict[str, Any], outdir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plots")
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    made = []
    life, sd = res.get("lifecycle"), res.get("systemd")
    if life:
        fig, ax = plt.subplots(figsize=(8, 4))
        data, labels = [], []
        for k in ("provision", "reload", "drain"):
            for who, src in (("floor", life["floor"]), ("direct", life["tgtwatch"])):
                data.append([v * 1000 for v in src[k]["values"]])
                labels.append(f"{k}\n{who}")
            if sd and sd.get("systemd"):
                data.append([v * 1000 for v in sd["systemd"][k]["values"]])
                labels.append(f"{k}\nsystemd be")
        ax.boxplot(data)
        ax.set_xticks(range(1, len(labels) + 1), labels)
        ax.set_ylabel("ms")
        ax.set_title("latency: floor vs tgtwatch (direct, systemd backend)")
        ax.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        fig.savefig(outdir / "latency.png", dpi=100)
        plt.close(fig)
        made.append("latency.png")
    sc = res.get("scale")
    if sc:
        ns = sorted(int(n) for n in sc["start"])
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.plot(
            ns,
            [sc["start"][str(n)]["tgtwatch_ready_s"]["median"] for n in ns],
            "o-",
            label="tgtwatch READY=1",
        )
        a1.plot(
            ns,
            [sc["start"][str(n)]["floor_s"]["median"] for n in ns],
            "s--",
            label="floor (8 lanes)",
        )
        a1.set_xlabel("instance files")
        a1.set_ylabel("s")
        a1.legend()
        a1.set_title("time to serve every instance")
        a2.plot(ns, [sc["start"][str(n)]["hwm_kib"]["max"] / 1024 for n in ns], "o-")
        a2.axhline(60 / 1.048576, color="r", ls=":", label="60 MB target")
        a2.set_xlabel("instance files")
        a2.set_ylabel("MiB")
        a2.legend()
        a2.set_title("daemon VmHWM")
        fig.tight_layout()
        fig.savefig(outdir / "scale.png", dpi=100)
        plt.close(fig)
        made.append("scale.png")
    iso = res.get("isolation")
    if iso:
        fig, ax = plt.subplots(figsize=(8, 4))
        for phase in ("alone", "tgtwatch_churn", "hand_churn"):
            run = iso[phase]["runs"][0]
            ax.plot(run["iops_per_s"], label=phase)
        restart = iso.get("single", {}).get("restart")
        if restart:
            ax.plot(restart["iops_per_s"], label="single tgtd, restart")
        ax.set_xlabel("second")
        ax.set_ylabel("IOPS (iscsi-perf on A)")
        ax.legend()
        ax.set_title("isolation: A's IOPS per second (first rep)")
        fig.tight_layout()
        fig.savefig(outdir / "isolation.png", dpi=100)
        plt.close(fig)
        made.append("isolation.png")
    return made


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer runs, smaller sizes (< 2 min)")
    ap.add_argument("--only", nargs="*", choices=SECTIONS, help="run these sections only")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    ap.add_argument("--plots", type=Path, default=HERE)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root: sudo .venv/bin/python bench/run.py", file=sys.stderr)
        return 2
    params = QUICK if args.quick else FULL
    sections = args.only or list(SECTIONS)
    res: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "params": params,
        "machine": machine(),
        "debounce_ms": DEBOUNCE_MS,
        "lanes": common.LANES,
        "errors": {},
    }
    if args.only and args.out.exists():
        # --only: the other sections' figures of the earlier run are kept (marked as such)
        old = json.loads(args.out.read_text())
        for section in SECTIONS:
            if section not in sections and section in old:
                res[section] = old[section]
                res.setdefault("kept_from_earlier_run", []).append(section)
    started = time.monotonic()
    common.dh.set_child_subreaper(True)
    common.install_signal_cleanup()
    need = 4 + params["lifecycle"]["recovery_runs"]
    if "scale" in sections:
        need = max(need, max(params["scale"]["sizes"]) + 4, params["scale"]["drop_n"] + 4)
    if "isolation" in sections:
        need = max(need, 104)
    POOL.reserve(need)
    try:
        for section in sections:
            t0 = time.monotonic()
            log(f"=== {section}")
            try:
                p = params[section]
                if section == "lifecycle":
                    import lifecycle

                    res[section] = lifecycle.run(p["runs"], p["recovery_runs"])
                elif section == "systemd":
                    import systemd_bench

                    ports = POOL.take(3)
                    try:
                        res[section] = systemd_bench.run(p["runs"], ports)
                    finally:
                        common.stop_ports(ports)
                        POOL.give_back(ports)
                elif section == "scale":
                    import scale

                    res[section] = scale.run(
                        p["sizes"], p["reps"], p["drop_n"], p["drop_reps"], p["idle_s"], p["idle_n"]
                    )
                elif section == "isolation":
                    import isolation

                    res[section] = isolation.run(p["seconds"], p["reps"])
            except Exception as exc:
                res["errors"][section] = traceback.format_exc()
                log(f"{section} failed: {exc!r}")
                common.cleanup_all()
            res.setdefault("section_s", {})[section] = time.monotonic() - t0
    finally:
        common.cleanup_all()
        left = [p for p in common.scan_tgtd() if p.cmdline.control_port in POOL.all]
        POOL.release()
    res["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    res["total_s"] = time.monotonic() - started
    res["tgtd_left_behind"] = [p.pid for p in left]
    args.out.write_text(json.dumps(res, indent=1, default=str) + "\n")  # raw first
    try:
        rows = table(res)
    except Exception:
        rows = []
        res["errors"]["table"] = traceback.format_exc()
    res["table"] = rows
    try:
        res["plots"] = plots(res, args.plots)
    except Exception:
        res["plots"] = []
        res["errors"]["plots"] = traceback.format_exc()
    args.out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print()
    print(
        f"tgtwatch bench ({res['mode']}, {res['total_s']:.0f} s, nproc {os.cpu_count()}, "
        f"debounce {DEBOUNCE_MS} ms, {common.LANES} lanes); raw figures: {args.out}"
    )
    print_table(rows)
    for section, err in res["errors"].items():
        print(f"\n{section} FAILED:\n{err}")
    if left:
        print(f"WARNING: tgtd left behind: {res['tgtd_left_behind']}")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
