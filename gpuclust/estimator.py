"""`UserClusterer`: the estimator a notebook holds, and what the CLI runs.

    preprocess -> features -> fuse -> [reduce] -> [k sweep] -> cluster -> assess -> explain

`fit` reads as that list; each stage is a small object in a module of its own, built from the config
or passed in (BERTopic's swappable sub-models, scikit-learn's manners: the constructor only stores its
arguments, `fit` returns self, learned state ends in `_`, `clone` works). Frames in, the same kind of
frame out: cuDF gives cuDF, pandas gives pandas.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuclust import registry, schema
from gpuclust.backend import Backend, resolve_backend, to_host, transfers
from gpuclust.cluster.factory import build_clusterer
from gpuclust.cluster.outcome import ClusterOutcome, check_k, nearest_centres, outcome_of
from gpuclust.cluster.sweep import (
    DEFAULT_K_VALUES,
    KSweep,
    apply_k,
    auto_k_values,
    edge_warning,
    parse_k,
    sweep_k,
)
from gpuclust.config import MAX_FEATURE_WEIGHT, PipelineConfig, check_weights
from gpuclust.errors import ResultWarning, UsageError, listed
from gpuclust.explain.exemplars import exemplar_histories
from gpuclust.explain.explainer import ClusterExplainer
from gpuclust.explain.naming import name_profiles
from gpuclust.features.behaviour import behaviour_statistics
from gpuclust.features.factory import build_featurizer, weighted_features
from gpuclust.features.fuse import Fuser
from gpuclust.frames import (
    array_frame,
    check_frame,
    frame_kind,
    frame_local,
    host_frame,
    like_input,
    local_xp,
    to_backend_frame,
)
from gpuclust.manifest import StageRecorder, build_manifest
from gpuclust.preprocess.clean import Preprocessor, require_prepared_events
from gpuclust.preprocess.prepared import PreparedData
from gpuclust.privacy import (
    as_pseudonymiser,
    check_key,
    privacy_record,
    small_clusters,
    suppress_small_groups,
)
from gpuclust.protocols import (
    as_clusterer,
    as_reducer,
    as_representation,
    checked_explanation,
    featurised,
    fit_clusterer,
    fit_reduced,
    guarded,
    reduced,
)
from gpuclust.quality import drift
from gpuclust.quality.anomaly import scores_against
from gpuclust.quality.metrics import internal_scores, truth_scores
from gpuclust.recommend.campaign import promotions, with_promotions
from gpuclust.recommend.personal import PERSONAL, SEGMENT, binary_matrix, fit_personal, recommend_rows
from gpuclust.recommend.segments import fit_segments
from gpuclust.reduce import build_reducer

if TYPE_CHECKING:
    from gpuclust.preprocess.table import EventTable

ASSIGNMENT_COLUMNS = (schema.USER, "cluster", "distance", "anomaly_score")


class UserClusterer:
    """Cluster the users of a behaviour log.

    Keywords override the matching settings of `config` (a `PipelineConfig`: columns, preprocessing,
    every stage's options); None means "as the config says". Sub-models are names or objects:

    n_clusters: k, "auto" (sweep 2..12), a range "4-16" / "4:16:2", or a sequence of k to sweep.
    features: feature names of the registry ("behaviour", "tfidf", "text", "sequence", "autoencoder") and/or
        featuriser objects; one string is the names it lists ("behaviour,tfidf", as --features);
        extra_features adds featurisers to the configured list instead of replacing it.
    feature_weights: {name: weight}; a block's weight is its share of the fused geometry.
    embedding_model: for "text": a Hugging Face name or folder, a `LoadedModel`, a (model, tokenizer)
        pair, a sentence-transformers model, or a callable texts -> vectors.
    item_vectors: for "text": precomputed item vectors (a frame or the file `gpuclust embed` writes).
    reducer: "pca", "umap", or an object with fit_transform (scikit-learn's, cuML's).
    clusterer: an algorithm name ("kmeans", "dbscan", "hdbscan", "agglomerative") or an estimator with
        scikit-learn's clustering interface (fit, labels_, optionally cluster_centers_).
    representation: the explainer (default `ClusterExplainer`): anything with its `explain` method.
    describer: names and describes each cluster in words (`explain.describe.Describer`, e.g. over a local
        language model): anything with its `describe(profiles, histories)`. Without one every cluster
        still has a rule-based name and description (`explain.naming`).
    pseudonymise: a key file path, key bytes or a `privacy.Pseudonymiser`: user ids are replaced by a
        keyed HMAC where they enter (fit, predict), and cluster reports withhold exemplar users and
        figures of groups smaller than config.privacy.min_group_size. A loaded private model needs the
        same key to place users.
    progress: called with each stage's name as it starts, and by the learned featurisers with a line per
        training update (epoch, loss, validation loss and HR@10).
    """

    def __init__(self, n_clusters: int | str | Sequence[int] | None = None, *,
                 features: Sequence[Any] | None = None, extra_features: Sequence[Any] = (),
                 feature_weights: dict[str, float] | None = None, device: str | None = None,
                 seed: int | None = None, embedding_model: Any = None, item_vectors: Any = None,
                 reducer: Any = None, clusterer: Any = None, representation: Any = None, describer: Any = None,
                 pseudonymise: Any = None, config: PipelineConfig | None = None,
                 progress: Callable[[str], None] | None = None, scheduler: Any = None) -> None:
        self.n_clusters = n_clusters
        self.features = features
        self.extra_features = extra_features
        self.feature_weights = feature_weights
        self.device = device
        self.seed = seed
        self.embedding_model = embedding_model
        self.item_vectors = item_vectors
        self.reducer = reducer
        self.clusterer = clusterer
        self.representation = representation
        self.describer = describer
        self.pseudonymise = pseudonymise
        self.config = config
        self.progress = progress
        self.scheduler = scheduler

    # --- fitting ---------------------------------------------------------------------------------

    def fit(self, events: Any, items: Any = None, truth: Any = None) -> UserClusterer:
        """Learn the clusters of the users in `events` (cuDF or pandas; `items`: catalogue; `truth`:
        user_id, group for ARI/NMI). Every setting is checked before any data is read.

        `events` may also be `PreparedData` (events prepared before, e.g. the training part of a holdout,
        `PreparedData.with_table`): its event table is prepared again by this model's steps, as its events
        frame would be, without making the frame (`evaluate` and `compare` fit so); without `items`, with
        the catalogue it was prepared with."""
        settings, custom = self._settings(), self._custom_featurizers()
        events, items = _mapped(events, items, settings)
        prepared = isinstance(events, PreparedData)
        if prepared and items is None and events.items is not None:  # already in gpuclust's column names
            items = events.catalogue()
        _check_inputs(events, items, truth)
        if settings.dask.scheduler is not None:
            if self.describer is not None:
                raise UsageError("describing clusters with a language model does not run on a Dask cluster yet; "
                                 "fit without a scheduler, or describe the finished run with `gpuclust describe`")
            # Partitions are frames: prepared events go out as their events frame (counted in the manifest).
            return self._fit_on_cluster(_events_frame(events) if prepared else events, items, truth, settings)
        pseudonymiser = as_pseudonymiser(self.pseudonymise)
        kind = frame_kind(events.users if prepared else events)
        if pseudonymiser is not None:  # before anything reads them: no raw id reaches a stage
            _refuse_prepared(events, "pseudonymised")
            events, truth = pseudonymiser.frame(events), pseudonymiser.frame(truth)
        backend = resolve_backend(settings.device)
        record = StageRecorder(backend, guarded(self.progress))
        moved = transfers.bytes
        with record.stage("preprocess"):
            data = _prepare(Preprocessor(settings.preprocess, seed=settings.seed), events, backend,
                            None if items is None else to_backend_frame(items, backend))
        k_values = self._k_values(settings, data.n_users)  # an impossible k fails before any feature
        featurizers = self._featurizers(settings, custom)
        x, fuser, reducer = self._featurize(data, settings, featurizers, custom, backend, record)

        def measure(other: PreparedData) -> Any:  # other users' events, measured as x was
            return self._measure(other, featurizers, fuser, reducer, backend)

        sweep = None
        if k_values:
            with record.stage("k_sweep"):
                sweep = self._sweep(data, x, k_values, settings, custom, backend, measure)
            edge = edge_warning(sweep.best_k, k_values, data.n_users, settings.cluster.objective)
            if edge:
                warnings.warn(edge, ResultWarning, stacklevel=2)
        clusterer = self._clusterer(settings, sweep)
        with record.stage("cluster"):
            fit_clusterer(clusterer, x, backend, data, measure)
            outcome = outcome_of(clusterer, x, backend)
        with record.stage("assess"):
            metrics = self._metrics(x, outcome, data, truth, settings, backend)
        with record.stage("explain"):
            stats = behaviour_statistics(data, backend, settings.preprocess.session_gap_minutes)
            representation = self._representation(settings)
            explained = checked_explanation(representation, representation.explain(data, x, outcome, backend, stats),
                                            outcome.n_clusters, data.n_users, backend)
        profiles, population, anomalies = explained.profiles, explained.population, explained.anomalies
        if pseudonymiser is not None:
            profiles, population = suppress_small_groups(profiles, population, settings.privacy.min_group_size,
                                                         data.n_users)
            # A small cluster's members are not listed as anomalies either: its size alone would be a hint.
            anomalies = [a for a in anomalies if int(a["cluster"]) not in small_clusters(profiles)]
        profiles = name_profiles(profiles)  # every cluster has a readable name, language model or not
        with record.stage("recommend"):
            segments = fit_segments(data, outcome.labels, outcome.n_clusters, backend,
                                    settings.recommend.blend_weight, settings.recommend.tune_users, settings.seed)
            segments.withhold(small_clusters(profiles))
            table: EventTable = data.table
            matrix = binary_matrix(table.user, table.item, data.n_users, data.n_items, backend) \
                if settings.recommend.personal != "none" else None
            personal = fit_personal(table, data.n_users, data.n_items, backend, settings.recommend, settings.seed,
                                    matrix)
            if personal is not None:  # campaigns: per cluster, the items to promote to it (clusters.json)
                promoted = promotions(personal, matrix, outcome.labels, outcome.n_clusters, backend)
                profiles = with_promotions(profiles, promoted, host_frame(data.items)[schema.ITEM].to_numpy())
        described = None
        if self.describer is not None:
            with record.stage("describe"):  # facts as the outputs show them; histories by label, never a raw id
                histories = exemplar_histories(data, explained.profiles, pseudonymiser is not None,
                                               skip=small_clusters(profiles))
                profiles, described = self.describer.describe(profiles, histories)

        self.config_, self.backend_, self.featurizers_, self.fuser_ = settings, backend, featurizers, fuser
        self.reducer_, self.clusterer_, self.sweep_ = reducer, clusterer, sweep
        self.cluster_centers_, self.n_clusters_ = outcome.centres, outcome.n_clusters
        self.spread_ = explained.spread
        self.vocabulary_ = data.items
        self.profiles_, self.population_, self.anomalies_ = profiles, population, anomalies
        self.metrics_ = metrics
        self.segments_, self.personal_ = segments, personal
        self.drift_baseline_ = drift.baseline(outcome.labels, outcome.distances, explained.scores, outcome.n_clusters,
                                              data, list(settings.preprocess.event_weights))
        self.pseudonymiser_ = pseudonymiser
        self.privacy_ = privacy_record(pseudonymiser, settings.privacy.min_group_size)
        self.labels_ = like_input(_assignments(data, outcome.frame_labels(backend), outcome.distances,
                                               explained.scores, backend), kind)
        self.map_ = like_input(explained.map, kind)
        self.manifest_ = build_manifest(
            config=settings.to_dict(), backend=backend, recorder=record, data=data,
            features={"blocks": {f.name: getattr(f, "info_", {}) for f in featurizers}, "layout": fuser.layout_,
                      "dims": int(x.shape[1]), "skipped": weighted_features(settings)[1]},
            reduce=None if reducer is None else getattr(reducer, "info_", {}),
            cluster=self._cluster_record(clusterer, outcome, sweep, settings), metrics=metrics,
            moved_bytes=transfers.bytes - moved, custom=self._custom_record(custom))
        self.manifest_["privacy"] = self.privacy_
        self.manifest_["describe"] = described or {"model": None, "names": "rules"}
        self.manifest_["recommend"] = {**segments.to_meta(),
                                       "personal": None if personal is None else personal.to_meta()}
        return self

    def _fit_on_cluster(self, events: Any, items: Any, truth: Any, settings: PipelineConfig) -> UserClusterer:
        """The same fit on a Dask cluster (`gpuclust.distributed`): `scheduler` is "local", an address or
        a `distributed.Client`; a LocalCluster started here is closed before `fit` returns."""
        from gpuclust.distributed.cluster import open_session
        from gpuclust.distributed.fit import fit_distributed

        target = self.scheduler if self.scheduler is not None and not isinstance(self.scheduler, str) \
            else settings.dask.scheduler
        with open_session(target, settings.dask, resolve_backend(settings.device).device) as session:
            fit_distributed(self, events, items, truth, settings, session)
            if session.kind != "client":
                self._distributed = None  # the cluster's copies go with the session
        return self

    def fit_predict(self, events: Any, items: Any = None, truth: Any = None) -> Any:
        """`fit`, then the assignments of the users it was fitted on (`labels_`)."""
        return self.fit(events, items, truth).labels_

    # --- using a fitted (or loaded) model --------------------------------------------------------

    def predict(self, events: Any) -> Any:
        """The clusters of the users in `events`, new or known: user_id, cluster, distance, anomaly_score.

        Users are measured with the featurisers and scales learned at fit time and placed at the nearest
        centre (density clusterings too: a new user is never noise here)."""
        return self.place(events)[0]

    def place(self, events: Any) -> tuple[Any, PreparedData]:
        """`predict`, plus the prepared data (what preprocessing kept and dropped, for a manifest)."""
        x, data = self.embed(events)
        xp = self.backend_.xp
        labels, distances = nearest_centres(x, self.cluster_centers_, xp)
        scores = scores_against(labels, distances, *self.spread_, xp)
        out = _assignments(data, frame_local(labels, self.backend_), distances, scores, self.backend_)
        return like_input(out, frame_kind(events)), data

    def recommend(self, events: Any, top_k: int = 10) -> Any:
        """Each user's `top_k` items not already in `events`: user_id, rank (1 = best), item_id, score,
        source. source is "personal" (the personal model: users with at least recommend.min_items
        distinct known items) or "segment" (the popularity of the user's cluster, blended with global
        popularity: fewer items, or a model without a personal part). A list is shorter where fewer
        items are left to recommend."""
        if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
            raise UsageError(f"top_k must be a positive whole number of items, got {top_k!r}")
        x, data = self.embed(events)
        xp = self.backend_.xp
        clusters = nearest_centres(x, self.cluster_centers_, xp)[0]
        table: EventTable = data.table
        seen = binary_matrix(table.user, table.item, data.n_users, len(self.vocabulary_), self.backend_)
        items, scores, personal = self.recommend_indices(seen, clusters, int(top_k))
        import pandas as pd

        items, scores, personal = to_host(items), to_host(scores), to_host(personal)
        user, position = np.nonzero(np.isfinite(scores))
        ids = host_frame(data.users.sort_values(schema.USER_IDX))[schema.USER].to_numpy()
        vocabulary = host_frame(self.vocabulary_)[schema.ITEM].to_numpy()
        out = pd.DataFrame({schema.USER: ids[user], "rank": (position + 1).astype(np.int32),
                            schema.ITEM: vocabulary[items[user, position]], "score": scores[user, position],
                            "source": np.where(personal[user], PERSONAL, SEGMENT)})
        return like_input(out, frame_kind(events))

    def recommend_indices(self, seen: Any, clusters: Any, top_k: int = 10) -> tuple[Any, Any, Any]:
        """`recommend` on prepared input, for callers that keep their own (the service's fast path):
        `seen` CSR users x items of the model's vocabulary (`personal.binary_matrix`), `clusters` the
        users' clusters (xp int). Returns (items, scores, personal?) on the device: users x top_k item
        indices and float32 scores, best first (-inf: nothing left), and True where the list is personal."""
        self._check_fitted()
        if len(seen.shape) != 2 or seen.shape[1] != len(self.vocabulary_) or len(clusters) != seen.shape[0]:
            raise UsageError(f"recommend_indices needs seen as users x {len(self.vocabulary_)} items (the model's "
                             f"vocabulary) and one cluster per user; got {tuple(seen.shape)} and {len(clusters)} "
                             "clusters")
        r = self.config_.recommend
        return recommend_rows(getattr(self, "personal_", None), self.segments_.table, self.segments_.blend_weight,
                              self.backend_.xp.asarray(clusters), seen, top_k, r.min_items, self.backend_)

    def transform(self, events: Any) -> Any:
        """The users' feature vectors in the space the centres live in (fused, then reduced if a reducer
        is set): a frame of the input's kind with user_id and one column per dimension."""
        x, data = self.embed(events)
        backend = self.backend_
        x = frame_local(x, backend)  # one copy to pandas' host, not one per column (a strided gather each)
        columns = {schema.USER_IDX: backend.xp.arange(data.n_users, dtype=np.int32),
                   **{f"f{j}": x[:, j] for j in range(x.shape[1])}}
        out = data.users.merge(array_frame(columns, backend), on=schema.USER_IDX).sort_values(schema.USER_IDX)
        return like_input(out.drop(columns=[schema.USER_IDX]).reset_index(drop=True), frame_kind(events))

    def save(self, directory: str | Path, model_key: Any = None) -> Path:
        """Everything `predict` needs, and the fitted attributes, as one verified folder (no pickle);
        `model_key` (a key file, key bytes or a `signing.ModelKey`) signs it (`gpuclust.signing`)."""
        from gpuclust.model import save_estimator
        from gpuclust.signing import as_model_key

        self._check_fitted()
        return save_estimator(self, _folder(directory, "save"), as_model_key(model_key))

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None, pseudonymise: Any = None,
             model_key: Any = None) -> UserClusterer:
        """A saved model with the attributes of a fitted one; `device` overrides the saved device. A model
        fitted on pseudonymised ids places users only with the same key (`pseudonymise`). With `model_key`
        a model not signed with that key is refused before any of it is parsed."""
        from gpuclust.model import load_estimator
        from gpuclust.signing import as_model_key

        return load_estimator(cls, _folder(directory, "load"), device, pseudonymise, as_model_key(model_key))

    # --- scikit-learn manners -------------------------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> UserClusterer:
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for UserClusterer; valid: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __getstate__(self) -> dict[str, Any]:
        """A fitted model pickles (joblib, multiprocessing, scikit-learn habits), except one fitted on
        pseudonymised ids: its pickle would carry the key next to the pseudonyms. `save` is the format to
        keep and share: verified on load, and no code runs from it."""
        if getattr(self, "pseudonymiser_", None) is not None or (
                self.pseudonymise is not None and not isinstance(self.pseudonymise, str | os.PathLike)):
            raise UsageError("a pseudonymised UserClusterer does not pickle, because the pickle would hold its key: "
                             "use model.save(folder) and UserClusterer.load(folder, pseudonymise=KEY)")
        state = dict(self.__dict__)
        state.pop("_distributed", None)  # a Dask session's copies stay with that session
        return state

    def __repr__(self) -> str:
        given = {k: v for k, v in self.get_params().items() if v is not None and v != ()}
        return f"UserClusterer({', '.join(f'{k}={v!r}' for k, v in given.items())})"

    # --- stages from settings ------------------------------------------------------------------

    def _settings(self) -> PipelineConfig:
        """The config with the keywords applied, validated: every contradiction is found here."""
        config = copy.deepcopy(self.config) if self.config is not None else PipelineConfig()
        if not isinstance(config, PipelineConfig):
            raise UsageError(f"config must be a PipelineConfig, got {type(config).__name__}")
        for name, value in (("device", self.device), ("seed", self.seed)):
            if value is not None:
                setattr(config, name, value)
        if isinstance(self.scheduler, str):
            config.dask.scheduler = self.scheduler
        elif self.scheduler is not None and config.dask.scheduler is None:  # a Client: its address, for the records
            address = getattr(getattr(self.scheduler, "scheduler", None), "address", None)
            if address is None:
                raise UsageError(f"scheduler must be 'local', an address (tcp://host:8786) or a distributed.Client, "
                                 f"got {type(self.scheduler).__name__}")
            config.dask.scheduler = str(address)
        self._check_submodels()
        if config.dask.scheduler is not None and self.pseudonymise is not None:
            raise UsageError("pseudonymised ids do not run on a Dask cluster yet: drop the scheduler, or the key")
        if self.features is not None:
            config.features.features = tuple(f for f in self._features() if isinstance(f, str))
        if self.feature_weights is not None:
            custom = {f.name for f in self._custom_featurizers()}
            unknown = sorted(set(self.feature_weights) - custom - set(registry.FEATURES))
            if unknown:
                raise UsageError(f"feature_weights names {', '.join(map(repr, unknown))}, which is no feature: choose "
                                 f"from {', '.join([*registry.FEATURES, *sorted(custom)])}")
            config.features.weights.update({k: v for k, v in self.feature_weights.items() if k in registry.FEATURES})
        self._check_k_of_clusterer(config)
        if isinstance(self.n_clusters, str):
            apply_k(config.cluster, self.n_clusters)  # "auto" keeps a config's own k_values, as --k auto does
        elif self.n_clusters is not None:
            config.cluster.k, config.cluster.k_values = _k_setting(self.n_clusters, config.cluster.k)
            config.cluster.k_auto = False
        if isinstance(self.clusterer, str):
            config.cluster.algorithm = self.clusterer
        if isinstance(self.reducer, str):
            config.reduce.method = self.reducer
        text_items = "sequence" in config.features.features and config.features.sequence.item_init == "text"
        if (self.embedding_model is not None or self.item_vectors is not None) \
                and "text" not in config.features.features and not text_items:
            raise UsageError("embedding_model and item_vectors feed the 'text' feature (or a sequence feature with "
                             "item_init 'text'): add 'text' to features")
        return config.validate(require_features=not self._custom_featurizers())

    def _check_submodels(self) -> None:
        """Sub-model objects that cannot work are named before any data is read."""
        guarded(self.progress)
        if self.representation is not None:
            as_representation(self.representation)
        if self.describer is not None and not callable(getattr(self.describer, "describe", None)):
            raise UsageError(f"describer must have describe(profiles, histories), got {type(self.describer).__name__}")
        if self.reducer is not None and not isinstance(self.reducer, str):
            as_reducer(self.reducer)
        if self.clusterer is not None and not isinstance(self.clusterer, str):
            as_clusterer(self.clusterer)

    def _check_k_of_clusterer(self, config: PipelineConfig) -> None:
        """With a clusterer object, its own parameters decide the number of clusters: an `n_clusters` (or a
        config k) that disagrees would be silently ignored, so it is refused, as scikit-learn refuses
        contradictory parameters, naming both."""
        if self.clusterer is None or isinstance(self.clusterer, str):
            return
        name = type(self.clusterer).__name__
        own = next((getattr(self.clusterer, p) for p in ("n_clusters", "n_components")
                    if getattr(self.clusterer, p, None) is not None), None)
        defaults = PipelineConfig().cluster
        if self.n_clusters is not None:
            given, where = self.n_clusters, f"n_clusters={self.n_clusters!r}"
        elif config.cluster.k_values:
            given, where = list(config.cluster.k_values), f"config cluster.k_values = {list(config.cluster.k_values)}"
        elif config.cluster.k != defaults.k:
            given, where = config.cluster.k, f"config cluster.k = {config.cluster.k}"
        else:
            return
        if own is None:
            raise UsageError(f"{where} has no effect with clusterer={name}, which finds its own number of clusters; "
                             "drop it")
        if not _is_number(given):
            raise UsageError(f"{where} asks for a sweep of k, which does not run with clusterer={name} (it has {own} "
                             f"clusters of its own): drop {where.split('=')[0].strip()}, or pass clusterer='kmeans'")
        if int(given) != int(own):
            raise UsageError(f"{where} disagrees with clusterer={name}(... {own} clusters), whose own setting decides: "
                             f"give k once, on the clusterer (e.g. {name}({given!r})) or drop {where.split('=')[0]}")

    def _features(self) -> list[Any]:
        """`features` as a list: a string is the names it lists, as --features reads them ("behaviour" or
        "behaviour,tfidf"), not its letters one by one."""
        if isinstance(self.features, str):
            return [name.strip() for name in self.features.split(",") if name.strip()]
        return list(self.features or ())

    def _custom_featurizers(self) -> list[Any]:
        """Copies of the featuriser objects passed in (the caller's stay unfitted, as clone expects)."""
        extra = [self.extra_features] if isinstance(self.extra_features, str) else list(self.extra_features)
        if any(isinstance(f, str) for f in extra):
            raise UsageError(f"extra_features takes featuriser objects, added to the configured features; got "
                             f"{self.extra_features!r}: give feature names in features=, e.g. "
                             "features=('behaviour', 'tfidf')")
        chosen = [f for f in self._features() if not isinstance(f, str)] + extra
        for f in chosen:
            if not (hasattr(f, "name") and hasattr(f, "fit_transform") and hasattr(f, "transform")):
                raise UsageError(f"featuriser {f!r} needs a name and fit_transform/transform(data, backend) methods")
            if not (isinstance(f.name, str) and registry.FEATURE_NAME.fullmatch(f.name)):
                raise UsageError(f"featuriser {type(f).__name__}'s name {f.name!r} is not a feature name: give "
                                 "letters, digits, '_' or '-', e.g. name = 'my_feature'")
        named = [f for f in self._features() if isinstance(f, str)] + [f.name for f in chosen]
        twice = sorted({name for name in named if named.count(name) > 1})
        if twice:
            raise UsageError(f"feature {', '.join(map(repr, twice))} is given twice; each feature block needs its own name")
        return [copy.deepcopy(f) for f in chosen]

    def _custom_weights(self, custom: list[Any]) -> dict[str, float]:
        names = {f.name for f in custom}
        weights = {k: v for k, v in (self.feature_weights or {}).items() if k in names}
        if weights:  # checked before float(): {"mine": "x"} is the caller's mistake, not a ValueError of ours
            check_weights("feature weight", weights, None, "feature_weights={'mine': 1.0}", most=MAX_FEATURE_WEIGHT)
        return {k: float(v) for k, v in weights.items()}

    def _k_values(self, settings: PipelineConfig, n_users: int) -> tuple[int, ...]:
        """The k values to sweep (none for a fixed k); an impossible k is an error before the features."""
        if self.clusterer is not None and not isinstance(self.clusterer, str):
            for param in ("n_clusters", "n_components"):
                if isinstance(getattr(self.clusterer, param, None), int | np.integer):
                    check_k(int(getattr(self.clusterer, param)), n_users)
            return ()
        if not registry.ALGORITHMS[settings.cluster.algorithm].takes_k:
            return ()
        if not settings.cluster.k_values and not settings.cluster.k_auto:
            check_k(settings.cluster.k, n_users)
            return ()
        values = settings.cluster.k_values
        if settings.cluster.k_auto:  # the range is ours to choose: sized by the data for the recommend objective
            values = auto_k_values(n_users, settings.cluster.objective) or DEFAULT_K_VALUES
        else:  # a range of the caller's: "k=5 is larger than the number of users; lower --k" (not for auto's own)
            check_k(min(values), n_users)
        below = tuple(k for k in values if k < n_users)
        if below and len(below) < len(values) and not settings.cluster.k_auto:  # the caller's: say what was left out
            warnings.warn(f"k = {listed(sorted(set(values) - set(below)))} of the range given is not below the number of "
                          f"users after filtering ({n_users}) and is left out of the sweep: {min(below)}..{max(below)} "
                          "is tried", ResultWarning, stacklevel=3)
        if not below:  # else no sweep ran and the config's fixed k (8 by default) was fitted without a word
            why = ("the silhouette needs more users than clusters" if settings.cluster.objective == "separation"
                   else "with as many clusters as users, each user's cluster is the user alone")
            raise UsageError(f"no k of the range tried ({min(values)}..{max(values)}) is below the number of users "
                             f"after filtering ({n_users}), and a k sweep scores only those ({why}); give a fixed --k "
                             f"of at most {n_users} (n_clusters={n_users})")
        return below

    def _featurizers(self, settings: PipelineConfig, custom: list[Any]) -> list[Any]:
        return [build_featurizer(name, settings, self.embedding_model, self.item_vectors, guarded(self.progress))
                for name in weighted_features(settings)[0]] + custom

    def _featurize(self, data: PreparedData, settings: PipelineConfig, featurizers: list[Any], custom: list[Any],
                   backend: Backend, record: StageRecorder | None = None) -> tuple[Any, Fuser, Any]:
        """features -> fuse -> [reduce]: the fused (and reduced) matrix with the fitted fuser and reducer."""
        stage = record.stage if record is not None else (lambda _name: contextlib.nullcontext())
        blocks = {}
        for featurizer in featurizers:
            with stage(f"features.{featurizer.name}"):
                blocks[featurizer.name] = featurised(featurizer, data, backend, fit=True)
        with stage("fuse"):
            fuser = Fuser({**settings.features.weights, **self._custom_weights(custom)})
            x = fuser.fit_transform(blocks, backend.xp)
        reducer = self._reducer(settings)
        if reducer is not None:
            with stage("reduce"):
                x = fit_reduced(reducer, x, backend)
        return x, fuser, reducer

    def _sweep(self, data: PreparedData, x: Any, k_values: tuple[int, ...], settings: PipelineConfig,
               custom: list[Any], backend: Backend, measure: Callable[[PreparedData], Any]) -> KSweep:
        """Score each k and choose one: by separation (silhouette rule) on `x`, or by recommendation
        (validation HR@10 of cluster popularity on a leave-last-out holdout, with the whole pipeline
        refitted on the rest of the data so the held-out items never shape the clusters)."""
        def make(k: int) -> Any:
            return build_clusterer(settings.cluster, settings.seed, k)

        if settings.cluster.objective == "separation":
            return sweep_k(x, backend, k_values, make, settings.assess.silhouette_sample, settings.seed,
                           fit=lambda model, xs: fit_clusterer(model, xs, backend, data, measure))
        from gpuclust.recommend.objective import recommend_sweep

        def featurize(train: PreparedData) -> tuple[Any, Callable[[PreparedData], Any]]:
            fresh = self._featurizers(settings, [copy.deepcopy(f) for f in custom])
            xs, fuser, reducer = self._featurize(train, settings, fresh, custom, backend)
            return xs, lambda other: self._measure(other, fresh, fuser, reducer, backend)

        return recommend_sweep(data, backend, k_values, featurize, make, settings.seed)

    def _reducer(self, settings: PipelineConfig) -> Any:
        if self.reducer is not None and not isinstance(self.reducer, str):
            return as_reducer(copy.deepcopy(self.reducer))
        return build_reducer(settings.reduce, settings.seed)

    def _clusterer(self, settings: PipelineConfig, sweep: KSweep | None) -> Any:
        if self.clusterer is not None and not isinstance(self.clusterer, str):
            return as_clusterer(copy.deepcopy(self.clusterer))  # the caller's estimator stays unfitted
        return build_clusterer(settings.cluster, settings.seed, sweep.best_k if sweep else None)

    def _representation(self, settings: PipelineConfig) -> Any:
        if self.representation is not None:
            return as_representation(self.representation)
        a = settings.assess
        return ClusterExplainer(a.top_n, a.anomalies, a.map_sample, settings.seed)

    @staticmethod
    def _metrics(x: Any, outcome: ClusterOutcome, data: PreparedData, truth: Any, settings: PipelineConfig,
                 backend: Backend) -> dict[str, Any]:
        """Internal quality over the clustered users (noise left out and counted); ARI/NMI with a truth."""
        keep = outcome.labels >= 0
        scored = (x, outcome.labels) if outcome.noise is None else (x[keep], outcome.labels[keep])
        metrics = internal_scores(*scored, backend.xp, settings.assess.silhouette_sample, settings.seed)
        if outcome.noise is not None:
            metrics["noise_users"] = outcome.n_noise
        if truth is not None:
            metrics.update(truth_scores(data, outcome.frame_labels(backend), truth))
        return metrics

    @staticmethod
    def _cluster_record(clusterer: Any, outcome: ClusterOutcome, sweep: KSweep | None,
                        settings: PipelineConfig) -> dict[str, Any]:
        return {"algorithm": getattr(clusterer, "algorithm", type(clusterer).__name__),
                "engine": getattr(clusterer, "engine_", None), "n_init": getattr(clusterer, "n_init_", None),
                "k": outcome.n_clusters,
                "inertia": outcome.inertia, "n_iter": getattr(clusterer, "n_iter_", None), "seed": settings.seed,
                "k_sweep": None if sweep is None else sweep.to_dict()}

    def _custom_record(self, custom: list[Any]) -> dict[str, str]:
        """What the config cannot say: the objects passed in place of named stages."""
        out = {f"feature.{f.name}": repr(f) for f in custom}
        for name in ("clusterer", "reducer", "representation", "describer", "embedding_model"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                out[name] = repr(value)[:200]
        if self.item_vectors is not None:
            out["item_vectors"] = str(self.item_vectors) if isinstance(self.item_vectors, str | Path) else "a frame"
        return out

    # --- helpers --------------------------------------------------------------------------------

    def pseudonymised(self, events: Any) -> Any:
        """`events` with the user ids as this model knows them: pseudonymised where it was fitted so."""
        check_key(getattr(self, "privacy_", None), getattr(self, "pseudonymiser_", None), "this model")
        return events if self.pseudonymiser_ is None else self.pseudonymiser_.frame(events)

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise UsageError("this UserClusterer is not fitted: call fit() first, or UserClusterer.load(dir)")

    def embed(self, events: Any) -> tuple[Any, PreparedData]:
        """The users of `events` prepared as at fit time (item indices follow the model's vocabulary) and
        measured: (vectors in the space of `cluster_centers_`, on the backend's array library; the
        PreparedData whose user_idx rows they are). `events` may be `PreparedData`, as for `fit`."""
        self._check_fitted()
        events, _ = _mapped(events, None, self.config_)
        _check_inputs(events)
        backend, settings = self.backend_, self.config_
        if getattr(self, "pseudonymiser_", None) is not None:
            _refuse_prepared(events, "placed by a pseudonymised model")
        events = self.pseudonymised(events)
        # The minimum counts shape what a model learns from; a user asked about is placed by any event the
        # model can read (events of unknown types or on unknown items are dropped and counted in data.steps).
        data = _prepare(Preprocessor(settings.preprocess.for_placing(), seed=settings.seed), events, backend, vocabulary=self.vocabulary_)
        return self._measure(data, self.featurizers_, self.fuser_, self.reducer_, backend), data


    def measure(self, data: PreparedData) -> Any:
        """Prepared users (item indices in the model's vocabulary, as `embed` prepares them) -> their
        vectors in the space of `cluster_centers_`."""
        self._check_fitted()
        return self._measure(data, self.featurizers_, self.fuser_, self.reducer_, self.backend_)

    @staticmethod
    def _measure(data: PreparedData, featurizers: list[Any], fuser: Fuser, reducer: Any, backend: Backend) -> Any:
        """Prepared users through fitted featurisers, the fuser and the reducer."""
        x = fuser.transform({f.name: featurised(f, data, backend, fit=False) for f in featurizers}, backend.xp)
        return x if reducer is None else reduced(reducer, x, backend)


def _k_setting(n_clusters: int | str | Sequence[int], default_k: int) -> tuple[int, tuple[int, ...]]:
    """(k, k values to sweep) from an int, "auto", a range string, or a sequence of k.

    A whole float (4.0, np.float64(4): what arithmetic on k gives) is that k; anything else that is not
    a whole number is refused, because rounding or truncating it would run a k nobody asked for."""
    usage = "n_clusters must be a whole number (4), 'auto', a range ('4-16') or a list of k ([4, 6, 8])"
    if isinstance(n_clusters, str):
        fixed, values = parse_k(n_clusters)
        return (fixed, ()) if fixed is not None else (default_k, values)
    if _is_number(n_clusters):
        return _whole_k(n_clusters, usage), ()
    try:
        given = list(n_clusters)  # type: ignore[arg-type]
    except TypeError:
        raise UsageError(f"{usage}, got {type(n_clusters).__name__} {n_clusters!r}") from None
    if not given or isinstance(n_clusters, dict | set | frozenset):
        raise UsageError(f"{usage}, got {n_clusters!r}" + (": the list is empty" if not given else ""))
    values = tuple(_whole_k(k, usage) for k in given)
    return (values[0], ()) if len(values) == 1 else (default_k, values)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _whole_k(value: Any, usage: str) -> int:
    """One k: an int, or a float that is a whole number."""
    if not _is_number(value) or not np.isfinite(value) or float(value) != int(value):
        raise UsageError(f"{usage}; {value!r} is not a whole number")
    return int(value)


def _folder(directory: Any, verb: str) -> Path:
    """A model folder's path as `save` and `load` take it: bytes or a number would end in pathlib's TypeError,
    and "~/models/x" is the home folder's, as pandas and the text model read it (not a folder named "~")."""
    if not isinstance(directory, str | os.PathLike):
        raise UsageError(f"{verb} takes the path of a{' saved' if verb == 'load' else ''} model folder (a str or "
                         f"Path), got {type(directory).__name__} {directory!r:.60}")
    return Path(directory).expanduser()


def _mapped(events: Any, items: Any, settings: PipelineConfig) -> tuple[Any, Any]:
    """The caller's frames with the config's column mapping applied (`[columns]`), as the CLI reads files:
    a TOML that runs on the command line runs from Python too. File sources of the Dask reader map there."""
    from gpuclust.columns import mapped_events, mapped_items

    if hasattr(events, "columns") and hasattr(events, "rename"):
        events = mapped_events(events, settings.columns)
    if items is not None and hasattr(items, "columns") and hasattr(items, "rename"):
        items = mapped_items(items, settings.columns)
    return events, items


def _prepare(preprocessor: Preprocessor, events: Any, backend: Backend, items: Any = None,
             vocabulary: Any = None) -> PreparedData:
    """`events` (a frame, or `PreparedData` prepared before) through the preprocessor's steps."""
    if isinstance(events, PreparedData):
        return preprocessor.run_prepared(events, backend, items, vocabulary=vocabulary)
    return preprocessor.run(to_backend_frame(events, backend), backend, items, vocabulary=vocabulary)


def _events_frame(data: PreparedData) -> Any:
    """Prepared events as the raw columns a frame-reading path takes (user and item ids, not indices)."""
    return data.events[[schema.USER, schema.ITEM, schema.EVENT, schema.TIME, schema.VALUE]]


def _refuse_prepared(events: Any, what: str) -> None:
    """Prepared events carry the user ids they were read with: a key cannot reach them here."""
    if isinstance(events, PreparedData):
        raise UsageError(f"prepared events cannot be {what}: their user ids were read already; pseudonymise "
                         "where the events are read (evaluate and compare take a key) and pass a frame here")


def _check_inputs(events: Any, items: Any = None, truth: Any = None) -> None:
    """The frames a caller hands in, checked at the boundary (a Dask frame by its columns; a file source
    of the distributed reader by that reader)."""
    required = (schema.USER, schema.ITEM, schema.EVENT, schema.TIME)
    if type(events).__module__.split(".")[0] in ("dask", "dask_cudf", "dask_expr"):
        check_frame(events._meta, "events", required)
    elif isinstance(events, PreparedData):
        require_prepared_events(events)  # fit reads its users before preparing them; Dask makes a frame of it
    elif type(events).__module__.startswith("gpuclust"):
        pass
    else:
        check_frame(events, "events", required, ids=(schema.USER, schema.ITEM))
    if items is not None:
        check_frame(items, "items", (schema.ITEM,), ids=(schema.ITEM,))
    if truth is not None:
        check_frame(truth, "truth", (schema.USER, "group"), ids=(schema.USER,))


def _assignments(data: PreparedData, frame_labels: Any, distances: Any, scores: Any, backend: Backend) -> Any:
    """The one per-user output: labels as `frame_local` placed them; distances and scores cross here."""
    index = local_xp(data.users[schema.USER_IDX]).arange(data.n_users, dtype=np.int32)
    out = array_frame({schema.USER_IDX: index, "cluster": frame_labels, "distance": distances,
                       "anomaly_score": scores.astype(backend.xp.float32)}, backend)
    out = data.users.merge(out, on=schema.USER_IDX).sort_values(schema.USER_IDX)
    return out[list(ASSIGNMENT_COLUMNS)].reset_index(drop=True)
