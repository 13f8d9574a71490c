"""PCA (scikit-learn / torch / cuML) and UMAP (umap-learn / cuML) before clustering."""

import os
import sys
import types

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA as SkPCA

from gpuclust import accelerators
from gpuclust import backend as backend_module
from gpuclust.backend import cpu_backend
from gpuclust.config import ReduceConfig
from gpuclust.errors import UsageError
from gpuclust.reduce import build_reducer
from gpuclust.reduce import pca as pca_module
from gpuclust.reduce.pca import PCA
from gpuclust.reduce.umap import UMAP

B = cpu_backend()


@pytest.fixture(scope="module")
def data():
    x, y = make_blobs(n_samples=800, centers=4, n_features=20, cluster_std=2.0, random_state=0)
    scales = np.linspace(0.5, 3.0, 20)  # distinct variances: a well-defined order of components
    return (x * scales + 100.0).astype(np.float32), y


@pytest.mark.parametrize("engine", ["sklearn", "torch"])
def test_pca_matches_scikit_learn_including_signs(data, engine):
    x, _ = data
    # The reference is fitted in float64: scikit-learn's own float32 fit is ~1e-3 off on these components.
    reference = SkPCA(3, random_state=0).fit(x.astype(np.float64))
    pca = PCA(3, engine=engine, seed=0)
    out = pca.fit_transform(x, B)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (800, 3)
    assert pca.engine_ == engine
    np.testing.assert_allclose(pca.components_, reference.components_, atol=1e-3)
    np.testing.assert_allclose(out, reference.transform(x), rtol=1e-3, atol=2e-2)
    np.testing.assert_allclose(pca.explained_variance_ratio_, reference.explained_variance_ratio_, rtol=1e-4)
    assert pca.info_ == {"method": "pca", "engine": engine, "n_components": 3, "input_dims": 20,
                         "explained_variance": pytest.approx(reference.explained_variance_ratio_.sum(), rel=1e-4)}


def test_pca_transform_of_new_users_equals_fit_transform(data):
    x, _ = data
    pca = PCA(3, engine="torch")
    out = pca.fit_transform(x, B)
    np.testing.assert_allclose(pca.transform(x[:100], B, chunk=7), out[:100], rtol=1e-5, atol=1e-5)


def test_torch_low_rank_path_for_wide_inputs_is_seeded_and_leaves_global_rng_alone(data, monkeypatch):
    x, _ = data
    monkeypatch.setattr(pca_module, "TORCH_EXACT_MAX_DIMS", 4)  # force the randomized branch
    state = torch.get_rng_state()
    a = PCA(3, engine="torch", seed=1).fit_transform(x, B)
    assert torch.equal(state, torch.get_rng_state())
    b = PCA(3, engine="torch", seed=1).fit_transform(x, B)
    np.testing.assert_array_equal(a, b)
    reference = SkPCA(3).fit(x)
    np.testing.assert_allclose(np.abs(a), np.abs(reference.transform(x)), rtol=1e-2, atol=1e-2)


def test_pca_auto_is_scikit_learn_on_the_cpu_and_errors_name_valid_values(data):
    x, _ = data
    pca = PCA(2)
    pca.fit_transform(x, B)
    assert pca.engine_ == "sklearn"
    with pytest.raises(UsageError, match="between 1 and min\\(users, features\\) = 20"):
        PCA(21).fit_transform(x, B)
    with pytest.raises(UsageError, match="choose one of auto, cuml, torch, sklearn"):
        PCA(2, engine="magic").fit_transform(x, B)
    if not accelerators.cuml().usable:
        with pytest.raises(UsageError, match="not usable"):
            PCA(2, engine="cuml").fit_transform(x, B)
    with pytest.raises(UsageError, match="2-D"):
        PCA(2).fit_transform(x[0], B)


class _FakeUMAP:
    calls: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        _FakeUMAP.calls.append(kwargs)

    def fit_transform(self, x):
        return np.asarray(x, dtype=np.float64)[:, : self.kwargs["n_components"]] * 2.0


def test_umap_uses_umap_learn_seeded_on_the_cpu(data, monkeypatch):
    x, _ = data
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=_FakeUMAP))
    reducer = UMAP(3, n_neighbors=10, min_dist=0.2, seed=4)
    out = reducer.fit_transform(x, B)
    assert out.dtype == np.float32 and out.shape == (800, 3)
    np.testing.assert_allclose(out, x[:, :3] * 2.0, rtol=1e-6)
    assert _FakeUMAP.calls[-1] == {"n_components": 3, "n_neighbors": 10, "min_dist": 0.2, "random_state": 4,
                                   "n_jobs": 1}
    assert reducer.engine_ == "umap-learn"
    assert reducer.info_ == {"method": "umap", "engine": "umap-learn", "n_components": 3, "n_neighbors": 10,
                             "min_dist": 0.2, "input_dims": 20}


def test_umap_without_umap_learn_says_what_to_install(data, monkeypatch):
    x, _ = data
    monkeypatch.setattr(backend_module, "installed", lambda module: False)
    with pytest.raises(UsageError, match=r"pip install -e '\.\[umap\]'"):
        UMAP(2).fit_transform(x, B)


