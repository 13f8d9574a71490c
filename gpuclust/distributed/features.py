"""Featurisers fitted over user partitions: global state by reductions, then each partition through the
fitted featuriser's own `transform`, exactly as a saved model measures new users.

    behaviour   statistics per partition (kept for the explanations); normaliser statistics by reductions
                (two passes: means, then centred squares; quantiles from a sample of users)
    tfidf       document frequencies summed over partitions -> IDF; TF-IDF blocks -> block randomized SVD
    text        item vectors encoded once on the client (items are few), broadcast, pooled per partition
    fuse        per-block means, then centred squares, summed -> the Fuser's centring and scales

The fitted objects are the single-process classes with the same attributes, so `save` writes the same
model folder however the fit ran.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from gpuclust.backend import Backend, array_module, to_host
from gpuclust.distributed.blocks import Blocks
from gpuclust.distributed.prepare import Globals, Part, worker_backend
from gpuclust.distributed.svd import block_randomized_svd
from gpuclust.errors import UsageError
from gpuclust.features.behaviour import behaviour_statistics
from gpuclust.features.fuse import Fuser
from gpuclust.features.normalise import QUANTILES, Normaliser, _scale, signed_log1p
from gpuclust.features.tfidf import (
    NO_VOCABULARY,
    category_vocabulary,
    smooth_idf,
    tfidf,
    user_vocabulary_counts,
)

# Users whose statistics fit quantile normalisation when it is chosen (the single-process path uses all).
QUANTILE_SAMPLE = 1_000_000


# --- per partition (run on the workers) ---------------------------------------------------------

def part_statistics(part: Part, g: Globals, device: str, gap: float):
    backend = worker_backend(device)
    return behaviour_statistics(g.prepared(part, backend), backend, gap)


def _stat_matrix(stats, method: str, device: str):
    backend = worker_backend(device)
    x = backend.xp.asarray(stats.values).astype(backend.xp.float64)
    return signed_log1p(x, backend.xp) if method == "log1p" else x


def _moments1(stats, method: str, device: str):
    x = _stat_matrix(stats, method, device)
    return to_host(x.sum(axis=0)), int(x.shape[0])


def _moments2(stats, method: str, device: str, mean: np.ndarray):
    x = _stat_matrix(stats, method, device)
    return (to_host(((x - worker_backend(device).xp.asarray(mean)) ** 2).sum(axis=0)),)


def _extremes(stats, device: str):
    x = _stat_matrix(stats, "minmax", device)
    return to_host(x.min(axis=0)), to_host(x.max(axis=0))


def _stat_rows(stats, device: str, local: np.ndarray):
    return to_host(_stat_matrix(stats, "none", device)[worker_backend(device).xp.asarray(local)])


def _columns(stats) -> list[str]:
    return list(stats.names)


def part_tfidf(part: Part, g: Globals, device: str, vocab: str, names: list[str] | None, idf: Any = None):
    backend = worker_backend(device)
    counts = user_vocabulary_counts(g.prepared(part, backend), backend, vocab, names)
    if idf is None:  # this partition's document frequencies: users per term
        x = counts.tocsr()
        x.sum_duplicates()
        return to_host(backend.xp.bincount(x.indices, minlength=x.shape[1])).astype(np.float64)
    return tfidf(counts, backend, backend.xp.asarray(idf))[0]


def part_features(part: Part, g: Globals, device: str, featurizers: list[Any], stats: Any = None,
                  gap: float | None = None) -> dict[str, Any]:
    """Each fitted featuriser's block for one partition; `stats`, the partition's behaviour statistics
    at session gap `gap` as `fit_behaviour` computed them, are reused instead of computed again."""
    backend = worker_backend(device)
    data = g.prepared(part, backend)
    if stats is not None:
        data.cache[("behaviour_statistics", float(gap))] = stats  # the key behaviour_statistics looks up
    return {f.name: f.transform(data, backend) for f in featurizers}


def _block_sum(blocks: dict[str, Any]) -> dict[str, Any]:
    return {name: (to_host(b.astype(np.float64).sum(axis=0)), int(b.shape[0])) for name, b in blocks.items()}


def _block_centred(blocks: dict[str, Any], means: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for name, b in blocks.items():
        xp = array_module(b)
        out[name] = float(((b - xp.asarray(means[name])).astype(xp.float64) ** 2).sum())
    return out


def fuse_part(blocks: dict[str, Any], fuser: Fuser, device: str):
    return fuser.transform(blocks, worker_backend(device).xp)


# --- fitting on the client ------------------------------------------------------------------------

def fit_behaviour(featurizer: Any, parts: Blocks, g: Any, device: str, backend: Backend, seed: int) -> Blocks:
    """Fit the normaliser of a BehaviourFeaturizer by reductions; returns the raw statistics per partition
    (the explanations read them again)."""
    stats = parts.map(part_statistics, g=g, device=device, gap=featurizer.session_gap_minutes)
    names = parts.client.submit(_columns, stats.futures[0]).result()
    method = featurizer.normalise
    if method not in ("standard", "minmax", "log1p", "quantile", "none"):
        raise UsageError(f"unknown normaliser {method!r}: choose one of standard, minmax, log1p, quantile, none")
    info = {}
    if method in ("standard", "log1p"):
        total, n = stats.total(_moments1, method=method, device=device)
        mean = total / n
        (squares,) = stats.total(_moments2, method=method, device=device, mean=mean)
        std = np.sqrt(squares / n)
        params = {"shift": mean, "scale": _scale(std, mean, np)}
    elif method == "minmax":
        parts_ = stats.map(_extremes, device=device).gather()
        low = np.min([p[0] for p in parts_], axis=0)
        high = np.max([p[1] for p in parts_], axis=0)
        params = {"shift": low, "scale": _scale(high - low, low, np)}
    elif method == "quantile":
        n = stats.n_rows
        rows = np.arange(n) if n <= QUANTILE_SAMPLE else np.sort(
            np.random.default_rng(seed).choice(n, QUANTILE_SAMPLE, replace=False))
        x = np.concatenate(stats.rows(_stat_rows_of(device), rows))
        params = {"quantiles": np.quantile(x, np.linspace(0.0, 1.0, QUANTILES), axis=0)}
        info["quantile_sample"] = int(len(rows))
    else:
        params = {}
    featurizer.names_ = names
    featurizer.normaliser_ = Normaliser(method)
    featurizer.normaliser_.params_ = {k: backend.asarray(np.asarray(v, dtype=np.float32)) for k, v in params.items()}
    featurizer.info_ = {"dims": len(names), "columns": names, "normalise": method, **info}
    return stats


def _stat_rows_of(device: str):
    def rows(stats, local):
        return _stat_rows(stats, device, local)
    return rows


def fit_tfidf(featurizer: Any, parts: Blocks, g: Any, catalogue: Any, device: str, backend: Backend) -> None:
    """IDF from document frequencies summed over partitions, and SVD components from the block SVD."""
    featurizer.info_, featurizer.fitted_ = {"vocabularies": {}}, {}
    n_users = parts.n_rows
    for vocab in featurizer.vocabularies:
        names, skipped = category_vocabulary(catalogue) if vocab == "category" else (None, None)
        if skipped:
            featurizer.info_["vocabularies"][vocab] = skipped
            continue
        df = parts.total(part_tfidf, g=g, device=device, vocab=vocab, names=names)
        idf = smooth_idf(df, n_users, np)
        n_terms = int(df.shape[0])
        if n_terms <= featurizer.n_components:
            components, explained = None, 1.0
        else:
            x = parts.map(part_tfidf, g=g, device=device, vocab=vocab, names=names, idf=idf)
            s, components, squares = block_randomized_svd(x, n_terms, featurizer.n_components, featurizer.seed,
                                                          featurizer.oversamples, featurizer.power_iterations)
            x.release()
            explained = float((s.astype(np.float64) ** 2).sum() / squares)
            components = backend.asarray(components)
        featurizer.fitted_[vocab] = {"idf": backend.asarray(idf), "components": components, "categories": names}
        dims = n_terms if components is None else int(components.shape[0])
        featurizer.info_["vocabularies"][vocab] = {"terms": n_terms, "dims": dims,
                                                   "explained_variance": round(explained, 4)}
    if not featurizer.fitted_:
        raise UsageError(NO_VOCABULARY)
    featurizer.info_["dims"] = int(sum(v["dims"] for v in featurizer.info_["vocabularies"].values()
                                       if isinstance(v, dict)))


def fit_text(featurizer: Any, catalogue: Any, backend: Backend) -> None:
    """Item vectors once, on the client (items are few): encoded or precomputed, as in item mode."""
    from gpuclust.features.text.embed import precomputed_vectors
    from gpuclust.features.text.texts import item_texts

    started = time.perf_counter()
    if featurizer.mode != "item":
        raise UsageError("--text-mode user encodes one text per user and does not run on a Dask cluster; "
                         "use --text-mode item (items encoded once, pooled per partition)")
    featurizer._validate(catalogue)
    if featurizer.item_vectors is not None:
        featurizer.item_vectors_, stats = precomputed_vectors(featurizer.item_vectors, catalogue, backend)
        featurizer.info_ = {"model": "precomputed item vectors", "mode": "item", **stats}
    else:
        texts = item_texts(catalogue.items, catalogue.text_columns, featurizer.template)
        featurizer.item_vectors_, stats, described = featurizer._encode(texts, backend)
        featurizer.info_ = {**described, "mode": "item", "template": featurizer.template or "default",
                            "half_life_days": featurizer.half_life_days, "seed": featurizer.seed,
                            "n_users": int(catalogue.n_users), "n_items": int(catalogue.n_items), **stats}
        backend.free_caches()
    featurizer.names_ = None
    featurizer.info_["dims"] = int(featurizer.item_vectors_.shape[1])
    featurizer.info_["seconds"] = round(time.perf_counter() - started, 4)


def shippable(featurizer: Any) -> Any:
    """A copy fit to travel to the workers: what `transform` needs, without a loaded encoder."""
    out = copy.copy(featurizer)
    if hasattr(out, "model") and not isinstance(out.model, str):
        out.model = None
    if getattr(out, "item_vectors", None) is not None and not isinstance(out.item_vectors, str):
        out.item_vectors = None
    return out


def fit_fuser(weights: dict[str, float], blocks: Blocks, dims: dict[str, int], backend: Backend) -> Fuser:
    """`Fuser.fit` by reductions: each block's mean, then its total centred variance."""
    fuser = Fuser(weights)
    sums = blocks.map(_block_sum).gather()
    n = sum(next(iter(s.values()))[1] for s in sums)
    means = {name: (sum(s[name][0] for s in sums) / max(n, 1)).astype(np.float32) for name in dims}
    parts = blocks.map(_block_centred, means=means).gather()
    centred = {name: sum(p[name] for p in parts) for name in dims}
    fuser.stats_, fuser.layout_, start = {}, {}, 0
    for name in dims:
        weight = float(weights.get(name, 1.0))
        if weight < 0:
            raise UsageError(f"feature weight for {name!r} must be >= 0, got {weight}")
        total = float(np.sqrt(centred[name] / max(n, 1)))
        fuser.stats_[name] = {"mean": backend.asarray(means[name]), "scale": total if total > 0 else 1.0,
                              "weight": weight}
        fuser.layout_[name] = {"columns": [start, start + dims[name]], "weight": weight}
        start += dims[name]
    return fuser


def block_dims(blocks: dict[str, Any]) -> dict[str, int]:
    return {name: int(b.shape[1]) for name, b in blocks.items()}

