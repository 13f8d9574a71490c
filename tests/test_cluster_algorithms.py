"""torch KMeans engine, DBSCAN / HDBSCAN / agglomerative estimators and the clusterer factory."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from gpuclust import accelerators, registry
from gpuclust.backend import cpu_backend
from gpuclust.cluster.agglomerative import Agglomerative
from gpuclust.cluster.density import DBSCAN, HDBSCAN
from gpuclust.cluster.factory import build_clusterer
from gpuclust.cluster.kmeans import KMeans
from gpuclust.cluster.outcome import group_means, outcome_of, own_distances
from gpuclust.cluster.torch_kmeans import TorchKMeans
from gpuclust.config import ClusterConfig
from gpuclust.errors import UsageError
from gpuclust.quality.metrics import calinski_harabasz, davies_bouldin, silhouette

B = cpu_backend()
ROOT = Path(__file__).resolve().parents[1]


def _anisotropic():
    x, _ = make_blobs(n_samples=2000, centers=4, n_features=6, cluster_std=1.5, random_state=3)
    return (x @ np.random.default_rng(3).normal(size=(6, 6))).astype(np.float32)


DATASETS = {
    "blobs": (lambda: make_blobs(n_samples=3000, centers=6, n_features=12, random_state=0)[0].astype(np.float32), 6),
    "anisotropic": (_anisotropic, 4),
    "overlapping": (lambda: make_blobs(n_samples=3000, centers=8, n_features=5, cluster_std=3.5,
                                       random_state=1)[0].astype(np.float32), 8),
    "offset": (lambda: (make_blobs(n_samples=2000, centers=5, n_features=8, random_state=4)[0] + 500.0)
               .astype(np.float32), 5),
}


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=1500, centers=5, n_features=8, cluster_std=0.8, random_state=7)
    return x.astype(np.float32), y


# --- torch KMeans -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DATASETS))
@pytest.mark.parametrize("seed", [0, 1])
def test_torch_inertia_within_one_percent_of_scikit_learn(name, seed):
    make, k = DATASETS[name]
    x = make()
    sk = SkKMeans(k, n_init=4, random_state=seed, tol=1e-4).fit(x)
    tk = TorchKMeans(k, n_init=4, random_state=seed, tol=1e-4).fit(torch.from_numpy(x))
    assert abs(tk.inertia_ - sk.inertia_) / sk.inertia_ < 0.01
    # inertia_ is the sum of squared distances to the returned centres under the returned labels
    diff = x.astype(np.float64) - tk.cluster_centers_.numpy()[tk.labels_.numpy()]
    assert tk.inertia_ == pytest.approx((diff**2).sum(), rel=1e-5)


def test_torch_engine_is_deterministic_for_a_seed_and_varies_with_it():
    x, _ = DATASETS["overlapping"][0](), None
    a = KMeans(8, engine="torch", n_init=2, random_state=5).fit(x, B)
    b = KMeans(8, engine="torch", n_init=2, random_state=5).fit(x, B)
    c = KMeans(8, engine="torch", n_init=1, random_state=6).fit(x, B)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_
    assert not np.array_equal(a.cluster_centers_, c.cluster_centers_)


def test_torch_engine_through_kmeans_returns_numpy_and_recovers_blobs(blobs):
    x, y = blobs
    km = KMeans(5, engine="torch", n_init=3, random_state=0).fit(x, B)
    assert km.engine_ == "torch" and km.n_iter_ >= 1
    assert isinstance(km.cluster_centers_, np.ndarray) and km.cluster_centers_.dtype == np.float32
    assert km.labels_.dtype == np.int32 and km.labels_.shape == (len(x),)
    assert adjusted_rand_score(y, km.labels_) == pytest.approx(1.0)
    x_before = x.copy()
    KMeans(5, engine="torch", random_state=0).fit(x, B)
    np.testing.assert_array_equal(x, x_before)  # the caller's matrix is never modified


def test_empty_cluster_is_reseeded_at_the_farthest_point(blobs):
    x, y = blobs
    far = np.full((1, x.shape[1]), 1e4, dtype=np.float32)  # a start no user is near: that cluster starts empty
    init = np.vstack([x[[0, 1, 2, 3]], far])
    model = TorchKMeans(5, init=init, random_state=0).fit(torch.from_numpy(x))
    assert model.n_empty_repairs_ >= 1
    assert torch.bincount(model.labels_.long(), minlength=5).min() > 0
    assert np.abs(model.cluster_centers_.numpy()).max() < 1e3  # the far-away centre moved onto the data
    sk = SkKMeans(5, init=init, n_init=1).fit(x)
    assert abs(model.inertia_ - sk.inertia_) / sk.inertia_ < 0.01


def test_duplicate_points_do_not_break_seeding_or_repair():
    x = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]], dtype=np.float32), 50, axis=0)
    model = TorchKMeans(3, n_init=3, random_state=0).fit(torch.from_numpy(x))
    assert model.inertia_ == pytest.approx(0.0, abs=1e-6)
    assert len(set(model.labels_.tolist())) == 3
    # more clusters than distinct points: seeding picks duplicates, repair cannot help, nothing crashes
    more = TorchKMeans(5, n_init=1, random_state=0).fit(torch.from_numpy(x))
    assert more.inertia_ == pytest.approx(0.0, abs=1e-6)
    assert more.n_empty_repairs_ >= 1


def test_torch_kmeans_chunked_equals_unchunked(blobs):
    x = torch.from_numpy(blobs[0])
    whole = TorchKMeans(5, random_state=2).fit(x)
    chunked = TorchKMeans(5, random_state=2, chunk_elements=5 * 300).fit(x)  # 300-row chunks
    assert torch.equal(whole.labels_, chunked.labels_)
    assert chunked.inertia_ == pytest.approx(whole.inertia_, rel=1e-5)


def test_torch_kmeans_errors_are_user_errors(blobs):
    x = torch.from_numpy(blobs[0])
    with pytest.raises(UsageError, match="larger than the number of users"):
        TorchKMeans(5000).fit(x)
    with pytest.raises(UsageError, match="k-means\\+\\+"):
        TorchKMeans(3, init="random").fit(x)
    with pytest.raises(UsageError, match="init has shape"):
        TorchKMeans(3, init=np.zeros((2, 8))).fit(x)
    with pytest.raises(UsageError, match="NaN"):
        TorchKMeans(2).fit(torch.tensor([[0.0, 1.0], [float("nan"), 1.0], [2.0, 2.0]]))


def test_auto_engine_preference(monkeypatch):
    from gpuclust.accelerators import Accelerator
    from gpuclust.backend import Backend

    gpu = Backend("cuda", np, B.sparse, B.frame, "cuda")  # a stand-in: pick_engine reads only the device
    yes, no = Accelerator("x", True), Accelerator("x", False, None, "absent")
    for cuml, torch_cuda, faiss_gpu, expected in [(yes, yes, yes, "cuml"), (no, yes, yes, "torch"),
                                                  (no, no, yes, "faiss"), (no, no, no, "sklearn")]:
        monkeypatch.setattr(accelerators, "cuml", lambda a=cuml: a)
        monkeypatch.setattr(accelerators, "torch_cuda", lambda a=torch_cuda: a)
        monkeypatch.setattr(accelerators, "faiss_gpu", lambda a=faiss_gpu: a)
        assert gpu.pick_engine("kmeans") == expected
    assert B.pick_engine("kmeans") == "sklearn"
    assert B.pick_engine("kmeans", "torch") == "torch"


def test_gpu_check_script_skips_without_cuda_and_smoke_runs(capsys, monkeypatch, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the script runs its real check (gpu-check.sh)")
    spec = importlib.util.spec_from_file_location("gpu_check_kmeans", ROOT / "scripts" / "gpu_check_kmeans.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.delenv("OUT", raising=False)
    assert script.main([]) == 0
    assert capsys.readouterr().out.startswith("skipped: no CUDA")
    monkeypatch.setenv("OUT", str(tmp_path))
    assert script.main(["--cpu-smoke"]) == 0
    report = json.loads((tmp_path / "kmeans.json").read_text())
    assert report["ok"] and report["ari"] == pytest.approx(1.0) and report["relative_difference"] < 1e-6


# --- density and agglomerative ----------------------------------------------------------------

@pytest.fixture(scope="module")
def noisy_blobs():
    x, y = make_blobs(n_samples=600, centers=3, n_features=4, cluster_std=0.4, random_state=11)
    directions = np.random.default_rng(0).normal(size=(12, 4))
    outliers = 60.0 * directions / np.linalg.norm(directions, axis=1, keepdims=True)  # far from every blob
    return np.vstack([x, outliers]).astype(np.float32), np.concatenate([y, np.full(12, -1)])


def _check_interface(model, x):
    """What every clusterer's labels mean, derived one way (`cluster.outcome`)."""
    n = len(x)
    assert model.labels_.dtype == np.int32 and model.labels_.shape == (n,)
    out = outcome_of(model, x, B)
    assert out.centres.dtype == np.float32 and out.centres.shape == (out.n_clusters, x.shape[1])
    assert out.distances.shape == (n,)
    assert set(np.unique(out.labels)) <= set(range(-1, out.n_clusters))
    members = out.labels >= 0
    own = np.linalg.norm(x[members] - out.centres[out.labels[members]], axis=1)
    np.testing.assert_allclose(out.distances[members], own, rtol=1e-5, atol=1e-4)
    assert out.inertia == pytest.approx(float((own.astype(np.float64) ** 2).sum()), rel=1e-4)
    for c in range(out.n_clusters):
        np.testing.assert_allclose(out.centres[c], x[out.labels == c].mean(axis=0), rtol=1e-4, atol=1e-4)
    return out


