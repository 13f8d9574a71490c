"""The default representation: what each cluster is, in terms a team can act on.

`ClusterExplainer.explain` wires the explanation stages, each a small module of its own: profiles
(size, behaviour against the population, top items and categories), c-TF-IDF terms and a short label,
exemplar users nearest each centre, per-user anomaly scores with the top anomalies and why, and a
sampled 2-D map. Swap it with `UserClusterer(representation=...)`: anything with this `explain`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.backend import Backend
from gpuclust.cluster.outcome import ClusterOutcome
from gpuclust.explain.ctfidf import ClassTfidf
from gpuclust.explain.exemplars import nearest_users
from gpuclust.explain.profiles import ClusterProfiler
from gpuclust.explain.projection import project_2d
from gpuclust.frames import host_frame
from gpuclust.preprocess.prepared import PreparedData
from gpuclust.quality.anomaly import anomaly_scores, cluster_spread, top_anomalies


@dataclass
class Explanation:
    profiles: list[dict]  # one per cluster (noise, if any, last)
    population: dict  # behaviour means over all users, what lifts are measured against
    anomalies: list[dict]  # the most anomalous users and why
    scores: Any  # per-user anomaly score, xp float32
    spread: tuple[Any, Any]  # per-cluster (median, robust scale) of distances: new users are scored on it
    map: Any  # user_id, x, y, cluster for a sample of users


class ClusterExplainer:
    """Profiles, c-TF-IDF labels, exemplars, anomaly scores and a 2-D map for a fitted clustering."""

    def __init__(self, top_n: int = 5, anomalies: int = 20, map_sample: int = 20_000, seed: int = 0) -> None:
        self.top_n = top_n
        self.anomalies = anomalies
        self.map_sample = map_sample
        self.seed = seed

    def explain(self, data: PreparedData, x: Any, outcome: ClusterOutcome, backend: Backend,
                stats: Any) -> Explanation:
        """`stats` are the users' behaviour statistics (`features.behaviour.UserStatistics`)."""
        xp = backend.xp
        labels = outcome.labels  # on the device: profiles and c-TF-IDF are group sums over the event table
        profiler = ClusterProfiler(self.top_n).fit(data, labels, stats, backend)
        profiles = ClassTfidf(top_n=self.top_n + 3, reduce_frequent_words=True).fit(data, labels).annotate(
            profiler.profiles_)
        profiles = self._exemplars(profiles, data, x, outcome, xp)
        scores = anomaly_scores(outcome.labels, outcome.distances, xp, noise=outcome.noise)
        anomalies = top_anomalies(data.users[schema.USER], outcome.labels, scores, outcome.distances,
                                  self.anomalies, xp, feature_matrix=stats.values, feature_names=stats.names,
                                  noise=outcome.noise)
        user_map = project_2d(x, labels, data.users, backend, self.map_sample, self.seed)
        spread = cluster_spread(outcome.labels, outcome.distances, xp)
        return Explanation(profiles, profiler.population_, anomalies, scores, spread, user_map)

    def _exemplars(self, profiles: list[dict], data: PreparedData, x: Any, outcome: ClusterOutcome, xp) -> list[dict]:
        """The users nearest each centre: concrete people to look at to see what a cluster means."""
        nearest = nearest_users(x, outcome.labels, outcome.centres, np.arange(data.n_users), n=self.top_n, xp=xp)
        wanted = sorted({i for rows in nearest.values() for i in rows})
        ids = host_frame(data.users.take(wanted))[schema.USER].tolist() if wanted else []
        lookup = dict(zip(wanted, ids, strict=True))
        return [{**p, "exemplars": [lookup[i] for i in nearest.get(p["cluster"], [])]} for p in profiles]
