"""The estimator contract a notebook user relies on: scikit-learn manners and swappable sub-models."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.cluster import HDBSCAN, KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.errors import UsageError
from tests.helpers import blob_events, cli


@pytest.fixture(scope="module")
def log():
    events, items, truth = blob_events(n_users=240, n_groups=3)
    return events, items, truth


@pytest.fixture(scope="module")
def fitted(log):
    events, items, _ = log
    return UserClusterer(3, device="cpu", seed=0).fit(events, items)


def _ari(model, truth) -> float:
    joined = model.labels_.merge(truth, on="user_id")
    return adjusted_rand_score(joined["group"], joined["cluster"])


def test_the_notebook_example_works(log, tmp_path):
    events, items, truth = log
    new_events = events[events["user_id"] < 160]
    m = UserClusterer(clusterer=MiniBatchKMeans(3, n_init=1, random_state=0), features=("behaviour", "tfidf"),
                      device="cpu").fit(events, items)
    assert _ari(m, truth) == pytest.approx(1.0)
    placed = m.predict(new_events)
    features = m.transform(events)
    m.save(tmp_path / "model")
    again = UserClusterer.load(tmp_path / "model").predict(new_events)
    pd.testing.assert_frame_equal(placed, again, rtol=1e-5)
    assert features.shape == (240, 1 + m.cluster_centers_.shape[1])


def test_clone_gives_an_unfitted_twin_with_the_same_parameters(fitted):
    twin = clone(fitted)
    assert twin.get_params() == fitted.get_params()
    assert twin.n_clusters == 3 and twin.device == "cpu" and not hasattr(twin, "labels_")
    twin.set_params(n_clusters=2)
    assert twin.get_params()["n_clusters"] == 2 and fitted.n_clusters == 3
    with pytest.raises(ValueError, match="invalid parameter"):
        twin.set_params(k=4)


def test_predict_on_the_fit_data_equals_labels(fitted, log):
    events, _, _ = log
    again = fitted.predict(events)
    np.testing.assert_array_equal(again["cluster"].to_numpy(), fitted.labels_["cluster"].to_numpy())
    np.testing.assert_allclose(again["distance"], fitted.labels_["distance"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again["anomaly_score"], fitted.labels_["anomaly_score"], rtol=1e-4, atol=1e-4)
    again = UserClusterer(3, device="cpu", seed=0).fit_predict(events, log[1])
    pd.testing.assert_frame_equal(again, fitted.labels_)


def test_transform_lives_where_the_centres_do(fitted, log):
    events, _, _ = log
    out = fitted.transform(events)
    assert isinstance(out, pd.DataFrame) and list(out.columns[:1]) == ["user_id"]
    x = out.drop(columns="user_id").to_numpy()
    nearest = ((x[:, None, :] - fitted.cluster_centers_[None]) ** 2).sum(axis=2).argmin(axis=1)
    np.testing.assert_array_equal(nearest, fitted.labels_["cluster"].to_numpy())


def test_scikit_learn_estimators_plug_in_as_clusterers(log):
    events, items, truth = log
    km = UserClusterer(clusterer=KMeans(3, n_init=2, random_state=0), device="cpu").fit(events, items, truth)
    assert km.metrics_["ari"] == pytest.approx(1.0) and km.manifest_["cluster"]["algorithm"] == "KMeans"
    hdb = HDBSCAN(min_cluster_size=20, copy=True)
    model = UserClusterer(clusterer=hdb, device="cpu").fit(events, items)
    assert not hasattr(hdb, "labels_")  # the caller's estimator stays unfitted: a copy was fitted
    assert model.cluster_centers_.shape[0] == model.n_clusters_ >= 2  # centres from the members: it has none
    placed = model.predict(events.head(100))
    assert set(placed["cluster"]) <= set(range(model.n_clusters_))  # new users go to a centre, never noise


def test_a_linear_reducer_of_scikit_learn_is_saved_with_the_model(log, tmp_path):
    events, items, _ = log
    m = UserClusterer(3, reducer=PCA(4, random_state=0), device="cpu").fit(events, items)
    assert m.cluster_centers_.shape[1] == 4
    loaded = UserClusterer.load(m.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.predict(events)["cluster"], m.labels_["cluster"])


def test_a_callable_embedding_model(log):
    events, items, truth = log
    calls = []

    def embed(texts):
        calls.append(len(texts))
        # "product 17" -> a one-hot of its block of 30 items: the planted groups touch disjoint blocks.
        return np.eye(3, dtype=np.float32)[[int(re.search(r"product (\d+)", t)[1]) // 30 for t in texts]]

    m = UserClusterer(3, features=("text",), embedding_model=embed, device="cpu").fit(events, items, truth)
    assert calls == [90] and m.metrics_["ari"] == pytest.approx(1.0)
    assert m.manifest_["features"]["blocks"]["text"]["model_source"] == "callable"


def test_precomputed_item_vectors_from_gpuclust_embed(log, tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers")
    events, items, truth = log
    items.to_parquet(tmp_path / "items.parquet")
    code, _, err = cli(monkeypatch, capsys, "embed", "--items", tmp_path / "items.parquet", "--out",
                       tmp_path / "vectors.parquet", "--device", "cpu", "--json")
    assert code == 0, err
    m = UserClusterer(3, features=("behaviour", "text"), item_vectors=tmp_path / "vectors.parquet",
                      device="cpu").fit(events, items, truth)
    info = m.manifest_["features"]["blocks"]["text"]
    assert info["model"] == "precomputed item vectors" and info["items_without_vectors"] == 0
    vectors = pd.read_parquet(tmp_path / "vectors.parquet").iloc[:45]  # half the catalogue has a vector
    half = UserClusterer(3, features=("text",), item_vectors=vectors, device="cpu").fit(events, items)
    assert half.manifest_["features"]["blocks"]["text"]["items_without_vectors"] == 45


class _Constant:
    """A featuriser of one's own: one column, the same for everyone."""

    name = "constant"

    def fit_transform(self, data, backend):
        return backend.xp.ones((data.n_users, 1), dtype=backend.xp.float32)

    def transform(self, data, backend):
        return self.fit_transform(data, backend)


