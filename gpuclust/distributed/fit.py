"""`UserClusterer.fit` on a Dask cluster: the same stages as one process, over user partitions.

    read (lazy) -> ids -> one shuffle by user -> per-partition preprocessing -> global decisions
    -> features (fitted by reductions, applied per partition) -> fuse -> KMeans (distributed)
    -> assess (reductions + a sample) -> explain (reductions) -> the estimator's fitted attributes

The fitted estimator has the attributes of a single-process one (the same featuriser, fuser and
centre objects), so `save`, `predict` and `gpuclust assign` do not care how it was fitted. The
per-partition assignments stay on the cluster for `run` to write as a partitioned dataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from gpuclust import schema
from gpuclust.backend import Backend, cpu_backend, resolve_backend, to_host, transfers
from gpuclust.cluster.kmeans import restarts
from gpuclust.config import PipelineConfig
from gpuclust.distributed import explain as dexplain
from gpuclust.distributed import features as dfeatures
from gpuclust.distributed import prepare
from gpuclust.distributed.blocks import Blocks, broadcast, pmap, shipped
from gpuclust.distributed.cluster import Session
from gpuclust.distributed.engine import from_frame, is_lazy_frame, partition_count
from gpuclust.distributed.kmeans import DistributedKMeans, assign, calinski_davies
from gpuclust.errors import UsageError
from gpuclust.explain.naming import name_profiles
from gpuclust.features.factory import build_featurizer, weighted_features
from gpuclust.frames import frame_kind, host_frame, like_input, to_backend_frame
from gpuclust.manifest import StageRecorder, build_manifest
from gpuclust.preprocess.clean import catalogue_table, require_weighted
from gpuclust.privacy import privacy_record
from gpuclust.protocols import guarded
from gpuclust.quality import drift
from gpuclust.quality.metrics import silhouette, truth_scores
from gpuclust.recommend.segments import segment_counts, segments_from

# --- per-worker peak memory and spilling ----------------------------------------------------------

def _reset_peak() -> bool:
    from gpuclust.manifest import reset_peak_rss

    return reset_peak_rss()


def _peak_mib() -> float:
    from gpuclust.manifest import peak_rss_bytes

    return round(peak_rss_bytes() / 2**20, 1)


def _spill(dask_worker: Any = None) -> dict[str, float]:
    data = getattr(dask_worker, "data", None)
    metrics = getattr(data, "cumulative_metrics", {}) or {}
    out = {f"{label}_mib": round(v / 2**20, 1) for (label, unit), v in metrics.items() if unit == "bytes"}
    total = getattr(data, "spilled_total", None)
    if total is not None:
        out["on_disk_now_mib"] = round(float(total[0]) / 2**20, 1)
    return out


class WorkerPeaks:
    """Peak RSS of each worker process per stage (VmHWM, reset at the stage's start where Linux allows)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.overall: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, record: dict[str, Any]) -> Iterator[None]:
        with contextlib.suppress(Exception):
            self.client.run(_reset_peak)
        try:
            yield
        finally:
            try:
                peaks = self.client.run(_peak_mib)
            except Exception:  # noqa: BLE001 - a worker may be restarting; the stage's figures stay without it
                peaks = {}
            record["worker_peak_rss_mib"] = dict(sorted(peaks.items()))
            for worker, mib in peaks.items():
                self.overall[worker] = max(self.overall.get(worker, 0.0), mib)


# --- the fit --------------------------------------------------------------------------------------

def check_distributable(est: Any) -> None:
    """What the Dask path cannot take, said before any work: objects in place of named stages."""
    for name in ("clusterer", "reducer"):
        value = getattr(est, name)
        if value is not None and not isinstance(value, str):
            raise UsageError(f"a {name} object does not run on a Dask cluster (scheduler=...); pass a name, "
                             "or fit without scheduler")
    if est.representation is not None:
        raise UsageError("a representation object does not run on a Dask cluster (scheduler=...); fit without "
                         "scheduler to use it")
    if [f for f in (est.features or ()) if not isinstance(f, str)] or list(est.extra_features):
        raise UsageError("featuriser objects do not run on a Dask cluster (scheduler=...); use the registry's "
                         "names, or fit without scheduler")


def fit_distributed(est: Any, events: Any, items: Any, truth: Any, settings: PipelineConfig,
                    session: Session, rows: int | None = None) -> Any:
    """Fit `est` on the cluster of `session`; `events` is a pandas/cuDF frame or a lazy (Dask) frame with
    the canonical columns, `rows` its row count where known (from Parquet footers)."""
    check_distributable(est)
    for name in settings.features.features:
        if name not in ("behaviour", "tfidf", "text"):
            raise UsageError(f"feature {name!r} does not run on a Dask cluster; fit without "
                             "scheduler to use it")
    backend = resolve_backend(settings.device)
    device = backend.device
    client = session.client
    record = StageRecorder(backend, guarded(est.progress))
    peaks = WorkerPeaks(client)
    moved = transfers.bytes
    kind = _kind_of(events)

    with record.stage("preprocess") as rec, peaks.stage(rec):
        parts, g = preprocess(client, events, rows, items, settings, device, session)
        rec["partitions"] = len(parts.futures)
    g_future = broadcast(client, g)
    catalogue = g.prepared(backend=backend)

    featurizers = [build_featurizer(name, settings, est.embedding_model, est.item_vectors)
                   for name in weighted_features(settings)[0]]
    stats, gap = None, None
    for f in featurizers:
        with record.stage(f"features.{f.name}") as rec, peaks.stage(rec):
            if f.name == "behaviour":
                stats = dfeatures.fit_behaviour(f, parts, g_future, device, backend, settings.seed)
                gap = f.session_gap_minutes
            elif f.name == "tfidf":
                dfeatures.fit_tfidf(f, parts, g_future, catalogue, device, backend)
            else:
                dfeatures.fit_text(f, catalogue, backend)
    with record.stage("fuse") as rec, peaks.stage(rec):
        shipped = broadcast(client, _Bundle([dfeatures.shippable(f) for f in featurizers]))
        blocks = parts.map(_part_features, *([stats] if stats is not None else []), g=g_future, device=device,
                           bundle=shipped, gap=gap)
        dims = client.submit(dfeatures.block_dims, blocks.futures[0]).result()
        weights = settings.features.weights
        fuser = dfeatures.fit_fuser(weights, blocks, dims, backend)
        x = blocks.map(dfeatures.fuse_part, fuser=fuser, device=device)
        blocks.release()
        d = int(sum(dims.values()))
    if stats is None:  # the explanations report behaviour statistics even when they are no feature
        stats = parts.map(dfeatures.part_statistics, g=g_future, device=device,
                          gap=settings.preprocess.session_gap_minutes)

    c = settings.cluster
    with record.stage("cluster") as rec, peaks.stage(rec):
        clusterer = DistributedKMeans(c.k, c.engine, restarts(c.n_init, device == "cuda"), c.max_iter, c.tol,
                                          settings.seed).fit(x, device == "cuda")
        centres = clusterer.cluster_centers_
        labels, distances = assign(x, centres)
        inertia = float(distances.total(_squares))
        clusterer.inertia_ = inertia
    with record.stage("assess") as rec, peaks.stage(rec):
        metrics = _metrics(x, labels, centres, settings, backend)
        users = pd.concat(parts.map(_users).gather(), ignore_index=True)
        users[schema.USER_IDX] = np.arange(len(users), dtype=np.int32)
        all_labels = np.concatenate(labels.gather()).astype(np.int32)
        if truth is not None:
            metrics.update(truth_scores(types.SimpleNamespace(users=users), all_labels, _host(truth)))
    with record.stage("explain") as rec, peaks.stage(rec):
        explained, scores, _ = dexplain.explain(x, labels, distances, parts, stats, centres, g, settings, backend)
        frames = dexplain.assignments(parts, labels, distances, scores)
        labels_frame = pd.concat(frames.gather(), ignore_index=True).sort_values(schema.USER, kind="stable")
        labels_frame = labels_frame.reset_index(drop=True)

    with record.stage("recommend") as rec, peaks.stage(rec):
        k = int(centres.shape[0])
        segments = _segments(parts, labels, g, k, settings, device)
        baseline = _drift_baseline(parts, labels, distances, scores, g, k, settings)

    est.config_, est.backend_, est.featurizers_, est.fuser_ = settings, backend, featurizers, fuser
    est.reducer_, est.clusterer_, est.sweep_ = None, clusterer, None
    est.cluster_centers_, est.n_clusters_ = backend.asarray(centres), int(centres.shape[0])
    est.spread_ = explained.spread
    est.vocabulary_ = to_backend_frame(g.items, backend)
    est.profiles_, est.population_, est.anomalies_ = (name_profiles(explained.profiles), explained.population,
                                                      explained.anomalies)
    est.metrics_ = metrics
    est.segments_, est.drift_baseline_ = segments, baseline
    est.personal_ = None  # the personal model is fitted in one process (recommend.personal); segments only here
    est.pseudonymiser_, est.privacy_ = None, privacy_record(None, settings.privacy.min_group_size)
    est.labels_ = like_input(to_backend_frame(labels_frame, backend), kind)
    est.map_ = like_input(to_backend_frame(explained.map, backend), kind)
    summary = types.SimpleNamespace(steps=g.steps, n_events=g.n_events, n_users=g.n_users, n_items=g.n_items)
    cluster_record = {"algorithm": "kmeans", "engine": clusterer.engine_, "k": int(centres.shape[0]),
                      "inertia": inertia, "n_iter": clusterer.n_iter_, "seed": settings.seed, "k_sweep": None,
                      "init_sample": getattr(clusterer, "init_sample_", None)}
    est.manifest_ = build_manifest(
        config=settings.to_dict(), backend=backend, recorder=record, data=summary,
        features={"blocks": {f.name: getattr(f, "info_", {}) for f in featurizers}, "layout": fuser.layout_,
                  "skipped": weighted_features(settings)[1],
                  "dims": d}, reduce=None, cluster=cluster_record, metrics=metrics,
        moved_bytes=transfers.bytes - moved, custom={})
    est.manifest_["privacy"] = est.privacy_
    est.manifest_["describe"] = {"model": None, "names": "rules"}
    est.manifest_["recommend"] = segments.to_meta()
    est.manifest_["dask"] = {**session.describe(), "partitions": len(parts.futures),
                             "worker_peak_rss_mib": dict(sorted(peaks.overall.items())), "spill": _spilled(client)}
    est._distributed = types.SimpleNamespace(assignments=frames, session=session)
    return est


def _part_segment_counts(part: prepare.Part, labels, g: prepare.Globals, k: int, device: str):
    """Counted where the partition lives (cuDF columns and CuPy labels on a GPU worker)."""
    return to_host(segment_counts(g.prepared(part), labels, k, prepare.worker_backend(device)))


def _part_drift_counts(part: prepare.Part, labels, distances, scores, g: prepare.Globals, k: int):
    placed = drift.placed_counts(to_host(labels), to_host(distances), to_host(scores), k)
    return placed.add(drift.DriftCounts(event_types=drift.event_counts(g.prepared(part)).event_types))


def _segments(parts: Blocks, labels: Blocks, g: prepare.Globals, k: int, settings: PipelineConfig,
              device: str) -> Any:
    """Item popularity per cluster summed over partitions; a blend weight not given is tuned on the
    users of one partition (hash-shuffled by user id, so a sample of them)."""
    counts = parts.total(_part_segment_counts, labels, g=g, k=k, device=device)
    r = settings.recommend
    if r.blend_weight is not None:
        return segments_from(counts, None, None, k, _HOST, r.blend_weight, r.tune_users, settings.seed)
    part, part_labels = parts.client.gather([parts.futures[0], labels.futures[0]])
    return segments_from(counts, g.prepared(prepare.Part(part.table.on_host(), host_frame(part.users), part.n_users)),
                         to_host(part_labels), k, _HOST, None, r.tune_users, settings.seed)


def _drift_baseline(parts: Blocks, labels: Blocks, distances: Blocks, scores: Blocks, g: prepare.Globals, k: int,
                    settings: PipelineConfig) -> dict[str, Any]:
    """The fit's drift yardstick: per-partition counts added up, with the input-wide cleaning steps."""
    counts = drift.DriftCounts()
    for partial in parts.map(_part_drift_counts, labels, distances, scores, g=g, k=k).gather():
        counts = counts.add(partial)
    steps = {s.step: s for s in g.steps}
    first = g.steps[0].rows_in if g.steps else g.n_events
    counts = counts.add(drift.DriftCounts(
        events=int(first), unknown_event_types=int(steps["unknown_event_types"].dropped)
        if "unknown_event_types" in steps else 0))
    return drift.baseline_of(counts, list(settings.preprocess.event_weights))


_HOST = cpu_backend()


class _Bundle:
    """Featurisers travelling to the workers as one object (a list would be scattered item by item)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items


def _part_features(part: prepare.Part, *stats: Any, g: prepare.Globals, device: str, bundle: _Bundle,
                   gap: float | None):
    return dfeatures.part_features(part, g, device, bundle.items, *stats, gap=gap)


def _squares(distances) -> float:
    return float((distances.astype(np.float64) ** 2).sum())


def _users(part: prepare.Part):
    users = prepare.host_frame(part.users)
    return users[[schema.USER]].reset_index(drop=True)


def _spilled(client: Any) -> dict[str, Any]:
    try:
        return client.run(_spill)
    except Exception:  # noqa: BLE001 - a figure for the manifest, never a reason to fail a run
        return {}


def _host(frame: Any) -> Any:
    if is_lazy_frame(frame):
        frame = frame.compute()
    return prepare.host_frame(frame)


def _kind_of(events: Any) -> str:
    if is_lazy_frame(events):
        meta = getattr(events, "_meta", None)
        return "cudf" if meta is not None and type(meta).__module__.startswith("cudf") else "pandas"
    return frame_kind(events)


def _metrics(x: Blocks, labels: Blocks, centres: np.ndarray, settings: PipelineConfig, backend: Backend) -> dict:
    """Silhouette on a seeded sample (as one process samples it); Calinski-Harabasz and Davies-Bouldin
    over all users by reductions."""
    n, sample, seed = x.n_rows, settings.assess.silhouette_sample, settings.seed
    rows = np.arange(n) if n <= sample else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    picked = x.rows(_sample, rows, labels)
    xs = backend.asarray(np.concatenate([p[0] for p in picked]))
    ls = backend.asarray(np.concatenate([p[1] for p in picked]).astype(np.int32))
    sil, used = silhouette(xs, ls, backend.xp, sample=len(rows), seed=seed)
    ch, db = calinski_davies(x, labels, int(centres.shape[0]))
    return {"silhouette": sil, "silhouette_sample": used, "davies_bouldin": db, "calinski_harabasz": ch}


def _sample(block, labels, local):
    from gpuclust.backend import array_module

    xp = array_module(block)
    return to_host(block[xp.asarray(local)]), to_host(labels)[local]


# --- preprocessing --------------------------------------------------------------------------------

def preprocess(client: Any, events: Any, rows: int | None, items: Any, settings: PipelineConfig, device: str,
               session: Session) -> tuple[Blocks, prepare.Globals]:
    """Shuffle by user, clean per partition, decide what is global, index per partition."""

    cfg = settings.preprocess
    threads = session.describe()["threads"]
    if not is_lazy_frame(events):
        rows = len(events)
        events = from_frame(events, device, max(1, min(threads * 2, rows // 100_000 + 1)))
    if rows is None:
        rows = int(events.shape[0].compute())
    if rows == 0:
        raise UsageError("the events input has no rows; check the file or the adapter's filters")
    n_parts = partition_count(rows, threads, settings.dask.partitions)
    cleaned, summaries, steps = prepare.clean_partitions(client, events, cfg, settings.seed, device, rows, n_parts)
    if cfg.min_item_events > 1:
        cleaned, summaries, steps = _min_items(client, cleaned, summaries, steps, cfg)
    present = {name for s in summaries for name in s.event_names}
    event_types = tuple(t for t in cfg.event_weights if t in present)
    require_weighted(event_types, cfg.event_weights)  # else the featurisers failed on an empty reduction
    reference_time = max(s.time_range[1] for s in summaries if s.time_range[1] is not None)
    counts = prepare.item_counts(summaries)
    catalogue, note = (None, None) if items is None else catalogue_table(_host(items), pd)
    table, cast, text_columns, step = prepare.vocabulary(counts, catalogue)
    steps.extend(s for s in (note, step) if s is not None)
    table_future = broadcast(client, table)
    indexed = pmap(client, prepare.index_partition, cleaned, vocabulary=table_future, item_cast=cast,
                         event_types=event_types, known_only=False, device=device)
    sizes = client.gather(pmap(client, prepare.part_size, indexed))
    keep = [i for i, s in enumerate(sizes) if s > 0]
    parts = Blocks(client, [indexed[i] for i in keep], [sizes[i] for i in keep])
    del cleaned
    n_events = int(counts.sum())
    g = prepare.Globals(table, len(table), parts.n_rows, n_events, pd.Timestamp(reference_time), event_types,
                        text_columns, steps)
    return parts, g


def _min_items(client: Any, cleaned: list[Any], summaries: list[Any], steps: list[Any], cfg: Any):
    """min_item_events over all partitions, alternating with min_user_events until nothing changes; each
    drop counted under the minimum that made it, as one process counts them (`Preprocessor._filter_min_counts`)."""
    for _ in range(10):
        counts = prepare.item_counts(summaries)
        allowed = counts[counts >= cfg.min_item_events].index
        if len(allowed) == len(counts):
            break
        cleaned = pmap(client, prepare.keep_items, cleaned,
                             **shipped(client, {"allowed": allowed, "min_user_events": cfg.min_user_events}))
        summaries = client.gather(pmap(client, prepare.summary_of, cleaned))
    rows_out = sum(int(s.item_counts.sum()) for s in summaries)
    by_items, by_users = (sum(s.global_drops[i] for s in summaries) for i in (0, 1))
    users = next(s for s in steps if s.step == "min_user_events")
    after_users = users.rows_out - by_users
    why = f"item has fewer than {cfg.min_item_events} events"
    steps = [dataclasses.replace(s, rows_out=after_users) if s.step == "min_user_events" else
             dataclasses.replace(s, rows_in=after_users, rows_out=after_users - by_items, why=why)
             if s.step == "min_item_events" else s for s in steps]
    if rows_out == 0:
        raise UsageError("no events left after the minimum-count filters; lower --min-user-events / --min-item-events")
    return cleaned, summaries, steps


def as_host_array(values: Any) -> np.ndarray:
    return to_host(values)
