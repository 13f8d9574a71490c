"""Round 8 of fuzzing the Python API and the service: each test is a finding, failing before its fix."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.errors import UsageError
from tests.helpers import blob_events, quick_fit


@pytest.fixture(scope="module")
def small():
    return blob_events(n_users=90, n_groups=3, events_per_user=8)


_fit = quick_fit


# --- features given as one string -----------------------------------------------------------------

@pytest.mark.parametrize("given, blocks", [("behaviour", ["behaviour"]), ("tfidf", ["tfidf"]),
                                           ("behaviour,tfidf", ["behaviour", "tfidf"])])
def test_features_as_a_bare_string_are_the_names_it_lists(small, given, blocks):
    """features="behaviour" was read letter by letter: "unknown --features 'b'" (or "'f' is given twice")."""
    events, items, _ = small
    model = _fit(events, items, features=given)
    assert list(model.manifest_["features"]["blocks"]) == blocks


def test_extra_features_as_a_bare_string_is_refused_by_name(small):
    events = small[0]
    with pytest.raises(UsageError, match="extra_features takes featuriser objects"):
        _fit(events, extra_features="tfidf")


# --- NumPy whole numbers are whole numbers -----------------------------------------------------------

@pytest.mark.parametrize("seed", [np.int64(3), np.uint32(3), np.int8(3)])
def test_a_numpy_integer_seed_is_that_seed(small, seed):
    """seed=np.int64(3) was refused: "config value seed = np.int64(3) has the wrong type: expected an integer"."""
    events = small[0]
    model = _fit(events, seed=seed)
    assert model.config_.seed == 3 and type(model.config_.seed) is int
    json.dumps(model.manifest_["config"])  # the manifest holds plain numbers


def test_numpy_numbers_in_a_config_are_plain_numbers():
    config = PipelineConfig()
    config.cluster.k = np.int64(4)
    config.assess.silhouette_sample = np.int32(500)
    config.recommend.blend_weight = np.float64(0.5)
    checked = config.validate()
    assert (checked.cluster.k, checked.assess.silhouette_sample, checked.recommend.blend_weight) == (4, 500, 0.5)
    assert type(checked.cluster.k) is int and type(checked.recommend.blend_weight) is float
    with pytest.raises(UsageError, match="expected an integer"):
        config.cluster.k = np.float64(4.0)
        config.validate()


# --- custom featurisers --------------------------------------------------------------------------

class Widening:
    """Two columns at fit time, three for new users."""

    name = "mine"

    def fit_transform(self, data, backend):
        return np.random.default_rng(0).normal(size=(data.n_users, 2)).astype(np.float32)

    def transform(self, data, backend):
        return np.random.default_rng(1).normal(size=(data.n_users, 3)).astype(np.float32)


def test_a_featuriser_whose_width_changes_after_fit_is_named(small):
    """It ended in NumPy's 'operands could not be broadcast together with shapes (90,3) (2,)'."""
    events = small[0]
    model = _fit(events, features=[Widening()])
    with pytest.raises(UsageError, match=r"feature block 'mine' has 3 columns for these users, and had 2 at fit"):
        model.predict(events)


@pytest.mark.parametrize("weight", ["x", None, [1]])
def test_a_custom_featurisers_weight_that_is_no_number_is_named(small, weight):
    """{"mine": "x"} ended in "ValueError: could not convert string to float: 'x'"."""
    events = small[0]
    with pytest.raises(UsageError, match="feature weight mine"):
        _fit(events, features=[Widening()], feature_weights={"mine": weight})


# --- save and load -------------------------------------------------------------------------------

@pytest.mark.parametrize("where", [b"/tmp/model", 3, None])
def test_save_to_something_that_is_no_path(small, where):
    """save(b"...") and save(3) ended in pathlib's TypeError; load already said what it takes."""
    model = _fit(small[0])
    with pytest.raises(UsageError, match="save takes the path of a model folder"):
        model.save(where)


