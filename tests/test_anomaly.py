"""Per-user anomaly scores (robust z of the distance within the cluster) and the top-N list with reasons."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from gpuclust.backend import cpu_backend, transfers
from gpuclust.cluster.density import DBSCAN
from gpuclust.cluster.kmeans import KMeans
from gpuclust.cluster.outcome import outcome_of
from gpuclust.quality import anomaly as anomaly_module
from gpuclust.quality.anomaly import NOISE_SCORE, anomaly_scores, cluster_spread, top_anomalies

B = cpu_backend()


def _distances(model, x):
    return outcome_of(model, x, B).distances


def _reference(labels, distances):
    out = np.empty(len(labels))
    for c in np.unique(labels):
        d = distances[labels == c].astype(np.float64)
        med = np.median(d)
        mad = np.median(np.abs(d - med))
        scale = 1.4826 * mad if mad > 0 else 1.2533 * np.abs(d - med).mean()
        out[labels == c] = (d - med) / scale if scale > 0 else 0.0
    return out


def test_scores_are_the_robust_z_within_each_cluster():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 1001).astype(np.int32)
    distances = (rng.gamma(2.0, 1.0 + labels, size=1001)).astype(np.float32)  # clusters of different spread
    scores = anomaly_scores(labels, distances, np)
    assert scores.dtype == np.float32 and scores.shape == (1001,)
    np.testing.assert_allclose(scores, _reference(labels, distances), rtol=1e-5, atol=1e-5)
    median, scale = cluster_spread(labels, distances, np)
    for c in range(4):
        d = distances[labels == c]
        assert median[c] == pytest.approx(np.median(d), rel=1e-6)
        assert scale[c] == pytest.approx(1.4826 * np.median(np.abs(d - np.median(d))), rel=1e-5)


def test_zero_mad_falls_back_and_constant_clusters_score_zero():
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2], dtype=np.int32)
    distances = np.array([1, 1, 1, 1, 5, 2, 2, 2, 0], dtype=np.float32)
    scores = anomaly_scores(labels, distances, np)
    np.testing.assert_allclose(scores, _reference(labels, distances), rtol=1e-6)
    assert scores[4] > 3 and (scores[5:] == 0).all()
    assert np.isfinite(scores).all()


def test_noise_users_always_rank_as_outliers():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, -1, -1], dtype=np.int32)
    distances = np.array([1, 1.1, 0.9, 1.0, 2, 2.2, 1.8, 2.0, 1.0, 40], dtype=np.float32)
    scores = anomaly_scores(labels, distances, np)
    assert scores[8] == pytest.approx(NOISE_SCORE)  # close to a centre, but noise: at least NOISE_SCORE
    assert scores[9] > NOISE_SCORE  # far: scored against all clustered users' distances
    mask = np.zeros(10, dtype=bool)
    mask[3] = True  # an explicit noise mask counts too
    assert anomaly_scores(labels, distances, np, noise=mask)[3] >= NOISE_SCORE


def test_top_anomalies_lists_the_outliers_with_why():
    x, _ = make_blobs(n_samples=500, centers=3, n_features=4, cluster_std=0.5, random_state=0)
    x = x.astype(np.float32)
    x[17, 2] += 6.0  # one user far off along feature 2 only
    km = KMeans(3, random_state=0).fit(x, B)
    scores = anomaly_scores(km.labels_, _distances(km, x), np)
    ids = np.array([f"u{i}" for i in range(500)])
    names = ["visits", "spend", "returns", "recency"]
    top = top_anomalies(ids, km.labels_, scores, _distances(km, x), 3, np, feature_matrix=x, feature_names=names)
    assert len(top) == 3 and top[0]["user_id"] == "u17"
    assert [row["score"] for row in top] == sorted((row["score"] for row in top), reverse=True)
    first = top[0]
    assert set(first) == {"user_id", "cluster", "score", "distance", "noise", "why"}
    assert first["cluster"] == int(km.labels_[17]) and first["noise"] is False
    assert first["distance"] == pytest.approx(float(_distances(km, x)[17]))
    assert first["why"].startswith("distance ") and "x the cluster's typical distance" in first["why"]
    assert "returns" in first["why"] and "sd above the cluster mean" in first["why"]
    plain = top_anomalies(np.arange(500) + 1000, km.labels_, scores, _distances(km, x), 2, np)
    assert plain[0]["user_id"] == 1017 and isinstance(plain[0]["user_id"], int) and ";" not in plain[0]["why"]
    assert top_anomalies(ids, km.labels_, scores, _distances(km, x), 0, np) == []
    assert len(top_anomalies(ids, km.labels_, scores, _distances(km, x), 10_000, np)) == 500


def test_top_anomalies_accepts_a_frame_of_features():
    import pandas as pd

    x, _ = make_blobs(n_samples=200, centers=2, n_features=3, cluster_std=0.3, random_state=1)
    x[5, 0] -= 5.0
    km = KMeans(2, random_state=0).fit(x.astype(np.float32), B)
    scores = anomaly_scores(km.labels_, _distances(km, x), np)
    frame = pd.DataFrame(x, columns=["orders", "basket", "days"])
    top = top_anomalies(np.arange(200), km.labels_, scores, _distances(km, x), 1, np, feature_matrix=frame)
    assert top[0]["user_id"] == 5 and "orders" in top[0]["why"] and "below the cluster mean" in top[0]["why"]
    by_series = top_anomalies(pd.Series(np.arange(200) + 7), km.labels_, scores, _distances(km, x), 1, np)
    assert by_series[0]["user_id"] == 12


def test_zero_typical_distance_is_said_plainly():
    labels = np.zeros(4, dtype=np.int32)
    distances = np.array([0, 0, 0, 3], dtype=np.float32)
    top = top_anomalies(np.arange(4), labels, anomaly_scores(labels, distances, np), distances, 1, np)
    assert top[0]["user_id"] == 3 and top[0]["why"] == "distance 3 (the cluster's typical distance is 0)"


def test_density_noise_is_flagged_with_its_reason():
    x, _ = make_blobs(n_samples=300, centers=2, n_features=3, cluster_std=0.3, random_state=2)
    x = np.vstack([x, [[40.0, 40.0, 40.0]]]).astype(np.float32)
    model = DBSCAN(eps=0.8, min_samples=5).fit(x, B)
    assert (model.labels_ < 0)[-1]
    scores = anomaly_scores(model.labels_, _distances(model, x), np, noise=(model.labels_ < 0))
    top = top_anomalies(np.arange(301), model.labels_, scores, _distances(model, x), 1, np, noise=(model.labels_ < 0))
    assert top[0]["user_id"] == 300 and top[0]["noise"] is True and top[0]["cluster"] == -1
    assert top[0]["why"].startswith("density noise")


def test_top_anomalies_asks_the_host_only_for_the_top_rows_and_summaries(monkeypatch):
    """Every device-to-host copy goes through `to_host`; on the CPU it passes data through, but what it is
    asked for is what a GPU would copy: nothing of the users' size."""
    original, requested = anomaly_module.to_host, []

    def to_host(data):
        requested.append(tuple(np.shape(data)))
        return original(data)

    monkeypatch.setattr(anomaly_module, "to_host", to_host)
    rng = np.random.default_rng(0)
    n, m = 1000, 5
    labels = rng.integers(0, 4, n).astype(np.int32)
    distances = rng.gamma(2.0, 1.0, n).astype(np.float32)
    features = rng.normal(size=(n, 3)).astype(np.float32)
    scores = anomaly_scores(labels, distances, np)
    top = top_anomalies(np.arange(n), labels, scores, distances, m, np, feature_matrix=features,
                        feature_names=["a", "b", "c"])
    assert len(top) == m
    assert requested and set(requested) <= {(m,), (m, 3), (3,)}, requested  # top rows; per-cluster mean and sd


@pytest.mark.gpu
def test_anomalies_on_the_gpu_match_the_cpu_and_move_only_the_top_rows():
    import cupy

    rng = np.random.default_rng(0)
    n = 50_000
    labels = rng.integers(0, 8, n).astype(np.int32)
    distances = rng.gamma(2.0, 1.0, n).astype(np.float32)
    features = rng.normal(size=(n, 6)).astype(np.float32)
    cpu_scores = anomaly_scores(labels, distances, np)
    gl, gd = cupy.asarray(labels), cupy.asarray(distances)
    gpu_scores = anomaly_scores(gl, gd, cupy)
    np.testing.assert_allclose(gpu_scores.get(), cpu_scores, rtol=1e-5, atol=1e-5)
    for matrix in (cupy.asarray(features), features):  # host features: pandas frames on a GPU
        before = transfers.bytes
        top = top_anomalies(np.arange(n), gl, gpu_scores, gd, 10, cupy, feature_matrix=matrix, feature_names=list("abcdef"))
        moved = transfers.bytes - before
        assert moved < 20_000  # top rows, per-cluster summaries: nothing of size n
        assert [r["user_id"] for r in top] == list(np.argsort(-cpu_scores, kind="stable")[:10])
