#!/usr/bin/env python
"""GPU check of the text encoder: reduced-precision agreement, throughput and model FLOP utilisation.

Runs on the project's GPU test machine, which has no pretrained weights: each shape (MiniLM-L6, bert-base)
is a `BertModel` with seeded random weights fed random token ids (no tokenizer). For each shape:
  - bf16 and fp16 pooled vectors vs fp32: cosine min/mean (must be >= 0.99);
  - bf16 throughput over a few token budgets: items/s, non-pad tokens/s, padding share, and how many
    batches ran unpadded (one length: no attention mask, so SDPA may take its flash kernel);
  - MFU = useful FLOPs / seconds / measured bf16 matmul peak of this card, where useful FLOPs =
    2 x non-embedding params x non-pad tokens + attention (4 x layers x hidden x sum of length^2).
Prints JSON and writes it to $OUT/encoder.json when OUT is set. Without CUDA: prints
"skipped: no CUDA ..." and exits 0 (`--cpu-smoke` runs a tiny version on the CPU to test this script).

    PYTHONPATH=. python scripts/gpu_check_encoder.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIN_COSINE = 0.99
TARGETS = {"minilm-l6": {"items_per_s": 50_000}, "bert-base": {"mfu": 0.35}}
# (shape, items, min_len, max_len): item-title-like lengths for MiniLM, longer texts for bert-base
WORKLOADS = [("minilm-l6", 200_000, 8, 48), ("bert-base", 32_768, 32, 128)]
SMOKE_WORKLOADS = [("tiny", 512, 4, 24)]


def matmul_peak_tflops(device: str, n: int, iters: int) -> float:
    """bf16 dense matmul TFLOP/s measured on this device (the MFU denominator)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(iters):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - started) / iters)
    return 2 * n**3 / best / 1e12


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def useful_flops(model, lengths) -> float:
    """2 x non-embedding params per token + attention scores and mixing (QK^T, AV) per sequence."""
    import numpy as np

    cfg = model.config
    params = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("embeddings."))
    lengths = np.asarray(lengths, dtype=np.float64)
    attention = 4.0 * cfg.num_hidden_layers * cfg.hidden_size * float((lengths**2).sum())
    return 2.0 * params * float(lengths.sum()) + attention


def agreement(loaded, tokens, precisions) -> dict:
    import torch

    from gpuclust.features.text.encoder import ItemEncoder

    reference = ItemEncoder(loaded, precision="fp32").encode_tokens(tokens)
    out = {}
    for precision in precisions:
        low = ItemEncoder(loaded, precision=precision).encode_tokens(tokens)
        cos = torch.nn.functional.cosine_similarity(reference, low, dim=1)
        out[precision] = {"min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 5)}
    return out


def throughput(loaded, tokens, budgets, peak_tflops: float) -> list[dict]:
    from gpuclust.features.text.encoder import ItemEncoder

    flops = useful_flops(loaded.model, tokens.lengths)
    rows = []
    for budget in budgets:
        encoder = ItemEncoder(loaded, precision="bf16", batch_tokens=budget)
        best = None
        for _ in range(2):  # the first pass warms kernels and cuBLAS heuristics for each width
            encoder.encode_tokens(tokens)
            if best is None or encoder.stats_.seconds < best.seconds:
                best = encoder.stats_
        tflops = flops / best.seconds / 1e12
        rows.append({"batch_tokens": best.batch_tokens, "batches": best.batches, "seconds": round(best.seconds, 4),
                     "items_per_s": round(best.items_per_s), "tokens_per_s": round(best.tokens_per_s),
                     "padding_share": round(best.padding_share, 4), "unpadded_batches": best.unpadded_batches,
                     "useful_tflops": round(tflops, 3),
                     "mfu": round(tflops / peak_tflops, 4), "oom_retries": best.oom_retries})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny run on the CPU (tests this script)")
    parser.add_argument("--agreement-items", type=int, default=2048)
    args = parser.parse_args(argv)

    import torch

    from benchmarks.random_models import random_model, random_tokens
    from gpuclust import accelerators

    smoke = args.cpu_smoke
    if not smoke and not accelerators.torch_cuda().usable:
        print(f"skipped: no CUDA ({accelerators.torch_cuda().reason})")
        return 0
    device = "cpu" if smoke else "cuda"
    precisions = ["bf16"] if smoke else ["bf16", "fp16"]
    started = time.perf_counter()
    peak = matmul_peak_tflops(device, 256 if smoke else 8192, 2 if smoke else 50)
    report: dict = {"device": "cpu (smoke)" if smoke else torch.cuda.get_device_name(0),
                    "torch": torch.__version__, "peak_bf16_matmul_tflops": round(peak, 3),
                    "min_cosine_required": MIN_COSINE, "shapes": {}}
    ok = True
    for shape, n, lo, hi in SMOKE_WORKLOADS if smoke else WORKLOADS:
        loaded = random_model(shape, seed=0, device=device)
        vocab = loaded.model.config.vocab_size
        check = random_tokens(min(args.agreement_items, n), min_len=lo, max_len=hi, vocab_size=vocab, seed=1)
        agree = agreement(loaded, check, precisions)
        ok &= all(v["min"] >= MIN_COSINE for v in agree.values())
        tokens = random_tokens(n, min_len=lo, max_len=hi, vocab_size=vocab, seed=2)
        budgets = [4096, None] if smoke else [32_768, 131_072, None]
        rows = throughput(loaded, tokens, budgets, peak)
        best = max(rows, key=lambda r: r["items_per_s"])
        report["shapes"][shape] = {
            "items": n, "lengths": [lo, hi], "mean_length": round(float(tokens.lengths.mean()), 1),
            "params": sum(p.numel() for p in loaded.model.parameters()),
            "agreement_vs_fp32": agree, "bf16_throughput": rows, "best": best,
            "targets": {k: {"target": v, "measured": best[k], "met": best[k] >= v}
                        for k, v in TARGETS.get(shape, {}).items()},
        }
        del loaded
        if device == "cuda":
            torch.cuda.empty_cache()
    report["agreement_ok"] = bool(ok)
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["OUT"]) / "encoder.json").write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