@pytest.mark.parametrize("model", [DBSCAN(eps=1.0, min_samples=5), HDBSCAN(min_cluster_size=20)])
def test_density_clusterers_find_groups_and_noise(noisy_blobs, model):
    x, y = noisy_blobs
    model.fit(x, B)
    out = _check_interface(model, x)
    assert model.engine_ == "sklearn" and out.n_clusters == 3
    assert out.noise.dtype == bool and out.noise[-12:].all()
    np.testing.assert_array_equal(out.noise, model.labels_ < 0)
    assert model.n_noise_ == out.n_noise == int(out.noise.sum())
    members = ~out.noise
    assert adjusted_rand_score(y[members], model.labels_[members]) == pytest.approx(1.0)
    # a noise user's distance is to the nearest centre
    d = np.linalg.norm(x[-12:, None, :] - out.centres[None], axis=2).min(axis=1)
    np.testing.assert_allclose(out.distances[-12:], d, rtol=1e-5)


def test_metrics_work_on_non_noise_rows(noisy_blobs):
    x, _ = noisy_blobs
    model = DBSCAN(eps=1.0, min_samples=5).fit(x, B)
    keep = model.labels_ >= 0
    xs, labels = x[keep], model.labels_[keep]
    assert len(xs) == len(x) - model.n_noise_ and labels.min() == 0
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    assert silhouette(xs, labels, np)[0] == pytest.approx(silhouette_score(xs, labels), rel=1e-4)
    assert davies_bouldin(xs, labels, np) == pytest.approx(davies_bouldin_score(xs, labels), rel=1e-5)
    assert calinski_harabasz(xs, labels, np) > 0


