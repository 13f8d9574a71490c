"""int8 (dynamic quantisation, CPU) against fp32 for the text encoder: speed, size, agreement, clusters.

    HF_HUB_OFFLINE=1 python benchmarks/int8_bench.py --items 600 --users 3000 --groups 8

With the bundled all-MiniLM-L6-v2 on the CPU:
  1. items/s of fp32 and int8 on item titles (synthetic, plus the Online Retail descriptions where
     ../shared/datasets/online-retail is present), best of --repeat runs, interleaved so that load from
     other processes hits both alike;
  2. the encoder's size (its state dict as torch.save writes it) and how many linear layers are int8;
  3. cosine agreement of the item vectors (mean, min);
  4. ARI of the clusters found with the text feature alone (and with behaviour + tfidf + text) on
     synthetic users with planted groups, fp32 vs int8, and the ARI between the two clusterings.
Results go to benchmarks/results/int8-cpu.{json,md} (or --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python benchmarks/x.py` from anywhere: the benchmarks package is importable
RETAIL = ROOT.parent / "shared" / "datasets" / "online-retail" / "online_retail.csv.gz"


def speed(encoders: dict, texts: list[str], repeat: int) -> dict[str, float]:
    for encoder in encoders.values():
        encoder.encode(texts[:64])  # warm-up
    best = dict.fromkeys(encoders, 0.0)
    for _ in range(repeat):
        for name, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode(texts)
            best[name] = max(best[name], len(texts) / (time.perf_counter() - start))
    return {name: round(v, 1) for name, v in best.items()}


def clusters_ari(data, model, features: tuple[str, ...], k: int) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score

    from gpuclust import PipelineConfig, UserClusterer

    labels, out = {}, {}
    for precision in ("fp32", "int8"):
        config = PipelineConfig(device="cpu", seed=0)
        config.cluster.k = k
        config.features.features = features
        config.features.text.precision = precision
        fitted = UserClusterer(config=config, embedding_model=model).fit(data.events, data.items, data.truth)
        labels[precision] = fitted.labels_.set_index("user_id")["cluster"]
        out[f"ari_{precision}"] = round(float(fitted.metrics_["ari"]), 4)
    common = labels["fp32"].index.intersection(labels["int8"].index)
    out["ari_between"] = round(float(adjusted_rand_score(labels["fp32"][common], labels["int8"][common])), 4)
    out["ari_drop"] = round(out["ari_fp32"] - out["ari_int8"], 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--retail-items", type=int, default=1000, help="Online Retail descriptions to time too")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "int8-cpu"))
    args = parser.parse_args()

    import pandas as pd

    from gpuclust.features.text.encoder import ItemEncoder
    from gpuclust.features.text.model import load_encoder
    from gpuclust.features.text.quantize import quantized_layers, serialized_bytes
    from gpuclust.synth import SynthSpec, generate

    model = load_encoder("default", device="cpu")
    data = generate(SynthSpec(n_users=args.users, n_items=args.items, n_groups=args.groups, seed=0))
    corpora = {"synthetic titles": data.items["title"].astype(str).tolist()}
    if RETAIL.is_file() and args.retail_items:
        retail = pd.read_csv(RETAIL, usecols=["StockCode", "Description"], dtype=str).dropna()
        corpora["Online Retail descriptions"] = retail.drop_duplicates("StockCode")["Description"].tolist()[
            : args.retail_items]
    fp32, int8 = ItemEncoder(model, precision="fp32"), ItemEncoder(model, precision="int8")
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_before": round(os.getloadavg()[0], 2)},
              "model": model.name, "corpora": {}}
    for name, texts in corpora.items():
        a, b = fp32.encode(texts).numpy(), int8.encode(texts).numpy()
        cosine = (a * b).sum(axis=1)
        result["corpora"][name] = {"texts": len(texts), "items_per_s": speed({"fp32": fp32, "int8": int8}, texts,
                                                                               args.repeat),
                                   "cosine_mean": round(float(cosine.mean()), 5),
                                   "cosine_min": round(float(cosine.min()), 5)}
        print(name, result["corpora"][name], file=sys.stderr)
    result["size_mib"] = {"fp32": round(serialized_bytes(model.model) / 2**20, 1),
                          "int8": round(serialized_bytes(int8.module_) / 2**20, 1)}
    result["int8_linear_layers"] = quantized_layers(int8.module_)
    result["clusters"] = {"text only": clusters_ari(data, model, ("text",), args.groups),
                          "behaviour+tfidf+text": clusters_ari(data, model, ("behaviour", "tfidf", "text"), args.groups)}
    result["machine"]["load_after"] = round(os.getloadavg()[0], 2)
    from benchmarks.method import write_results

    write_results(args.out, result, markdown(result, args))


def markdown(result: dict, args) -> str:
    lines = [f"# Text encoder int8 vs fp32, CPU ({result['machine']['cpus']} cores, load "
             f"{result['machine']['load_before']} -> {result['machine']['load_after']})", "",
             "| texts | n | fp32 items/s | int8 items/s | speed-up | cosine mean | cosine min |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, c in result["corpora"].items():
        s = c["items_per_s"]
        lines.append(f"| {name} | {c['texts']:,} | {s['fp32']} | {s['int8']} | {s['int8'] / s['fp32']:.2f}x "
                     f"| {c['cosine_mean']} | {c['cosine_min']} |")
    lines += ["", f"Size (state dict): fp32 {result['size_mib']['fp32']} MiB, int8 {result['size_mib']['int8']} MiB "
              f"({result['int8_linear_layers']} linear layers int8: the attention projections; embeddings and "
              "feed-forward layers stay fp32).", "",
              "| features | ARI fp32 | ARI int8 | drop | ARI fp32 vs int8 |", "|---|---:|---:|---:|---:|"]
    for name, c in result["clusters"].items():
        lines.append(f"| {name} | {c['ari_fp32']} | {c['ari_int8']} | {c['ari_drop']} | {c['ari_between']} |")
    lines += ["", "`HF_HUB_OFFLINE=1 python benchmarks/int8_bench.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out") + "`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
