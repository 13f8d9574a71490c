"""The Dask path against one process: wall time, per-stage time, peak memory per worker, spill, quality.

    python benchmarks/dask_bench.py --users 20000,200000 --workers 1,2            # overhead and 1 -> 2 workers
    python benchmarks/dask_bench.py --users 3000000 --workers 2 --modes dask \\
        --memory-limit 10GiB --files 30 --name dask-3m                           # the one that needs a cluster

Each measurement is a fresh `gpuclust run` process (imports, reading and the LocalCluster's start count,
as for a user); the process tree's RSS (client + workers) is sampled every 0.2 s for its peak. Data is
generated once per size with `gpuclust synth --files N` and reused. Results: benchmarks/results/NAME.json
and .md, and a model of wall time vs users and workers (a power law in each, fitted in log space), checked
by fitting without the largest measured point and predicting it; `gpuclust size --workers N` reads it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def gpuclust(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpuclust.cli.app", *args]


def tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def measured(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Wall seconds and peak RSS of the whole process tree (sampled) of one command."""
    import tempfile

    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:  # a pipe nobody reads while polling would block the child
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errors, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.2)
        errors.seek(0)
        err = errors.read()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}",
                "seconds": round(seconds, 2)}
    return {"seconds": round(seconds, 2), "peak_tree_rss_gib": round(peak / 2**30, 2)}


def ensure_data(folder: Path, users: int, args: argparse.Namespace, env: dict[str, str]) -> Path:
    files = args.files or max(1, math.ceil(users / 250_000))
    data = folder / f"u{users}-e{args.events_per_user:g}-i{args.items}-g{args.groups}-f{files}"
    if not (data / "truth.parquet").exists():
        subprocess.run(gpuclust("synth", "--users", str(users), "--items", str(args.items), "--groups",
                                str(args.groups), "--events-per-user", str(args.events_per_user), "--files",
                                str(files), "--out", str(data), "--json"), env=env, check=True, stdout=subprocess.DEVNULL)
    return data