def test_zero_clusters_is_a_user_error_with_a_hint(noisy_blobs):
    x, _ = noisy_blobs
    with pytest.raises(UsageError, match="found no clusters.*--eps"):
        DBSCAN(eps=1e-6, min_samples=5).fit(x, B)
    spread = np.random.default_rng(1).uniform(size=(40, 3)).astype(np.float32)
    with pytest.raises(UsageError, match="found no clusters.*--min-cluster-size"):
        HDBSCAN(min_cluster_size=40, min_samples=40).fit(spread, B)


def test_density_parameter_errors(noisy_blobs):
    x, _ = noisy_blobs
    with pytest.raises(UsageError, match="eps must be greater than 0"):
        DBSCAN(eps=0).fit(x, B)
    with pytest.raises(UsageError, match="min_cluster_size must be at least 2"):
        HDBSCAN(min_cluster_size=1).fit(x, B)
    with pytest.raises(UsageError, match="larger than the number of users"):
        HDBSCAN(min_cluster_size=10_000).fit(x, B)
    if not accelerators.cuml().usable:
        with pytest.raises(UsageError, match="not usable"):
            HDBSCAN(engine="cuml").fit(x, B)


def test_agglomerative_ward(blobs):
    x, y = blobs
    model = Agglomerative(5).fit(x, B)
    assert model.engine_ == "sklearn" and model.n_clusters == 5
    assert _check_interface(model, x).n_clusters == 5
    assert adjusted_rand_score(y, model.labels_) == pytest.approx(1.0)
    assert Agglomerative(5, linkage="average").fit(x, B).n_clusters == 5


def test_agglomerative_refuses_what_it_cannot_hold(blobs):
    x, _ = blobs
    with pytest.raises(UsageError, match="O\\(n\\^2\\) memory.*--sample-users 1000.*kmeans"):
        Agglomerative(3, max_rows=1000).fit(x, B)
    with pytest.raises(UsageError, match="choose one of ward"):
        Agglomerative(3, linkage="centroid").fit(x, B)
    with pytest.raises(UsageError, match="larger than the number of users"):
        Agglomerative(10_000).fit(x, B)


