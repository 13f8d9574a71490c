"""End-to-end speed of `gpuclust run`: wall seconds and peak RSS of a fresh process, per repeat.

    python benchmarks/pipeline_bench.py --users 100000 --events-per-user 50 --k 20 --repeats 3

Each repeat is a new `gpuclust run` process, so imports and file reading count, as they do for a
user. Data is generated once per size with `gpuclust synth` and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def gpuclust(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpuclust.cli.app", *args]


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--events-per-user", type=float, default=50.0)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--features", default="behaviour,tfidf")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path("/tmp/gpuclust-bench"))
    ap.add_argument("--name", default=None, help="results file stem (default: pipeline-<device>-<date>)")
    args = ap.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    data = args.data / f"u{args.users}-e{args.events_per_user:g}-i{args.items}-g{args.groups}"
    if not (data / "events.parquet").exists():
        subprocess.run(gpuclust("synth", "--users", str(args.users), "--items", str(args.items), "--groups",
                                str(args.groups), "--events-per-user", str(args.events_per_user), "--out",
                                str(data), "--json"), env=env, check=True, stdout=subprocess.DEVNULL)
    out = data / "run"
    cmd = gpuclust("run", "--events", str(data / "events.parquet"), "--items", str(data / "items.parquet"),
                   "--truth", str(data / "truth.parquet"), "--k", str(args.k), "--features", args.features,
                   "--device", args.device, "--out", str(out), "--json")
    runs = [timed(cmd, env) for _ in range(args.repeats)]
    manifest = json.loads((out / "manifest.json").read_text())
    seconds = [s for s, _ in runs]
    result = {
        "command": " ".join(["gpuclust", *cmd[3:]]),
        "users": manifest["rows"]["users"],
        "events": manifest["rows"]["events"],
        "k": args.k,
        "features": args.features,
        "device": manifest["device"],
        "versions": manifest["versions"],
        "repeats": args.repeats,
        "wall_seconds": {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
                         "all": seconds},
        "peak_rss_mib": max(r for _, r in runs),
        "stages_last_run": {k: v["seconds"] for k, v in manifest["timings"]["stages"].items()},
        "metrics": manifest["metrics"],
        "engine": manifest["cluster"]["engine"],
    }
    stem = args.name or f"pipeline-{args.device}-{time.strftime('%Y-%m-%d')}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("users", "events", "wall_seconds", "peak_rss_mib",
                                                "stages_last_run", "engine")}, indent=2))
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
