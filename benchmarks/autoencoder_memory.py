"""Peak memory of the autoencoder featuriser on a large sparse users x items matrix, never densified.

    python benchmarks/autoencoder_memory.py --users 1000000 --items 100000 --per-user 30 --steps 60

A seeded CSR matrix (Zipf item popularity, `--per-user` distinct items per user on average) is built
in NumPy; `AutoencoderFeaturizer.fit_matrix` trains `--steps` optimiser steps on it (sampled softmax:
the catalogue is above FULL_SOFTMAX_ITEMS) and then encodes every user. Reported: the matrix's bytes,
the peak RSS of training and of encoding (VmHWM, reset before each), seconds per step, the projected
seconds per epoch, and what a dense float32 users x items matrix would have needed. JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def synthetic_csr(users: int, items: int, per_user: float, seed: int):
    """users x items CSR of log1p weights; rows hold distinct items drawn with Zipf popularity."""
    import scipy.sparse

    rng = np.random.default_rng(seed)
    counts = np.maximum(1, rng.poisson(per_user, users)).astype(np.int64)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    cdf = np.cumsum(popularity / popularity.sum())
    cols = np.searchsorted(cdf, rng.random(int(counts.sum()))).clip(0, items - 1).astype(np.int32)
    rows = np.repeat(np.arange(users, dtype=np.int32), counts)
    values = np.log1p(rng.integers(1, 4, len(cols))).astype(np.float32)
    matrix = scipy.sparse.csr_matrix((values, (rows, cols)), shape=(users, items), dtype=np.float32)
    matrix.sum_duplicates()
    return matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--per-user", type=float, default=30.0)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--kind", default="dae")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from gpuclust.backend import resolve_backend, to_host
    from gpuclust.features.learned.autoencoder import AutoencoderFeaturizer
    from gpuclust.manifest import peak_rss_bytes, reset_peak_rss

    backend = resolve_backend(args.device)
    started = time.perf_counter()
    matrix = synthetic_csr(args.users, args.items, args.per_user, args.seed)
    if backend.on_gpu:
        matrix = backend.sparse.csr_matrix(matrix)
    build_seconds = time.perf_counter() - started
    matrix_bytes = int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes)
    before = peak_rss_bytes()
    reset_peak_rss()
    featurizer = AutoencoderFeaturizer(kind=args.kind, epochs=1, max_steps=args.steps, seed=args.seed)
    vectors = featurizer.fit_matrix(matrix, backend)
    info = featurizer.info_
    training = info["training"]
    train_peak = peak_rss_bytes()
    steps = min(args.steps, info["steps_per_epoch"])
    per_step = (training["train_seconds"] - training["validation_seconds"]) / max(steps, 1)
    result = {
        "users": args.users, "items": args.items, "entries": int(matrix.nnz), "kind": args.kind,
        "device": backend.device, "matrix_bytes": matrix_bytes, "matrix_build_seconds": round(build_seconds, 2),
        "dense_float32_bytes": args.users * args.items * 4, "peak_rss_before_bytes": before,
        "peak_rss_training_and_encoding_bytes": train_peak, "steps": steps,
        "batch_users": info["batch_users"], "negatives": info["negatives"], "hidden": info["hidden"],
        "dims": info["dims"], "parameters": training["parameters"],
        "train_seconds": training["train_seconds"], "validation_seconds": training["validation_seconds"],
        "seconds_per_step": round(per_step, 4),
        "steps_per_epoch": info["steps_per_epoch"],
        "projected_epoch_seconds": round(per_step * info["steps_per_epoch"], 1),
        "validation_users": info["validation_users"], "featurizer_seconds": info["seconds"],
        "vectors_shape": list(vectors.shape), "finite": bool(np.isfinite(to_host(vectors)).all()),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
