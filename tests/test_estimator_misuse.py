"""A notebook user's mistakes with `UserClusterer` give a UsageError naming the problem (and the sub-model
at fault), never an internal exception or a silently wrong result."""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pandas as pd
import pytest

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.errors import UsageError
from tests.helpers import blob_events, quick_fit


@pytest.fixture(scope="module")
def small():
    return blob_events(n_users=90, n_groups=3, events_per_user=8)


@pytest.fixture(scope="module")
def events(small):
    return small[0]


_fit = quick_fit


def _multiindex(ev: pd.DataFrame) -> pd.DataFrame:
    out = ev.copy()
    out.columns = pd.MultiIndex.from_tuples([(c, "x") for c in ev.columns])
    return out


@pytest.mark.parametrize("change, message", [
    (lambda ev: ev.drop(columns=["event_type"]), "no column 'event_type'"),
    (lambda ev: ev.rename(columns={"user_id": "User_ID"}), "'User_ID' looks like it"),
    (_multiindex, "MultiIndex columns"),
    (lambda ev: pd.concat([ev, ev[["user_id"]]], axis=1), "'user_id' more than once"),
    (lambda ev: ev.assign(user_id=[(u,) for u in ev.user_id]), "holds tuple values"),
    (lambda ev: ev.assign(item_id=[[i] for i in ev.item_id]), "holds list values"),
    (lambda ev: ev.assign(user_id=["a", 1, (2,)] * (len(ev) // 3)), "holds tuple values"),
    (lambda ev: ev.to_numpy(), "must be a pandas or cuDF DataFrame"),
])
def test_bad_event_frames_are_named(events, change, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        _fit(change(events))


def test_bad_items_and_truth_are_named(small):
    events, items, truth = small
    with pytest.raises(UsageError, match="items has no column 'item_id'"):
        _fit(events, items=items.drop(columns=["item_id"]))
    with pytest.raises(UsageError, match="truth has no column 'group'"):
        _fit(events, truth=truth.rename(columns={"group": "g"}))
    with pytest.raises(UsageError, match="truth has no column 'user_id'"):
        _fit(events, truth=truth.rename(columns={"user_id": "u"}))


def test_predict_checks_its_frame_too(small):
    model = _fit(small[0])
    with pytest.raises(UsageError, match="'USER_ID' looks like it"):
        model.predict(small[0].rename(columns={"user_id": "USER_ID"}))


@pytest.mark.parametrize("k", [4.0, np.float64(4), np.int64(4), [4.0]])
def test_a_whole_float_k_is_that_k(events, k):
    assert _fit(events, n_clusters=k).n_clusters_ == 4


@pytest.mark.parametrize("k", [4.5, float("nan"), float("inf"), [], (), ["a"], [3, 4.5], {3: 1}, object(), True])
def test_any_other_k_is_refused_not_rounded_or_defaulted(events, k):
    with pytest.raises(UsageError, match="n_clusters must be a whole number"):
        _fit(events, n_clusters=k)


@pytest.mark.parametrize("where", [123, None, 4.5, b"folder"])
def test_load_of_something_that_is_no_path(where):
    with pytest.raises(UsageError, match="path of a saved model folder"):
        UserClusterer.load(where)


class Clusterer:
    """A scikit-learn-style clusterer whose output is whatever the test asks for."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def fit(self, X):
        n, d = X.shape
        pair = np.arange(n) % 2
        self.labels_ = {
            "short": np.zeros(n - 3, int), "strings": np.array(["a"] * n), "halves": np.array([0.0, 1.5] * (n // 2)),
            "2d": np.zeros((n, 2), int), "nan": np.full(n, np.nan), "huge": np.full(n, 10**9),
        }.get(self.mode, pair)
        if self.mode == "wide":
            self.cluster_centers_ = np.zeros((2, d + 1))
        elif self.mode == "nan_centres":
            self.cluster_centers_ = np.full((2, d), np.nan)
        elif self.mode == "one_centre":
            self.cluster_centers_ = np.zeros((1, d))
        return self


@pytest.mark.parametrize("mode, message", [
    ("short", r"labels_ of shape \(87,\) for 90 users"),
    ("strings", "labels_ of dtype <U1"),
    ("halves", r"not whole numbers \(e.g. 1.5\)"),
    ("nan", "not whole numbers"),
    ("2d", r"labels_ of shape \(90, 2\)"),
    ("huge", "labels are cluster numbers 0..k-1"),
    ("wide", r"cluster_centers_ of shape \(2, 14\): expected \(k, 13\)"),
    ("nan_centres", "cluster_centers_ with NaN"),
    ("one_centre", "1 cluster_centers_ but labels up to 1"),
])
def test_a_clusterer_that_returns_nonsense_is_named(events, mode, message):
    with pytest.raises(UsageError, match=f"clusterer Clusterer .*{message}"):
        _fit(events, clusterer=Clusterer(mode))


def test_whole_float_labels_are_fine(events):
    class FloatLabels(Clusterer):
        def fit(self, X):
            self.labels_ = (np.arange(len(X)) % 3).astype(float)
            return self

    assert _fit(events, clusterer=FloatLabels("")).n_clusters_ == 3


class Reducer:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def fit_transform(self, X):
        n = len(X)
        return {"few": np.zeros((n - 2, 2)), "nan": np.full((n, 2), np.nan), "1d": np.arange(n, dtype=float),
                "inf": np.full((n, 2), np.inf), "strings": np.full((n, 2), "x"), "none": None,
                "list": X[:, :2].tolist(), "huge": np.full((n, 2), 1e300)}[self.mode]

    def transform(self, X):
        return self.fit_transform(X)


@pytest.mark.parametrize("mode, message", [
    ("few", r"shape \(88, 2\) for 90 users"), ("nan", "NaN or infinite"), ("inf", "NaN or infinite"),
    ("huge", "beyond float32"), ("1d", r"shape \(90,\): expected a 2-D"), ("strings", "dtype <U1"),
    ("none", "returned None"),
])
def test_a_reducer_that_returns_nonsense_is_named(events, mode, message):
    with pytest.raises(UsageError, match=f"reducer Reducer .*{message}"):
        _fit(events, reducer=Reducer(mode))


def test_a_reducer_returning_a_list_of_rows_is_read_as_the_matrix_it_is(events):
    model = _fit(events, reducer=Reducer("list"))
    assert model.cluster_centers_.shape == (3, 2)
    assert len(model.predict(events)) == events.user_id.nunique()


class Featurizer:
    name = "mine"

    def __init__(self, mode: str, after_fit: str | None = None) -> None:
        self.mode, self.after_fit = mode, after_fit

    def _out(self, mode, data):
        n = data.n_users
        return {"3rows": np.zeros((3, 2), np.float32), "nan": np.full((n, 2), np.nan, np.float32),
                "ok": np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32),
                "empty": np.zeros((n, 0), np.float32)}[mode]

    def fit_transform(self, data, backend):
        return self._out(self.mode, data)

    def transform(self, data, backend):
        return self._out(self.after_fit or self.mode, data)


@pytest.mark.parametrize("mode, message", [
    ("3rows", r"shape \(3, 2\) for 90 users"), ("nan", "NaN or infinite features"), ("empty", "at least one column"),
])
def test_a_featuriser_that_returns_nonsense_is_named(events, mode, message):
    with pytest.raises(UsageError, match=f"featuriser 'mine' \\(Featurizer\\) .*{message}"):
        _fit(events, features=[Featurizer(mode)])


def test_a_featuriser_that_goes_wrong_on_new_users_is_named_at_predict(events):
    model = _fit(events, features=[Featurizer("ok", after_fit="nan")])
    with pytest.raises(UsageError, match="featuriser 'mine' .*NaN"):
        model.predict(events)


def test_a_representation_without_explain_is_named_before_the_data_is_read(events):
    class Nothing:
        pass

    with pytest.raises(UsageError, match="representation Nothing has no explain"):
        _fit(events.iloc[:0], representation=Nothing())  # an empty log would be the next error


def test_a_representation_that_returns_the_wrong_thing_is_named(events):
    class Wrong:
        def explain(self, data, x, outcome, backend, stats):
            return {"profiles": []}

    with pytest.raises(UsageError, match="representation Wrong.explain returned dict without profiles"):
        _fit(events, representation=Wrong())


def test_a_progress_callback_that_raises_is_a_usage_error_naming_it(events):
    def shaky(line):
        raise RuntimeError("display went away")

    with pytest.raises(UsageError, match="progress callback .*shaky raised RuntimeError: display went away"):
        _fit(events, progress=shaky)
    with pytest.raises(UsageError, match="progress must be a function"):
        _fit(events, progress="print")


def test_a_progress_callback_may_still_stop_the_fit_with_ctrl_c(events):
    def stop(line):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(events, progress=stop)


def test_a_fitted_model_pickles_and_predicts_the_same(small):
    events, items, _ = small
    model = UserClusterer(n_clusters=3, features=["behaviour", "tfidf"], progress=print).fit(events, items)
    again = pickle.loads(pickle.dumps(model))
    pd.testing.assert_frame_equal(again.predict(events), model.predict(events))
    assert again.backend_.device == model.backend_.device


def test_a_pseudonymised_model_refuses_to_pickle_its_key(events):
    model = _fit(events, pseudonymise=b"k" * 32)
    with pytest.raises(UsageError, match="would hold its key"):
        pickle.dumps(model)


def test_predict_places_users_whose_events_include_unknown_types(events):
    config = PipelineConfig()
    config.preprocess.min_user_events = 3  # a training filter: it must not cost a new user their place
    model = _fit(events, config=config)
    new = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2], "item_id": [0, 1, 2, 0, 31, 32],
                        "event_type": ["view", "wishlist", "view", "share", "purchase", "view"],
                        "timestamp": pd.Timestamp("2026-02-01") + pd.to_timedelta(range(6), unit="h")})
    placed, data = model.place(new)
    assert placed.user_id.tolist() == [1, 2]
    dropped = {s.step: s.dropped for s in data.steps}
    assert dropped["unknown_event_types"] == 2


# --- a clusterer object decides its own k; one that cannot label users is refused before any fit ----------

def test_n_clusters_that_disagrees_with_the_clusterers_own_is_refused_before_any_work():
    from sklearn.cluster import HDBSCAN, KMeans

    from gpuclust import PipelineConfig, UserClusterer
    from gpuclust.errors import UsageError

    events, _, _ = blob_events(n_users=60)
    with pytest.raises(UsageError, match=r"n_clusters=8 disagrees with clusterer=KMeans\(\.\.\. 5 clusters\)"):
        UserClusterer(8, clusterer=KMeans(5)).fit(None)  # refused before the data is even looked at
    with pytest.raises(UsageError, match=r"n_clusters='auto' asks for a sweep of k"):
        UserClusterer("auto", clusterer=KMeans(5)).fit(events)
    with pytest.raises(UsageError, match="n_clusters=4 has no effect with clusterer=HDBSCAN"):
        UserClusterer(4, clusterer=HDBSCAN()).fit(events)
    config = PipelineConfig()
    config.cluster.k = 6
    with pytest.raises(UsageError, match=r"config cluster.k = 6 disagrees with clusterer=KMeans"):
        UserClusterer(config=config, clusterer=KMeans(5)).fit(events)
    model = UserClusterer(5, clusterer=KMeans(5, n_init=1, random_state=0), device="cpu").fit(events)
    assert model.n_clusters_ == 5  # agreeing is fine


def test_a_mixture_model_clusters_and_a_non_clusterer_is_refused_before_fitting(monkeypatch):
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    from gpuclust import UserClusterer
    from gpuclust.errors import UsageError

    events, _, truth = blob_events(n_users=90)
    model = UserClusterer(clusterer=GaussianMixture(3, random_state=0), device="cpu").fit(events)
    assert model.n_clusters_ == 3 and model.labels_["cluster"].nunique() == 3
    fitted = []
    monkeypatch.setattr(PCA, "fit", lambda self, *a, **k: fitted.append(1) or self)
    with pytest.raises(UsageError, match="clusterer PCA is not a clustering model"):
        UserClusterer(clusterer=PCA(2), device="cpu").fit(events)
    assert fitted == []  # refused before any fit


def test_prepared_data_without_events_is_named_by_fit_and_embed(events):
    """A catalogue alone (PreparedData(items=...)) failed as "expected a cuDF or pandas DataFrame, got
    NoneType" (fit) and its repr raised TypeError; an emptied table blamed "the file or the adapter's filters"."""
    from gpuclust.backend import cpu_backend
    from gpuclust.preprocess.clean import Preprocessor
    from gpuclust.preprocess.prepared import PreparedData

    data = Preprocessor().run(events, cpu_backend())
    catalogue = PreparedData(items=data.items)
    assert repr(catalogue) == "PreparedData(n_users=0, n_items=0, events=0)" and len(catalogue) == 0
    empty = data.with_table(data.table.subset(np.zeros(len(data.table), dtype=bool)))
    model = _fit(events)
    for given, message in ((catalogue, "prepared data has no events and users"),
                           (empty, r"prepared data has no events \(.*events=0\): e.g. a table subset")):
        with pytest.raises(UsageError, match=message):
            _fit(given)
        with pytest.raises(UsageError, match=message):
            model.embed(given)
        if importlib.util.find_spec("distributed") is not None:  # refused before a cluster starts, as one process says
            config = PipelineConfig(device="cpu")
            config.dask.scheduler = "local"
            with pytest.raises(UsageError, match=message):
                UserClusterer(2, config=config).fit(given)