def test_umap_parameter_errors(data, monkeypatch):
    x, _ = data
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=_FakeUMAP))
    with pytest.raises(UsageError, match="n_neighbors=800 must be at least 2 and below the number of users"):
        UMAP(2, n_neighbors=800).fit_transform(x, B)
    with pytest.raises(UsageError, match="min_dist"):
        UMAP(2, min_dist=-1).fit_transform(x, B)
    with pytest.raises(UsageError, match="unknown engine 'tsne'"):
        UMAP(2, engine="tsne").fit_transform(x, B)


class _CumlPCA2502:
    """cuML >= 25.02's PCA constructor (keyword-only, no random_state), computing with scikit-learn."""

    calls: list = []

    def __init__(self, *, copy=True, handle=None, iterated_power=15, n_components=None, svd_solver="auto",
                 tol=1e-7, verbose=False, whiten=False, output_type=None):
        self.calls.append({"n_components": n_components, "output_type": output_type})

    def fit(self, x):
        model = SkPCA(self.calls[-1]["n_components"]).fit(x)
        self.components_, self.mean_ = model.components_, model.mean_
        self.explained_variance_ratio_ = model.explained_variance_ratio_
        return self


class _CumlPCA2412(_CumlPCA2502):
    """cuML < 25.02's PCA constructor, which still took random_state."""

    def __init__(self, *, copy=True, handle=None, iterated_power=15, n_components=None, random_state=None,
                 svd_solver="auto", tol=1e-7, verbose=False, whiten=False, output_type=None):
        super().__init__(n_components=n_components, output_type=output_type)
        self.calls[-1]["random_state"] = random_state


@pytest.mark.parametrize("release", [_CumlPCA2502, _CumlPCA2412])
def test_cuml_pca_gets_random_state_only_where_its_release_takes_it(data, monkeypatch, release):
    x, _ = data
    module = types.SimpleNamespace(PCA=release)
    monkeypatch.setitem(sys.modules, "cuml", types.SimpleNamespace(decomposition=module))
    monkeypatch.setitem(sys.modules, "cuml.decomposition", module)
    release.calls = []
    components, _, _ = PCA(3, engine="cuml", seed=7)._fit_cuml(x, B, 3)
    assert components.shape == (3, 20)
    expected = {"n_components": 3, "output_type": "cupy"}
    assert release.calls == [expected | ({"random_state": 7} if release is _CumlPCA2412 else {})]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GPUCLUST_SLOW"),
                    reason="umap-learn's first call JIT-compiles for ~30 s; set GPUCLUST_SLOW=1 to run it")
def test_real_umap_learn_separates_blobs_and_repeats(data):
    pytest.importorskip("umap")
    from sklearn.metrics import adjusted_rand_score

    from gpuclust.cluster.kmeans import KMeans

    x, y = data
    a = UMAP(2, n_neighbors=15, seed=0).fit_transform(x[:400], B)
    b = UMAP(2, n_neighbors=15, seed=0).fit_transform(x[:400], B)
    np.testing.assert_array_equal(a, b)
    labels = KMeans(4, random_state=0).fit(a, B).labels_
    assert adjusted_rand_score(y[:400], labels) > 0.95


def test_build_reducer():
    assert build_reducer(ReduceConfig(method="none")) is None
    pca = build_reducer(ReduceConfig(method="pca", n_components=8, engine="torch"), seed=3)
    assert isinstance(pca, PCA) and (pca.n_components, pca.seed, pca.engine) == (8, 3, "torch")
    umap = build_reducer(ReduceConfig(method="umap", n_components=5, n_neighbors=30, min_dist=0.0), seed=2)
    assert isinstance(umap, UMAP) and (umap.n_components, umap.seed, umap.n_neighbors, umap.min_dist) == (5, 2, 30, 0.0)
    with pytest.raises(UsageError, match="unknown reducer 'tsne': choose one of pca, umap"):
        build_reducer(ReduceConfig(method="tsne"))


@pytest.mark.gpu
@pytest.mark.parametrize("engine", ["auto", "torch"])
def test_pca_on_the_gpu_backend_matches_scikit_learn(data, engine):
    import cupy

    from gpuclust.backend import cuda_backend

    x, _ = data
    gb = cuda_backend()
    pca = PCA(3, engine=engine)
    out = pca.fit_transform(cupy.asarray(x), gb)
    assert isinstance(out, cupy.ndarray) and out.dtype == cupy.float32
    assert pca.engine_ == ("cuml" if engine == "auto" and accelerators.cuml().usable else "torch")
    np.testing.assert_allclose(out.get(), SkPCA(3).fit_transform(x.astype(np.float64)), rtol=1e-3, atol=5e-2)


@pytest.mark.gpu
def test_umap_with_cuml_on_the_gpu(data):
    if not accelerators.cuml().usable:
        pytest.skip(f"cuML not usable: {accelerators.cuml().reason}")
    import cupy

    from gpuclust.backend import cuda_backend

    x, _ = data
    reducer = UMAP(2, seed=0)
    out = reducer.fit_transform(cupy.asarray(x), cuda_backend())
    assert reducer.engine_ == "cuml" and isinstance(out, cupy.ndarray) and out.shape == (800, 2)
