"""The pipeline wires the stages; each stage is a small swappable object with one job.

    preprocess -> features -> fuse -> [reduce] -> [k sweep] -> cluster -> assess -> explain

`Pipeline(config).fit(events, items=None, truth=None)` takes cuDF or pandas frames and returns the
same kind in `labels_`. `save`/`load`/`assign` place new users in the learned clusters.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import gpuclust
from gpuclust import accelerators, schema
from gpuclust.assess.anomaly import anomaly_scores, top_anomalies
from gpuclust.assess.metrics import external_scores, internal_scores
from gpuclust.backend import Backend, array_module, resolve_backend, to_host, transfers
from gpuclust.cluster.density import non_noise
from gpuclust.cluster.factory import TAKES_K, build_clusterer
from gpuclust.cluster.kmeans import assign, check_k
from gpuclust.cluster.sweep import KSweep, sweep_k
from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.explain.ctfidf import ClassTfidf
from gpuclust.explain.exemplars import nearest_users
from gpuclust.explain.profiles import ClusterProfiler
from gpuclust.explain.projection import project_2d
from gpuclust.features.base import Featurizer
from gpuclust.features.behaviour import BehaviourFeaturizer
from gpuclust.features.fuse import Fuser
from gpuclust.features.tfidf import TfidfFeaturizer
from gpuclust.frames import array_frame, frame_kind, frame_local, host_frame, like_input, to_backend_frame
from gpuclust.manifest import StageRecorder, machine, now_iso, versions
from gpuclust.preprocess.clean import Preprocessor
from gpuclust.preprocess.parse import common_key, normalise_ids
from gpuclust.preprocess.prepared import PreparedData, StepCount
from gpuclust.reduce import build_reducer

StageCallback = Callable[[str], None]


def default_featurizers(config: PipelineConfig) -> list[Featurizer]:
    """The featurisers that `config.features.features` names, built from the config."""
    feats = config.features
    built: list[Featurizer] = []
    for name in feats.features:
        if name == "behaviour":
            built.append(BehaviourFeaturizer(feats.normalise, config.preprocess.session_gap_minutes))
        elif name == "tfidf":
            built.append(TfidfFeaturizer(feats.tfidf_vocabularies, feats.tfidf_components, feats.svd_oversamples,
                                         feats.svd_power_iterations, config.seed))
        elif name == "text":
            from gpuclust.features.text.featurizer import TextFeaturizer

            built.append(TextFeaturizer(**feats.text, seed=config.seed))
    return built


def default_clusterer(config: PipelineConfig, k: int | None = None):
    c = config.cluster
    return build_clusterer(c.algorithm, c.k if k is None else k, c.engine, config.seed, c.n_init, c.max_iter, c.tol,
                           c.eps, c.min_samples, c.min_cluster_size)


class Pipeline:
    """Cluster users by behaviour. Stages default from the config and each can be replaced."""

    def __init__(self, config: PipelineConfig | None = None, *, preprocessor: Preprocessor | None = None,
                 featurizers: Sequence[Featurizer] | None = None, reducer: Any = None, clusterer: Any = None,
                 profiler: ClusterProfiler | None = None) -> None:
        self.config = config
        self.preprocessor = preprocessor
        self.featurizers = featurizers
        self.reducer = reducer
        self.clusterer = clusterer
        self.profiler = profiler

    def fit(self, events: Any, items: Any = None, truth: Any = None, *, steps: list[StepCount] | None = None,
            recorder: StageRecorder | None = None, on_stage: StageCallback | None = None) -> Pipeline:
        config = (self.config or PipelineConfig()).validate()
        backend = resolve_backend(config.device)
        kind = frame_kind(events)
        rec = recorder or StageRecorder(backend)
        rec.backend = backend
        transfers_before = transfers.bytes
        notify = on_stage or (lambda _name: None)
        preprocessor = self.preprocessor or Preprocessor(config.preprocess, seed=config.seed)
        featurizers = list(self.featurizers) if self.featurizers is not None else default_featurizers(config)
        reducer = self.reducer or build_reducer(config.reduce.method, config.reduce.n_components, config.seed,
                                                n_neighbors=config.reduce.n_neighbors, min_dist=config.reduce.min_dist)
        profiler = self.profiler or ClusterProfiler(config.assess.top_n)

        notify("preprocess")
        with rec.stage("preprocess"):
            events = to_backend_frame(events, backend)
            items = None if items is None else to_backend_frame(items, backend)
            data = preprocessor.run(events, backend, items, steps)
        k_values = self._check_k(config, data.n_users)

        blocks, feature_info = {}, {}
        for featurizer in featurizers:
            notify(f"features.{featurizer.name}")
            with rec.stage(f"features.{featurizer.name}"):
                blocks[featurizer.name] = featurizer.fit_transform(data, backend)
            feature_info[featurizer.name] = getattr(featurizer, "info_", {})
        notify("fuse")
        with rec.stage("fuse"):
            fuser = Fuser(config.features.weights)
            x = fuser.fit_transform(blocks, backend.xp)
        if reducer is not None:
            notify("reduce")
            with rec.stage("reduce"):
                x = reducer.fit_transform(x, backend)

        sweep = None
        if self.clusterer is None and k_values:
            notify("k_sweep")
            with rec.stage("k_sweep"):
                sweep = sweep_k(x, backend, k_values, lambda k: default_clusterer(config, k),
                                config.assess.silhouette_sample, config.seed)
        clusterer = self.clusterer or default_clusterer(config, sweep.best_k if sweep else None)
        notify("cluster")
        with rec.stage("cluster"):
            clusterer.fit(x, backend)
        labels = clusterer.labels_  # on the device; metrics, anomaly scores and exemplars read them there
        noise = getattr(clusterer, "noise_", None)

        notify("assess")
        with rec.stage("assess"):
            # The frame code (truth scores, profiles, c-TF-IDF, the map, the assignments) reads this one copy:
            # the labels cross to the host once with pandas frames on a GPU, and not at all with cuDF.
            frame_labels = frame_local(labels, backend)
            scored_x, scored_labels = non_noise(x, labels) if noise is not None else (x, labels)
            metrics = internal_scores(scored_x, scored_labels, backend.xp, config.assess.silhouette_sample,
                                      config.seed)
            if noise is not None:
                metrics["noise_users"] = int(getattr(clusterer, "n_noise_", int(noise.sum())))
            if truth is not None:
                metrics.update(_truth_scores(data, frame_labels, truth))
            scores = anomaly_scores(labels, clusterer.distances_, backend.xp, noise=noise)

        notify("explain")
        with rec.stage("explain"):
            behaviour = next((f for f in featurizers if isinstance(f, BehaviourFeaturizer)), None)
            raw = behaviour.raw_ if behaviour is not None else BehaviourFeaturizer().raw_frame(data, backend)
            profiler.fit(data, frame_labels, raw, backend)
            profiles = self._annotate(profiler.profiles_, data, x, clusterer, frame_labels, backend, config)
            anomalies = top_anomalies(data.users[schema.USER], labels, scores, clusterer.distances_,
                                      config.assess.anomalies, feature_matrix=raw, feature_names=list(raw.columns),
                                      noise=noise)
            user_map = project_2d(x, frame_labels, data.users, backend, config.assess.map_sample, config.seed)

        self.backend_: Backend = backend
        self.config_ = config
        self.data_: PreparedData = data
        self.features_ = x
        self.featurizers_ = featurizers
        self.fuser_ = fuser
        self.reducer_ = reducer
        self.clusterer_ = clusterer
        self.sweep_: KSweep | None = sweep
        self.profiles_: list[dict] = profiles
        self.population_: dict = profiler.population_
        self.metrics_: dict = metrics
        self.anomalies_: list[dict] = anomalies
        self.labels_ = like_input(self._assignments(data, frame_labels, clusterer.distances_, scores, backend), kind)
        self.map_ = like_input(user_map, kind)
        self.manifest_ = self._manifest(config, backend, data, rec, feature_info, fuser.layout_,
                                        transfers.bytes - transfers_before)
        return self

    # --- stage helpers ----------------------------------------------------------------------------

    def _check_k(self, config: PipelineConfig, n_users: int) -> tuple[int, ...]:
        """Impossible k fails before any feature is computed; returns the k values to sweep, if any."""
        if self.clusterer is not None:
            if getattr(self.clusterer, "algorithm", "kmeans") in TAKES_K:
                check_k(self.clusterer.n_clusters, n_users)
            return ()
        if config.cluster.algorithm not in TAKES_K:
            return ()
        if not config.cluster.k_values:
            check_k(config.cluster.k, n_users)
            return ()
        check_k(min(config.cluster.k_values), n_users)
        return tuple(k for k in config.cluster.k_values if k < n_users)

    @staticmethod
    def _annotate(profiles: list[dict], data: PreparedData, x: Any, clusterer: Any, frame_labels: Any,
                  backend: Backend, config: PipelineConfig) -> list[dict]:
        """Add a readable label and distinctive terms (c-TF-IDF) and the users nearest each centre."""
        profiles = ClassTfidf(top_n=config.assess.top_n + 3, reduce_frequent_words=True).fit(
            data, frame_labels).annotate(profiles)
        centres = getattr(clusterer, "cluster_centers_", None)
        if centres is None:
            return profiles
        nearest = nearest_users(x, clusterer.labels_, centres, np.arange(data.n_users), n=config.assess.top_n,
                                xp=backend.xp)
        wanted = sorted({i for rows in nearest.values() for i in rows})
        ids = host_frame(data.users.take(wanted))[schema.USER].tolist() if wanted else []
        lookup = dict(zip(wanted, ids, strict=True))
        return [{**p, "exemplars": [lookup[i] for i in nearest.get(p["cluster"], [])]} for p in profiles]

    @staticmethod
    def _assignments(data: PreparedData, frame_labels: Any, distances: Any, scores: Any, backend: Backend):
        """The one per-user output: labels as `frame_local` placed them; distances and scores cross here."""
        xp = array_module(frame_labels)
        out = array_frame({schema.USER_IDX: xp.arange(data.n_users, dtype=np.int32), "cluster": frame_labels,
                           "distance": distances, "anomaly_score": scores.astype(backend.xp.float32)}, backend)
        out = data.users.merge(out, on=schema.USER_IDX).sort_values(schema.USER_IDX)
        return out[[schema.USER, "cluster", "distance", "anomaly_score"]].reset_index(drop=True)

    def _manifest(self, config, backend, data, rec, feature_info, layout, moved) -> dict:
        clusterer = self.clusterer_
        return {
            "gpuclust": gpuclust.__version__,
            "run_id": uuid.uuid4().hex,
            "created": now_iso(),
            "config": config.to_dict(),
            "device": machine(backend),
            "accelerators": [vars(a) for a in accelerators.all_accelerators()],
            "versions": versions(),
            "timings": rec.summary(),
            "rows": {"steps": [s.to_dict() for s in data.steps], "events": len(data.events), "users": data.n_users,
                     "items": data.n_items},
            "features": {"blocks": feature_info, "layout": layout, "dims": int(self.features_.shape[1])},
            "reduce": None if self.reducer_ is None else getattr(self.reducer_, "info_", {}),
            "cluster": {
                "algorithm": getattr(clusterer, "algorithm", type(clusterer).__name__),
                "engine": getattr(clusterer, "engine_", None),
                "k": len({p["cluster"] for p in self.profiles_ if p["cluster"] >= 0}),
                "inertia": getattr(clusterer, "inertia_", None),
                "n_iter": getattr(clusterer, "n_iter_", None),
                "seed": config.seed,
                "k_sweep": None if self.sweep_ is None else self.sweep_.to_dict(),
            },
            "metrics": self.metrics_,
            "device_to_host_bytes": moved,
        }

    # --- saved models -----------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Everything `assign` needs to place new users: config, fitted featurisers, fuser, reducer, centres."""
        from gpuclust.model import save_pipeline

        if not hasattr(self, "clusterer_"):
            raise UsageError("this pipeline is not fitted: call fit() first")
        return save_pipeline(self, directory)

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> Pipeline:
        """A pipeline ready to `assign`; `device` overrides the saved config's device."""
        from gpuclust.model import load_pipeline

        return load_pipeline(cls, directory, device)

    def assign(self, events: Any) -> Any:
        """Place new users in the learned clusters: same featurisers and scales, nearest centroid.

        Density clusterings (DBSCAN/HDBSCAN) place new users at the nearest cluster mean; they are never
        labelled noise here."""
        if not hasattr(self, "centres_") and not hasattr(self, "clusterer_"):
            raise UsageError("assign needs a fitted or loaded pipeline: call fit() or Pipeline.load(dir)")
        backend, config = self.backend_, self.config_
        kind = frame_kind(events)
        vocabulary = getattr(self, "vocabulary_", None)
        vocabulary = self.data_.items if vocabulary is None else vocabulary
        prep_config = dataclasses.replace(config.preprocess, min_item_events=1, sample_users=None)
        data = Preprocessor(prep_config, seed=config.seed).run(to_backend_frame(events, backend), backend,
                                                              vocabulary=vocabulary)
        x = self.fuser_.transform({f.name: f.transform(data, backend) for f in self.featurizers_}, backend.xp)
        if self.reducer_ is not None:
            x = self.reducer_.transform(x, backend)
        centres = getattr(self, "centres_", None)
        labels, distances = assign(x, self.clusterer_.cluster_centers_ if centres is None else centres, backend.xp)
        labels = frame_local(labels, backend)
        out = array_frame({schema.USER_IDX: array_module(labels).arange(data.n_users, dtype=np.int32), "cluster": labels,
                           "distance": distances}, backend)
        out = data.users.merge(out, on=schema.USER_IDX).sort_values(schema.USER_IDX)
        self.assign_data_ = data
        return like_input(out[[schema.USER, "cluster", "distance"]].reset_index(drop=True), kind)


def _truth_scores(data: PreparedData, labels: Any, truth: Any) -> dict:
    """ARI/NMI over users with a planted group; noise users (group < 0) are left out and counted."""
    truth = host_frame(truth).dropna(subset=[schema.USER])
    truth = truth.assign(**{schema.USER: normalise_ids(truth[schema.USER])[0]})
    users, truth = common_key(host_frame(data.users), truth, schema.USER)
    joined = users.merge(truth, on=schema.USER, how="inner")
    if joined.empty:
        raise UsageError("no user in the truth file matches a user in the events; check its user_id column")
    planted = joined[joined["group"] >= 0]
    host_labels = to_host(labels)
    scores = external_scores(host_labels[planted[schema.USER_IDX].to_numpy()], planted["group"].to_numpy())
    scores["truth_noise_users_excluded"] = int(len(joined) - len(planted))
    return scores
