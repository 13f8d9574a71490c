"""`gpuclust evaluate --compare ... --k 8,20,40`: which representation, and which k, recommend best?

One leave-last-out split (the rules of `recommend.split`), then for every contender and every k the
clusters are fitted on the training part and cluster popularity is scored on the held-out items:
HR@K and NDCG@K, each with its standard error. Contenders:

- global popularity (no k), and the plain recipe (`recommend.recipe`: TF-IDF -> SVD -> scikit-learn
  KMeans), always;
- each feature set asked for ("tfidf", "sequence", "behaviour+tfidf", ...), or any named
  PipelineConfig from Python: the pipeline is fitted once per contender, and its fused vectors are
  clustered once per k;
- with k "auto", each contender's own choice of k on the training part: by separation (silhouette) or
  by recommendation (validation HR@10 on the training part's own holdout; `recommend.objective`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpuclust import registry, schema
from gpuclust.backend import Backend, resolve_backend, to_host
from gpuclust.cluster.factory import build_clusterer
from gpuclust.cluster.sweep import DEFAULT_K_VALUES
from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.frames import host_frame, to_backend_frame
from gpuclust.preprocess.clean import Preprocessor
from gpuclust.preprocess.prepared import PreparedData
from gpuclust.progress import tell, within
from gpuclust.protocols import fit_clusterer
from gpuclust.recommend.evaluation import (
    PROTOCOL,
    clusters_only,
    metrics_with_errors,
    popularity,
    rank_targets,
    seen_matrix,
)
from gpuclust.recommend.personal import fit_personal, target_ranks
from gpuclust.recommend.recipe import NAME as RECIPE
from gpuclust.recommend.recipe import PlainRecipe
from gpuclust.recommend.scoring import captured_lift, lift_noise
from gpuclust.recommend.split import leave_last_out, on_training_part, split_seed

GLOBAL = "global popularity"
PERSONAL_ROW = "personal model"
AUTO = "auto"


def feature_sets(text: str | Sequence[str]) -> dict[str, tuple[str, ...]]:
    """"tfidf,sequence,behaviour+tfidf" -> {"tfidf": ("tfidf",), ..., "behaviour+tfidf": ("behaviour", "tfidf")}."""
    parts: list[str] = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    out = {}
    for part in parts:
        if not part:
            continue
        names = tuple(dict.fromkeys(n.strip() for n in part.split("+") if n.strip()))  # tfidf+tfidf is tfidf
        if not names:
            raise UsageError(f"--compare {text!r}: an empty feature set; write e.g. tfidf,sequence,behaviour+tfidf")
        for name in names:
            if name not in registry.FEATURES:
                raise UsageError(f"unknown feature {name!r} in --compare {text!r}: choose from "
                                 f"{', '.join(registry.FEATURES)}, e.g. tfidf,sequence,behaviour+tfidf")
        out["+".join(names)] = names
    if not out:
        raise UsageError("--compare needs at least one feature set, e.g. tfidf,sequence,behaviour+tfidf")
    return out


def compare(events: Any, items: Any = None, config: PipelineConfig | None = None,
            contenders: dict[str, PipelineConfig | Sequence[str]] | str = "tfidf", k_values: Sequence[int] | str = (20,),
            top_k: Sequence[int] = (10,), seed: int = 0, recipe: bool = True,
            progress: Any = None, pseudonymise: Any = None) -> dict[str, Any]:
    """HR@K / NDCG@K (with standard errors) of cluster popularity per contender and k; a JSON-ready dict.

    contenders: feature sets ("tfidf,sequence" or {"name": ("behaviour", "tfidf")}) run with `config`'s
    other settings, or {"name": PipelineConfig} for anything else (a clustering algorithm, encoder
    options). k_values: a list of k, or "auto" (each contender chooses, by `config.cluster.objective`).
    With `pseudonymise` (a key file or `privacy.Pseudonymiser`) user ids are pseudonymised on the way in.
    """
    from gpuclust.estimator import UserClusterer
    from gpuclust.privacy import as_pseudonymiser, privacy_record

    started = time.perf_counter()
    auto = isinstance(k_values, str)
    if auto and k_values != AUTO:
        raise UsageError(f"k {k_values!r}: give a list of k or 'auto'")
    config = copy.deepcopy(config or PipelineConfig())
    if auto and not config.cluster.k_values:  # gpuclust's own range, sized by the data where the objective wants
        config.cluster.k_values, config.cluster.k_auto = DEFAULT_K_VALUES, True
    _drop_unused(copy.deepcopy(config)).validate()  # the shared settings; each contender's are checked below
    ks = () if auto else tuple(sorted({int(k) for k in k_values}))
    if not auto and (not ks or ks[0] < 1):
        raise UsageError(f"k values must be positive integers, got {list(k_values)}")
    top_k = tuple(int(k) for k in top_k)
    seed = split_seed(seed)  # before the data is read
    plans = _plans(contenders, config)
    backend = resolve_backend(config.device)
    events = to_backend_frame(events, backend)
    pseudonymiser = as_pseudonymiser(pseudonymise)
    if pseudonymiser is not None:  # before preprocessing: the fits below see pseudonyms only
        events = pseudonymiser.frame(events)
    items = None if items is None else to_backend_frame(items, backend)
    tell(progress, "preprocess and split")
    data = Preprocessor(config.preprocess, seed=config.seed).run(events, backend, items)
    if not auto and ks[-1] > data.n_users:
        n = int(data.n_users)
        example = ",".join(str(k) for k in sorted({min(n, max(2, n // 10)), min(n, max(2, n // 4))}))
        raise UsageError(f"k={ks[-1]} is larger than the number of users ({n}); give --k values up to {n}, "
                         f"e.g. --k {example}")
    outer = leave_last_out(data, seed=seed)
    xp = backend.xp
    users, targets = backend.asarray(outer.users).astype(xp.int64), backend.asarray(outer.items).astype(xp.int64)
    train = outer.train.table
    seen = seen_matrix(train, users, data.n_users, data.n_items, backend)
    score = _Scorer(train, users, targets, seen, data, backend, top_k)
    rows: list[dict[str, Any]] = [{"representation": GLOBAL, "k": None, **score.ranks_of(None), "fit_seconds": 0.0}]
    timings = {"prepare_and_split": time.perf_counter() - started}
    t0 = time.perf_counter()
    tell(progress, "personal model")
    personal = fit_personal(train, data.n_users, data.n_items, backend, config.recommend, config.seed)
    if personal is not None:
        ranks = target_ranks(personal, seen, targets, max(top_k), backend)
        rows.append({"representation": PERSONAL_ROW, "model": personal.name, "k": None,
                     **metrics_with_errors(ranks, top_k), "users": int(len(ranks)),
                     "fit_seconds": round(time.perf_counter() - t0, 3), "selection": personal.selection})
    timings["personal"] = time.perf_counter() - t0

    # Each contender is fitted on the training part (split again by --objective recommend, --algorithm predictive).
    with on_training_part(held=1):
        for done, (name, cfg) in enumerate(plans.items()):
            t0 = time.perf_counter()
            fitting = within(progress, f"{name} ({done + 1} of {len(plans)})")
            if auto:
                run = clusters_only(cfg)
                run.cluster.k_auto = run.cluster.k_auto or not run.cluster.k_values
                run.cluster.k_values = run.cluster.k_values or DEFAULT_K_VALUES
                model = UserClusterer(config=run, progress=fitting).fit(outer.train, items)
                clusters = _clusters_from_frame(model.labels_, data, backend)
                sweep = model.sweep_.to_dict() if model.sweep_ is not None else None
                rows.append({"representation": name, "features": list(cfg.features.features),
                             "algorithm": cfg.cluster.algorithm, "k": int(model.n_clusters_), "k_sweep": sweep,
                             **score.ranks_of(clusters), "fit_seconds": round(time.perf_counter() - t0, 3),
                             "training": _training(model)})
            else:
                run = clusters_only(cfg)
                run.cluster.k, run.cluster.k_values, run.cluster.k_auto = ks[0], (), False
                model = UserClusterer(config=run, progress=fitting).fit(outer.train, items)
                tell(fitting, "features of the training users")
                x, prepared = model.embed(outer.train)
                feature_seconds = time.perf_counter() - t0
                for k in ks:
                    tell(fitting, f"clusters at k={k}")
                    t1 = time.perf_counter()
                    clusterer = build_clusterer(run.cluster, run.seed, k)
                    fit_clusterer(clusterer, x, model.backend_, prepared, model.measure)
                    clusters = _clusters_from_index(clusterer.labels_, prepared, data, backend)
                    rows.append({"representation": name, "features": list(cfg.features.features),
                                 "algorithm": cfg.cluster.algorithm, "k": k, **score.ranks_of(clusters),
                                 "fit_seconds": round(feature_seconds + time.perf_counter() - t1, 3),
                                 "training": _training(model) if k == ks[0] else None})
            timings[name] = time.perf_counter() - t0
    if recipe:  # at every k asked for; with k auto, at each k a contender chose ("at the same k")
        tell(progress, RECIPE)
        t0 = time.perf_counter()
        plain = PlainRecipe(seed=config.seed).embed(train, data.n_users, data.n_items)
        embed_seconds = time.perf_counter() - t0
        chosen = sorted({r["k"] for r in rows if r["k"] is not None}) if auto else ks
        for k in chosen:
            t1 = time.perf_counter()
            labels = plain.labels(k)
            rows.append({"representation": RECIPE, "k": k, **score.ranks_of(backend.asarray(labels)),
                         "fit_seconds": round(embed_seconds + time.perf_counter() - t1, 3)})
        timings["recipe"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    _add_captured_lift(rows, top_k)
    return {
        "protocol": PROTOCOL + "; every contender is fitted on the same training part and scored on the same "
                               "held-out items; _se is the standard error of the mean over users",
        "top_k": list(top_k),
        "k_values": AUTO if auto else list(ks),
        "objective": config.cluster.objective if auto else None,
        "device": backend.device,
        "split_seed": seed,
        "rows": rows,
        "users": {"after_preprocessing": data.n_users, "eligible": outer.n_eligible, "evaluated": int(len(targets))},
        "items": data.n_items,
        "events": data.n_events,
        "timings": {name: round(v, 3) for name, v in timings.items()},
        "config": {"features": {name: list(cfg.features.features) for name, cfg in plans.items()},
                   "algorithm": {name: cfg.cluster.algorithm for name, cfg in plans.items()}, "seed": config.seed},
        "privacy": privacy_record(pseudonymiser, config.privacy.min_group_size),
    }


def compare_files(config: PipelineConfig, events: str | Path, items: str | Path | None = None,
                  adapter: str | None = None, **options: Any) -> dict[str, Any]:
    """`compare` on files, read the way `gpuclust run` reads them."""
    from gpuclust.io.inputs import read_inputs

    config.validate()
    tell(options.get("progress"), "read")
    inputs = read_inputs(resolve_backend(config.device).frame, config.columns, events, items, adapter=adapter)
    result = compare(inputs.events, inputs.items, config, **options)
    result["inputs"] = inputs.sources
    return result


# --- tables and the picture -----------------------------------------------------------------------

def markdown_tables(result: dict[str, Any]) -> str:
    """One table per metric: a row per representation, a column per k, cells `mean ± se`."""
    out = []
    auto = result["k_values"] == AUTO
    ks = [] if auto else result["k_values"]
    names = list(dict.fromkeys(row["representation"] for row in result["rows"]))
    for top in result["top_k"]:
        for metric in ("HR", "NDCG"):
            key = f"{metric}@{top}"
            head = ["representation", *(["chosen k", key, f"recipe {key} at that k"] if auto else
                                        [f"k={k}" for k in ks])]
            lines = [f"{key} (± standard error) of cluster popularity, global popularity and the personal model, "
                     f"{result['users']['evaluated']:,} users", "",
                     "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
            recipe_at = {r["k"]: r for r in result["rows"] if r["representation"] == RECIPE}
            for name in names:
                mine = [r for r in result["rows"] if r["representation"] == name]
                if auto:
                    if name == RECIPE:
                        continue
                    row = mine[0]
                    cells = [str(row["k"] or "-"), _cell(row, key),
                             _cell(recipe_at[row["k"]], key) if row["k"] in recipe_at else "-"]
                elif mine[0]["k"] is None:
                    cells = [_cell(mine[0], key)] * len(ks)
                else:
                    by_k = {r["k"]: r for r in mine}
                    cells = [_cell(by_k[k], key) if k in by_k else "-" for k in ks]
                lines.append("| " + " | ".join([(mine[0].get("model") or name), *cells]) + " |")
            out.append("\n".join(lines))
    personal = next((r for r in result["rows"] if r["representation"] == PERSONAL_ROW), None)
    if personal is not None and not auto:
        for top in result["top_k"]:
            key = f"HR@{top}"
            lines = [f"Share of the personal model's {key} lift over global popularity that the clusters capture, "
                     f"(HR_clusters − HR_global) / (HR_personal − HR_global); personal: {personal['model']}; "
                     "- where that lift is within twice its standard error", "",
                     "| representation | " + " | ".join(f"k={k}" for k in ks) + " |",
                     "|---|" + "---:|" * len(ks)]
            for name in names:
                by_k = {r["k"]: r for r in result["rows"] if r["representation"] == name and r["k"] is not None}
                if by_k:
                    cells = [_share(by_k[k]["captured_lift"][key]) if k in by_k else "-" for k in ks]
                    lines.append("| " + " | ".join([name, *cells]) + " |")
            out.append("\n".join(lines))
    return "\n\n".join(out)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """PNG of HR@top_k against k per representation (global popularity as a line)."""
    from gpuclust.report import plots

    top = result["top_k"][0]
    key = f"HR@{top}"
    series: dict[str, list[tuple[int, float, float]]] = {}
    flat = {}
    for row in result["rows"]:
        if row["k"] is None:
            flat[row["representation"]] = row[key]
            continue
        series.setdefault(row["representation"], []).append((int(row["k"]), row[key], row[f"{key}_se"]))
    return plots.hit_rate_plot(series, Path(path), top, flat)


# --- helpers --------------------------------------------------------------------------------------

def _add_captured_lift(rows: list[dict[str, Any]], top_k: tuple[int, ...]) -> None:
    """Each clustering row's share of the personal model's HR lift over global popularity, per top K."""
    glob = next(r for r in rows if r["representation"] == GLOBAL)
    personal = next((r for r in rows if r["representation"] == PERSONAL_ROW), None)
    for row in rows:
        if row["k"] is not None and personal is not None:
            row["captured_lift"] = {f"HR@{t}": captured_lift(row[f"HR@{t}"], glob[f"HR@{t}"], personal[f"HR@{t}"],
                                                             lift_noise(glob, personal, f"HR@{t}"))
                                    for t in top_k}


class _Scorer:
    """Ranks of the held-out items under cluster popularity for a labelling of the evaluation's users."""

    def __init__(self, train: Any, users: Any, targets: Any, seen: Any, data: PreparedData, backend: Backend,
                 top_k: tuple[int, ...]) -> None:
        self.train, self.users, self.targets, self.seen = train, users, targets, seen
        self.data, self.backend, self.top_k = data, backend, top_k

    def ranks_of(self, clusters: Any | None) -> dict[str, Any]:
        """clusters: per user_idx of the evaluation (-2: dropped by the model's preprocessing, -1: noise),
        or None for global popularity. Users the model dropped get the global list."""
        xp, n_users = self.backend.xp, self.data.n_users
        labels = xp.full(n_users, -1, dtype=xp.int64) if clusters is None else clusters
        pop = popularity(self.train, xp.where(labels >= 0, labels, -1), self.data.n_items, self.backend)
        own = labels[self.users]
        rows = xp.where(own >= 0, own, pop.k)
        ranks = rank_targets(pop, rows, self.targets, self.seen, 0.0 if clusters is None else 1.0,
                             max(self.top_k), self.backend)
        return {**metrics_with_errors(ranks, self.top_k), "users": int(len(ranks)),
                "not_clustered": int(to_host((own < 0).sum()))}


