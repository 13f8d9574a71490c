"""Tokens/s of the cluster describer: one batch of a finished run's cluster prompts through a local LM.

    python benchmarks/describe_bench.py --run RUN_DIR --model MODEL_DIR [--device cpu|cuda] [--tokens 80]
        [--seconds 600] [--out result.json]

Prints (and with --out writes) the model, device, dtype, load and generation seconds, new tokens,
tokens/s, and each cluster's parsed name and description (None where the answer was unusable). Nothing in
the run folder is changed. With a randomly initialised model the figures measure the plumbing only.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=80)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    from gpuclust.backend import resolve_backend
    from gpuclust.explain.describe import parse_answer, prompt_for
    from gpuclust.explain.language_model import LocalLM
    from gpuclust.report.html import load_run

    profiles = [p for p in load_run(args.run).clusters if not p.get("suppressed") and not p.get("noise")]
    started = time.perf_counter()
    lm = LocalLM(args.model, resolve_backend(args.device).torch_device, args.tokens, args.seconds).load()
    loaded = time.perf_counter() - started
    result = lm.generate([prompt_for(p) for p in profiles])
    answers = [parse_answer(t) for t in result.texts]
    record = {
        "model": lm.name, **result.info, "torch_threads": torch.get_num_threads(), "machine": platform.node(),
        "clusters": len(profiles), "load_seconds": round(loaded, 2), "seconds": round(result.seconds, 2),
        "new_tokens": result.new_tokens, "timed_out": result.timed_out,
        "tokens_per_second": round(result.new_tokens / result.seconds, 2) if result.seconds else None,
        "answers": [{"cluster": p["cluster"], "rule_name": p.get("rule_name"), "raw": t,
                     "name": a[0] if a else None, "description": a[1] if a else None}
                    for p, t, a in zip(profiles, result.texts, answers, strict=True)],
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
