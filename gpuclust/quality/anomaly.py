"""Per-user anomaly scores: how unusually far a user sits from its own cluster's centre.

score = (d - median_c) / (1.4826 * MAD_c), the robust z-score of the distance d to the own centroid, with the
median and MAD taken within the user's cluster c (1.4826 makes the MAD a standard deviation for normal data;
where the MAD is 0, 1.2533 * mean absolute deviation stands in, and a cluster of identical distances scores 0).
Scores are comparable across tight and loose clusters, which raw distances are not. Users that DBSCAN/HDBSCAN
left as noise belong to no cluster: they score against all clustered users' distances and at least
NOISE_SCORE, so they always rank as outliers. Everything runs on xp; only the top-N rows reach the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpuclust.backend import is_device_array, to_host

MAD_TO_SD = 1.4826
MEAN_AD_TO_SD = 1.2533
# The usual cut-off for a modified z-score (Iglewicz and Hoaglin): above it a user is unusually far out.
OUTLIER_SCORE = 3.5
# Above OUTLIER_SCORE, so noise ranks as anomalous.
NOISE_SCORE = 5.0


def _segment_medians(values, groups, k: int, xp):
    """Median of `values` within each group 0..k-1 by two stable sorts (no per-group loop); empty groups get 0."""
    order = xp.argsort(values, kind="stable") if xp is np else xp.argsort(values)  # CuPy's sort is stable
    order = order[xp.argsort(groups[order], kind="stable") if xp is np else xp.argsort(groups[order])]
    ordered = values[order]
    counts = xp.bincount(groups, minlength=k)
    starts = xp.cumsum(counts) - counts
    last = ordered.shape[0] - 1
    lo = xp.clip(starts + (counts - 1) // 2, 0, max(last, 0))
    hi = xp.clip(starts + counts // 2, 0, max(last, 0))
    if ordered.shape[0] == 0:
        return xp.zeros(k, dtype=values.dtype)
    return xp.where(counts > 0, (ordered[lo] + ordered[hi]) / 2, 0.0)


def cluster_spread(labels, distances, xp):
    """(median distance, robust scale) per cluster 0..k-1 (xp float64), from members only (label >= 0)."""
    member = labels >= 0
    lab = labels[member].astype(xp.int64)
    dist = distances[member].astype(xp.float64)
    k = int(lab.max()) + 1 if lab.shape[0] else 0
    if k == 0:
        return xp.zeros(0, dtype=xp.float64), xp.zeros(0, dtype=xp.float64)
    median = _segment_medians(dist, lab, k, xp)
    dev = xp.abs(dist - median[lab])
    mad = _segment_medians(dev, lab, k, xp)
    counts = xp.maximum(xp.bincount(lab, minlength=k), 1)
    mean_ad = xp.bincount(lab, weights=dev, minlength=k) / counts
    scale = xp.where(mad > 0, MAD_TO_SD * mad, MEAN_AD_TO_SD * mean_ad)
    return median, scale


def _pooled_spread(labels, distances, xp) -> tuple[Any, Any]:
    """Median and robust scale of all clustered users' distances (the yardstick for noise users)."""
    dist = distances[labels >= 0].astype(xp.float64)
    if dist.shape[0] == 0:
        dist = distances.astype(xp.float64)
    median = xp.median(dist)
    dev = xp.abs(dist - median)
    mad = xp.median(dev)
    scale = xp.where(mad > 0, MAD_TO_SD * mad, MEAN_AD_TO_SD * dev.mean())
    return median, scale


def _z(dist, median, scale, xp):
    safe = xp.where(scale > 0, scale, 1.0)
    return xp.where(scale > 0, (dist - median) / safe, 0.0)


def anomaly_scores(labels: Any, distances: Any, xp, noise: Any = None):
    """Robust z-score of each user's distance within its cluster (xp float32); noise users >= NOISE_SCORE.

    `noise` is an optional bool mask (a density clusterer's `noise_`); labels < 0 count as noise too.
    """
    noise_mask = labels < 0
    if noise is not None:
        noise_mask = noise_mask | noise
    labels = xp.where(noise_mask, -1, labels)
    dist = distances.astype(xp.float64)
    median, scale = cluster_spread(labels, dist, xp)
    own = xp.maximum(labels, 0)
    if median.shape[0]:
        scores = _z(dist, median[own], scale[own], xp)
    else:
        scores = xp.zeros(dist.shape[0], dtype=xp.float64)
    if bool(noise_mask.any()):
        pooled_median, pooled_scale = _pooled_spread(labels, dist, xp)
        scores = xp.where(noise_mask, xp.maximum(_z(dist, pooled_median, pooled_scale, xp), NOISE_SCORE), scores)
    return scores.astype(xp.float32)


def scores_against(labels: Any, distances: Any, median: Any, scale: Any, xp):
    """New users' scores against the spreads fitted with `cluster_spread` (they are placed in a cluster,
    never noise), so a saved model scores them as the fit scored its own users."""
    own = xp.clip(labels, 0, max(int(median.shape[0]) - 1, 0))
    return _z(distances.astype(xp.float64), median[own], scale[own], xp).astype(xp.float32)


