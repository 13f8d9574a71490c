#!/usr/bin/env python
"""GPU check of the learned featurisers: throughput, MFU and speed-up over the CPU, within a minute.

On synthetic users (`SynthSpec`, sequential personas; default 100k users x 40 events, 20k items):
  - per sequence cell (GRU, causal Transformer): training on CUDA under autocast (bf16 where supported)
    at the GPU token budget (131k events a step; the full softmax is chunked over the items), for
    `--epochs` epochs; tokens/s of the last epoch (the first warms kernels), and MFU = flops_per_token x
    tokens/s / the measured bf16 matmul peak (the model's own FLOP count, not the kernels');
  - bf16 vs fp32 user vectors of the trained encoder: cosine min/mean;
  - the Mult-DAE: users/s of the last epoch, and its MFU;
  - the same code on this machine's CPU (every core) on a `--cpu-users` sample of the same catalogue,
    capped at `--cpu-steps` optimiser steps: tokens/s or users/s, and the speed-up.
A deadline (`--budget-seconds`, 55 by default) skips what is left (named in "skipped") rather than
overrun gpu-check.sh's step. Prints JSON and writes it to $OUT/learned.json (or `--json PATH`).
Without CUDA: prints "skipped: no CUDA ..." and exits 0 (`--cpu-smoke` runs a tiny version on the CPU).

    PYTHONPATH=. python scripts/gpu_check_learned.py [--users 100000 --items 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEADLINE_SECONDS = 55.0  # gpu-check.sh gives each check a few minutes; this one promises under a minute


def _synthetic(users: int, items: int, seed: int = 0):
    from gpuclust.synth import SynthSpec, generate

    return generate(SynthSpec(n_users=users, n_items=items, n_groups=8, seed=seed, events_per_user=40,
                              sequential=True))


def _on(backend, synthetic):
    from gpuclust.frames import to_backend_frame
    from gpuclust.preprocess.clean import Preprocessor

    return Preprocessor().run(to_backend_frame(synthetic.events, backend), backend,
                              to_backend_frame(synthetic.items, backend))


def _last_epoch_rate(training: dict) -> float:
    """Units per second of the last epoch's steps (validation excluded): the first epoch warms up."""
    last = training["history"][-1]
    stepping = last["seconds"] - last["validation_seconds"]
    return round(last["units"] / stepping, 1) if stepping > 0 else 0.0


def sequence_run(cell: str, data, backend, epochs: int, batch_tokens: int | None = None,
                 max_steps: int | None = None, precision: str = "auto") -> dict:
    from gpuclust.features.learned.sequence import SequenceFeaturizer

    featurizer = SequenceFeaturizer(cell=cell, epochs=epochs, validation_share=0.0, precision=precision, seed=0,
                                    batch_tokens=batch_tokens, max_steps=max_steps)
    started = time.perf_counter()
    vectors = featurizer.fit_transform(data, backend)
    info, training = featurizer.info_, featurizer.info_["training"]
    return {"featurizer": featurizer, "vectors": vectors, "tokens_per_s": _last_epoch_rate(training),
            "epochs": training["epochs_run"], "train_seconds": training["train_seconds"],
            "seconds": round(time.perf_counter() - started, 3), "precision": training["precision"],
            "flops_per_token": info["flops_per_token"], "batch_tokens": info["batch_tokens"],
            "padding_share": info["padding_share"], "steps_per_epoch": info["steps_per_epoch"],
            "events": info["events"], "oom_retries": training["oom_retries"],
            "final_train_loss": training["final_train_loss"]}


def autoencoder_run(data, backend, epochs: int, max_steps: int | None = None) -> dict:
    from gpuclust.features.learned.autoencoder import AutoencoderFeaturizer

    featurizer = AutoencoderFeaturizer(epochs=epochs, validation_share=0.0, seed=0, max_steps=max_steps)
    started = time.perf_counter()
    featurizer.fit_transform(data, backend)
    info, training = featurizer.info_, featurizer.info_["training"]
    # forward FLOPs per user: the sparse input product, encoder and decoder layers, the item logits; x 3
    hidden, dim, items = info["hidden"], info["dims"], info["n_items"]
    per_user = 2 * (info["entries"] / max(info["n_users"], 1) * hidden + 2 * hidden * dim + hidden * items)
    return {"users_per_s": _last_epoch_rate(training), "epochs": training["epochs_run"],
            "train_seconds": training["train_seconds"], "seconds": round(time.perf_counter() - started, 3),
            "precision": training["precision"], "batch_users": info["batch_users"],
            "flops_per_user": int(3 * per_user), "final_train_loss": training["final_train_loss"]}


class Deadline:
    """Seconds left of the check's budget; parts that would start past it are skipped and named."""

    def __init__(self, seconds: float) -> None:
        self.started, self.seconds, self.skipped = time.perf_counter(), seconds, []

    def allows(self, what: str, needs: float = 0.0) -> bool:
        if time.perf_counter() - self.started + needs <= self.seconds:
            return True
        self.skipped.append(what)
        return False

    @property
    def elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 1)


