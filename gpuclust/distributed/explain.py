"""The explanations over user partitions: the single-process explainer's parts, fed by reductions.

    profiles, c-TF-IDF   per-cluster behaviour sums and (cluster, item) event weights summed over
                         partitions -> `ClusterProfiler.fit_summaries`, `ClassTfidf.fit_weights`
    anomaly scores       per-cluster median and robust scale of the distances (labels and distances of
                         all users come to the client: 8 bytes a user), then scored per partition
    top anomalies        each partition's top N candidates -> the global top N, described against
                         per-cluster feature means and deviations from sums of squares
    exemplars            each partition's nearest users per centre -> the nearest overall
    map                  a seeded sample of users' vectors -> `project_2d`
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gpuclust import schema
from gpuclust.backend import Backend, array_module, to_host
from gpuclust.distributed.blocks import Blocks
from gpuclust.distributed.prepare import Globals, Part
from gpuclust.explain.ctfidf import ClassTfidf
from gpuclust.explain.explainer import Explanation
from gpuclust.explain.profiles import CLUSTER, ClusterProfiler
from gpuclust.explain.projection import project_2d
from gpuclust.frames import host_frame
from gpuclust.quality.anomaly import anomaly_rows, cluster_spread, deviation_strings, scores_against
from gpuclust.segments import group_moments

# --- per partition --------------------------------------------------------------------------------

def _cluster_items(part: Part, labels):
    """Weighted events per (cluster, item_idx) in this partition (host pandas)."""
    t = part.table
    out = pd.DataFrame({CLUSTER: to_host(labels)[to_host(t.user)], schema.ITEM_IDX: to_host(t.item),
                        schema.WEIGHT: to_host(t.weight)})
    return out.groupby([CLUSTER, schema.ITEM_IDX])[schema.WEIGHT].sum().reset_index()


def _stat_sums(stats, labels, k: int):
    """Per cluster: sums and sums of squares of the behaviour statistics (float64), and counts."""
    return group_moments(to_host(stats.values), to_host(labels), k, np)


def _host_backend() -> Backend:
    from gpuclust.backend import cpu_backend

    return cpu_backend()


def _nearest_candidates(block, labels, part: Part, centres: np.ndarray, n: int):
    """Per cluster, this partition's `n` users nearest its centre: (cluster, squared distance, user_id) rows."""
    xp = array_module(block)
    c = xp.asarray(centres, dtype=xp.float32)
    diff = block - c[labels]
    dist = to_host((diff * diff).sum(axis=1))
    lab = to_host(labels)
    ids = host_frame(part.users)[schema.USER].to_numpy()
    rows = []
    for cluster in np.unique(lab):
        members = np.flatnonzero(lab == cluster)
        best = members[np.argsort(dist[members], kind="stable")[:n]]
        rows += [(int(cluster), float(dist[i]), ids[i]) for i in best]
    return rows


def _scores(labels, distances, median: np.ndarray, scale: np.ndarray):
    xp = array_module(labels)
    return scores_against(labels, distances, xp.asarray(median), xp.asarray(scale), xp)


def _anomaly_candidates(part: Part, labels, distances, scores, stats, n: int):
    """This partition's `n` highest scores with what describing them needs (host)."""
    s = to_host(scores)
    top = np.argsort(-s, kind="stable")[:n]
    ids = host_frame(part.users)[schema.USER].to_numpy()[top]
    features = to_host(stats.values)[top].astype(np.float64)
    return ids, to_host(labels)[top], s[top], to_host(distances)[top], features


def _assignments(part: Part, labels, distances, scores):
    """The assignments of this partition's users: user_id, cluster, distance, anomaly_score."""
    users = host_frame(part.users)
    return pd.DataFrame({schema.USER: users[schema.USER].to_numpy(), "cluster": to_host(labels).astype(np.int32),
                         "distance": to_host(distances).astype(np.float32),
                         "anomaly_score": to_host(scores).astype(np.float32)})


def _sample_rows(block, labels, part: Part, local: np.ndarray):
    xp = array_module(block)
    ids = host_frame(part.users)[schema.USER].to_numpy()[local]
    return to_host(block[xp.asarray(local)]), to_host(labels)[local], ids


# --- on the client --------------------------------------------------------------------------------