def top_anomalies(user_ids: Any, labels: Any, scores: Any, distances: Any, n: int, xp, feature_matrix: Any = None,
                  feature_names: Any = None, noise: Any = None) -> list[dict[str, Any]]:
    """The `n` highest-scoring users with a readable `why`; only those rows (and small summaries) leave the device.

    `user_ids` is aligned with the rows: a host array (or a pandas/cuDF Series; only the top ids are taken). With `feature_matrix` (xp array or frame, rows aligned)
    and `feature_names`, `why` also names the 2 features where the user is furthest from its cluster's mean,
    in units of that cluster's standard deviation (the whole population's for noise users).
    """
    m = min(int(n), int(scores.shape[0]))
    if m <= 0:
        return []
    noise_mask = labels < 0
    if noise is not None:
        noise_mask = noise_mask | noise
    labels = xp.where(noise_mask, -1, labels)
    top = xp.argsort(-scores)[:m]
    median, _ = cluster_spread(labels, distances, xp)
    pooled_median, _ = _pooled_spread(labels, distances.astype(xp.float64), xp)
    typical = xp.where(labels[top] >= 0, median[xp.maximum(labels[top], 0)] if median.shape[0] else 0.0,
                       pooled_median)
    host = {name: to_host(value) for name, value in {
        "idx": top, "cluster": labels[top], "score": scores[top], "distance": distances[top],
        "typical": typical}.items()}
    deviations = _feature_deviations(feature_matrix, feature_names, labels, top, host["cluster"], xp)
    return anomaly_rows(_top_ids(user_ids, host["idx"], top), host, deviations)


def anomaly_rows(ids: Any, host: dict[str, np.ndarray], deviations: list[list[str]] | None) -> list[dict[str, Any]]:
    """The top anomalies as the outputs list them: `host` holds aligned host arrays cluster, score,
    distance and typical (the cluster's median distance; for noise the pooled one), `deviations` the
    feature strings of each row (`deviation_strings`)."""
    rows = []
    for i in range(len(ids)):
        cluster = int(host["cluster"][i])
        is_noise = cluster < 0
        distance, typical = float(host["distance"][i]), float(host["typical"][i])
        where = "the typical distance to a centre" if is_noise else "the cluster's typical distance"
        reason = f"distance {distance / typical:.1f}x {where}" if typical > 0 else f"distance {distance:.3g} ({where} is 0)"
        if is_noise:
            reason = "density noise; " + reason
        if deviations is not None:
            reason += "; " + ", ".join(deviations[i])
        user = ids[i]
        rows.append({
            "user_id": user.item() if hasattr(user, "item") else user,
            "cluster": cluster,
            "score": float(host["score"][i]),
            "distance": distance,
            "noise": is_noise,
            "why": reason,
        })
    return rows


def _top_ids(user_ids: Any, top_host: np.ndarray, top: Any) -> np.ndarray:
    """The ids of the top rows only: a host array, a pandas/cuDF Series, or a device array."""
    if hasattr(user_ids, "iloc"):
        return np.asarray(to_host(user_ids.iloc[top_host]))
    if is_device_array(user_ids):
        return to_host(user_ids[top])
    return np.asarray(user_ids)[top_host]


def _feature_deviations(matrix, names, labels, top, top_clusters: np.ndarray, xp) -> list[list[str]] | None:
    """For each top row, the 2 features with the largest |z| against its cluster (host strings)."""
    if matrix is None:
        return None
    if hasattr(matrix, "columns"):  # a pandas / cuDF frame
        names = list(matrix.columns) if names is None else names
        matrix = matrix.to_cupy() if hasattr(matrix, "to_cupy") else matrix.to_numpy()
    if names is None:
        return None
    names = [str(name) for name in names]
    if len(names) != matrix.shape[1]:
        raise ValueError(f"{len(names)} feature names for a matrix with {matrix.shape[1]} columns")
    if isinstance(matrix, np.ndarray) and xp is not np:
        # Host features beside device labels (pandas frames on a GPU): the features go to the device, not
        # the labels to the host; only the top rows and per-cluster summaries come back.
        matrix = xp.asarray(matrix)
    rows = to_host(matrix[top].astype(xp.float64))
    stats = {}
    for cluster in sorted({int(c) for c in top_clusters}):
        members = (matrix if cluster < 0 else matrix[labels == cluster]).astype(xp.float64)
        stats[cluster] = (to_host(members.mean(axis=0)), to_host(members.std(axis=0)))
    return deviation_strings(rows, top_clusters, stats, names)


def deviation_strings(rows: np.ndarray, top_clusters: np.ndarray, stats: dict[int, tuple[np.ndarray, np.ndarray]],
                      names: list[str]) -> list[list[str]]:
    """For each row (host float64 features) the 2 features furthest from its cluster's mean, in that
    cluster's standard deviations; `stats` maps a cluster (-1: the population) to (mean, std)."""
    out = []
    for i, cluster in enumerate(top_clusters):
        mean, std = stats[int(cluster)]
        z = (rows[i] - mean) / np.where(std > 0, std, 1.0)
        z = np.where(std > 0, z, 0.0)
        best = np.argsort(-np.abs(z), kind="stable")[:2]
        where = "the population" if cluster < 0 else "the cluster"
        out.append([f"{names[j]} {abs(z[j]):.1f} sd {'above' if z[j] >= 0 else 'below'} {where} mean"
                    for j in best])
    return out
