#!/usr/bin/env python
"""GPU check of the torch KMeans engine: the same seeded data and seed on CUDA and on the CPU must agree.

Prints JSON with the inertia on each device, their relative difference (must be < 1%), the ARI between the
two labelings, and seconds on each (CUDA timed after a warm-up run, synchronised). Writes $OUT/kmeans.json
when OUT is set. Without CUDA: prints "skipped: no CUDA" and exits 0 (`--cpu-smoke` runs a tiny CPU-vs-CPU
version to test this script). Exit code 1 when the agreement check fails.

    PYTHONPATH=. python scripts/gpu_check_kmeans.py            # 200k x 64, k=32: well under 60 s on an H100
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAX_REL_DIFF = 0.01


def make_data(n: int, d: int, k: int, seed: int):
    """Gaussian groups of unequal spread around random centres, overlapping enough that Lloyd runs ~30-50
    iterations. Seeding draws come from one CPU generator, so both devices start alike; on the CPU a 1e-6
    relative perturbation of the data leaves labels identical (ARI 1.0), so a real device difference shows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(k, d))
    groups = rng.integers(0, k, n)
    spread = rng.uniform(0.5, 2.0, size=k)
    x = centres[groups] + rng.normal(size=(n, d)) * spread[groups, None]
    return x.astype(np.float32)


def run(x, device: str, k: int, n_init: int, seed: int) -> tuple[object, float]:
    import torch

    from gpuclust.cluster.torch_kmeans import TorchKMeans

    tensor = torch.from_numpy(x).to(device)
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    model = TorchKMeans(k, n_init=n_init, max_iter=100, tol=1e-4, random_state=seed, device=device).fit(tensor)
    if device == "cuda":
        torch.cuda.synchronize()
    return model, time.perf_counter() - started


def check(n: int, d: int, k: int, n_init: int, seed: int, devices: tuple[str, str]) -> dict:
    """Run on devices[0] and devices[1]; result keys are suffixed by device (the second "cpu_ref" if equal)."""
    import torch
    from sklearn.metrics import adjusted_rand_score

    x = make_data(n, d, k, seed)
    if devices[0] == "cuda":
        run(x[: min(n, 20_000)], "cuda", k, 1, seed)  # warm-up: CUDA context, kernels, cuBLAS handles
    fast, fast_s = run(x, devices[0], k, n_init, seed)
    ref, ref_s = run(x, devices[1], k, n_init, seed)
    rel = abs(fast.inertia_ - ref.inertia_) / ref.inertia_
    a, b = devices[0], devices[1] if devices[1] != devices[0] else devices[1] + "_ref"
    result = {
        "check": "torch kmeans: CUDA vs CPU on the same data and seed",
        "shape": [n, d], "k": k, "n_init": n_init, "seed": seed, "devices": list(devices),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        f"inertia_{a}": fast.inertia_, f"inertia_{b}": ref.inertia_,
        "relative_difference": rel,
        "ari": float(adjusted_rand_score(ref.labels_.cpu().numpy(), fast.labels_.cpu().numpy())),
        f"seconds_{a}": round(fast_s, 3), f"seconds_{b}": round(ref_s, 3),
        f"n_iter_{a}": fast.n_iter_, f"n_iter_{b}": ref.n_iter_,
        "max_relative_difference": MAX_REL_DIFF,
    }
    result["ok"] = rel < MAX_REL_DIFF
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--n-init", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny CPU-vs-CPU run (tests this script)")
    args = parser.parse_args(argv)

    import torch

    if args.cpu_smoke:
        result = check(2_000, 8, 4, 1, args.seed, ("cpu", "cpu"))
    elif not torch.cuda.is_available():
        print("skipped: no CUDA (torch.cuda.is_available() is False)")
        return 0
    else:
        result = check(args.n, args.d, args.k, args.n_init, args.seed, ("cuda", "cpu"))
    text = json.dumps(result, indent=2)
    print(text)
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "kmeans.json").write_text(text + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