def test_group_means_and_own_distances_ignore_noise():
    x = np.array([[0, 0], [2, 0], [10, 10], [12, 10], [50, 50]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1, -1], dtype=np.int32)
    centres = group_means(x, labels, 2, np)
    np.testing.assert_allclose(centres, [[1, 0], [11, 10]])
    d = own_distances(x, labels, centres, np, chunk=2)
    np.testing.assert_allclose(d[:4], [1, 1, 1, 1])
    assert d[4] == pytest.approx(np.hypot(39, 40))


# --- factory ------------------------------------------------------------------------------------

def test_factory_builds_each_algorithm_of_the_registry(blobs):
    x, _ = blobs
    for name, entry in registry.ALGORITHMS.items():
        model = build_clusterer(ClusterConfig(algorithm=name, k=5, eps=1.5, min_cluster_size=30), seed=0)
        assert model.algorithm == name
        if name == "predictive":  # learns from events, not points alone: tests/test_predictive.py
            continue
        model.fit(x, B)
        found = outcome_of(model, x, B).n_clusters
        assert found == 5 if entry.takes_k else found >= 1
    km = build_clusterer(ClusterConfig(k=9, engine="torch", n_init=2, max_iter=50, tol=1e-3), seed=3, k=4)
    assert (km.n_clusters, km.engine, km.random_state, km.n_init, km.max_iter, km.tol) == (4, "torch", 3, 2, 50, 1e-3)
    assert build_clusterer(ClusterConfig(algorithm="dbscan")).min_samples == 5
    assert build_clusterer(ClusterConfig(algorithm="hdbscan", min_cluster_size=7)).min_samples is None


def test_factory_rejects_unknown_names():
    with pytest.raises(UsageError, match="unknown algorithm 'spectral': choose one of kmeans, dbscan"):
        build_clusterer(ClusterConfig(algorithm="spectral"))


# --- GPU ----------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_torch_kmeans_cuda_matches_cpu():
    x = DATASETS["overlapping"][0]()
    gpu = TorchKMeans(8, n_init=3, random_state=0, device="cuda").fit(torch.from_numpy(x))
    cpu = TorchKMeans(8, n_init=3, random_state=0, device="cpu").fit(torch.from_numpy(x))
    assert gpu.cluster_centers_.is_cuda
    assert abs(gpu.inertia_ - cpu.inertia_) / cpu.inertia_ < 0.01
    assert adjusted_rand_score(cpu.labels_.numpy(), gpu.labels_.cpu().numpy()) > 0.95
    again = TorchKMeans(8, n_init=3, random_state=0, device="cuda").fit(torch.from_numpy(x))
    assert torch.equal(gpu.labels_, again.labels_)


@pytest.mark.gpu
def test_kmeans_torch_engine_on_the_gpu_backend_keeps_data_on_device(blobs):
    import cupy

    from gpuclust.backend import cuda_backend, transfers

    gb = cuda_backend()
    x = cupy.asarray(blobs[0])
    before = transfers.bytes
    km = KMeans(5, engine="torch", random_state=0).fit(x, gb)
    assert transfers.bytes == before
    assert isinstance(km.cluster_centers_, cupy.ndarray) and isinstance(km.labels_, cupy.ndarray)
    assert adjusted_rand_score(blobs[1], km.labels_.get()) == pytest.approx(1.0)
    if not accelerators.cuml().usable:
        assert gb.pick_engine("kmeans") == "torch"


@pytest.mark.gpu
@pytest.mark.parametrize("make", [lambda: DBSCAN(eps=1.0, min_samples=5), lambda: HDBSCAN(min_cluster_size=20),
                                  lambda: Agglomerative(3)])
def test_density_and_agglomerative_on_the_gpu_backend(noisy_blobs, make):
    import cupy

    from gpuclust.backend import cuda_backend

    gb = cuda_backend()
    x = cupy.asarray(noisy_blobs[0])
    model = make().fit(x, gb)
    assert isinstance(model.labels_, cupy.ndarray) and model.labels_.dtype == cupy.int32
    out = outcome_of(model, x, gb)
    assert isinstance(out.centres, cupy.ndarray) and isinstance(out.distances, cupy.ndarray)
    assert out.n_clusters == 3
    expected = "cuml" if accelerators.cuml().usable and model.algorithm != "agglomerative" else "sklearn"
    assert model.engine_ == expected