@contextlib.contextmanager
def cpu_threads(threads: int):
    """Every core for the CPU comparison (`GPUCLUST_TORCH_THREADS`; the featurisers default to one)."""
    before = os.environ.get("GPUCLUST_TORCH_THREADS")
    os.environ["GPUCLUST_TORCH_THREADS"] = str(threads)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("GPUCLUST_TORCH_THREADS")
        else:
            os.environ["GPUCLUST_TORCH_THREADS"] = before


def _speedup(fast: float, slow: float) -> float | None:
    return round(fast / slow, 1) if slow > 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--cpu-users", type=int, default=2_000)
    parser.add_argument("--cpu-steps", type=int, default=24, help="optimiser steps of each CPU comparison")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="deadline of the whole check (default 55 s on CUDA; none for --cpu-smoke)")
    parser.add_argument("--json", default=None, help="where to write the JSON (default $OUT/learned.json)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny run on the CPU (tests this script)")
    args = parser.parse_args(argv)
    deadline = Deadline(args.budget_seconds if args.budget_seconds is not None else
                        float("inf") if args.cpu_smoke else DEADLINE_SECONDS)

    from gpuclust import accelerators
    from gpuclust.backend import cpu_backend, resolve_backend, to_host

    if args.cpu_smoke:
        args.users, args.items, args.cpu_users, args.epochs, args.cpu_steps = 300, 200, 300, 1, 4
        gpu = cpu_backend()
    elif not (accelerators.torch_cuda().usable and accelerators.cupy().usable):
        print(f"skipped: no CUDA ({accelerators.torch_cuda().reason}; {accelerators.cupy().reason})")
        return 0
    else:
        gpu = resolve_backend("cuda")
    import numpy as np

    from gpuclust.features.learned import defaults
    from scripts.gpu_check_encoder import matmul_peak_tflops

    peak = matmul_peak_tflops(gpu.torch_device, 256 if args.cpu_smoke else 8192, 2 if args.cpu_smoke else 20)
    synthetic = _synthetic(args.users, args.items)
    data = _on(gpu, synthetic)
    cpu_data = _on(cpu_backend(), _synthetic(args.cpu_users, args.items, seed=1))
    threads = os.cpu_count() or 1
    budget = None if args.cpu_smoke else defaults.GPU_BATCH_TOKENS
    result: dict = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "device": gpu.torch_device,
                    "users": int(data.n_users), "items": int(data.n_items), "events": len(synthetic.events),
                    "bf16_matmul_peak_tflops": round(peak, 1),
                    "cpu": {"threads": threads, "users": int(cpu_data.n_users), "max_steps": args.cpu_steps},
                    "sequence": {}}

    def mfu(flops: int, rate: float) -> float | None:
        return round(flops * rate / 1e12 / peak, 4) if peak else None

    for cell in ("gru", "transformer"):
        if not deadline.allows(f"sequence {cell}"):
            continue
        run = sequence_run(cell, data, gpu, args.epochs, batch_tokens=budget)
        reference = run["featurizer"]
        reference.precision_ = "fp32"
        fp32, low = to_host(reference.transform(data, gpu)), to_host(run["vectors"])
        cosine = (fp32 * low).sum(1) / np.maximum(np.linalg.norm(fp32, axis=1) * np.linalg.norm(low, axis=1), 1e-12)
        row = {"gpu": {k: v for k, v in run.items() if k not in ("featurizer", "vectors")},
               "mfu": mfu(run["flops_per_token"], run["tokens_per_s"]),
               "cosine_low_vs_fp32": {"min": round(float(cosine.min()), 4), "mean": round(float(cosine.mean()), 4)}}
        if deadline.allows(f"sequence {cell} on the CPU", needs=5.0):
            with cpu_threads(threads):
                cpu = sequence_run(cell, cpu_data, cpu_backend(), 2, max_steps=args.cpu_steps, precision="fp32")
            row["cpu"] = {k: v for k, v in cpu.items() if k not in ("featurizer", "vectors")}
            row["speedup_tokens_per_s"] = _speedup(run["tokens_per_s"], cpu["tokens_per_s"])
        result["sequence"][cell] = row
    if deadline.allows("autoencoder"):
        ae = {"gpu": autoencoder_run(data, gpu, args.epochs)}
        ae["mfu"] = mfu(ae["gpu"]["flops_per_user"], ae["gpu"]["users_per_s"])
        if deadline.allows("autoencoder on the CPU", needs=3.0):
            with cpu_threads(threads):
                ae["cpu"] = autoencoder_run(cpu_data, cpu_backend(), 2, max_steps=args.cpu_steps)
            ae["speedup_users_per_s"] = _speedup(ae["gpu"]["users_per_s"], ae["cpu"]["users_per_s"])
        result["autoencoder"] = ae
    result["skipped"] = deadline.skipped
    result["seconds"] = deadline.elapsed
    text = json.dumps(result, indent=2, default=str)
    print(text)
    target = args.json or (os.path.join(os.environ["OUT"], "learned.json") if os.environ.get("OUT") else None)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
