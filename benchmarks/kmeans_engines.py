"""KMeans engines on the same data, k and seed: seconds, inertia, ARI against the generating blobs.

    python benchmarks/kmeans_engines.py --n 100000 --d 60 --k 20
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from gpuclust import accelerators
from gpuclust.backend import resolve_backend, to_host
from gpuclust.cluster.kmeans import ENGINES, KMeans
from gpuclust.errors import UsageError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=60)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--std", type=float, default=4.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    backend = resolve_backend(args.device)
    x, y = make_blobs(n_samples=args.n, centers=args.k, n_features=args.d, cluster_std=args.std, random_state=0)
    x = backend.asarray(x.astype(np.float32))
    rows = []
    for engine in [e for e in ENGINES if e != "auto"]:
        try:
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                km = KMeans(args.k, engine=engine, random_state=0).fit(x, backend)
                times.append(time.perf_counter() - t)
        except UsageError as exc:
            rows.append({"engine": engine, "skipped": str(exc)})
            continue
        rows.append({"engine": engine, "seconds_median": round(float(np.median(times)), 3),
                     "inertia": round(km.inertia_, 1), "ari": round(adjusted_rand_score(y, to_host(km.labels_)), 4)})
    print(json.dumps({"n": args.n, "d": args.d, "k": args.k, "device": backend.device,
                      "gpu": accelerators.gpu_summary(), "engines": rows}, indent=2))


if __name__ == "__main__":
    main()