def explain(x: Blocks, labels: Blocks, distances: Blocks, parts: Blocks, stats: Blocks, centres: np.ndarray,
            g: Globals, settings: Any, backend: Backend) -> tuple[Explanation, Blocks, np.ndarray]:
    """(explanation, anomaly scores per partition, all labels in partition order)."""
    a = settings.assess
    top_n, k, n = a.top_n, int(centres.shape[0]), x.n_rows
    catalogue = g.prepared()

    all_labels = np.concatenate(labels.gather()).astype(np.int32)
    all_distances = np.concatenate(distances.gather()).astype(np.float32)
    median, scale = cluster_spread(all_labels, all_distances, np)
    scores = labels.map(_scores, distances, median=median, scale=scale)

    sums, squares, counts = stats.total(_stat_sums, labels, k=k)
    names = [str(c) for c in stats.client.submit(_column_names, stats.futures[0]).result()]
    sizes = {c: int(counts[c]) for c in range(k) if counts[c] > 0}
    means = pd.DataFrame(sums / np.maximum(counts, 1)[:, None], columns=names).loc[sorted(sizes)]
    means.index.name = CLUSTER
    population = pd.Series(sums.sum(axis=0) / n, index=names)
    summary = pd.concat(parts.map(_cluster_items, labels).gather(), ignore_index=True)
    summary = summary.groupby([CLUSTER, schema.ITEM_IDX])[schema.WEIGHT].sum().reset_index()
    profiler = ClusterProfiler(top_n).fit_summaries(sizes, means, population, summary, catalogue)

    import scipy.sparse as sp

    per_item = sp.csr_matrix((summary[schema.WEIGHT].to_numpy(np.float64),
                              (summary[CLUSTER].to_numpy(np.int64), summary[schema.ITEM_IDX].to_numpy(np.int64))),
                             shape=(k, g.n_items))
    profiles = ClassTfidf(top_n=top_n + 3, reduce_frequent_words=True).fit_weights(
        per_item, list(range(k)), catalogue).annotate(profiler.profiles_)

    candidates = [row for rows in x.map(_nearest_candidates, labels, parts, centres=centres, n=top_n).gather()
                  for row in rows]
    nearest: dict[int, list] = {}
    for cluster, _, user in sorted(candidates, key=lambda r: (r[0], r[1])):
        if len(nearest.setdefault(cluster, [])) < top_n:
            nearest[cluster].append(user.item() if hasattr(user, "item") else user)
    profiles = [{**p, "exemplars": nearest.get(p["cluster"], [])} for p in profiles]

    anomalies = _top_anomalies(parts, labels, distances, scores, stats, a.anomalies, median, sums, squares, counts,
                               names)

    rows = np.arange(n) if n <= a.map_sample else np.sort(
        np.random.default_rng(settings.seed).choice(n, a.map_sample, replace=False))
    picked = x.rows(_sample_rows, rows, labels, parts)
    xs = np.concatenate([p[0] for p in picked])
    users = pd.DataFrame({schema.USER_IDX: np.arange(len(rows), dtype=np.int32),
                          schema.USER: np.concatenate([p[2] for p in picked])})
    user_map = project_2d(backend.asarray(xs), np.concatenate([p[1] for p in picked]), users, _host_backend(),
                          len(rows), settings.seed)
    spread = (backend.asarray(median), backend.asarray(scale))
    return Explanation(profiles, profiler.population_, anomalies, None, spread, user_map), scores, all_labels


def _column_names(stats) -> list[str]:
    return list(stats.names)


def _top_anomalies(parts: Blocks, labels: Blocks, distances: Blocks, scores: Blocks, stats: Blocks, n: int,
                   median: np.ndarray, sums: np.ndarray, squares: np.ndarray, counts: np.ndarray,
                   names: list[str]) -> list[dict[str, Any]]:
    if n <= 0:
        return []
    found = parts.map(_anomaly_candidates, labels, distances, scores, stats, n=n).gather()
    ids = np.concatenate([f[0] for f in found])
    cluster, score, distance = (np.concatenate([f[i] for f in found]) for i in (1, 2, 3))
    features = np.concatenate([f[4] for f in found])
    top = np.argsort(-score, kind="stable")[:n]
    host = {"cluster": cluster[top], "score": score[top], "distance": distance[top],
            "typical": median[np.maximum(cluster[top], 0)]}
    stats_of = {}
    for c in sorted({int(c) for c in host["cluster"]}):
        mean = sums[c] / max(counts[c], 1)
        stats_of[c] = (mean, np.sqrt(np.maximum(squares[c] / max(counts[c], 1) - mean**2, 0.0)))
    deviations = deviation_strings(features[top], host["cluster"], stats_of, names)
    return anomaly_rows(ids[top], host, deviations)


def assignments(parts: Blocks, labels: Blocks, distances: Blocks, scores: Blocks) -> Blocks:
    return parts.map(_assignments, labels, distances, scores)