def test_save_and_load_read_a_tilde_as_the_home_folder(small, tmp_path, monkeypatch):
    """save("~/x") made a folder named "~" in the working directory; pandas and the text model read "~" as home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    model = _fit(small[0])
    model.save("~/models/first")
    assert (tmp_path / "home" / "models" / "first" / "model.json").is_file() and not (tmp_path / "~").exists()
    assert UserClusterer.load("~/models/first").n_clusters_ == model.n_clusters_


def test_load_of_a_name_too_long_for_the_file_system(tmp_path):
    """A 300-byte name ended in "OSError: [Errno 36] File name too long"."""
    with pytest.raises(UsageError, match="no model at .*name too long"):
        UserClusterer.load(tmp_path / ("x" * 300))


# --- a clusterer whose labels skip numbers ------------------------------------------------------------

class Gaps:
    """Labels 0, 2 and 5: no user in 1, 3 or 4, and no centres of its own."""

    def fit(self, X):
        self.labels_ = np.array([0, 2, 5] * (len(X) // 3))
        return self


def test_labels_that_skip_numbers_make_no_phantom_clusters(small):
    """Clusters 1, 3 and 4 got a centre at the origin (the mean of no user): predict placed users in
    cluster 1, which has no profile, no member and no segment list."""
    events = small[0]
    with pytest.warns(UserWarning, match=r"labels skip 1, 3, 4 .*renumbered 0\.\.2"):
        model = _fit(events, clusterer=Gaps())
    assert model.n_clusters_ == 3 and model.cluster_centers_.shape[0] == 3
    assert sorted(model.labels_["cluster"].unique()) == [0, 1, 2]
    assert set(model.predict(events)["cluster"]) <= {0, 1, 2}
    assert [p["cluster"] for p in model.profiles_] == [0, 1, 2]


# --- truth ----------------------------------------------------------------------------------------

def test_truth_groups_may_be_text(small):
    """Group names as text (or categorical) ended in "TypeError: Invalid comparison between dtype=str and int"."""
    events, _, truth = small
    as_numbers = _fit(events, truth=truth).metrics_
    for groups in (truth.group.map({0: "a", 1: "b", 2: "c"}), truth.group.astype("category"),
                   truth.group.map({0: "a", 1: 1, 2: 2.5})):
        metrics = _fit(events, truth=truth.assign(group=groups)).metrics_
        assert metrics["ari"] == pytest.approx(as_numbers["ari"]) and metrics["truth_users"] == 90


@pytest.mark.parametrize("group", [np.nan, -1])
def test_truth_without_any_planted_group_is_refused_not_a_perfect_score(small, group):
    """Every group missing (or noise) scored ARI = NMI = 1.0 over 0 users."""
    events, _, truth = small
    with pytest.raises(UsageError, match="no user of the truth has a group"):
        _fit(events, truth=truth.assign(group=group))


def test_truth_that_puts_a_user_in_two_groups_is_refused(small):
    """Each user twice in two groups counted 180 truth users of 90 and scored the doubled rows."""
    events, _, truth = small
    with pytest.raises(UsageError, match=r"truth gives 90 users more than one group \(e.g. user 100"):
        _fit(events, truth=pd.concat([truth, truth.assign(group=truth.group + 1)]))
    repeated = _fit(events, truth=pd.concat([truth, truth])).metrics_  # the same fact twice is that fact
    assert repeated["truth_users"] == 90 and repeated["ari"] == pytest.approx(_fit(events, truth=truth).metrics_["ari"])


# --- the service reads every field it is sent ------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gpuclust.serve.app import ServeSettings, create_app
    from gpuclust.synth import SynthSpec, generate

    data = generate(SynthSpec(n_users=300, n_items=150, n_groups=3, seed=3))
    folder = tmp_path_factory.mktemp("round8") / "model"
    UserClusterer(3, device="cpu", features=("behaviour", "tfidf")).fit(data.events, data.items).save(folder)
    event = {"user_id": "u1", "item_id": int(data.events.item_id.iloc[0]), "event_type": "purchase",
             "timestamp": "2026-01-01T00:00:00Z"}
    with TestClient(create_app(ServeSettings(folder, device="cpu")), raise_server_exceptions=False) as client:
        yield client, event


@pytest.mark.parametrize("path, extra, said", [
    ("/v1/recommend", {"top_k": 3}, "unknown field 'top_k' in the body: /v1/recommend reads events or columns, and n"),
    ("/v1/assign", {"n": 3}, "unknown field 'n' in the body: /v1/assign reads events or columns"),
    ("/v1/assign", {"user": "u1"}, "unknown field 'user'"),
    ("/v1/recommend", {"columns": {"user_id": [1], "item_id": [1], "timestamp": [1]}}, "'events' or 'columns', not both"),
])
def test_a_body_field_the_service_does_not_read_is_a_422(served, path, extra, said):
    """{"top_k": 3} (the Python keyword) answered 10 items, "n" on /v1/assign answered no items, and 'columns'
    beside 'events' was dropped: each without a word."""
    client, event = served
    r = client.post(path, content=json.dumps({"events": [event], **extra}), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert said in r.json()["error"] and "\n" not in r.json()["error"]
    assert client.post(path, json={"events": [event], **({"n": 3} if path == "/v1/recommend" else {})}).status_code == 200
