"""Internal and external cluster quality, written once against xp.

Silhouette is O(n^2), so it is computed on a seeded sample whose size is reported with the score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpuclust.backend import map_tasks, one_thread_blas, to_host
from gpuclust.segments import group_sums


def _centroids(x, labels, k: int, xp):
    sums, counts = group_sums(x, labels, k, xp)
    return sums / xp.maximum(counts, 1)[:, None], counts


def _fit_of(x, labels, k: int, xp, chunk: int = 1 << 16):
    """Cluster centres, sizes and each row's distance to its centre (float64): what Calinski-Harabasz and
    Davies-Bouldin both need, in one pass of row chunks (no float64 copy of the whole matrix)."""
    centres, counts = _centroids(x, labels, k, xp)
    distances = xp.empty(x.shape[0], dtype=xp.float64)
    for start in range(0, x.shape[0], chunk):
        stop = start + chunk
        distances[start:stop] = xp.linalg.norm(x[start:stop].astype(xp.float64) - centres[labels[start:stop]], axis=1)
    return centres, counts, distances


def calinski_harabasz(x, labels, xp, fit=None) -> float:
    """Between- over within-cluster dispersion; `fit` is `_fit_of`'s answer where the caller has it."""
    k = int(labels.max()) + 1
    n = x.shape[0]
    if k < 2 or k >= n:
        return float("nan")
    centres, counts, distances = fit or _fit_of(x, labels, k, xp)
    mean = (counts[:, None] * centres).sum(axis=0) / n
    between = float((counts * ((centres - mean) ** 2).sum(axis=1)).sum())
    within = float((distances**2).sum())
    return float("inf") if within == 0 else between * (n - k) / (within * (k - 1))


def davies_bouldin(x, labels, xp, fit=None) -> float:
    k = int(labels.max()) + 1
    if k < 2:
        return float("nan")
    centres, counts, distances = fit or _fit_of(x, labels, k, xp)
    spread = xp.bincount(labels, weights=distances, minlength=k) / xp.maximum(counts, 1)
    gaps = xp.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2))
    ratio = (spread[:, None] + spread[None, :]) / xp.where(gaps > 0, gaps, xp.inf)
    ratio[xp.arange(k), xp.arange(k)] = 0.0
    return float(ratio.max(axis=1)[counts > 0].mean())


def silhouette(x, labels, xp, sample: int = 20_000, seed: int = 0, chunk: int = 2048) -> tuple[float, int]:
    """Mean silhouette over a seeded sample; returns (score, rows used).

    O(sample²): chunks of rows against the whole sample, each its own scores. On the CPU the chunks run
    on a thread per core with one-thread BLAS (`backend.map_tasks`): the element-wise passes over each
    chunk's distances, not the product, are most of the time, and NumPy runs them on one core; threaded
    BLAS alone left the other core idle for them (the assess stage at 200k users: 1.89 -> 1.28 s,
    benchmarks/results/event-table-cpu.md, "Session 5")."""
    n = x.shape[0]
    if n > sample:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
        idx = xp.asarray(idx)
        x, labels = x[idx], labels[idx]
    m = x.shape[0]
    k = int(labels.max()) + 1
    if k < 2 or m < 3:
        return float("nan"), int(m)
    xs = x.astype(xp.float32)
    sq = (xs**2).sum(axis=1)[:, None]
    ones = xp.ones((m, 1), dtype=xp.float32)
    # |a|² - 2a·b + |b|² as one product: [-2a, 1, |a|²] · [b, |b|², 1], no passes over the distances to add norms
    left = xp.concatenate([xs * xp.float32(-2.0), ones, sq], axis=1)
    right = xp.concatenate([xs, sq, ones], axis=1)
    counts = xp.bincount(labels, minlength=k).astype(xp.float32)
    onehot = xp.zeros((m, k), dtype=xp.float32)
    onehot[xp.arange(m), labels] = 1.0
    scores = xp.empty(m, dtype=xp.float32)
    starts = range(0, m, chunk)

    def scores_of(j: int) -> None:
        start = starts[j]
        d = left[start:start + chunk] @ right.T  # squared distances; in place from here: O(m²) and
        xp.maximum(d, 0.0, out=d)                # allocation-bound otherwise
        xp.sqrt(d, out=d)
        sums = d @ onehot  # (chunk, k): summed distance to each cluster
        own = labels[start:start + chunk]
        rows = xp.arange(d.shape[0])
        own_count = counts[own] - 1
        a = sums[rows, own] / xp.maximum(own_count, 1)
        mean_other = sums / xp.maximum(counts, 1)[None, :]
        mean_other[rows, own] = xp.inf
        mean_other[:, counts == 0] = xp.inf
        b = mean_other.min(axis=1)
        s = (b - a) / xp.maximum(xp.maximum(a, b), 1e-12)
        scores[start:start + chunk] = xp.where(own_count > 0, s, 0.0)

    with one_thread_blas(xp):
        map_tasks(scores_of, len(starts), xp)
    return float(scores.mean()), int(m)