def _plans(contenders: Any, config: PipelineConfig) -> dict[str, PipelineConfig]:
    if isinstance(contenders, str):
        contenders = feature_sets(contenders)
    plans = {}
    for name, value in contenders.items():
        if isinstance(value, PipelineConfig):
            plans[name] = value.validate()
            continue
        cfg = copy.deepcopy(config)
        cfg.features.features = tuple(value)
        plans[name] = _drop_unused(cfg).validate()
    return plans


def _drop_unused(cfg: PipelineConfig) -> PipelineConfig:
    """Settings of features this contender does not use back to their defaults: `--compare tfidf,sequence`
    with sequence options in the config must not make the tfidf contender's config contradict itself."""
    import dataclasses

    from gpuclust.config import FeatureConfig

    features, defaults = cfg.features, FeatureConfig()
    chosen = set(features.features)
    text_items = "sequence" in chosen and features.sequence.item_init == "text"
    for section, used in (("text", "text" in chosen or text_items), ("sequence", "sequence" in chosen),
                          ("autoencoder", "autoencoder" in chosen), ("normalise", "behaviour" in chosen),
                          ("tfidf_components", "tfidf" in chosen), ("tfidf_vocabularies", "tfidf" in chosen)):
        if not used:
            setattr(features, section, copy.deepcopy(getattr(defaults, section)))
    features.weights = {k: v for k, v in features.weights.items() if k in chosen or defaults.weights.get(k) == v}
    return dataclasses.replace(cfg, features=features)


