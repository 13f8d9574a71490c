"""Training time of the learned featurisers on synthetic users (CPU or GPU), from a fresh process.

    python benchmarks/learned_bench.py --users 100000 --features sequence,autoencoder --sequence-epochs 1

Generates `--users` synthetic users (sequential personas, 40 events each on average), prepares them,
and fits each featuriser with its defaults (epochs may be capped): seconds, epochs, events/s or
users/s, the fit's process CPU seconds (steadier than wall time when the cores are shared), final
losses, and the peak RSS of each fit (VmHWM, reset before it). JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--features", default="sequence,autoencoder")
    parser.add_argument("--cell", default="gru")
    parser.add_argument("--sequence-epochs", type=int, default=None)
    parser.add_argument("--autoencoder-epochs", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from gpuclust.backend import resolve_backend
    from gpuclust.features.learned.autoencoder import AutoencoderFeaturizer
    from gpuclust.features.learned.sequence import SequenceFeaturizer
    from gpuclust.frames import to_backend_frame
    from gpuclust.manifest import peak_rss_bytes, reset_peak_rss
    from gpuclust.preprocess.clean import Preprocessor
    from gpuclust.synth import SynthSpec, generate

    backend = resolve_backend(args.device)
    started = time.perf_counter()
    synthetic = generate(SynthSpec(n_users=args.users, n_items=args.items, n_groups=12, seed=0,
                                   events_per_user=40, sequential=True))
    data = Preprocessor().run(to_backend_frame(synthetic.events, backend), backend,
                              to_backend_frame(synthetic.items, backend))
    out = {"users": data.n_users, "items": data.n_items, "events": len(data.events), "device": backend.device,
           "prepare_seconds": round(time.perf_counter() - started, 2), "fits": {}}
    for name in args.features.split(","):
        reset_peak_rss()
        if name == "sequence":
            featurizer = SequenceFeaturizer(cell=args.cell, epochs=args.sequence_epochs, seed=0)
        else:
            featurizer = AutoencoderFeaturizer(epochs=args.autoencoder_epochs, seed=0)
        t0, c0 = time.perf_counter(), time.process_time()
        featurizer.fit_transform(data, backend)
        cpu_seconds = time.process_time() - c0
        info = featurizer.info_
        training = info["training"]
        out["fits"][name] = {
            "seconds": round(time.perf_counter() - t0, 2), "train_seconds": training["train_seconds"],
            "validation_seconds": training["validation_seconds"], "epochs_run": training["epochs_run"],
            "epochs_max": training["epochs_max"], "best_epoch": training["best_epoch"],
            "units_per_s": training["units_per_s"], "units": "events" if name == "sequence" else "users",
            "process_cpu_seconds": round(cpu_seconds, 2),  # the fit's own CPU time: steadier on shared cores
            "padding_share": info.get("padding_share"),
            "final_train_loss": training["final_train_loss"], "best_val_loss": training["best_val_loss"],
            "best_val_hr10": training["best_val_hr10"], "steps_per_epoch": info["steps_per_epoch"],
            "dims": info["dims"], "parameters": training["parameters"], "peak_rss_bytes": peak_rss_bytes(),
            **({"cell": info["cell"], "batch_tokens": info["batch_tokens"]} if name == "sequence" else
               {"batch_users": info["batch_users"]}),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
