"""GPU check: the pipeline on CUDA against the CPU on the same synthetic data; prints JSON.

Run from the source tree (PYTHONPATH=.); writes $OUT/pipeline.json when OUT is set. Reports, by
name, each GPU library it could not use here, instead of failing, and per stage which frame library,
array library and engine ran, with each GPU allocator's peak (scripts/gpu_check_coverage.py sums up).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from gpuclust import PipelineConfig, UserClusterer, accelerators
from gpuclust.backend import transfers
from gpuclust.synth import SynthSpec, generate


def main() -> int:
    if not (accelerators.torch_cuda().usable and accelerators.cupy().usable):
        print("skipped: no CUDA (" + "; ".join(a.reason for a in (accelerators.torch_cuda(), accelerators.cupy())
                                             if not a.usable) + ")")
        return 0
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    t = time.perf_counter()
    data = generate(SynthSpec(n_users=users, n_items=20_000, n_groups=20, events_per_user=50, seed=0))
    synth_s = time.perf_counter() - t
    result = {"users": users, "events": len(data.events), "synth_seconds": round(synth_s, 2),
              "gpu": accelerators.gpu_summary(),
              "unusable": {a.name: a.reason for a in accelerators.all_accelerators() if not a.usable}}
    for device in ("cuda", "cuda", "cpu"):  # the first CUDA run warms up kernels and caches
        config = PipelineConfig(device=device, seed=0)
        config.cluster.k = 20
        transfers.reset()
        t = time.perf_counter()
        p = UserClusterer(config=config).fit(data.events, data.items, data.truth)
        result[device] = {
            "seconds": round(time.perf_counter() - t, 3),
            "stages": stage_coverage(p.manifest_),
            "gpu_allocators": p.manifest_["timings"].get("gpu_allocators"),
            "ari": round(p.metrics_["ari"], 4),
            "silhouette": round(p.metrics_["silhouette"], 4),
            "device_to_host_bytes": p.manifest_["device_to_host_bytes"],
        }
    text = json.dumps(result, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "pipeline.json").write_text(text + "\n")
    return 0


def stage_coverage(manifest: dict) -> dict[str, dict]:
    """Per stage: seconds, the frame and array libraries it ran on, its engine where it has one, GPU peaks."""
    engines = {"cluster": manifest["cluster"]["engine"], "k_sweep": manifest["cluster"]["engine"]}
    if manifest.get("reduce"):
        engines["reduce"] = manifest["reduce"].get("engine")
    text = manifest["features"]["blocks"].get("text")
    if text:
        engines["features.text"] = f"torch encoder ({text.get('precision')})"
    out = {}
    for name, rec in manifest["timings"]["stages"].items():
        row = {key: rec[key] for key in ("seconds", "frame", "array", "gpu_peak_mib", "gpu_peak_sum_mib") if key in rec}
        if name in engines:
            row["engine"] = engines[name]
        out[name] = row
    return out


if __name__ == "__main__":
    sys.exit(main())
