#!/usr/bin/env python
"""GPU check of the learned featurisers: throughput, MFU-style utilisation and speed-up over the CPU.

On synthetic users (`SynthSpec`, sequential personas), per sequence cell (GRU, Transformer):
  - training on CUDA under autocast (bf16 where supported): events (tokens) per second, and
    utilisation = flops_per_token x tokens/s / measured bf16 matmul peak (an MFU-style figure: the
    model's own FLOP count, not the kernels');
  - the same code on the CPU for one epoch of a 10k-user slice: tokens/s, and the speed-up;
  - bf16 vs fp32 user vectors of the trained encoder: cosine min/mean;
and the Mult-DAE: users/s on CUDA vs the CPU. Prints JSON and writes $OUT/learned.json when OUT is set.
Without CUDA: prints "skipped: no CUDA ..." and exits 0 (`--cpu-smoke` runs a tiny version on the CPU).

    PYTHONPATH=. python scripts/gpu_check_learned.py [--users 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _prepare(users: int, seed: int = 0):
    from gpuclust.backend import cpu_backend
    from gpuclust.preprocess.clean import Preprocessor
    from gpuclust.synth import SynthSpec, generate

    data = generate(SynthSpec(n_users=users, n_items=max(200, users // 20), n_groups=8, seed=seed,
                              events_per_user=40, sequential=True))
    return data, Preprocessor().run(data.events, cpu_backend(), data.items)


def _on(backend, synthetic):
    from gpuclust.frames import to_backend_frame
    from gpuclust.preprocess.clean import Preprocessor

    return Preprocessor().run(to_backend_frame(synthetic.events, backend), backend,
                              to_backend_frame(synthetic.items, backend))


def sequence_run(cell: str, data, backend, epochs: int, precision: str = "auto") -> dict:
    from gpuclust.features.learned.sequence import SequenceFeaturizer

    featurizer = SequenceFeaturizer(cell=cell, epochs=epochs, validation_share=0.0, precision=precision, seed=0)
    started = time.perf_counter()
    vectors = featurizer.fit_transform(data, backend)
    training = featurizer.info_["training"]
    return {"featurizer": featurizer, "vectors": vectors, "tokens_per_s": training["units_per_s"],
            "train_seconds": training["train_seconds"], "seconds": time.perf_counter() - started,
            "precision": training["precision"], "flops_per_token": featurizer.info_["flops_per_token"],
            "batch_tokens": featurizer.info_["batch_tokens"], "events": featurizer.info_["events"],
            "oom_retries": training["oom_retries"], "final_train_loss": training["final_train_loss"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--cpu-users", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny run on the CPU (tests this script)")
    args = parser.parse_args(argv)

    from gpuclust import accelerators
    from gpuclust.backend import cpu_backend, resolve_backend, to_host

    if args.cpu_smoke:
        args.users, args.cpu_users, args.epochs = 300, 300, 1
        gpu = cpu_backend()
    elif not (accelerators.torch_cuda().usable and accelerators.cupy().usable):
        print(f"skipped: no CUDA ({accelerators.torch_cuda().reason}; {accelerators.cupy().reason})")
        return 0
    else:
        gpu = resolve_backend("cuda")
    from scripts.gpu_check_encoder import matmul_peak_tflops

    peak = matmul_peak_tflops(gpu.torch_device, 256 if args.cpu_smoke else 8192, 2 if args.cpu_smoke else 20)
    synthetic, _ = _prepare(args.users)
    small, cpu_data = _prepare(args.cpu_users)
    data = _on(gpu, synthetic)
    result: dict = {"device": gpu.torch_device, "users": args.users, "events": len(synthetic.events),
                    "bf16_matmul_peak_tflops": round(peak, 1), "sequence": {}}
    import numpy as np

    for cell in ("gru", "transformer"):
        run = sequence_run(cell, data, gpu, args.epochs)
        cpu = sequence_run(cell, cpu_data, cpu_backend(), 1, precision="fp32")
        reference = run["featurizer"]
        reference.precision_ = "fp32"
        fp32 = to_host(reference.transform(data, gpu))
        low = to_host(run["vectors"])
        cosine = (fp32 * low).sum(1) / np.maximum(np.linalg.norm(fp32, axis=1) * np.linalg.norm(low, axis=1), 1e-12)
        achieved = run["flops_per_token"] * run["tokens_per_s"] / 1e12
        result["sequence"][cell] = {
            "gpu": {k: v for k, v in run.items() if k not in ("featurizer", "vectors")},
            "cpu": {k: v for k, v in cpu.items() if k not in ("featurizer", "vectors")},
            "speedup_tokens_per_s": round(run["tokens_per_s"] / max(cpu["tokens_per_s"], 1e-9), 1),
            "model_tflops": round(achieved, 3), "utilisation": round(achieved / peak, 4) if peak else None,
            "cosine_low_vs_fp32": {"min": round(float(cosine.min()), 4), "mean": round(float(cosine.mean()), 4)},
        }
    from gpuclust.features.learned.autoencoder import AutoencoderFeaturizer

    ae = {}
    for name, backend, prepared in (("gpu", gpu, data), ("cpu", cpu_backend(), cpu_data)):
        featurizer = AutoencoderFeaturizer(epochs=args.epochs, validation_share=0.0, seed=0)
        featurizer.fit_transform(prepared, backend)
        ae[name] = {"users_per_s": featurizer.info_["training"]["units_per_s"],
                    "train_seconds": featurizer.info_["training"]["train_seconds"]}
    ae["speedup_users_per_s"] = round(ae["gpu"]["users_per_s"] / max(ae["cpu"]["users_per_s"], 1e-9), 1)
    result["autoencoder"] = ae
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "learned.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
