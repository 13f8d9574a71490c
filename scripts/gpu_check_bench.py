#!/usr/bin/env python
"""Reduced benchmark for the GPU test machine (about 3 minutes on an H100); JSON, Markdown, plots to $OUT.

That machine has CUDA torch, CuPy, transformers, pandas and scikit-learn but no cuDF, cuML, FAISS or model
files, so the text feature (and the textbook contender) use a seeded random-weight BERT in MiniLM-L6 shape
with a word tokenizer over the catalogue: speed does not need trained weights, but ARI with random
weights says nothing about MiniLM's quality (the behaviour and TF-IDF features still carry the groups).
Each measured size runs in a fresh process (`benchmarks.worker`): GPU pools, caches and leftovers of a
larger size must not reach a smaller one, or the fitted memory law and the smallest-GPU advice are wrong.
Steps that would overrun the budget are skipped and named. Without CUDA it prints "skipped: no CUDA
(...)" and exits 0; `--cpu-smoke` runs a tiny version on the CPU to test this script.

    PYTHONPATH=. python scripts/gpu_check_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL = {"stages_users": 100_000, "scaling_users": (10_000, 30_000, 100_000, 300_000), "contender_users": (2_000, 5_000),
        "engines_users": 50_000, "items": 20_000, "groups": 20, "k": 20, "model": "random:minilm-l6", "warmup": 500,
        "scaling_contender": "gpuclust-gpu"}
SMOKE = {"stages_users": 400, "scaling_users": (200, 400, 800), "contender_users": (200,), "engines_users": 400,
         "items": 300, "groups": 3, "k": 3, "model": "random:tiny", "warmup": 100,
         "scaling_contender": "gpuclust-cpu"}  # exercises the scaling fit and its check without a GPU


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=180.0, help="stop starting new steps after this")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (tests this script)")
    args = parser.parse_args(argv)

    from benchmarks.method import cuda_usable

    usable, why = cuda_usable()
    if not usable and not args.cpu_smoke:
        print(f"skipped: no CUDA ({why})")
        return 0
    plan = SMOKE if args.cpu_smoke else FULL
    out_dir = Path(os.environ.get("OUT") or ROOT / "gpu-check-out")
    started = time.perf_counter()
    from benchmarks import report

    path = report.results_path(out_dir, name_prefix(args.cpu_smoke))
    results = run_plan(plan, args.budget_s, started, lambda r: report.save(r, path))
    written = report.save(results, path)
    (out_dir / "bench.json").write_text(json.dumps(summary(results, time.perf_counter() - started), indent=1) + "\n")
    print(json.dumps(summary(results, time.perf_counter() - started), indent=1))
    print("wrote", ", ".join(str(p) for p in [*written, out_dir / "bench.json"]))
    return 0


def name_prefix(smoke: bool) -> str:
    from benchmarks.method import device_label

    return ("smoke-" if smoke else "gpucheck-") + device_label()


def run_plan(plan: dict, budget_s: float, started: float, save) -> dict:
    """Stages, GPU scaling, contenders, engines; `save(results)` after each step so that a timeout
    (gpu-check.sh gives each check 240 s) keeps what was measured."""
    from benchmarks import report
    from benchmarks.suites import BenchOptions, run_suite
    from benchmarks.worker import run_isolated

    base = BenchOptions(repeats=2, items=plan["items"], groups=plan["groups"], k=plan["k"], model=plan["model"],
                        warmup_users=plan["warmup"], isolate=True, run_budget_s=60.0)
    results: dict = {}
    command = "PYTHONPATH=. python scripts/gpu_check_bench.py"

    def left() -> float:
        return budget_s - (time.perf_counter() - started)

    def safe(contender: str, workload, repeats: int) -> dict:
        """One size in a fresh process; a failure or timeout becomes an `error` in its record."""
        job = {"contender": contender, "workload": workload.to_dict(), "repeats": repeats,
               "warmup_users": plan["warmup"]}
        return {**run_isolated(job, timeout_s=max(30.0, left())), "process": "fresh"}

    # 1. stages: CPU once, GPU twice, same users
    w = base.workload(plan["stages_users"])
    t = time.perf_counter()
    stage_runs = {"gpuclust-gpu": safe("gpuclust-gpu", w, 2), "gpuclust-cpu": safe("gpuclust-cpu", w, 1)}
    results = report.merge(results, "stages", {"options": base.to_dict(), "workload": w.to_dict(), "runs": stage_runs,
                                               "wall_seconds": round(time.perf_counter() - t, 1),
                                               "note": "one process; CPU 1 repeat, GPU 2"}, command)
    save(results)

    # 2. scaling on the GPU (the CPU's is the CPU machine's job), for `gpuclust size` and its check
    t = time.perf_counter()
    contender, gpu_runs = plan["scaling_contender"], []
    for users in plan["scaling_users"]:
        if users == plan["stages_users"]:
            gpu_runs.append(stage_runs[contender])
            continue
        if left() < 45:
            gpu_runs.append({"contender": contender, "workload": base.workload(users).to_dict(),
                             "skipped": "skipped: out of this check's time budget"})
            continue
        gpu_runs.append(safe(contender, base.workload(users), 1 if users > 100_000 else 2))
    workload = base.workload(0).to_dict() | {"users": "varies"}
    results = report.merge(results, "scaling", {"options": base.to_dict(), "workload": workload,
                                                "runs": {contender: gpu_runs},
                                                "wall_seconds": round(time.perf_counter() - t, 1)}, command)
    save(results)

    # 3. contenders at small sizes (the CPU contenders are what limits the size here)
    if left() > 40:
        users = tuple(u for i, u in enumerate(plan["contender_users"]) if i == 0 or left() > 120)
        options = BenchOptions(**{**base.to_dict(), "users": users, "target_users": users[-1], "repeats": 2})
        results = report.merge(results, "contenders", run_suite("contenders", options, results), command)
        save(results)
    # 4. KMeans engines and density on the fused features (text left out with random weights)
    if left() > 40:
        options = BenchOptions(**{**base.to_dict(), "users": (plan["engines_users"],), "repeats": 2,
                                  "density_sample": min(5_000, plan["engines_users"])})
        results = report.merge(results, "engines", run_suite("engines", options, results), command)
    results["skipped_steps"] = [s for s in ("contenders", "engines") if s not in results["suites"]]
    results["not_reachable_here"] = results["environment"].get("unusable_accelerators", {})
    return results


def summary(results: dict, seconds: float) -> dict:
    """The headline figures, small enough to read in the check's log."""
    suites = results["suites"]
    out: dict = {"device": results["device"], "seconds": round(seconds, 1), "skipped_steps": results["skipped_steps"],
                 "not_reachable_here": results["not_reachable_here"]}
    st = suites["stages"]["runs"]
    cpu, gpu = st["gpuclust-cpu"], st["gpuclust-gpu"]
    out["stages"] = {"users": suites["stages"]["workload"]["users"],
                     "cpu_s": cpu.get("seconds", {}).get("median"), "gpu_s": gpu.get("seconds", {}).get("median"),
                     "gpu_not_run": gpu.get("not_run") or gpu.get("error"), "cpu_error": cpu.get("error"),
                     "per_stage_speedup": {n: round(cpu["stages"][n]["seconds"]["median"]
                                                    / max(gpu["stages"][n]["seconds"]["median"], 1e-6), 1)
                                           for n in cpu.get("stages", {}) if n in gpu.get("stages", {})}}
    check = next(iter(suites["scaling"].get("sizing_check", {}).values()), None)
    if check:
        out["sizing_check"] = {"predicted_users": check["predicted_users"], "end_to_end": check["end_to_end"],
                               "gpu_peak": check.get("gpu_peak")}
    if "contenders" in suites:
        out["contenders"] = {c: {r["workload"]["users"]: {"s": r.get("seconds", {}).get("median"),
                                                          "ari": r.get("metrics", {}).get("ari"),
                                                          "note": r.get("not_run") or r.get("error")}
                                 for r in runs} for c, runs in suites["contenders"]["runs"].items()}
    if "engines" in suites:
        out["kmeans"] = [{k: r.get(k) for k in ("engine", "device", "seconds", "ari", "not_run")}
                         for r in suites["engines"]["kmeans"]]
    return out


if __name__ == "__main__":
    sys.exit(main())
