"""The pipeline wires the stages; each stage is a small swappable object with one job.

    preprocess -> features (+ fuse) -> cluster -> assess -> explain

`Pipeline(config).fit(events, items=None, truth=None)` takes cuDF or pandas frames and returns the
same kind in `labels_`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import gpuclust
from gpuclust import accelerators, schema
from gpuclust.assess.metrics import external_scores, internal_scores
from gpuclust.backend import Backend, resolve_backend, to_host, transfers
from gpuclust.cluster.kmeans import KMeans, assign, check_k
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
from gpuclust.frames import array_frame, frame_kind, host_frame, like_input, to_backend_frame
from gpuclust.manifest import StageRecorder, machine, now_iso, versions
from gpuclust.model import load_model, save_model, split_arrays
from gpuclust.preprocess.clean import Preprocessor
from gpuclust.preprocess.prepared import PreparedData, StepCount

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


class Pipeline:
    """Cluster users by behaviour. Stages default from the config and can each be replaced."""

    def __init__(self, config: PipelineConfig | None = None, *, preprocessor: Preprocessor | None = None,
                 featurizers: Sequence[Featurizer] | None = None, clusterer: KMeans | None = None,
                 profiler: ClusterProfiler | None = None) -> None:
        self.config = config
        self.preprocessor = preprocessor
        self.featurizers = featurizers
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
        clusterer = self.clusterer or KMeans(config.cluster.k, config.cluster.engine, config.cluster.n_init,
                                             config.cluster.max_iter, config.cluster.tol, config.seed)
        profiler = self.profiler or ClusterProfiler(config.assess.top_n)

        notify("preprocess")
        with rec.stage("preprocess"):
            events = to_backend_frame(events, backend)
            items = None if items is None else to_backend_frame(items, backend)
            data = preprocessor.run(events, backend, items, steps)
        check_k(clusterer.n_clusters, data.n_users)

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
            layout = fuser.layout_

        notify("cluster")
        with rec.stage("cluster"):
            clusterer.fit(x, backend)

        notify("assess")
        with rec.stage("assess"):
            metrics = internal_scores(x, clusterer.labels_, backend.xp, config.assess.silhouette_sample, config.seed)
            if truth is not None:
                metrics.update(_truth_scores(data, clusterer.labels_, truth))

        notify("explain")
        with rec.stage("explain"):
            behaviour = next((f for f in featurizers if isinstance(f, BehaviourFeaturizer)), None)
            raw = behaviour.raw_ if behaviour is not None else BehaviourFeaturizer().raw_frame(data, backend)
            profiler.fit(data, clusterer.labels_, raw, backend)
            profiles = self._annotate(profiler.profiles_, data, x, clusterer, backend, config)
            user_map = project_2d(x, clusterer.labels_, data.users, backend, config.assess.map_sample, config.seed)

        self.backend_: Backend = backend
        self.config_ = config
        self.data_: PreparedData = data
        self.features_ = x
        self.clusterer_ = clusterer
        self.featurizers_ = featurizers
        self.fuser_ = fuser
        self.profiles_: list[dict] = profiles
        self.population_: dict = profiler.population_
        self.metrics_: dict = metrics
        self.labels_ = like_input(self._assignments(data, clusterer, backend), kind)
        self.map_ = like_input(user_map, kind)
        self.manifest_ = self._manifest(config, backend, data, rec, feature_info, layout, clusterer, metrics,
                                        transfers.bytes - transfers_before)
        return self

    @staticmethod
    def _annotate(profiles: list[dict], data: PreparedData, x: Any, clusterer: Any, backend: Backend,
                  config: PipelineConfig) -> list[dict]:
        """Add a readable label and distinctive terms (c-TF-IDF) and the users nearest each centre."""
        profiles = ClassTfidf(top_n=config.assess.top_n + 3, reduce_frequent_words=True).fit(
            data, clusterer.labels_).annotate(profiles)
        centres = getattr(clusterer, "cluster_centers_", None)
        if centres is None:
            return profiles
        nearest = nearest_users(x, clusterer.labels_, centres, np.arange(data.n_users), n=config.assess.top_n,
                                xp=backend.xp)
        wanted = sorted({i for rows in nearest.values() for i in rows})
        ids = host_frame(data.users.take(wanted))[schema.USER].tolist() if wanted else []
        lookup = dict(zip(wanted, ids, strict=True))
        return [{**p, "exemplars": [lookup[i] for i in nearest.get(p["cluster"], [])]} for p in profiles]

    # --- saved models ---------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Everything `assign` needs to place new users: config, fitted featurisers, fuser, centres."""
        self._check_fitted()
        featurizers, arrays = [], {}
        for f in self.featurizers_:
            if not hasattr(f, "state"):
                raise UsageError(f"featuriser {f.name!r} cannot be saved (it has no state())")
            meta, state = f.state()
            featurizers.append({"name": f.name, "meta": meta})
            arrays.update({f"featurizer.{f.name}.{k}": v for k, v in state.items()})
        fuser = {name: {"scale": s["scale"], "weight": s["weight"]} for name, s in self.fuser_.stats_.items()}
        arrays.update({f"fuser.{name}.mean": s["mean"] for name, s in self.fuser_.stats_.items()})
        arrays["clusterer.centres"] = self.clusterer_.cluster_centers_
        meta = {
            "gpuclust": gpuclust.__version__,
            "config": self.config_.to_dict(),
            "featurizers": featurizers,
            "fuser": fuser,
            "clusterer": {"engine": self.clusterer_.engine_, "k": int(self.clusterer_.cluster_centers_.shape[0])},
        }
        vocabulary = self.data_.items
        return save_model(directory, meta, arrays, vocabulary)

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> Pipeline:
        """A pipeline ready to `assign`; `device` overrides the saved config's device."""
        backend = resolve_backend(device or "auto")
        meta, arrays, items = load_model(directory, backend)
        config = PipelineConfig.from_dict(meta["config"])
        if device:
            config.device = device
        self = cls(config)
        self.config_ = config
        self.backend_ = backend
        self.vocabulary_ = items
        self.featurizers_ = [
            _featurizer_class(f["name"]).from_state(f["meta"], split_arrays(arrays, f"featurizer.{f['name']}"),
                                                   backend)
            for f in meta["featurizers"]
        ]
        self.fuser_ = Fuser({n: s["weight"] for n, s in meta["fuser"].items()})
        self.fuser_.stats_ = {n: {"mean": arrays[f"fuser.{n}.mean"], **s} for n, s in meta["fuser"].items()}
        self.centres_ = arrays["clusterer.centres"]
        return self

    def assign(self, events: Any) -> Any:
        """Place new users in the learned clusters: same featurisers, same scales, nearest centroid."""
        if not hasattr(self, "fuser_"):
            raise UsageError("assign needs a fitted or loaded pipeline: call fit() or Pipeline.load(dir)")
        backend, config = self.backend_, self.config_
        kind = frame_kind(events)
        vocabulary = getattr(self, "vocabulary_", None)
        vocabulary = self.data_.items if vocabulary is None else vocabulary
        prep_config = dataclasses.replace(config.preprocess, min_item_events=1, sample_users=None)
        data = Preprocessor(prep_config, seed=config.seed).run(to_backend_frame(events, backend), backend,
                                                              vocabulary=vocabulary)
        blocks = {f.name: f.transform(data, backend) for f in self.featurizers_}
        x = self.fuser_.transform(blocks, backend.xp)
        centres = getattr(self, "centres_", None)
        centres = self.clusterer_.cluster_centers_ if centres is None else centres
        labels, distances = assign(x, centres, backend.xp)
        out = array_frame({schema.USER_IDX: backend.xp.arange(data.n_users, dtype=np.int32),
                           "cluster": labels, "distance": distances}, backend)
        out = data.users.merge(out, on=schema.USER_IDX).sort_values(schema.USER_IDX)
        self.assign_data_ = data
        return like_input(out[[schema.USER, "cluster", "distance"]].reset_index(drop=True), kind)

    def _check_fitted(self) -> None:
        if not hasattr(self, "fuser_") or not hasattr(self, "clusterer_"):
            raise UsageError("this pipeline is not fitted: call fit() first")

    def _assignments(self, data: PreparedData, clusterer: KMeans, backend: Backend):
        out = array_frame({schema.USER_IDX: backend.xp.arange(data.n_users, dtype=np.int32),
                           "cluster": clusterer.labels_, "distance": clusterer.distances_}, backend)
        out = data.users.merge(out, on=schema.USER_IDX).sort_values(schema.USER_IDX)
        return out[[schema.USER, "cluster", "distance"]].reset_index(drop=True)

    def _manifest(self, config, backend, data, rec, feature_info, layout, clusterer, metrics, moved) -> dict:
        return {
            "gpuclust": gpuclust.__version__,
            "created": now_iso(),
            "config": config.to_dict(),
            "device": machine(backend),
            "accelerators": [vars(a) for a in accelerators.all_accelerators()],
            "versions": versions(),
            "timings": rec.summary(),
            "rows": {
                "steps": [s.to_dict() for s in data.steps],
                "events": len(data.events),
                "users": data.n_users,
                "items": data.n_items,
            },
            "features": {"blocks": feature_info, "layout": layout, "dims": int(self.features_.shape[1])},
            "cluster": {
                "algorithm": "kmeans",
                "engine": clusterer.engine_,
                "k": clusterer.n_clusters,
                "inertia": clusterer.inertia_,
                "n_iter": getattr(clusterer, "n_iter_", None),
                "seed": config.seed,
            },
            "metrics": metrics,
            "device_to_host_bytes": moved,
        }


def _featurizer_class(name: str):
    if name == "behaviour":
        return BehaviourFeaturizer
    if name == "tfidf":
        return TfidfFeaturizer
    if name == "text":
        from gpuclust.features.text.featurizer import TextFeaturizer

        return TextFeaturizer
    raise UsageError(f"the model names an unknown featuriser {name!r}; was it saved by a newer gpuclust?")


def _truth_scores(data: PreparedData, labels: Any, truth: Any) -> dict:
    """ARI/NMI over users with a planted group; noise users (group < 0) are left out and counted."""
    truth = host_frame(truth)
    users = host_frame(data.users)
    if str(truth[schema.USER].dtype) != str(users[schema.USER].dtype):
        truth = truth.astype({schema.USER: "str"})
        users = users.astype({schema.USER: "str"})
    joined = users.merge(truth, on=schema.USER, how="inner")
    if joined.empty:
        raise UsageError("no user in the truth file matches a user in the events; check its user_id column")
    planted = joined[joined["group"] >= 0]
    host_labels = to_host(labels)
    scores = external_scores(host_labels[planted[schema.USER_IDX].to_numpy()], planted["group"].to_numpy())
    scores["truth_noise_users_excluded"] = int(len(joined) - len(planted))
    return scores
