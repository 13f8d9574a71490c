"""Time `gpuclust.synth.write` and report events/s and peak RSS.

Example (the figures in benchmarks/results/synth-cpu.md):
    PYTHONPATH=. python benchmarks/synth_bench.py --users 1000000 --events-per-user 50 --out /tmp/synth-1m
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

from gpuclust.synth import SynthSpec, write


def _peak_rss_mib() -> float:
    """Peak resident set size of this process; ru_maxrss is KiB on Linux, bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _dir_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.glob("*.parquet")) / 2**20


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--events-per-user", type=float, default=50.0)
    ap.add_argument("--chunk-users", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="output directory (three Parquet files)")
    args = ap.parse_args(argv)

    spec = SynthSpec(n_users=args.users, n_items=args.items, n_groups=args.groups,
                     events_per_user=args.events_per_user, seed=args.seed)
    t0 = time.perf_counter()
    summary = write(spec, args.out, chunk_users=args.chunk_users,
                    progress=lambda done, total: print(f"  {done:,}/{total:,} users", file=sys.stderr))
    seconds = time.perf_counter() - t0
    result = {
        "users": args.users, "items": args.items, "groups": args.groups,
        "events": summary["n_events"], "event_counts": summary["event_counts"],
        "seconds": round(seconds, 2), "events_per_s": round(summary["n_events"] / seconds),
        "peak_rss_mib": round(_peak_rss_mib()), "output_mib": round(_dir_mib(args.out), 1),
        "chunk_users": args.chunk_users, "python": platform.python_version(), "machine": platform.machine(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