def one_run(data: Path, mode: str, workers: int, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    out = data / f"run-{mode}-w{workers}"
    events = data / "events" if (data / "events").is_dir() else data / "events.parquet"
    cmd = gpuclust("run", "--events", str(events), "--items", str(data / "items.parquet"), "--truth",
                   str(data / "truth.parquet"), "--k", str(args.k), "--device", "cpu", "--out", str(out), "--json")
    if mode == "dask":
        cmd += ["--scheduler", "local", "--workers", str(workers)]
        if args.memory_limit:
            cmd += ["--memory-limit", args.memory_limit]
    record: dict[str, Any] = {"mode": mode, "workers": workers if mode == "dask" else None,
                              "load_before": os.getloadavg()[0], **measured(cmd, env)}
    record["load_after"] = os.getloadavg()[0]
    manifest_path = out / "manifest.json"
    if "error" not in record and manifest_path.exists():
        m = json.loads(manifest_path.read_text())
        record["stages"] = {k: v["seconds"] for k, v in m["timings"]["stages"].items()}
        record["manifest_peak_rss_mib"] = m["timings"]["peak_rss_mib"]
        record["ari"] = m["metrics"].get("ari")
        record["events"] = m["rows"]["events"]
        if "dask" in m:
            record["worker_peak_rss_mib"] = m["dask"]["worker_peak_rss_mib"]
            record["spill"] = m["dask"]["spill"]
            record["partitions"] = m["dask"]["partitions"]
    return record


def fit_time_model(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """seconds = a * users**b * workers**c, least squares on logs; needs 3 points with 2 sizes."""
    if len(points) < 3 or len({p["users"] for p in points}) < 2:
        return None
    x = np.array([[1.0, math.log(p["users"]), math.log(p["workers"])] for p in points])
    y = np.log([p["seconds"] for p in points])
    if len({p["workers"] for p in points}) < 2:
        x = x[:, :2]
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return {"a": float(math.exp(coef[0])), "b_users": float(coef[1]),
            "c_workers": float(coef[2]) if len(coef) > 2 else 0.0}


def predict_seconds(model: dict[str, Any], users: int, workers: int) -> float:
    return model["a"] * users ** model["b_users"] * workers ** model["c_workers"]


def model_with_check(runs: list[dict[str, Any]]) -> dict[str, Any]:
    points = [{"users": r["users"], "workers": r["workers"], "seconds": r["seconds"]}
              for r in runs if r["mode"] == "dask" and "error" not in r]
    out: dict[str, Any] = {"points": points, "model": fit_time_model(points)}
    if len(points) >= 4:
        held = max(points, key=lambda p: (p["users"], p["workers"]))
        rest = [p for p in points if p is not held]
        model = fit_time_model(rest)
        if model:
            guess = predict_seconds(model, held["users"], held["workers"])
            out["check"] = {"held_out": held, "predicted_seconds": round(guess, 1),
                            "error": round(guess / held["seconds"] - 1, 3)}
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Dask path vs one process ({results['date']})", "",
             f"Machine: {results['machine']['cores']} cores, {results['machine']['memory_gib']} GiB; "
             f"command: `{results['command']}`", "",
             "| users | events | mode | workers | wall s | peak tree RSS GiB | worker peaks MiB | ARI | stages (s) |",
             "| ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | --- |"]
    for r in results["runs"]:
        if "error" in r:
            lines.append(f"| {r['users']:,} | | {r['mode']} | {r['workers'] or ''} | {r['seconds']} | | | | {r['error']} |")
            continue
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r.get("stages", {}).items())
        peaks = ", ".join(f"{v:.0f}" for v in r.get("worker_peak_rss_mib", {}).values())
        ari = f"{r['ari']:.3f}" if r.get("ari") is not None else ""
        lines.append(f"| {r['users']:,} | {r.get('events', 0):,} | {r['mode']} | {r['workers'] or ''} | "
                     f"{r['seconds']:.1f} | {r['peak_tree_rss_gib']} | {peaks} | {ari} | {stages} |")
    for size, ratio in results.get("overhead", {}).items():
        lines.append(f"\nOverhead at {int(size):,} users: Dask ({ratio['workers']} workers) / one process = "
                     f"{ratio['ratio']:.2f}x")
    m = results.get("time_model", {})
    if m.get("model"):
        mm = m["model"]
        lines.append(f"\nWall time model: {mm['a']:.3g} * users^{mm['b_users']:.3f} * workers^{mm['c_workers']:.3f} s")
        if "check" in m:
            c = m["check"]
            lines.append(f"Held-out check: {c['held_out']['users']:,} users x {c['held_out']['workers']} workers "
                         f"predicted {c['predicted_seconds']} s vs measured {c['held_out']['seconds']} s "
                         f"({c['error']:+.0%})")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", default="20000,200000", help="comma list of user counts")
    ap.add_argument("--workers", default="2", help="comma list of LocalCluster worker counts")
    ap.add_argument("--modes", default="single,dask", help="single, dask or both")
    ap.add_argument("--events-per-user", type=float, default=50.0)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--files", type=int, default=None, help="event files per data set (default: 1 per 250k users)")
    ap.add_argument("--memory-limit", default=None, help="per worker, e.g. 10GiB")
    ap.add_argument("--data", type=Path, default=Path("/tmp/gpuclust-dask-bench"))
    ap.add_argument("--name", default=None)
    args = ap.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    users = [int(u) for u in args.users.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    import psutil

    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "command": " ".join(sys.argv),
        "machine": {"cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "cpu": platform.processor() or platform.machine()},
        "workload": {"events_per_user": args.events_per_user, "items": args.items, "groups": args.groups, "k": args.k},
        "runs": [],
    }
    for n in users:
        data = ensure_data(args.data, n, args, env)
        for mode in modes:
            for w in (workers if mode == "dask" else [1]):
                record = {"users": n, **one_run(data, mode, w, args, env)}
                print(json.dumps({k: v for k, v in record.items() if k not in ("stages", "spill")}), file=sys.stderr)
                results["runs"].append(record)
    overhead = {}
    for n in users:
        single = [r for r in results["runs"] if r["users"] == n and r["mode"] == "single" and "error" not in r]
        dask = [r for r in results["runs"] if r["users"] == n and r["mode"] == "dask" and "error" not in r]
        if single and dask:
            best = min(dask, key=lambda r: r["seconds"])
            overhead[str(n)] = {"ratio": round(best["seconds"] / single[0]["seconds"], 3), "workers": best["workers"]}
    results["overhead"] = overhead
    results["time_model"] = model_with_check(results["runs"])
    name = args.name or f"dask-cpu-{results['date']}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
