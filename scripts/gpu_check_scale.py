"""GPU check at scale: 1M users / 40M events, `gpuclust run --device cuda` then `--device cpu` on the same
machine and data; prints JSON (and writes $OUT/scale.json when OUT is set).

    PYTHONPATH=. python scripts/gpu_check_scale.py [USERS] [EVENTS_PER_USER] [--devices cuda,cpu]

Meant as one call of its own on the GPU test machine (about 3 minutes there), not part of gpu-check.sh.
Per device and stage it records seconds, the backend's frame and array libraries, how many events frames
a stage built (0 means the stage worked on the device event table), and each GPU allocator's peak; and
the end-to-end speed-up. The targets (issue 17): CUDA <= 10 s end to end at 1M users, every stage after
read on CuPy or torch arrays with no events frame, and >= 10x the CPU path of the same run.
`--devices cpu` at a small size is its CPU twin (tests/test_gpu_check_script.py): what it reads from the
manifest is checked in CI, so the first minutes on a GPU are not spent on a key that moved.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from gpuclust import accelerators

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("users", type=int, nargs="?", default=1_000_000)
    ap.add_argument("events_per_user", type=float, nargs="?", default=40.0)
    ap.add_argument("--devices", default="cuda,cpu", help="the runs, in order (cpu alone: the CPU twin)")
    args = ap.parse_args(argv)
    devices = args.devices.split(",")
    if "cuda" in devices and not (accelerators.torch_cuda().usable and accelerators.cupy().usable):
        print("skipped: no CUDA (" + "; ".join(a.reason for a in (accelerators.torch_cuda(), accelerators.cupy())
                                             if not a.usable) + ")")
        return 0
    users, per_user = args.users, args.events_per_user
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    work = Path(tempfile.mkdtemp(prefix="gpuclust-scale-"))
    data = work / "data"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gpuclust.cli.app", "synth", "--users", str(users), "--items", "20000",
                    "--groups", "20", "--events-per-user", str(per_user), "--out", str(data), "--json"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    result: dict = {"users": users, "events_per_user": per_user, "synth_seconds": round(time.perf_counter() - t, 1),
                    "gpu": accelerators.gpu_summary(),
                    "unusable": {a.name: a.reason for a in accelerators.all_accelerators() if not a.usable}}
    for device in devices:
        out = work / f"run-{device}"
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "gpuclust.cli.app", "run", "--events", str(data / "events.parquet"),
                               "--items", str(data / "items.parquet"), "--truth", str(data / "truth.parquet"),
                               "--features", "behaviour,tfidf", "--k", "20", "--device", device, "--out", str(out),
                               "--json"], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            result[device] = {"failed": proc.stderr.strip().splitlines()[-1:] or ["?"], "seconds": round(seconds, 1)}
            continue
        manifest = json.loads((out / "manifest.json").read_text())
        stages = manifest["timings"]["stages"]
        result[device] = {
            "process_seconds": round(seconds, 2),
            "total_seconds": manifest["timings"]["total_seconds"],
            "ari": manifest["metrics"].get("ari"),
            "peak_rss_mib": manifest["timings"].get("peak_rss_mib"),
            "gpu_allocators": manifest["timings"].get("gpu_allocators"),
            "stages": {name: {"seconds": s["seconds"], "frame": s.get("frame"), "array": s.get("array"),
                              "event_frames_built": s.get("event_frames_built"),
                              "gpu_peak": {k: v for k, v in s.items() if k.startswith("gpu")}}
                       for name, s in stages.items()},
        }
    if "total_seconds" in result.get("cuda", {}) and "total_seconds" in result.get("cpu", {}):
        cuda, cpu = result["cuda"], result["cpu"]
        result["speedup_end_to_end"] = round(cpu["total_seconds"] / cuda["total_seconds"], 2)
        result["targets"] = {
            "cuda_end_to_end_le_10s": cuda["total_seconds"] <= 10,
            "no_events_frame_after_read": not any(s["event_frames_built"] for s in cuda["stages"].values()),
            "speedup_ge_10x": result["speedup_end_to_end"] >= 10,
        }
    text = json.dumps(result, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "scale.json").write_text(text + "\n")
    return 1 if any("failed" in result[d] for d in devices) else 0


if __name__ == "__main__":
    sys.exit(main())