def _clusters_from_index(labels: Any, prepared: PreparedData, data: PreparedData, backend: Backend):
    """Labels per user_idx of `prepared` (the model's own indexing) -> per user_idx of `data`."""
    frame = host_frame(prepared.users[[schema.USER, schema.USER_IDX]]).copy()
    frame["cluster"] = to_host(labels).astype(np.int64)[frame[schema.USER_IDX].to_numpy()]
    return _clusters_from_frame(frame[[schema.USER, "cluster"]], data, backend)


def _clusters_from_frame(labels: Any, data: PreparedData, backend: Backend):
    """(user_id, cluster) -> cluster per user_idx of `data`; -2 where the model has no such user."""
    joined = host_frame(data.users).merge(host_frame(labels[[schema.USER, "cluster"]]), on=schema.USER, how="inner")
    out = np.full(data.n_users, -2, dtype=np.int64)
    out[joined[schema.USER_IDX].to_numpy()] = joined["cluster"].to_numpy(np.int64)
    return backend.asarray(out)


def _training(model: Any) -> dict[str, Any] | None:
    """Training time and final losses of the learned featurisers, from the model's manifest."""
    blocks = model.manifest_["features"]["blocks"]
    out = {}
    info: dict
    for name, info in blocks.items():
        training: dict | None = info.get("training") if isinstance(info, dict) else None
        if training:
            out[name] = {key: training.get(key) for key in ("train_seconds", "epochs_run", "best_epoch",
                                                            "final_train_loss", "best_val_loss", "best_val_hr10")}
    return out or None


def _cell(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.4f} ± {row[f'{key}_se']:.4f}"