def test_extra_features_add_to_the_default_list(log):
    events, items, _ = log
    m = UserClusterer(3, extra_features=[_Constant()], device="cpu").fit(events, items)
    assert list(m.manifest_["features"]["blocks"]) == ["behaviour", "tfidf", "constant"]
    with pytest.raises(UsageError, match="not in the registry"):
        m.save("unused")


def test_a_loaded_model_has_the_shape_of_a_fitted_one(fitted, tmp_path):
    loaded = UserClusterer.load(fitted.save(tmp_path / "m"), device="cpu")
    learned = {name for name in vars(fitted) if name.endswith("_")}
    assert learned == {name for name in vars(loaded) if name.endswith("_")}
    pd.testing.assert_frame_equal(loaded.labels_, fitted.labels_)
    assert loaded.profiles_ == fitted.profiles_ and loaded.manifest_["run_id"] == fitted.manifest_["run_id"]
    np.testing.assert_array_equal(loaded.cluster_centers_, fitted.cluster_centers_)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"clusterer": "dbscan", "config": PipelineConfig(cluster=PipelineConfig().cluster.__class__(engine="faiss"))},
     re.escape("unknown --engine (cluster.engine) 'faiss'")),
    ({"embedding_model": "default"}, "add 'text' to features"),
    ({"n_clusters": "many"}, "--k 'many' is not understood"),
    ({"feature_weights": {"behavior": 1.0}}, "behavior"),
    ({"features": ()}, "no features selected"),
])
def test_contradictions_are_found_before_the_data_is_read(kwargs, message):
    with pytest.raises(UsageError, match=message):
        UserClusterer(device="cpu", **kwargs).fit(pd.DataFrame())  # an empty frame: never reached


def test_unfitted_use_is_a_clear_error(log):
    with pytest.raises(UsageError, match="not fitted"):
        UserClusterer().predict(log[0])


def test_a_log_where_no_user_has_two_items_still_fits_with_the_default_blend():
    """The recommendation table's blend weight is tuned by holding an item out; with no user to hold one
    out of, the fit keeps the default weight instead of failing."""
    ev = pd.DataFrame({"user_id": [1, 2, 3, 4], "item_id": [1, 2, 3, 1], "event_type": ["view"] * 4,
                       "timestamp": pd.date_range("2026-01-01", periods=4, freq="h")})
    model = UserClusterer(2, device="cpu").fit(ev)
    assert model.segments_.blend_weight == 0.5 and model.segments_.tuning["users"] == 0
    with pytest.raises(UsageError, match="--algorithm predictive need"):
        UserClusterer(2, clusterer="predictive", device="cpu").fit(ev)