def internal_scores(x, labels, xp, sample: int, seed: int) -> dict[str, Any]:
    sil, used = silhouette(x, labels, xp, sample=sample, seed=seed)
    k = int(labels.max()) + 1 if len(labels) else 0
    fit = _fit_of(x, labels, k, xp) if k >= 2 else None
    return {
        "silhouette": sil,
        "silhouette_sample": used,
        "davies_bouldin": davies_bouldin(x, labels, xp, fit),
        "calinski_harabasz": calinski_harabasz(x, labels, xp, fit),
    }


def external_scores(labels, truth) -> dict[str, Any]:
    """ARI and NMI against known groups (host arrays: labels are allowed to leave the device)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels, truth = to_host(labels), to_host(truth)
    return {
        "ari": float(adjusted_rand_score(truth, labels)),
        "nmi": float(normalized_mutual_info_score(truth, labels)),
        "truth_users": int(len(truth)),
    }


def truth_scores(data: Any, frame_labels: Any, truth: Any) -> dict[str, Any]:
    """ARI/NMI over users with a planted group; noise users (group < 0) are left out and counted.

    `frame_labels` are the labels where the frames keep their data (`frames.frame_local`)."""
    from gpuclust import schema
    from gpuclust.errors import UsageError
    from gpuclust.frames import host_frame
    from gpuclust.preprocess.parse import common_key, normalise_ids

    truth = host_frame(truth).dropna(subset=[schema.USER])
    truth = _one_group_each(truth.assign(**{schema.USER: normalise_ids(truth[schema.USER])[0]}))
    users, truth = common_key(host_frame(data.users), truth, schema.USER)
    joined = users.merge(truth, on=schema.USER, how="inner")
    if joined.empty:
        raise UsageError("no user in the truth file matches a user in the events; check its user_id column")
    planted, groups = _planted(joined["group"])
    if not planted.any():  # else ARI = NMI = 1.0 over no user: a perfect score for no evidence
        raise UsageError(f"no user of the truth has a group: all {len(joined):,} users it shares with the events have "
                         "a missing or negative group (noise); check its group column")
    scores = external_scores(to_host(frame_labels)[joined[schema.USER_IDX].to_numpy()[planted]], groups[planted])
    scores["truth_noise_users_excluded"] = int(len(joined) - planted.sum())
    return scores


def _one_group_each(truth: Any) -> Any:
    """The truth with one row per user: a row repeated is one fact, but a user given two groups has no
    one planted group to score against (merged, the rows were counted twice)."""
    from gpuclust import schema
    from gpuclust.errors import UsageError

    truth = truth.drop_duplicates([schema.USER, "group"])
    twice = truth[truth[schema.USER].duplicated(keep=False)]
    if len(twice):
        first = twice[schema.USER].iloc[0]
        groups = twice.loc[twice[schema.USER] == first, "group"].tolist()
        raise UsageError(f"truth gives {twice[schema.USER].nunique():,} users more than one group (e.g. user {first}: "
                         f"{', '.join(map(str, groups[:3]))}); give one row per user")
    return truth


def _planted(group: Any) -> tuple[np.ndarray, np.ndarray]:
    """(mask of users with a planted group, the groups as a NumPy array). Numbers: a group < 0 is noise;
    text (or categories, or a mix of both) is read as text, where no name is noise; missing is no group."""
    import pandas as pd

    present = group.notna().to_numpy()
    if pd.api.types.is_numeric_dtype(group.dtype):
        values = group.to_numpy()
        return present & (np.where(present, values, -1) >= 0), values
    return present, group.astype(str).to_numpy()
