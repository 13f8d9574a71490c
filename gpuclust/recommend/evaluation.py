"""Do the clusters help recommend? Leave-last-out HR@K / NDCG@K of popularity inside the user's cluster.

Three recommenders, each excluding what the user already has in training:
    global popularity    share of all (weighted) training events per item
    cluster popularity   the same share inside the user's cluster
    blend                w * cluster share + (1 - w) * global share, w tuned on a validation split
                         (the second-to-last item held out of the training part), grid 0.0 .. 1.0
                         searched coarse to fine on a seeded sample of the validation users

The blend search scored every weight of the grid on every validation user, 11 full scorings: 470 of a
100k-user evaluate's 677 s, for a weight that came out 1.0. HR against the weight is smooth and in
practice single-peaked, so the ends and the middle are scored, then the step is halved around the best
(5 to 8 scorings), on at most TUNE_USERS users (a seeded sample: the standard error of HR there is about
0.002, well below the steps between grid weights that matter).

Popularity is a dense (k x items) matrix (k is small). Every user of a cluster ranks the items in the
same order, so a target's rank is its place in that order less the user's seen items placed before it
(`scoring.rank_targets`): no users x items matrix is made. Only per-user hit ranks leave the device.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.backend import Backend, resolve_backend, to_host
from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.frames import host_frame, to_backend_frame
from gpuclust.preprocess.clean import Preprocessor
from gpuclust.preprocess.prepared import PreparedData
from gpuclust.progress import Progress, tell, within
from gpuclust.recommend.personal import fit_personal, target_ranks
from gpuclust.recommend.popularity import GRID
from gpuclust.recommend.scoring import (  # noqa: F401 - their home before
    Popularity,
    captured_lift,
    lift_noise,
    metrics,
    metrics_with_errors,
    popularity,
    rank_targets,
    seen_matrix,
)
from gpuclust.recommend.split import Holdout, leave_last_out, on_training_part, split_seed

TUNE_USERS = 20_000  # validation users the blend weight is tuned on (a seeded sample above this)
PROTOCOL = ("leave-last-out: each user with >= 2 distinct items loses its last item (latest timestamp; ties: "
            "higher event weight, then a seeded hash) and all its events on it; the pipeline is fitted on the "
            "rest; top-K excludes items the user has in training; the blend weight is tuned on the "
            "second-to-last item of the training part with a pipeline fitted without it")


def evaluate(events: Any, items: Any = None, config: PipelineConfig | None = None, k_values: Sequence[int] = (10,),
             seed: int = 0, *, grid: Sequence[float] = GRID,
             pseudonymise: Any = None, tune_users: int | None = TUNE_USERS,
             progress: Progress | None = None) -> dict:
    """Leave-last-out HR@K / NDCG@K for global, cluster and blended popularity; a JSON-ready dict.

    `config` drives preprocessing and the clustering model (device, features, k, seed); `seed` only
    breaks timestamp ties in the split. The blend weight is tuned for the first of `k_values`. With
    `pseudonymise` (a key file or `privacy.Pseudonymiser`) user ids are pseudonymised on the way in.
    `tune_users`: validation users the weight is tuned on (None: all); `progress` is told each step.
    """
    from gpuclust.estimator import UserClusterer
    from gpuclust.privacy import as_pseudonymiser, privacy_record

    started = time.perf_counter()
    config = (config or PipelineConfig()).validate()
    pseudonymiser = as_pseudonymiser(pseudonymise)
    if pseudonymiser is not None:  # before preprocessing: the fits below see pseudonyms only
        events = pseudonymiser.frame(events)
    k_values = _check_k_values(k_values)
    seed = split_seed(seed)  # before the data is read
    backend = resolve_backend(config.device)
    events = to_backend_frame(events, backend)
    items = None if items is None else to_backend_frame(items, backend)
    tell(progress, "preprocess and split")
    data = Preprocessor(config.preprocess, seed=config.seed).run(events, backend, items)

    outer = leave_last_out(data, seed=seed)
    with on_training_part(held=1):
        inner = leave_last_out(outer.train, seed=seed)
    timings: dict[str, float] = {"prepare_and_split": time.perf_counter() - started}

    labels_only = clusters_only(config)

    def fit(train: PreparedData, what: str, held: int) -> tuple[Any, float]:
        t0 = time.perf_counter()
        with on_training_part(held):  # --objective recommend and --algorithm predictive split `train` again
            model = UserClusterer(config=labels_only, progress=within(progress, what)).fit(train, items)
        return _clusters_by_user(model, data, backend), time.perf_counter() - t0

    # Validation: tune the blend weight without looking at the test items.
    t0 = time.perf_counter()
    val_clusters, timings["validation_fit"] = fit(inner.train, "validation fit", held=2)
    val_users, val_targets, val_rows = _evaluable(inner, val_clusters, backend)
    val_users, val_targets, val_rows = _sample(val_users, val_targets, val_rows, tune_users, seed, backend)
    val_pop = popularity(inner.train.table, val_clusters, data.n_items, backend)
    val_seen = seen_matrix(inner.train.table, val_users, data.n_users, data.n_items, backend)
    primary = k_values[0]

    def score(w: float) -> dict[str, float]:
        tell(progress, f"tuning the blend weight on {len(val_targets):,} users: w={w:.1f}")
        ranks = rank_targets(val_pop, val_rows, val_targets, val_seen, w, max(k_values), backend)
        return {"w": float(w), **metrics(ranks, k_values)}

    tuning = search_weight(score, grid, primary)
    best = max(tuning, key=lambda r: (r[f"HR@{primary}"], r[f"NDCG@{primary}"], -r["w"]))
    timings["validation_total"] = time.perf_counter() - t0

    # Test: fit on everything but the held-out items, score the three recommenders.
    clusters, timings["test_fit"] = fit(outer.train, "test fit", held=1)
    tell(progress, "scoring global, cluster and blended popularity")
    users, targets, rows = _evaluable(outer, clusters, backend)
    pop = popularity(outer.train.table, clusters, data.n_items, backend)
    seen = seen_matrix(outer.train.table, users, data.n_users, data.n_items, backend)
    table = []
    ranks_of: dict[str, np.ndarray] = {}
    for method, w, cost in (("global popularity", 0.0, 0.0), ("cluster popularity", 1.0, timings["test_fit"]),
                            (f"blend (w={best['w']:.1f})", best["w"], timings["test_fit"] + timings["validation_total"])):
        t0 = time.perf_counter()
        ranks = ranks_of[method] = rank_targets(pop, rows, targets, seen, w, max(k_values), backend)
        scored = time.perf_counter() - t0
        table.append({"method": method, **metrics_with_errors(ranks, k_values), "users": int(len(ranks)),
                      "blend_weight": w if method.startswith("blend") else None,
                      "seconds": round(cost + scored, 3), "score_seconds": round(scored, 3)})

    # The personal model (λ / neighbours chosen on its own inner split of the training part), and what a
    # saved model serves: the personal list from recommend.min_items distinct items up, the blend below.
    t0 = time.perf_counter()
    tell(progress, "personal model")
    personal = fit_personal(outer.train.table, data.n_users, data.n_items, backend, config.recommend, config.seed)
    timings["personal_fit"] = time.perf_counter() - t0
    personal_record = None
    if personal is not None:
        ranks = target_ranks(personal, seen, targets, max(k_values), backend)
        table.append({"method": f"personal: {personal.name}", **metrics_with_errors(ranks, k_values),
                      "users": int(len(ranks)), "blend_weight": None,
                      "seconds": round(time.perf_counter() - t0, 3), "score_seconds": None})
        few = to_host(backend.xp.diff(seen.indptr)) < config.recommend.min_items
        served = np.where(few, ranks_of[table[2]["method"]], ranks)
        table.append({"method": f"served: personal from {config.recommend.min_items} distinct items, blend below (default)",
                      **metrics_with_errors(served, k_values), "users": int(len(served)),
                      "blend_weight": best["w"], "segment_users": int(few.sum()),
                      "seconds": round(time.perf_counter() - t0 + table[2]["seconds"], 3), "score_seconds": None})
        personal_record = {"model": personal.to_meta(), "min_items": config.recommend.min_items}
        for row in table[:3]:
            row["captured_lift"] = {f"HR@{k}": captured_lift(row[f"HR@{k}"], table[0][f"HR@{k}"], table[3][f"HR@{k}"],
                                                             lift_noise(table[0], table[3], f"HR@{k}"))
                                    for k in k_values}

    pop_host = to_host(pop.global_share)
    unseen_targets = int((pop_host[to_host(targets)] <= 0).sum())
    timings["total"] = time.perf_counter() - started
    return {
        "protocol": PROTOCOL,
        "k_values": list(k_values),
        "clusters": int(pop.k),
        "device": backend.device,
        "split_seed": seed,
        "rows": table,
        "users": {
            "after_preprocessing": data.n_users,
            "eligible": outer.n_eligible,
            "evaluated": int(len(targets)),
            "not_clustered": outer.n_eligible - int(len(targets)),
            "target_never_in_training": unseen_targets,
        },
        "items": data.n_items,
        "events": data.n_events,
        "validation": {"users": int(len(val_targets)), "tuned_for": f"HR@{primary}", "grid": tuning,
                       "search": f"coarse to fine over {[float(w) for w in sorted(grid)]}: "
                                 f"{len(tuning)} weights scored", "chosen_weight": best["w"]},
        "personal": personal_record,
        "timings": {name: round(v, 3) for name, v in timings.items()},
        "config": {"k": config.cluster.k, "features": list(config.features.features), "seed": config.seed},
        "privacy": privacy_record(pseudonymiser, config.privacy.min_group_size),
    }


def evaluate_files(config: PipelineConfig, events: str | Path, items: str | Path | None = None,
                   adapter: str | None = None, k_values: Sequence[int] = (10,), seed: int = 0,
                   pseudonymise: Any = None, progress: Progress | None = None) -> dict:
    """`evaluate` on files, read the way `gpuclust run` reads them (adapter or column mapping)."""
    from gpuclust.io.inputs import read_inputs

    config.validate()
    tell(progress, "read")
    inputs = read_inputs(resolve_backend(config.device).frame, config.columns, events, items, adapter=adapter)
    result = evaluate(inputs.events, inputs.items, config, k_values, seed, pseudonymise=pseudonymise,
                      progress=progress)
    result["inputs"] = inputs.sources
    return result


def markdown_table(result: dict) -> str:
    """The result's rows as a Markdown table: mean ± standard error, and the share of the personal
    model's HR lift over global popularity each popularity recommender captures ("-" where that lift is
    within twice its standard error)."""
    ks = result["k_values"]
    head = ["method", *[f"{m}@{k}" for k in ks for m in ("HR", "NDCG")], f"captured lift (HR@{ks[0]})", "users",
            "blend w", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    for row in result["rows"]:
        share = (row.get("captured_lift") or {}).get(f"HR@{ks[0]}")
        cells = [row["method"], *[f"{row[f'{m}@{k}']:.4f} ± {row[f'{m}@{k}_se']:.4f}" for k in ks for m in ("HR", "NDCG")],
                 "-" if share is None else f"{100 * share:.0f}%", f"{row['users']:,}",
                 "-" if row["blend_weight"] is None else f"{row['blend_weight']:.1f}", f"{row['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- helpers --------------------------------------------------------------------------------

def clusters_only(config: PipelineConfig) -> PipelineConfig:
    """`config` for fits whose clusters are all an evaluation uses: no personal model and no fit-time blend
    tuning (the evaluation measures both itself), which a saved model needs but a held-out fit does not."""
    import copy

    out = copy.deepcopy(config)
    out.recommend.personal = "none"
    if out.recommend.blend_weight is None:
        out.recommend.blend_weight = 1.0  # any given weight skips the tuning; the clusters do not depend on it
    return out


def search_weight(score: Any, grid: Sequence[float], primary: int) -> list[dict]:
    """Coarse to fine over the sorted `grid`: both ends and the middle, then the step halved around the best
    so far (ties: higher NDCG, then the smaller weight) down to neighbours. `score(w)` returns a metrics row;
    the rows scored are returned in weight order (5 to 8 of an 11-point grid)."""
    weights = sorted(float(w) for w in grid)
    scored: dict[int, dict] = {}

    def rank(i: int) -> tuple:
        row = scored[i]
        return row[f"HR@{primary}"], row[f"NDCG@{primary}"], -row["w"]

    def visit(*indices: int) -> None:
        for i in indices:
            if 0 <= i < len(weights) and i not in scored:
                scored[i] = score(weights[i])

    last = len(weights) - 1
    visit(0, last // 2, last)
    step = max(1, last // 4)
    while True:
        best = max(scored, key=rank)
        visit(best - step, best + step)
        if step == 1 and best == max(scored, key=rank):
            break
        step = max(1, step // 2)
    return [scored[i] for i in sorted(scored)]


def _sample(users: Any, targets: Any, rows: Any, limit: int | None, seed: int, backend: Backend):
    """At most `limit` of the held-out users (a seeded sample, in their order); all of them under it."""
    n = int(len(targets))
    if limit is None or n <= limit:
        return users, targets, rows
    keep = np.sort(np.random.default_rng(seed).choice(n, size=int(limit), replace=False))
    keep = backend.asarray(keep)
    return users[keep], targets[keep], rows[keep]


def _check_k_values(k_values: Sequence[int]) -> tuple[int, ...]:
    values = tuple(int(k) for k in k_values)
    if not values or any(k < 1 for k in values):
        raise UsageError(f"top-K values must be positive integers, got {list(k_values)}")
    return values


def _clusters_by_user(model: Any, data: PreparedData, backend: Backend):
    """Cluster per user_idx of the evaluation's index: -2 where the model dropped the user, -1 noise."""
    labels = model.labels_[[schema.USER, "cluster"]]
    joined = host_frame(data.users.merge(labels, on=schema.USER, how="inner"))
    out = np.full(data.n_users, -2, dtype=np.int64)
    out[joined[schema.USER_IDX].to_numpy()] = joined["cluster"].to_numpy(np.int64)
    return backend.asarray(out)


def _evaluable(split: Holdout, clusters: Any, backend: Backend) -> tuple[Any, Any, Any]:
    """Held-out users the pipeline clustered, their targets, and their row in the popularity table."""
    xp = backend.xp
    users, targets = backend.asarray(split.users).astype(xp.int64), backend.asarray(split.items).astype(xp.int64)
    cluster = clusters[users]
    keep = cluster > -2
    users, targets, cluster = users[keep], targets[keep], cluster[keep]
    k = int(to_host(clusters.max())) + 1 if len(clusters) else 0
    rows = xp.where(cluster >= 0, cluster, max(k, 0))
    return users, targets, rows

