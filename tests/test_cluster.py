import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)

from gpuclust import accelerators
from gpuclust.backend import cpu_backend
from gpuclust.cluster.kmeans import KMeans
from gpuclust.cluster.outcome import nearest_centres
from gpuclust.errors import UsageError
from gpuclust.quality.metrics import calinski_harabasz, davies_bouldin, silhouette

B = cpu_backend()


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=3000, centers=6, n_features=12, cluster_std=1.0, random_state=0)
    return x.astype(np.float32), y


@pytest.mark.parametrize("engine", ["sklearn", "faiss"])
def test_engines_recover_separated_blobs(blobs, engine):
    if engine == "faiss" and not accelerators.faiss_cpu().usable:
        pytest.skip("faiss not installed")
    x, y = blobs
    km = KMeans(6, engine=engine, n_init=10, random_state=0).fit(x, B)
    assert km.engine_ == engine
    assert adjusted_rand_score(y, km.labels_) == pytest.approx(1.0)
    assert km.labels_.dtype == np.int32 and km.labels_.shape == (3000,)
    again = KMeans(6, engine=engine, n_init=10, random_state=0).fit(x, B)
    np.testing.assert_array_equal(km.labels_, again.labels_)


def test_auto_takes_scikit_learn_on_the_cpu():
    assert B.pick_engine("kmeans") == "sklearn"


def test_impossible_k_and_engines_are_user_errors(blobs):
    x, _ = blobs
    with pytest.raises(UsageError, match="larger than the number of users"):
        KMeans(5000).fit(x, B)
    with pytest.raises(UsageError, match="unknown engine 'magic'"):
        KMeans(3, engine="magic").fit(x, B)
    if not accelerators.cuml().usable:
        with pytest.raises(UsageError, match="not usable"):
            KMeans(3, engine="cuml").fit(x, B)


def test_nearest_centres_match_brute_force(blobs):
    x, _ = blobs
    centres = x[:7]
    labels, dist = nearest_centres(x, centres, np, chunk=500)
    d = np.linalg.norm(x[:, None, :] - centres[None], axis=2)
    np.testing.assert_array_equal(labels, d.argmin(axis=1))
    np.testing.assert_allclose(dist, d.min(axis=1), rtol=1e-4, atol=1e-3)


def test_metrics_equal_scikit_learn(blobs):
    x, y = blobs
    y = y.astype(np.int32)
    score, used = silhouette(x, y, np, sample=10_000, chunk=700)
    assert used == 3000
    assert score == pytest.approx(silhouette_score(x, y), rel=1e-4)
    assert davies_bouldin(x, y, np) == pytest.approx(davies_bouldin_score(x, y), rel=1e-5)
    assert calinski_harabasz(x, y, np) == pytest.approx(calinski_harabasz_score(x, y), rel=1e-5)


def test_silhouette_samples_and_says_how_many(blobs):
    x, y = blobs
    score, used = silhouette(x, y.astype(np.int32), np, sample=500, seed=1)
    assert used == 500 and abs(score - silhouette_score(x, y)) < 0.05


def test_centres_no_user_is_nearest_to_are_dropped_with_a_warning():
    """k-means on users too alike to fill k clusters: k becomes what the users allow, labels stay 0..k-1."""
    from gpuclust.cluster.outcome import outcome_of
    from gpuclust.errors import InputWarning

    x = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=np.float32)

    class Fitted:  # what an engine returns when two of its centres coincide
        labels_ = np.array([0, 0, 2])
        cluster_centers_ = np.array([[0, 0], [0, 0], [1, 1]], dtype=np.float32)

    with pytest.warns(InputWarning, match="3 clusters were asked for, but only 2 hold users"):
        outcome = outcome_of(Fitted(), x, cpu_backend())
    assert outcome.n_clusters == 2 and outcome.labels.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(outcome.centres, [[0, 0], [1, 1]])


def test_restarts_follow_the_device_unless_given():
    """Restarts are nearly free on a GPU: 10 there, 3 on the CPU, and a given n_init always wins."""
    from gpuclust.cluster.kmeans import CPU_RESTARTS, GPU_RESTARTS, restarts

    assert (restarts(None, False), restarts(None, True), restarts(5, True)) == (CPU_RESTARTS, GPU_RESTARTS, 5)
    assert GPU_RESTARTS > CPU_RESTARTS
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    assert KMeans(3, engine="sklearn").fit(x, B).n_init_ == CPU_RESTARTS
    assert KMeans(3, engine="sklearn", n_init=2).fit(x, B).n_init_ == 2


def test_beyond_the_init_sample_kmeans_plusplus_seeds_from_a_sample(monkeypatch):
    """Past INIT_SAMPLE users the seeding sees a sample (each restart its own) and Lloyd sees everyone:
    the planted groups are still found."""
    import sklearn.cluster

    from gpuclust.cluster import kmeans as kmeans_module

    x, truth = make_blobs(n_samples=3000, centers=6, n_features=5, cluster_std=0.5, random_state=1)
    seeded_from = []
    plusplus = sklearn.cluster.kmeans_plusplus

    def spy(data, n_clusters, **kwargs):
        seeded_from.append(len(data))
        return plusplus(data, n_clusters, **kwargs)

    monkeypatch.setattr(kmeans_module, "INIT_SAMPLE", 300)
    monkeypatch.setattr(sklearn.cluster, "kmeans_plusplus", spy)
    model = KMeans(6, engine="sklearn", random_state=0).fit(x.astype(np.float32), cpu_backend())
    assert seeded_from == [300, 300, 300]  # one sample per restart
    assert adjusted_rand_score(truth, model.labels_) > 0.99
