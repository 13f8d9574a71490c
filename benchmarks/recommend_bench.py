"""Personal model against segments on a real log: HR@10 / NDCG@10 of global popularity, clusters,
item-kNN and EASE on the project's leave-last-out split, and where the cold-start threshold belongs.

    PYTHONPATH=. python benchmarks/recommend_bench.py \\
        --events ../shared/datasets/online-retail/online_retail.csv.gz --adapter online-retail --k 40 \\
        --out benchmarks/results/recommend-retail-cpu.json

Everything is fitted on the training part of one split (seed 0) and scored on its held-out items, the
protocol of `gpuclust evaluate`. EASE's λ and kNN's neighbourhood are chosen by `fit_personal` on its
own inner split of the training part. Clusters: the default pipeline at k, as `gpuclust run` fits it;
their list is the tuned blend of cluster and global popularity (what a saved model serves).
The threshold table scores users by their number of distinct training items: below the count where
the personal model stops beating the segment list, the segment list should be served.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np

from gpuclust import UserClusterer
from gpuclust.backend import resolve_backend, to_host
from gpuclust.config import PipelineConfig
from gpuclust.io.inputs import read_inputs
from gpuclust.preprocess.clean import Preprocessor
from gpuclust.recommend.evaluation import _clusters_by_user
from gpuclust.recommend.personal import fit_personal, target_ranks
from gpuclust.recommend.scoring import metrics_with_errors, popularity, rank_targets, seen_matrix
from gpuclust.recommend.split import leave_last_out

BUCKETS = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 25), (26, 10**9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", required=True)
    parser.add_argument("--adapter")
    parser.add_argument("--k", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    args = parser.parse_args()
    config = PipelineConfig(device=args.device).validate()
    backend = resolve_backend(config.device)
    xp = backend.xp
    inputs = read_inputs(backend.frame, config.columns, args.events, None, adapter=args.adapter)
    data = Preprocessor(config.preprocess, seed=config.seed).run(inputs.events, backend, None)
    outer = leave_last_out(data, seed=0)
    users, targets = outer.users, outer.items
    train_table = outer.train.table
    seen = seen_matrix(train_table, users, data.n_users, data.n_items, backend)
    distinct = to_host(xp.diff(seen.indptr))
    ranks, seconds, models = {}, {}, {}

    t0 = time.perf_counter()
    glob = popularity(train_table, xp.full(data.n_users, -1, dtype=xp.int64), data.n_items, backend)
    ranks["global popularity"] = rank_targets(glob, xp.zeros(len(users), dtype=xp.int64), targets, seen, 0.0, 10,
                                              backend)
    seconds["global popularity"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    run = copy.deepcopy(config)
    run.cluster.k, run.recommend.personal = args.k, "none"
    model = UserClusterer(config=run).fit(outer.train)
    clusters = _clusters_by_user(model, data, backend)
    pop = popularity(train_table, xp.where(clusters >= 0, clusters, -1), data.n_items, backend)
    own = clusters[users]
    w = model.segments_.blend_weight
    name = f"clusters (default pipeline, k={args.k}, blend w={w:.1f})"
    ranks[name] = rank_targets(pop, xp.where(own >= 0, own, pop.k), targets, seen, w, 10, backend)
    seconds[name] = time.perf_counter() - t0
    segment = name

    for kind in ("knn", "ease"):
        t0 = time.perf_counter()
        cfg = copy.deepcopy(config.recommend)
        cfg.personal = kind
        personal = fit_personal(train_table, data.n_users, data.n_items, backend, cfg, config.seed)
        ranks[personal.name] = target_ranks(personal, seen, targets, 10, backend)
        seconds[personal.name] = time.perf_counter() - t0
        models[personal.name] = personal.to_meta()
    ease = personal.name

    rows = [{"recommender": n, **metrics_with_errors(r, (10,)), "seconds": round(seconds[n], 2)} for n, r in ranks.items()]
    g, p = rows[0]["HR@10"], next(r for r in rows if r["recommender"] == ease)["HR@10"]
    for row in rows:
        row["captured_lift"] = round((row["HR@10"] - g) / (p - g), 4)
    buckets = []
    for low, high in BUCKETS:
        inside = (distinct >= low) & (distinct <= high)
        if inside.any():
            buckets.append({"distinct_items": f"{low}" if low == high else f"{low}-{high if high < 10**9 else ''}",
                            "users": int(inside.sum()),
                            **{n: metrics_with_errors(ranks[n][inside], (10,))["HR@10"] for n in (segment, ease)}})
    served = []
    for threshold in range(1, 8):
        mixed = np.where(distinct < threshold, ranks[segment], ranks[ease])
        served.append({"min_items": threshold, "segment_users": int((distinct < threshold).sum()),
                       **metrics_with_errors(mixed, (10,))})
    result = {"protocol": "leave-last-out, split seed 0, top 10 excluding training items", "users": int(len(targets)),
              "items": data.n_items, "events": data.n_events, "device": backend.device, "rows": rows,
              "by_distinct_training_items": buckets, "served_by_threshold": served, "personal_models": models}
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
