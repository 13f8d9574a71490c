"""Fit time and peak memory of EASE on this machine, per catalogue size (a benchmark, not a test).

    PYTHONPATH=. python benchmarks/ease_scale.py --items 3659,20000 --out benchmarks/results/ease-scale-cpu.json

Each size runs in a fresh process (so its peak RSS is its own): a seeded binary users x items log with
power-law item popularity, then `fit_personal` with personal = "ease" and one λ (the cost of the λ grid
is one inverse per λ on top: `select_seconds`). On a GPU (`--device cuda`, scripts/gpu_check_ease.py) the
CuPy pool's bytes held stand for the peak. The catalogue rule of `recommend.personal`
(EASE_COPIES x items² x 4 bytes against recommend.memory_gib) is printed beside the measured peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(items: int, users: int, per_user: int, device: str) -> dict:
    import numpy as np

    from gpuclust.backend import resolve_backend
    from gpuclust.config import RecommendConfig
    from gpuclust.preprocess.table import EventTable
    from gpuclust.recommend.personal import EASE_COPIES, fit_personal
    from gpuclust.segments import offsets_of

    backend = resolve_backend(device)
    rng = np.random.default_rng(0)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    user = np.repeat(np.arange(users, dtype=np.int32), per_user)
    item = rng.choice(items, size=len(user), p=popularity / popularity.sum()).astype(np.int32)
    n = len(user)
    table = EventTable(*(backend.asarray(a) for a in (user, item, np.zeros(n, np.int8), np.arange(n, dtype=np.int64),
                                                         np.zeros(n, np.float32), np.ones(n, np.float32))),
                       offsets=backend.asarray(offsets_of(user, users, np)), event_names=("purchase",), xp=backend.xp)
    config = RecommendConfig(personal="ease", lambdas=(100.0,), memory_gib=1024.0)  # the rule is reported, not applied
    started = time.perf_counter()
    model = fit_personal(table, users, items, backend, config, seed=0)
    if backend.on_gpu:
        backend.xp.cuda.Device().synchronize()
    seconds = time.perf_counter() - started
    gpu = {"gpu_pool_gib": round(backend.xp.get_default_memory_pool().total_bytes() / 2**30, 3)} if backend.on_gpu else {}
    return {"items": items, "users": users, "events": n, "device": backend.device, "fit_seconds": round(seconds, 2),
            "ease_fit_seconds": model.selection["fit_seconds"], "weights_gib": round(4 * items**2 / 2**30, 3),
            "rule_gib": round(EASE_COPIES * 4 * items**2 / 2**30, 3),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3), **gpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="3659,20000")
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--per-user", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.users, args.per_user, args.device)))
        return
    rows = []
    for items in (int(v) for v in args.items.split(",")):
        done = subprocess.run([sys.executable, __file__, "--one", str(items), "--users", str(args.users),
                               "--per-user", str(args.per_user), "--device", args.device],
                              check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"benchmark": "ease_scale", "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
